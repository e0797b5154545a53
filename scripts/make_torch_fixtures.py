#!/usr/bin/env python3
"""Generate the PyTorch reference fixtures for BatchNormKit's BatchNorm3D.

Regenerate (from the repository root) with

    $VENV/bin/python scripts/make_torch_fixtures.py

or any Python 3 with ``torch`` and ``numpy`` installed. The output goes to
``Tests/Fixtures/torch_bn3d_<case>.json``, one file per case;
``TorchFixtureTests.swift`` replays them, so CI needs neither Python nor PyTorch.
The output is deterministic (seeded NumPy generators, CPU only); regenerating
with another PyTorch version may change the last bits of the float32 results.

What each case records
----------------------
``nn.BatchNorm3d`` is run in training mode for ``steps`` steps and then one
evaluation step, twice: in float64 (the reference the Swift tests compare
against) and in float32 (to show how close PyTorch's own float32 kernel comes).
Both runs see the *same* inputs: every input, upstream gradient, weight, bias
and initial running statistic is a float32 value, so the float64 run is the
exact-arithmetic answer for the data BatchNormKit (float32) receives.

- Before step ``n`` (counting from 1) ``momentum`` is set to PuzzleLib's factor
  ``max(init_factor / n, min_factor)``. PyTorch's momentum weights the new batch
  and its ``running_var`` uses the unbiased batch variance: the same update as
  BatchNormKit (Sources/BatchNormCore/BatchNormCore.docc/ReferenceSemantics.md).
- Gradients are cleared before every step, so ``weight_grad`` / ``bias_grad``
  are the plain per-step gradients (BatchNormKit's ``scaleGrad`` / ``biasGrad``
  after ``backward`` with the default ``scale: 1, momentum: 0``).
- The parameters are not updated between steps.
- For the ``channels_last_3d`` case, inputs and gradients are converted to that
  memory format before the call; every array in the files is nevertheless in
  LOGICAL row-major order (n, c, d, h, w), which is what BatchNormKit's
  ``Tensor(_:shape:layout:)`` takes.

Number format: float32 values are written as their shortest round-trip decimal
(parse them directly as ``Float``); float64 values as Python's ``repr``
(shortest round-trip for ``Double``). Both are therefore exact.
"""

import json
import math
import os
import sys

import numpy as np
import torch

FORMAT_VERSION = 1
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
SIZE_LIMIT = 2 * 1024 * 1024  # bytes, all fixture files together

