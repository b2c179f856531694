"""Everything the profiler measures for one model, through its views, for one source.

A model config is profiled as it runs: the model is built from the config (random init)
and fed tensors of the exact sizes its views give for the source photo
(:func:`edge_iqa.model.example_inputs`), so every branch is counted at its real input
size. Scaling by a pixel ratio would be wrong: 2160 is not a multiple of 32 and heads do
not scale. Counting runs on the ``meta`` device (shapes only), so a 4K profile is instant;
fvcore's second opinion needs real tensors and runs on the CPU.

Per view = MACs of that view's backbone branch; ``head_macs`` = everything outside the
branches (the quality head); the two add up to ``macs``.

A burst model (``config.burst``) is counted per burst: each view's input is (1, T, 3, H, W)
for T frames (default ``config.burst.frames``), so a branch counts all T frames, and the
reference frame, whose features the model computes once, is counted once.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from profiling.fvcore_macs import count_fvcore_macs
from profiling.macs import count_macs
from profiling.memory import peak_activation_bytes
from profiling.other_ops import count_other_ops


@dataclass(frozen=True)
class ProfileReport:
    """MACs (the budget metric) and the figures beside it, for one model and source.

    source: (height, width) of the photo. view_sizes: (height, width) each view feeds its
    branch. macs, per_view, head_macs, per_module: conv + linear + matmul MACs.
    other_ops: non-MAC element operations by kind (:mod:`profiling.other_ops`), None when
    not measured. fvcore_macs: fvcore's count without BatchNorm; fvcore_default_macs:
    fvcore's default total (None when fvcore was not run). onnx_macs: MACs of an ONNX export
    of the same model (:mod:`profiling.onnx_macs`), when checked. counted_from: "pytorch" or
    "onnx" (an ONNX file: no views, modules or PyTorch-only figures).
    """

    model: str
    role: str | None
    source: tuple[int, int]
    view_sizes: dict[str, tuple[int, int]]
    macs: int
    per_view: dict[str, int]
    head_macs: int
    per_module: dict[str, int]
    params: int
    other_ops: dict[str, int] | None = None
    uncounted_ops: tuple[str, ...] = ()
    peak_activation_bytes: int | None = None
    fvcore_macs: int | None = None
    fvcore_default_macs: int | None = None
    onnx_macs: int | None = None
    counted_from: str = "pytorch"
    frames: int | None = None  # frames per burst counted (burst models); None: one photo

    def costliest_view(self) -> tuple[str, int] | None:
        if not self.per_view:
            return None
        return max(self.per_view.items(), key=lambda item: item[1])

    def modules_to_depth(self, depth: int) -> dict[str, int]:
        """``per_module`` down to ``depth`` levels below the root; list indices add no level."""
        return {name: macs for name, macs in self.per_module.items() if module_depth(name) <= depth}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["source"] = format_size(self.source)
        data["view_sizes"] = {view: format_size(size) for view, size in self.view_sizes.items()}
        return data


def module_depth(name: str) -> int:
    """``branches.0.conv_stem`` → 2: ModuleList/Sequential indices do not count as a level."""
    return sum(1 for part in name.split(".") if part and not part.isdigit())


def format_size(size: tuple[int, int]) -> str:
    """(height, width) → ``WIDTHxHEIGHT``, the way photo sizes and ``--source`` are written."""
    return f"{size[1]}x{size[0]}"


def format_macs(macs: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(macs) >= scale:
            return f"{macs / scale:.2f} {unit}"
    return f"{macs:.0f}"


def view_names(config: ModelConfig) -> list[str]:
    """One unique name per view: its spec (``resize:720x1280``), numbered when repeated."""
    specs = [view.spec() for view in config.views]
    return [spec if specs.count(spec) == 1 else f"{spec}#{specs[:i + 1].count(spec)}" for i, spec in enumerate(specs)]


def check_views_fit_source(config: ModelConfig, source: tuple[int, int]) -> None:
    """Raise when a view cannot be cut from a (height, width) source (crops and fragments need native pixels)."""
    height, width = source
    if min(height, width) < 8:
        raise EdgeIQAError(f"source {format_size(source)} is too small; give --source WIDTHxHEIGHT, e.g. 3840x2160")
    for view in config.views:
        if view.kind == "center_crop" and (height < view.size[0] or width < view.size[1]):
            raise EdgeIQAError(f"view {view.spec()} of {config.name} needs a source of at least "
                               f"{format_size(view.size)}, got {format_size(source)}")
        if view.kind == "fragments" and min(height, width) // view.grid < view.patch:
            side = view.grid * view.patch
            raise EdgeIQAError(f"view {view.spec()} of {config.name} needs a source of at least "
                               f"{side}x{side}, got {format_size(source)}")


def _measure(model_name: str, role: str | None, source: tuple[int, int], view_sizes: dict[str, tuple[int, int]],
             build: Callable[[], nn.Module], branch_of_view: dict[str, str | None], fvcore: bool,
             details: bool, frames: int | None = None) -> ProfileReport:
    """Count ``build()`` on meta tensors of ``view_sizes`` (a burst of ``frames`` per view when
    given); fvcore on real ones if asked."""
    lead = (1,) if frames is None else (1, frames)

    def inputs() -> tuple[torch.Tensor, ...]:
        return tuple(torch.rand(*lead, 3, *size) for size in view_sizes.values())

    with torch.device("meta"):
        model, meta_inputs = build().eval(), inputs()
    macs = count_macs(model, meta_inputs)
    per_view = {view: macs.module_macs(branch) if branch is not None else macs.total
                for view, branch in branch_of_view.items()}
    report = ProfileReport(
        model=model_name, role=role, source=source, view_sizes=view_sizes, macs=macs.total, per_view=per_view,
        head_macs=macs.total - sum(per_view.values()), per_module=macs.per_module,
        params=sum(p.numel() for p in model.parameters()), frames=frames,
    )
    if details:
        other = count_other_ops(model, meta_inputs)
        report = dataclasses.replace(report, other_ops=other.counts, uncounted_ops=other.uncounted,
                                     peak_activation_bytes=peak_activation_bytes(model, meta_inputs))
    if not fvcore:
        return report
    count = count_fvcore_macs(build().eval(), inputs())
    return dataclasses.replace(report, fvcore_macs=count.without_batch_norm, fvcore_default_macs=count.total)


def profile_config(config: ModelConfig, source: tuple[int, int] | None = None, *, fvcore: bool = True,
                   details: bool = True, frames: int | None = None) -> ProfileReport:
    """Profile the model of ``config`` on its views of a (height, width) source (default: its declared one).

    ``fvcore``: add fvcore's count (a real forward on the CPU). ``details``: add the non-MAC
    op counts and the peak activation memory (two more passes on the meta device).
    ``frames``: the burst length T a burst model is counted for (default ``config.burst.frames``).
    """
    from edge_iqa.model import build_model

    frames = burst_frames(config, frames)
    source = tuple(source or config.source_size)
    check_views_fit_source(config, source)
    names = view_names(config)
    view_sizes = {name: tuple(view.output_size(source)) for name, view in zip(names, config.views)}
    branches = {name: f"branches.{i}" for i, name in enumerate(names)}
    return _measure(config.name, config.role, source, view_sizes, lambda: build_model(config), branches, fvcore,
                    details, frames)


def burst_frames(config: ModelConfig, frames: int | None) -> int | None:
    """The burst length to count: ``frames``, else the burst config's T; None for a photo model."""
    if config.burst is None:
        if frames is not None:
            raise EdgeIQAError(f"--frames counts a burst, but {config.name} is a photo model; drop --frames")
        return None
    frames = config.burst.frames if frames is None else int(frames)
    if frames < 2:
        raise EdgeIQAError(f"--frames must be at least 2 (the reference and one more frame), got {frames}")
    return frames


def profile_timm_classifier(name: str, source: tuple[int, int], *, fvcore: bool = True,
                            details: bool = True) -> ProfileReport:
    """Profile the plain timm classifier ``name`` on one (height, width) input, as papers count it."""
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.7)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise EdgeIQAError(f"unknown timm model {name!r}{hint}")
    views = {"full": tuple(source)}
    return _measure(f"timm:{name}", None, tuple(source), views,
                    lambda: timm.create_model(name, pretrained=False), {"full": None}, fvcore, details)
