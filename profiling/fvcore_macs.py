"""fvcore's operation count: the second opinion beside :func:`profiling.macs.count_macs`.

fvcore's ``FlopCountAnalysis`` (Meta Research) counts one multiply-add as one "flop", so its
unit is the MAC, but by default it also counts BatchNorm, upsampling and adaptive pooling;
timm's published GMAC columns are these default totals (e.g. 225.4 M for
mobilenetv3_large_100 at 224×224 against 216.6 M of conv + linear MACs). Both are reported:
``total`` (fvcore's default) and ``without_batch_norm`` (the ``batch_norm`` entry taken
out, which equals a ``aten::batch_norm`` handle returning 0; a handle of ``None`` does not
remove it in fvcore 0.1.5 because default handles win).

fvcore traces with the TorchScript tracer, which fails on ``meta`` tensors, so this one runs
the real model on real inputs (CPU time grows with the input size).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FvcoreCount:
    total: int
    without_batch_norm: int
    by_operator: dict[str, int]


def count_fvcore_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> FvcoreCount:
    """fvcore's count of ``model(*inputs)`` with its default op handles."""
    with torch.no_grad(), warnings.catch_warnings():
        # fvcore (and iopath, which it imports) call torch.jit.script, which PyTorch now deprecates
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model.eval(), inputs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_operator = {op: int(n) for op, n in analysis.by_operator().items()}
    total = sum(by_operator.values())
    return FvcoreCount(total=total, without_batch_norm=total - by_operator.get("batch_norm", 0),
                       by_operator=by_operator)