# name, shape, memory format, seed, data offset/std, steps, epsilon, initFactor, minFactor,
# weight, bias, initial running mean / var
CASES = [
    dict(name="basic_2x3x4x5x6", shape=[2, 3, 4, 5, 6], memory_format="contiguous", seed=1,
         description="Generic case, default factors (1.0, 0.1): cumulative average of the first 10 batches, then 0.1.",
         offset=[0.5, -2.0, 3.0], std=[1.0, 0.5, 2.0], steps=12, epsilon=1e-5, init_factor=1.0, min_factor=0.1,
         weight=[1.25, -0.5, 0.8], bias=[0.1, -0.3, 2.0], running_mean=[0.0, 0.0, 0.0], running_var=[1.0, 1.0, 1.0]),
    dict(name="n1_1x2x3x3x3", shape=[1, 2, 3, 3, 3], memory_format="contiguous", seed=2,
         description="Batch size 1 (statistics over the spatial axes only).",
         offset=[0.0, 1.0], std=[1.0, 3.0], steps=12, epsilon=1e-5, init_factor=1.0, min_factor=0.1,
         weight=[0.9, 1.1], bias=[-0.25, 0.5], running_mean=[0.0, 0.0], running_var=[1.0, 1.0]),
    dict(name="c1_4x1x2x2x2", shape=[4, 1, 2, 2, 2], memory_format="contiguous", seed=3,
         description="A single channel.",
         offset=[-1.5], std=[0.75], steps=12, epsilon=1e-5, init_factor=1.0, min_factor=0.1,
         weight=[1.5], bias=[0.75], running_mean=[0.0], running_var=[1.0]),
    dict(name="spatial1_3x4x1x1x1", shape=[3, 4, 1, 1, 1], memory_format="contiguous", seed=4,
         description="Spatial extent 1x1x1: M = N = 3 values per channel (unbiased factor 3/2).",
         offset=[0.0, 1.0, -1.0, 5.0], std=[1.0, 2.0, 0.5, 1.0], steps=12, epsilon=1e-5, init_factor=1.0, min_factor=0.1,
         weight=[1.0, 0.5, -1.25, 2.0], bias=[0.0, 0.25, -0.5, 1.0],
         running_mean=[0.0, 0.0, 0.0, 0.0], running_var=[1.0, 1.0, 1.0, 1.0]),
    dict(name="channels_last_2x3x2x3x4", shape=[2, 3, 2, 3, 4], memory_format="channels_last_3d", seed=5,
         description="Input and gradient in torch.channels_last_3d (NDHWC) memory format; arrays in logical order.",
         offset=[1.0, 0.0, -0.5], std=[2.0, 1.0, 0.25], steps=12, epsilon=1e-5, init_factor=1.0, min_factor=0.1,
         weight=[0.75, 1.2, -0.9], bias=[0.5, -1.0, 0.125], running_mean=[0.0, 0.0, 0.0], running_var=[1.0, 1.0, 1.0]),
    dict(name="offset1000_2x2x3x4x4", shape=[2, 2, 3, 4, 4], memory_format="contiguous", seed=6,
         description="Large offset: x = 1000 + randn (float32 spacing 6.1e-5 at 1000).",
         offset=[1000.0, 1000.0], std=[1.0, 1.0], steps=12, epsilon=1e-5, init_factor=1.0, min_factor=0.1,
         weight=[1.05, 0.95], bias=[0.2, -0.2], running_mean=[0.0, 0.0], running_var=[1.0, 1.0]),
    dict(name="factors_2x2x2x3x3", shape=[2, 2, 2, 3, 3], memory_format="contiguous", seed=7,
         description="Other factors (initFactor 0.5, minFactor 0.05), epsilon 1e-3, non-default initial running statistics.",
         offset=[2.0, -1.0], std=[1.5, 0.5], steps=14, epsilon=1e-3, init_factor=0.5, min_factor=0.05,
         weight=[0.6, 1.4], bias=[-0.1, 0.3], running_mean=[0.5, -0.25], running_var=[2.0, 0.5]),
]


def f32(values):
    """Float32 values as Python floats whose repr is the shortest float32 round-trip decimal."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    out = [float(str(v)) for v in values]
    assert np.array_equal(np.asarray(out, dtype=np.float32), values), "float32 repr does not round-trip"
    return out


def f64(values):
    """Float64 values as Python floats (json writes repr: shortest round-trip)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    out = [float(v) for v in values]
    assert all(math.isfinite(v) for v in out)
    return out


def logical(t):
    """Values of a tensor in logical row-major order, whatever its memory format."""
    return t.detach().cpu().contiguous().numpy().reshape(-1)


def factor(case, step):
    return max(case["init_factor"] / step, case["min_factor"])


def make_module(case, dtype):
    maps = case["shape"][1]
    bn = torch.nn.BatchNorm3d(maps, eps=case["epsilon"], momentum=0.1, affine=True, track_running_stats=True)
    bn = bn.to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(np.float32(case["weight"]), dtype=dtype))
        bn.bias.copy_(torch.tensor(np.float32(case["bias"]), dtype=dtype))
        bn.running_mean.copy_(torch.tensor(np.float32(case["running_mean"]), dtype=dtype))
        bn.running_var.copy_(torch.tensor(np.float32(case["running_var"]), dtype=dtype))
    return bn


