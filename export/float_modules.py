"""Stages of a PyTorch model left in float in a CoreML W8A8 package: ``--float-layer`` for CoreML.

Mixed precision by layer-wise sensitivity (Krishnamoorthi, "Quantizing deep convolutional networks
for efficient inference: A whitepaper", arXiv:1806.08342, 2018): the stages whose quantization costs
most agreement with FP32 run in float (FP16 on the device), the rest in INT8. The ONNX and TensorRT
graphs name what stays in float by node (:func:`export.quantize.resolve_float_layers`); coremltools'
``LinearQuantizer`` takes PyTorch module names instead (``module_name_configs={name: None}`` leaves a
module and its children unquantized). So this module names the same stage groups on the PyTorch
model: ``branches.K.blocks.N``, ``branches.K.stem`` (a branch's modules outside its blocks) and
``head``. ``auto`` runs the ONNX path's greedy search (:func:`export.quantize.greedy_float_search`)
on coremltools' fake-quant net in PyTorch, the net the CoreML check simulates, and measures it
against the FP32 model on the calibration images (no labels, never the split the check uses).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

import torch
from torch import nn

from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import example_inputs
from export.formats import FLOAT_TARGET
from export.quantize import MAX_FLOAT_GROUPS, MAX_FLOAT_MAC_SHARE, greedy_float_search


def module_groups(model: nn.Module) -> dict[str, list[str]]:
    """The stage groups of a photo model (``IQAModel``): group name → the module names it holds."""
    groups: dict[str, list[str]] = {}
    for k, branch in enumerate(model.branches):
        blocks = getattr(branch, "blocks", None)
        if blocks is None:
            groups[f"branches.{k}"] = [f"branches.{k}"]
            continue
        stem = [f"branches.{k}.{name}" for name, _ in branch.named_children() if name != "blocks"]
        if stem:
            groups[f"branches.{k}.stem"] = stem
        for name, _ in blocks.named_children():
            groups[f"branches.{k}.blocks.{name}"] = [f"branches.{k}.blocks.{name}"]
    groups["head"] = ["head"]
    return groups


def resolve_float_modules(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Module names selected by ``patterns`` (globs on a stage group or a module path, e.g. ``head``,
    ``branches.0.blocks.4``, ``*.conv_pw``); a pattern that selects nothing is an error. A module
    inside one already chosen is dropped: coremltools leaves a module's children in float with it."""
    groups = module_groups(model)
    names = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [m for g, members in groups.items() if fnmatch.fnmatchcase(g, pattern) for m in members]
        hits += [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise EdgeIQAError(f"--float-layer {pattern!r} matches no stage or module of the model; give a stage "
                               f"({', '.join(list(groups)[:3])}, …) or a PyTorch module path such as 'head'")
        chosen += [h for h in dict.fromkeys(hits) if h not in chosen]
    return [m for m in chosen if not any(m.startswith(other + ".") for other in chosen)]


def group_macs(model: nn.Module, groups: dict[str, list[str]]) -> dict[str, int]:
    """MACs of each stage group at the model's own input size (:func:`profiling.macs.count_macs`)."""
    from profiling.macs import count_macs

    report = count_macs(model, example_inputs(model.config, batch=1))
    return {g: sum(report.module_macs(m) for m in members) for g, members in groups.items()}


def search_float_modules(model: nn.Module, source: nn.Module, batches: Sequence[Sequence[torch.Tensor]], *,
                         method: str, percentile: float, fixed: Sequence[str] = (),
                         target: float = FLOAT_TARGET, max_groups: int = MAX_FLOAT_GROUPS,
                         max_float_mac_share: float = MAX_FLOAT_MAC_SHARE) -> tuple[list[str], dict[str, Any]]:
    """``--float-layer auto`` for CoreML W8A8: the module names to leave in float, and the search's record.

    ``model``: the FP32 model the agreement is measured against; ``source``: the net calibrated (the
    model, or its AdaRound copy); ``fixed``: modules already in float (explicit ``--float-layer``).
    Each trial calibrates ``source`` with :func:`export.coreml.calibrate_w8a8` on ``batches``.
    """
    from edge_iqa.metrics import srcc
    from export.coreml import calibrate_w8a8

    groups = module_groups(model)
    free = {g: members for g, members in groups.items() if not any(m in fixed for m in members)}

    def scores(net: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([net(*views).reshape(-1) for views in batches])

    reference = scores(model.eval())

    def agreement(chosen: list[str]) -> float:
        modules = [*fixed, *(m for g in chosen for m in free[g])]
        net, _ = calibrate_w8a8(source, batches, method=method, percentile=percentile, float_modules=modules)
        return float(srcc(scores(net).numpy(), reference.numpy()))

    record = greedy_float_search(list(free), group_macs(model, groups), agreement, target=target, max_groups=max_groups,
                                 max_float_mac_share=max_float_mac_share)
    found = [m for g in record["groups"] for m in free[g]]
    return found, {**record, "images": sum(int(views[0].shape[0]) for views in batches),
                   "scored_as": "coremltools' fake-quant W8A8 net in PyTorch against the FP32 model"}
