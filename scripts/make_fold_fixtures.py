#!/usr/bin/env python3
"""Generates the fixtures of folding an evaluation-mode batch norm into the convolution before it.

Run from the repository root with a Python that has torch, numpy, safetensors and h5py:

    $VENV/bin/python scripts/make_fold_fixtures.py

It writes, under Tests/Fixtures/ (committed; CI never runs this script):

- fold_torch_cases.safetensors: one case per convolution kind (Conv1d/2d/3d, plain and
  transposed), groups (1, 2), with and without a convolution bias, and weight type (float32,
  float16). Case `<case>` holds the convolution's `<case>.conv.weight` (and `<case>.conv.bias`),
  the batch norm's PyTorch state under `<case>.bn.` (float32, as BatchNormKit keeps it), and
  PyTorch's folded result `<case>.folded.weight` and `<case>.folded.bias` from
  `torch.nn.utils.fusion.fuse_conv_bn_weights` (`transpose=True` for transposed convolutions).
  The metadata entry `cases` is a JSON list of {name, dims, transposed, groups, bias, dtype,
  epsilon}.

  PyTorch's `fuse_conv_bn_weights(transpose=True)` broadcasts the batch norm over the weight's
  axis 1, which is right only for groups = 1 (for groups > 1 the weight's axis 1 holds
  Cout/groups channels and the call fails). A grouped transposed case is therefore folded group
  by group: the rows `g·Cin/groups ..< (g+1)·Cin/groups` of the weight with the batch norm's
  channels `g·Cout/groups ..< (g+1)·Cout/groups`, each through the same PyTorch call.

  Every case is also checked here, in float64, against its meaning: the folded convolution
  applied to random input equals the batch norm (evaluation mode) of the original convolution's
  output (`F.conv{1,2,3}d` / `F.conv_transpose{1,2,3}d` with the case's groups).

- fold_model.safetensors: the state dict of a small PyTorch model, `stem.conv` (Conv3d 2->4,
  kernel 3, bias) then `stem.bn` (BatchNorm3d 4, trained a few steps), plus `head.weight`; and
  fold_model_expected.safetensors: BatchNormKit's expected `stem.conv.weight`/`.bias` after
  folding, computed here in float64 and rounded once to float32 (the library's rule), for the
  CLI test of `bnkit fold`.

- fold_puzzlelib.hdf: the same model as PuzzleLib's `Module.save` writes it (h5py,
  `libver="earliest"`, gzip): the convolution `stem.conv` with variables `W`, `b` and the batch
  norm `stem.bn` with variables `scale`, `bias` and attributes `mean`, `var` of shape
  (1, C, 1, 1, 1); plus a convolution `noBias` without a bias.
"""
import json
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.nn.utils.fusion import fuse_conv_bn_weights

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")

KERNELS = {1: (3,), 2: (3, 2), 3: (3, 2, 2)}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def path(name):
    return os.path.join(FIXTURES, name)


def random_bn(generator, maps):
    """Running statistics and affine parameters of an evaluation-mode batch norm, float32."""
    return {
        "weight": (1 + 0.5 * torch.randn(maps, generator=generator)).float(),
        "bias": torch.randn(maps, generator=generator).float(),
        "running_mean": (2 * torch.randn(maps, generator=generator)).float(),
        "running_var": (0.1 + 3 * torch.rand(maps, generator=generator)).float(),
        "num_batches_tracked": torch.tensor(7, dtype=torch.int64),
    }


def torch_fold(weight, bias, bn, epsilon, transposed, groups):
    """PyTorch's fuse_conv_bn_weights; grouped transposed weights group by group (see above)."""
    args = lambda sl: (bn["running_mean"][sl], bn["running_var"][sl], epsilon, bn["weight"][sl], bn["bias"][sl])
    if not transposed or groups == 1:
        w, b = fuse_conv_bn_weights(weight, bias, *args(slice(None)), transpose=transposed)
        return w.detach(), b.detach()
    rows, per_group = weight.shape[0] // groups, weight.shape[1]
    ws, bs = [], []
    for g in range(groups):
        channels = slice(g * per_group, (g + 1) * per_group)
        w, b = fuse_conv_bn_weights(
            weight[g * rows:(g + 1) * rows], None if bias is None else bias[channels], *args(channels),
            transpose=True)
        ws.append(w.detach())
        bs.append(b.detach())
    return torch.cat(ws), torch.cat(bs)


def check_meaning(weight, bias, bn, epsilon, transposed, groups, folded_weight, folded_bias, dims):
    """In float64: conv(x, W', b') == bn_eval(conv(x, W, b)), to the float32/float16 rounding of W', b'."""
    d = lambda t: None if t is None else t.double()
    cin = weight.shape[0] if transposed else weight.shape[1] * groups
    x = torch.randn((2, cin) + (5,) * dims, dtype=torch.float64)
    conv = CONV_TRANSPOSE[dims] if transposed else CONV[dims]
    reference = F.batch_norm(
        conv(x, d(weight), d(bias), groups=groups), d(bn["running_mean"]), d(bn["running_var"]),
        d(bn["weight"]), d(bn["bias"]), training=False, eps=epsilon)
    folded = conv(x, d(folded_weight), d(folded_bias), groups=groups)
    tolerance = 2e-2 if weight.dtype == torch.float16 else 1e-4
    error = ((folded - reference).abs().max() / reference.abs().max()).item()
    assert error < tolerance, f"folded convolution differs from conv + bn: {error}"