def run_step(bn, x32, g32, dtype, memory_format, train, momentum=None):
    """One forward + backward; returns the recorded arrays (logical order)."""
    x = torch.from_numpy(x32).to(dtype)
    g = torch.from_numpy(g32).to(dtype)
    if memory_format == "channels_last_3d":
        x = x.to(memory_format=torch.channels_last_3d)
        g = g.to(memory_format=torch.channels_last_3d)
        assert x.is_contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    bn.weight.grad = None
    bn.bias.grad = None
    if train:
        bn.train()
        bn.momentum = momentum
    else:
        bn.eval()
    y = bn(x)
    if memory_format == "channels_last_3d":
        assert y.is_contiguous(memory_format=torch.channels_last_3d), "output lost channels_last_3d"
    y.backward(g)
    if memory_format == "channels_last_3d":
        assert x.grad.is_contiguous(memory_format=torch.channels_last_3d), "grad_input lost channels_last_3d"
    conv = f64 if dtype == torch.float64 else f32
    out = dict(y=conv(logical(y)), grad_input=conv(logical(x.grad)))
    if train:
        out.update(running_mean=conv(logical(bn.running_mean)), running_var=conv(logical(bn.running_var)),
                   weight_grad=conv(logical(bn.weight.grad)), bias_grad=conv(logical(bn.bias.grad)))
    return out


def make_case(case):
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"]
    maps = shape[1]
    channel_shape = [1, maps, 1, 1, 1]
    offset = np.asarray(case["offset"], dtype=np.float64).reshape(channel_shape)
    std = np.asarray(case["std"], dtype=np.float64).reshape(channel_shape)

    def draw():
        x = (offset + std * rng.standard_normal(shape)).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        return x, g

    modules = {torch.float64: make_module(case, torch.float64), torch.float32: make_module(case, torch.float32)}
    steps = []
    for n in range(1, case["steps"] + 1):
        x, g = draw()
        momentum = factor(case, n)
        record = dict(step=n, momentum=momentum, x=f32(x), grad_output=f32(g))
        for dtype, key in ((torch.float64, "float64"), (torch.float32, "float32")):
            record[key] = run_step(modules[dtype], x, g, dtype, case["memory_format"], True, momentum)
        steps.append(record)
    x, g = draw()
    evaluation = dict(x=f32(x), grad_output=f32(g))
    for dtype, key in ((torch.float64, "float64"), (torch.float32, "float32")):
        evaluation[key] = run_step(modules[dtype], x, g, dtype, case["memory_format"], False)

    return dict(
        format=FORMAT_VERSION,
        generator="scripts/make_torch_fixtures.py",
        torch_version=torch.__version__,
        numpy_version=np.__version__,
        name=case["name"],
        description=case["description"],
        module="torch.nn.BatchNorm3d",
        shape=shape,
        memory_format=case["memory_format"],
        seed=case["seed"],
        epsilon=case["epsilon"],
        init_factor=case["init_factor"],
        min_factor=case["min_factor"],
        initial=dict(weight=f32(case["weight"]), bias=f32(case["bias"]),
                     running_mean=f32(case["running_mean"]), running_var=f32(case["running_var"])),
        train_steps=steps,
        eval=evaluation,
    )


def relative_error(actual, reference):
    """Same metric as TorchFixtureTests: |a − r| / (|r| + rms(r)), maximum over the array."""
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    floor = max(math.sqrt(np.mean(r * r)), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(a - r) / (np.abs(r) + floor)))


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for case in CASES:
        fixture = make_case(case)
        path = os.path.join(OUT_DIR, "torch_bn3d_%s.json" % case["name"])
        text = json.dumps(fixture, separators=(",", ":"), allow_nan=False) + "\n"
        with open(path, "w") as f:
            f.write(text)
        total += len(text)
        worst = 0.0
        for record in fixture["train_steps"] + [fixture["eval"]]:
            for key, reference in record["float64"].items():
                worst = max(worst, relative_error(record["float32"][key], reference))
        print("%-40s %8d bytes  PyTorch float32 vs float64: max rel. error %.2e" % (os.path.basename(path), len(text), worst))
    print("total %d bytes" % total)
    if total > SIZE_LIMIT:
        sys.exit("fixtures exceed %d bytes" % SIZE_LIMIT)


if __name__ == "__main__":
    main()
