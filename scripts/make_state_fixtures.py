#!/usr/bin/env python3
"""Generates the state/.npy interoperability fixtures of the test targets.

Run from the repository root with a Python that has torch, numpy and safetensors:

    $VENV/bin/python scripts/make_state_fixtures.py            # (re)write fixtures
    $VENV/bin/python scripts/make_state_fixtures.py --verify-swift FILE [FILE...]

The first form writes small files under Tests/Fixtures/, all named
`state_*`. They are committed; CI never runs this script (no PyTorch there).

The second form checks the reverse direction: safetensors files written by BatchNormKit
(for example the committed golden file state_swift_golden.safetensors, or a file written by
`bnkit calibrate`) load into nn.BatchNorm3d with load_state_dict(strict=True), and prints
the loaded values. Exits non-zero on any failure.
"""
import argparse
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")


def path(name):
    return os.path.join(FIXTURES, name)


def trained_bn3d():
    """nn.BatchNorm3d(3) with random affine parameters, trained for 4 steps on offset data."""
    torch.manual_seed(1234)
    bn = torch.nn.BatchNorm3d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.75, 0.25]))
        bn.bias.copy_(torch.tensor([0.1, -2.0, 3.0]))
    bn.train()
    for _ in range(4):
        x = torch.randn(2, 3, 4, 5, 6) * torch.tensor([3.0, 0.5, 10.0]).view(1, 3, 1, 1, 1) \
            + torch.tensor([5.0, -1.0, 100.0]).view(1, 3, 1, 1, 1)
        bn(x)
    bn.eval()
    return bn


def write_npy_variants():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    np.save(path("state_npy_f4_v1.npy"), a)
    np.save(path("state_npy_f2_v1.npy"), a.astype(np.float16))
    for version in [(2, 0), (3, 0)]:
        with open(path(f"state_npy_f4_v{version[0]}.npy"), "wb") as f:
            np.lib.format.write_array(f, a, version=version)
    np.save(path("state_npy_fortran.npy"), np.asfortranarray(a))
    np.save(path("state_npy_int32.npy"), np.arange(6, dtype=np.int32).reshape(2, 3))
    np.save(path("state_npy_f8.npy"), a.astype(np.float64))
    np.save(path("state_npy_f4_bigendian.npy"), a.astype(">f4"))
    np.save(path("state_npy_scalar.npy"), np.float32(2.5))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--verify-swift", nargs="+", metavar="FILE")
    args = parser.parse_args()
    if args.verify_swift:
        return verify_swift(args.verify_swift)

    os.makedirs(FIXTURES, exist_ok=True)
    bn = trained_bn3d()
    state = bn.state_dict()
    save_file(state, path("state_torch_bn3d_c3.safetensors"))
    # The same state in other dtypes (num_batches_tracked stays int64).
    for suffix, dtype in [("f64", torch.float64), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
        converted = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
        save_file(converted, path(f"state_torch_bn3d_c3_{suffix}.safetensors"))
    # Inside a larger model: prefixed keys next to unrelated tensors.
    model = {"conv.weight": torch.randn(3, 1, 3, 3, 3)}
    model.update({f"layer1.bn.{k}": v for k, v in state.items()})
    save_file(model, path("state_torch_model_prefixed.safetensors"), metadata={"format": "pt"})

    # Evaluation input and PyTorch's output, in NCDHW and NDHWC (file axes N, D, H, W, C).
    torch.manual_seed(99)
    x = torch.randn(2, 3, 4, 5, 6) * 4 + torch.tensor([5.0, -1.0, 100.0]).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        y = bn(x)
    np.save(path("state_torch_bn3d_c3_input.npy"), x.numpy())
    np.save(path("state_torch_bn3d_c3_output.npy"), y.numpy())
    np.save(path("state_torch_bn3d_c3_input_ndhwc.npy"), x.permute(0, 2, 3, 4, 1).contiguous().numpy())
    np.save(path("state_torch_bn3d_c3_output_ndhwc.npy"), y.permute(0, 2, 3, 4, 1).contiguous().numpy())

    # Calibration (AdaBN): start from the trained weight/bias, reset the running statistics,
    # cumulative average (momentum=None) over three batches: what `bnkit calibrate` defaults to.
    calibrated = trained_bn3d()
    calibrated.momentum = None
    calibrated.reset_running_stats()
    calibrated.train()
    torch.manual_seed(7)
    for i in range(3):
        batch = torch.randn(2, 3, 3, 4, 5) * (i + 1) + torch.tensor([-3.0, 2.0, 50.0]).view(1, 3, 1, 1, 1)
        np.save(path(f"state_calibrate_batch{i}.npy"), batch.numpy())
        with torch.no_grad():
            calibrated(batch)
    save_file(calibrated.state_dict(), path("state_calibrate_expected.safetensors"))

    write_npy_variants()
    print("fixtures written to", os.path.normpath(FIXTURES))
    return 0


def verify_swift(files):
    failures = 0
    for name in files:
        try:
            state = load_file(name)
            maps = state["running_mean"].shape[0]
            bn = torch.nn.BatchNorm3d(maps)
            bn.load_state_dict(state, strict=True)
            bn.eval()
            x = torch.randn(2, maps, 2, 3, 4)
            with torch.no_grad():
                y = bn(x)
            reference = (x - bn.running_mean.view(1, -1, 1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1, 1) + bn.eps) \
                * bn.weight.view(1, -1, 1, 1, 1) + bn.bias.view(1, -1, 1, 1, 1)
            error = (y - reference).abs().max().item()
            print(f"OK {name}: keys {sorted(state)}; dtypes {[str(state[k].dtype) for k in sorted(state)]}; "
                  f"num_batches_tracked shape {list(bn.num_batches_tracked.shape)} value {bn.num_batches_tracked.item()}; "
                  f"weight {bn.weight.tolist()}; bias {bn.bias.tolist()}; running_mean {bn.running_mean.tolist()}; "
                  f"running_var {bn.running_var.tolist()}; eval max abs error {error:.3g}")
        except Exception as error:  # noqa: BLE001 - report every file
            failures += 1
            print(f"FAIL {name}: {error!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
