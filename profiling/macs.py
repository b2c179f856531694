"""Multiply-accumulates (MACs) of convolutions, linear layers and matmuls.

This is the budget metric. Papers' "MAdds"/"FLOPs" for CNNs (MobileNetV3, Howard et al.,
ICCV 2019; GhostNet, Han et al., CVPR 2020; GhostNetV2, Tang et al., NeurIPS 2022) count the
multiply-accumulates of convolution and fully-connected layers only; PyTorch's
``FlopCounterMode`` counts exactly those ops (``aten.convolution``, ``mm``, ``addmm``,
``bmm``, ``baddbmm`` and the attention kernels) at two FLOPs per MAC, so MACs = FLOPs / 2.
It must run under ``torch.no_grad()``: under ``torch.inference_mode()`` it reports 0.

Counting needs shapes only, so models and inputs may live on the ``meta`` device: a 4K
forward then costs no arithmetic at all (the test suite checks meta == CPU counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FLOPS_PER_MAC = 2
_GLOBAL = "Global"  # FlopCounterMode's key for the whole run


@dataclass(frozen=True)
class MacReport:
    """MACs of one forward pass.

    total: all counted MACs. per_module: MACs of each module that has any, children
    included, keyed by its ``named_modules`` name ("" is the root), in definition order.
    per_op: MACs by aten op (``convolution``, ``addmm``, ...).
    """

    total: int
    per_module: dict[str, int]
    per_op: dict[str, int]

    def module_macs(self, name: str) -> int:
        """MACs of the module ``name`` (0 when it ran no counted op)."""
        return self.per_module.get(name, 0)


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> MacReport:
    """MACs of ``model(*inputs)``: one forward under ``no_grad``, on the inputs' device."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_module = {}
    for name, _ in model.named_modules():
        key = f"{root}.{name}" if name else root
        flops = sum(counts.get(key, {}).values())
        if flops:
            per_module[name] = flops // FLOPS_PER_MAC
    per_op = {str(op).removeprefix("aten."): flops // FLOPS_PER_MAC for op, flops in counts.get(_GLOBAL, {}).items()}
    return MacReport(total=sum(per_op.values()), per_module=per_module, per_op=per_op)
