#!/usr/bin/env python3
"""Generates the PuzzleLib HDF5 fixtures of the test targets, and checks files BatchNormKit wrote.

Run from the repository root with a Python that has h5py and numpy (no PuzzleLib needed):

    $VENV/bin/python scripts/make_puzzlelib_fixtures.py             # (re)write the fixtures
    $VENV/bin/python scripts/make_puzzlelib_fixtures.py --verify FILE EXPECTED.json

The first form writes files named `puzzlelib_*` under Tests/Fixtures/.
They are committed; CI never runs this script. The files are made with the very h5py calls
of PuzzleLib's `Module.save` and `Container.save` (Modules/Module.py, Containers/Container.py):

    hdf = h5py.File(path, "w", libver="earliest")
    paramGrp, linkGrp = hdf.require_group("params"), hdf.require_group("links")
    paramGrp.create_dataset(str(idx), data=value, compression=compress)   # once per variable
    linkGrp["%s.%s" % (name, paramName)] = idx                             # scalar int64
    hdf.require_group("attrs").create_dataset("%s.%s" % (name, attrName), data=value,
                                              compression=compress)
    hdf.require_group("attrs.%s" % containerName)                          # containers only

where a BatchNorm module of data rank R has variables `scale`, `bias` and attributes `mean`,
`var`, all float32 of shape (1, C) + (1,) * (R - 2). A container named `seq` names its
modules `seq.<module>`; an unnamed module is named "" (links `.scale`, `.bias`).

Each fixture has a JSON file of the expected values (`puzzlelib_*.json`): for every BatchNorm
module its name, data rank, scale, bias, mean and var (as the float32 values, exactly).

The second form checks the reverse direction: FILE (written by BatchNormKit, for example the
committed puzzlelib_swift_written.hdf or the output of `bnkit convert`) is opened with h5py
and read the way PuzzleLib's `Module.load` reads it, for every module of EXPECTED.json: the
links are scalar integers naming datasets of `params`, every dataset is float32 of shape
(1, C, 1, ...) with the module's rank, and the values equal the expected ones bit for bit.
Exits non-zero on any difference.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")


def path(name):
    return os.path.join(FIXTURES, name)


class BatchNormModule:
    """The state PuzzleLib's BatchNormND holds: vars scale, bias; attrs mean, var."""

    def __init__(self, name, rank, maps, rng, affine=True, dtype=np.float32):
        shape = (1, maps) + (1,) * (rank - 2)
        self.name, self.rank = name, rank
        scale = rng.normal(1.0, 0.5, shape) if affine else np.ones(shape)
        bias = rng.normal(0.0, 2.0, shape) if affine else np.zeros(shape)
        self.vars = {"scale": scale.astype(dtype), "bias": bias.astype(dtype)}
        self.attrs = {"mean": rng.normal(5.0, 3.0, shape).astype(dtype),
                      "var": rng.uniform(0.5, 4.0, shape).astype(dtype)}

    def expected(self):
        values = dict(self.vars, **self.attrs)
        return {"name": self.name, "rank": self.rank,
                **{key: [float(v) for v in values[key].astype(np.float32).ravel()] for key in values}}


class OtherModule:
    """A non-BatchNorm module (a convolution's W and b): variables only."""

    def __init__(self, name, shapes, rng):
        self.name = name
        self.vars = {key: rng.normal(0, 1, shape).astype(np.float32) for key, shape in shapes.items()}
        self.attrs = {}


def create(filename, userblock=None):
    """h5py.File(path, "w", libver="earliest"), optionally after a user block (the HDF5
    signature then sits at byte 512 and addresses are relative to it)."""
    if userblock is None:
        return h5py.File(path(filename), "w", libver="earliest")
    return h5py.File(path(filename), "w", libver="earliest", userblock_size=userblock)


