#!/usr/bin/env python3
"""Generates the HDF5 fixtures of the test targets for links, shared groups, non-UTF-8 names
and external storage: valid files that h5py reads, in PuzzleLib's layout (libver="earliest").

Run from the repository root with a Python that has h5py and numpy:

    $VENV/bin/python scripts/make_link_fixtures.py

It writes `links_*.hdf` under Tests/Fixtures/ (committed; CI never runs
this script). Every file holds the module "bn" of 2 channels, data rank 5, with scale
[1.5, 2.5], bias [0.25, -0.25], mean [3, 4] and var [5, 6] (float32, exactly), plus:

- links_soft.hdf: a dangling soft link links/dangling -> /nowhere and a soft link
  alias -> /params/0 at the root (cache type 2 symbol-table entries).
- links_shared_group.hdf: the group `params` hard-linked a second time as `params_copy`.
- links_external.hdf: an external link `outside` -> other.h5:/x at the root (which libhdf5
  can only store in a new-style group: the root keeps its links in link messages).
- links_non_utf8.hdf: a second module named by the bytes b"bn\\xfe" beside b"bn\\xff", which
  differ only in bytes that are not UTF-8.
- links_external_storage.hdf: attrs/bn.var stored in an external raw file (external storage).
"""
import os

import h5py
import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures")
SHAPE = (1, 2, 1, 1, 1)


def module(hdf, name, base=0, var_kwargs=None):
    """PuzzleLib's Module.save of a BatchNorm3D named `name` (bytes or str), params from `base`."""
    params, links, attrs = hdf.require_group("params"), hdf.require_group("links"), hdf.require_group("attrs")
    key = name.encode() if isinstance(name, str) else name
    for offset, (field, values) in enumerate([("scale", [1.5, 2.5]), ("bias", [0.25, -0.25])]):
        params.create_dataset(str(base + offset), data=np.array(values, np.float32).reshape(SHAPE))
        links[key + b"." + field.encode()] = np.int64(base + offset)
    attrs.create_dataset(key + b".mean", data=np.array([3, 4], np.float32).reshape(SHAPE))
    attrs.create_dataset(key + b".var", data=np.array([5, 6], np.float32).reshape(SHAPE), **(var_kwargs or {}))


def write(name, build):
    path = os.path.join(FIXTURES, name)
    with h5py.File(path, "w", libver="earliest") as hdf:
        build(hdf)
    print("wrote", path)


def soft(hdf):
    module(hdf, "bn")
    hdf["links/dangling"] = h5py.SoftLink("/nowhere")
    hdf["alias"] = h5py.SoftLink("/params/0")


def shared(hdf):
    module(hdf, "bn")
    hdf["params_copy"] = hdf["params"]


def external(hdf):
    module(hdf, "bn")
    hdf["outside"] = h5py.ExternalLink("other.h5", "/x")


def non_utf8(hdf):
    module(hdf, b"bn\xfe")
    module(hdf, b"bn\xff", base=2)


def external_storage(hdf):
    raw = os.path.join(FIXTURES, "links_external_storage.raw")
    np.array([5, 6], np.float32).tofile(raw)
    module(hdf, "bn", var_kwargs={"external": [("links_external_storage.raw", 0, 8)]})


write("links_soft.hdf", soft)
write("links_shared_group.hdf", shared)
write("links_external.hdf", external)
write("links_non_utf8.hdf", non_utf8)
write("links_external_storage.hdf", external_storage)