def write_cases():
    generator = torch.Generator().manual_seed(2024)
    torch.manual_seed(2024)
    tensors, cases = {}, []
    cout, cin = 4, 6
    for dims in (1, 2, 3):
        for transposed in (False, True):
            for groups in (1, 2):
                for has_bias in (True, False):
                    for dtype in (torch.float32, torch.float16):
                        name = f"conv{'_transpose' if transposed else ''}{dims}d_g{groups}" \
                            f"_{'bias' if has_bias else 'nobias'}_{'f16' if dtype == torch.float16 else 'f32'}"
                        epsilon = 1e-3 if has_bias else 1e-5
                        shape = ((cin, cout // groups) if transposed else (cout, cin // groups)) + KERNELS[dims]
                        weight = torch.randn(shape, generator=generator).to(dtype)
                        bias = torch.randn(cout, generator=generator).to(dtype) if has_bias else None
                        bn = random_bn(generator, cout)
                        folded_weight, folded_bias = torch_fold(weight, bias, bn, epsilon, transposed, groups)
                        assert folded_weight.dtype == dtype and folded_bias.dtype == dtype
                        check_meaning(weight, bias, bn, epsilon, transposed, groups, folded_weight, folded_bias, dims)
                        tensors[f"{name}.conv.weight"] = weight
                        if bias is not None:
                            tensors[f"{name}.conv.bias"] = bias
                        for key, value in bn.items():
                            tensors[f"{name}.bn.{key}"] = value
                        tensors[f"{name}.folded.weight"] = folded_weight.contiguous()
                        tensors[f"{name}.folded.bias"] = folded_bias.contiguous()
                        cases.append({"name": name, "dims": dims, "transposed": transposed, "groups": groups,
                                      "bias": has_bias, "dtype": str(dtype).removeprefix("torch."),
                                      "epsilon": epsilon})
    save_file(tensors, path("fold_torch_cases.safetensors"), metadata={"cases": json.dumps(cases)})
    print(f"wrote {len(cases)} cases to fold_torch_cases.safetensors")


def model():
    """Conv3d(2, 4, 3) + BatchNorm3d(4) trained a few steps, in evaluation mode."""
    torch.manual_seed(7)
    conv, bn = torch.nn.Conv3d(2, 4, 3), torch.nn.BatchNorm3d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.25, -0.5, 2.0, 0.75]))
        bn.bias.copy_(torch.tensor([0.5, -1.0, 0.0, 3.0]))
    for _ in range(3):
        bn(conv(torch.randn(2, 2, 5, 5, 5) * 2 + 1))
    bn.eval()
    return conv, bn


def expected_fold(weight, bias, bn, epsilon=1e-5):
    """float64 folding rounded once to float32: BatchNormKit's rule."""
    k = bn.weight.double() / torch.sqrt(bn.running_var.double() + epsilon)
    b = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.double()
    w = weight.double() * k.view(-1, 1, 1, 1, 1)
    return w.float(), (k * (b - bn.running_mean.double()) + bn.bias.double()).float()


def write_model():
    conv, bn = model()
    head = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    state = {f"stem.conv.{k}": v.detach() for k, v in conv.state_dict().items()}
    state.update({f"stem.bn.{k}": v.detach() for k, v in bn.state_dict().items()})
    state["head.weight"] = head
    save_file(state, path("fold_model.safetensors"))
    weight, bias = expected_fold(conv.weight.detach(), conv.bias.detach(), bn)
    without_bias_weight, without_bias = expected_fold(conv.weight.detach(), None, bn)
    assert torch.equal(weight, without_bias_weight)
    save_file({"stem.conv.weight": weight, "stem.conv.bias": bias, "noBias.b": without_bias},
              path("fold_model_expected.safetensors"))

    # PuzzleLib's Module.save, call for call (see make_puzzlelib_fixtures.py).
    shape = (1, 4, 1, 1, 1)
    modules = [
        ("head", {"W": head.numpy()}, {}),
        ("noBias", {"W": conv.weight.detach().numpy()}, {}),
        ("stem.bn", {"scale": bn.weight.detach().numpy().reshape(shape),
                     "bias": bn.bias.detach().numpy().reshape(shape)},
         {"mean": bn.running_mean.numpy().reshape(shape), "var": bn.running_var.numpy().reshape(shape)}),
        ("stem.conv", {"W": conv.weight.detach().numpy(), "b": conv.bias.detach().numpy().reshape(shape)}, {}),
    ]
    with h5py.File(path("fold_puzzlelib.hdf"), "w", libver="earliest") as hdf:
        index = 0
        for name, variables, attributes in modules:
            params, links = hdf.require_group("params"), hdf.require_group("links")
            for variable, value in variables.items():
                params.create_dataset(str(index), data=value.astype(np.float32), compression="gzip")
                links[f"{name}.{variable}"] = index
                index += 1
            for attribute, value in attributes.items():
                hdf.require_group("attrs").create_dataset(
                    f"{name}.{attribute}", data=value.astype(np.float32), compression="gzip")
    print("wrote fold_model.safetensors, fold_model_expected.safetensors, fold_puzzlelib.hdf")


if __name__ == "__main__":
    write_cases()
    write_model()