def save(filename, modules, container=None, compress="gzip", blueprint=False):
    """PuzzleLib's Container.save / Module.save, call for call."""
    with create(filename) as hdf:
        varlinks = 0
        for mod in modules:
            name = mod.name if container is None else "%s.%s" % (container, mod.name)
            paramGrp, linkGrp = hdf.require_group("params"), hdf.require_group("links")
            for paramName, value in mod.vars.items():
                idx = varlinks
                paramGrp.create_dataset(str(idx), data=value, compression=compress)
                varlinks += 1
                linkGrp["%s.%s" % (name, paramName)] = idx
            if len(mod.attrs) > 0:
                attrGrp = hdf.require_group("attrs")
                for attrName, attr in mod.attrs.items():
                    attrGrp.create_dataset("%s.%s" % (name, attrName), data=attr, compression=compress)
        if container is not None:
            hdf.require_group("attrs.%s" % container)
        if blueprint:
            hdf.create_dataset("blueprint", (), dtype=h5py.special_dtype(vlen=str),
                               data=json.dumps({"classname": "Sequential", "modules": [m.name for m in modules]}))


def write_expected(filename, modules, container=None):
    result = []
    for mod in modules:
        if isinstance(mod, BatchNormModule):
            entry = mod.expected()
            if container is not None:
                entry["name"] = "%s.%s" % (container, mod.name)
            result.append(entry)
    with open(path(filename), "w") as f:
        json.dump({"modules": result}, f, indent=1)
        f.write("\n")


def evaluation_output(module, data, epsilon=1e-5):
    """PuzzleLib's evaluation forward in float64: scale * (x - mean) / sqrt(var + eps) + bias."""
    v = {k: module.vars[k].astype(np.float64) for k in module.vars}
    a = {k: module.attrs[k].astype(np.float64) for k in module.attrs}
    return v["scale"] * (data.astype(np.float64) - a["mean"]) / np.sqrt(a["var"] + epsilon) + v["bias"]


def generate():
    rng = np.random.default_rng(20261201)

    # A container with BatchNorm modules of data ranks 2 to 5 beside convolution weights,
    # one of them created with affine=False (scale 1, bias 0, as PuzzleLib saves them).
    seq = [
        OtherModule("conv1", {"W": (4, 2, 3, 3, 3), "b": (1, 4, 1, 1, 1)}, rng),
        BatchNormModule("bn1", 5, 4, rng),
        BatchNormModule("bn2d", 4, 3, rng),
        BatchNormModule("bn1d", 3, 5, rng),
        BatchNormModule("bn0d", 2, 6, rng),
        OtherModule("fc", {"W": (6, 2), "b": (2,)}, rng),
        BatchNormModule("fixed", 5, 2, rng, affine=False),
    ]
    save("puzzlelib_container.hdf", seq, container="seq", blueprint=True)
    write_expected("puzzlelib_container.json", seq, container="seq")

    # An unnamed BatchNorm3D (links ".scale", ".bias"), with an input and the numpy output.
    unnamed = BatchNormModule("", 5, 3, rng)
    save("puzzlelib_unnamed.hdf", [unnamed])
    write_expected("puzzlelib_unnamed.json", [unnamed])
    data = rng.normal(5.0, 3.0, (2, 3, 2, 3, 4)).astype(np.float32)
    np.save(path("puzzlelib_unnamed_input.npy"), data)
    np.save(path("puzzlelib_unnamed_output.npy"), evaluation_output(unnamed, data).astype(np.float32))

    # A float16 model (calcMode(np.float16) on the GPU keeps float16 parameters).
    half = BatchNormModule("bn", 5, 3, rng, dtype=np.float16)
    save("puzzlelib_float16.hdf", [half], container="net")
    write_expected("puzzlelib_float16.json", [half], container="net")

    # Many modules, saved uncompressed: the groups hold 200 links each, so their symbol
    # tables span more than 32 leaves (symbol-table nodes) and a B-tree of two levels.
    many = [BatchNormModule("bn%d" % k, 2, 2, rng) for k in range(100)]
    save("puzzlelib_many.hdf", many, container="deep", compress=None)
    write_expected("puzzlelib_many.json", many, container="deep")

    # The storage variants the reader supports, in PuzzleLib's layout but written by hand:
    # many chunks (deflate and shuffle), an edge chunk, big-endian float32, float64,
    # a compact dataset and int32 links.
    # 75 chunks: more than one chunk B-tree node holds (64), so the index has two levels.
    # A 512-byte user block precedes the HDF5 data.
    wide = BatchNormModule("bn", 5, 300, rng)
    with create("puzzlelib_storage.hdf", userblock=512) as hdf:
        params, links, attrs = hdf.create_group("params"), hdf.create_group("links"), hdf.create_group("attrs")
        params.create_dataset("0", data=wide.vars["scale"], chunks=(1, 4, 1, 1, 1), compression="gzip", shuffle=True)
        params.create_dataset("1", data=wide.vars["bias"].astype(">f4"), chunks=(1, 128, 1, 1, 1))
        links.create_dataset("wide.bn.scale", data=np.int32(0))
        links.create_dataset("wide.bn.bias", data=np.int64(1))
        attrs.create_dataset("wide.bn.mean", data=wide.attrs["mean"].astype(np.float64))
        space = h5py.h5s.create_simple(wide.attrs["var"].shape)
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_layout(h5py.h5d.COMPACT)
        compact = h5py.h5d.create(attrs.id, b"wide.bn.var", h5py.h5t.IEEE_F32LE, space, plist)
        compact.write(h5py.h5s.ALL, h5py.h5s.ALL, wide.attrs["var"])
    wide.name = "wide.bn"
    write_expected("puzzlelib_storage.json", [wide])


