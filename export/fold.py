"""Fold eval-mode BatchNorm into the convolution that feeds it, as the CoreML converter does.

Two export paths need the folded model:

- W8A8 for CoreML calibrates with ``coremltools.optimize.torch`` (torch.ao FX under the hood),
  which traces the model in training mode; timm's ``BatchNormAct2d`` would then be traced
  with batch statistics. With BatchNorm folded away there is nothing to get wrong.
- Reading CoreML weights back on Linux: the converter folds BatchNorm into the convs and drops
  the names, so MIL convs match the *folded* PyTorch convs, in execution order.

Pairs are found from a real forward pass (the tensor a conv returns is the tensor a BatchNorm
receives), never from module names, and the folded model is checked against the original.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edge_iqa.errors import EdgeIQAError


def execution_order(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, nn.Module, object, object]]:
    """(name, module, input, output) for every Conv2d, BatchNorm2d and Linear call, in order.

    The tensors are kept (not their ids) so that no id is recycled during the pass.
    """
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[str, nn.Module, object, object]] = []
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)

    def hook(module, args, output):
        calls.append((names[module], module, args[0], output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def conv_bn_pairs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, str]]:
    """(conv name, batchnorm name) for every BatchNorm whose input is a conv's output."""
    calls = execution_order(model, inputs)
    conv_of_output = {id(out): name for name, m, _, out in calls if isinstance(m, nn.Conv2d)}
    return [(conv_of_output[id(inp)], name) for name, m, inp, _ in calls
            if isinstance(m, nn.BatchNorm2d) and id(inp) in conv_of_output]


def fold_batchnorm(model: nn.Module, inputs: tuple[torch.Tensor, ...], atol: float = 1e-4) -> nn.Module:
    """A copy of ``model`` (eval) with every conv→BatchNorm pair folded into the conv.

    A plain ``BatchNorm2d`` becomes ``Identity``; timm's ``BatchNormAct2d`` becomes its
    dropout and activation. Raises if the folded copy disagrees with the original.
    """
    model = model.eval()
    folded = copy.deepcopy(model).eval()
    modules = dict(folded.named_modules())
    for conv_name, bn_name in conv_bn_pairs(folded, inputs):
        conv, bn = modules[conv_name], modules[bn_name]
        _fold_into(conv, bn)
        _replace(folded, bn_name, _without_norm(bn))
    with torch.no_grad():
        ref, got = model(*inputs), folded(*inputs)
    worst = float((ref - got).abs().max())
    if not worst <= atol:
        raise EdgeIQAError(f"folding BatchNorm changed the scores of {type(model).__name__} by {worst:.2e}; "
                           "this backbone's conv/BatchNorm pairs cannot be folded")
    return folded


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale if bn.affine else -bn.running_mean * scale
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias * scale + shift)


def _without_norm(bn: nn.BatchNorm2d) -> nn.Module:
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if hasattr(bn, "act") and hasattr(bn, "drop"):  # timm BatchNormAct2d: norm, then drop, then act
        return nn.Sequential(bn.drop, bn.act)
    raise EdgeIQAError(f"cannot fold {type(bn).__name__}: unknown BatchNorm variant")


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