def verify(filename, expected_path):
    """Reads `filename` as PuzzleLib's Module.load does and compares with the expected JSON."""
    with open(expected_path) as f:
        expected = json.load(f)["modules"]
    failures = 0
    with h5py.File(filename, "r") as hdf:
        if hdf.libver[0] != "earliest":
            print("note: h5py reports libver %s" % (hdf.libver,))
        paramGrp, linkGrp, attrGrp = hdf["params"], hdf["links"], hdf["attrs"]
        for module in expected:
            before = failures
            name, rank = module["name"], module["rank"]
            shape = (1, len(module["mean"])) + (1,) * (rank - 2)
            for key, group in (("scale", "links"), ("bias", "links"), ("mean", "attrs"), ("var", "attrs")):
                if group == "links":
                    link = linkGrp["%s.%s" % (name, key)]
                    if link.shape != () or link.dtype.kind not in "iu":
                        print("FAIL %s.%s: link is %s %s, expected a scalar integer" % (name, key, link.dtype, link.shape))
                        failures += 1
                        continue
                    dataset = paramGrp[str(link[()])]
                else:
                    dataset = attrGrp["%s.%s" % (name, key)]
                value = np.array(dataset)
                want = np.array(module[key], dtype=np.float32).reshape(shape)
                if value.dtype != np.float32 or value.shape != shape:
                    print("FAIL %s.%s: %s %s, expected float32 %s" % (name, key, value.dtype, value.shape, shape))
                    failures += 1
                elif not np.array_equal(value.view(np.uint32), want.view(np.uint32)):
                    print("FAIL %s.%s: values %s, expected %s" % (name, key, value.ravel(), want.ravel()))
                    failures += 1
                else:
                    # As Module.load: var.data.set(param.astype(var.data.dtype, casting="safe")).
                    value.astype(np.float32, casting="safe", copy=False)
            if failures == before:
                print("ok %r: rank %d, %d maps" % (name, rank, shape[1]))
    if failures:
        print("%d failure(s)" % failures)
        sys.exit(1)
    print("all %d modules match" % len(expected))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verify", nargs=2, metavar=("FILE", "EXPECTED_JSON"))
    arguments = parser.parse_args()
    if arguments.verify:
        verify(*arguments.verify)
    else:
        generate()
        print("wrote fixtures to %s" % os.path.normpath(FIXTURES))


if __name__ == "__main__":
    main()
