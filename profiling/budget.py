"""The 50 GMAC budget gate, and fitting a model's views to the budget.

Every student must fit the budget at its declared source resolution, the rule of the AIM
2024 UHD-IQA challenge (Moskalenko et al., ECCVW 2024: 50 GMAC per 3840×2160 photo; the
winners used 43.5 and 44 GMAC). Teachers are exempt. The metric is
:attr:`profiling.report.ProfileReport.macs` (conv + linear + matmul MACs through the views).

Fitting scales every view of a config by one common factor, keeping each view's aspect
ratio, and binary-searches the largest factor that fits: ``resize`` and ``center_crop`` sizes
scale (on the view's own aspect lattice where it has one), a ``fragments`` grid scales (its
patch keeps its native pixels), and a ``full`` view becomes a ``resize`` view of the source's
aspect. A fragments grid moves in whole cells, so the other views then grow into the budget
those jumps leave over. No view grows past what the source can give.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.errors import EdgeIQAError
from profiling.report import ProfileReport, format_size, profile_config

DEFAULT_BUDGET_GMAC = 50.0
GIGA = 1e9
_MIN_SIDE = 8  # ViewConfig's smallest size
_MIN_INPUT_SIDE = 64  # smallest view side a fitted config may get: stride-32 backbones need a few cells


@dataclass(frozen=True)
class BudgetVerdict:
    """How a profiled model stands against a budget (all counts in MACs)."""

    model: str
    source: tuple[int, int]
    macs: int
    budget_macs: int
    costliest_view: str | None
    costliest_view_macs: int | None
    frames: int | None = None  # a burst model's frames per burst; None: one photo

    @property
    def within(self) -> bool:
        return self.macs <= self.budget_macs

    @property
    def over_by(self) -> int:
        """MACs over the budget; negative when there is room to spare."""
        return self.macs - self.budget_macs

    def line(self) -> str:
        """The verdict in one line, for the user."""
        head = f"{self.model} is {self.macs / GIGA:.2f} GMAC at {format_size(self.source)}"
        if self.frames is not None:
            head += f" per burst of {self.frames} frames"
        budget = f"{self.budget_macs / GIGA:g} GMAC budget"
        if self.within:
            return f"{head}, within the {budget} ({-self.over_by / GIGA:.2f} GMAC to spare)"
        costliest = ""
        if self.costliest_view is not None:
            costliest = f"; costliest view {self.costliest_view} ({self.costliest_view_macs / GIGA:.2f} GMAC)"
        return f"{head}, {self.over_by / GIGA:.2f} GMAC over the {budget}{costliest}"


def check_budget(report: ProfileReport, budget_gmac: float = DEFAULT_BUDGET_GMAC) -> BudgetVerdict:
    if budget_gmac <= 0:
        raise EdgeIQAError(f"--budget must be a positive number of GMAC, got {budget_gmac}")
    costliest = report.costliest_view()
    return BudgetVerdict(
        model=report.model, source=report.source, macs=report.macs, budget_macs=round(budget_gmac * GIGA),
        costliest_view=costliest[0] if costliest else None, costliest_view_macs=costliest[1] if costliest else None,
        frames=report.frames,
    )


def ensure_within_budget(config: ModelConfig, allow_over_budget: bool = False,
                         budget_gmac: float = DEFAULT_BUDGET_GMAC) -> BudgetVerdict | None:
    """The training gate: refuse a student over budget at its declared source resolution
    (a burst student: for a burst of its config's T frames).

    Teachers are exempt (returns None without profiling). A student over budget raises
    :class:`EdgeIQAError` unless ``allow_over_budget``, in which case it warns and goes on.
    Returns the verdict so the caller can record it.
    """
    if config.role == "teacher":
        return None
    verdict = check_budget(profile_config(config, config.source_size, fvcore=False, details=False), budget_gmac)
    if verdict.within:
        return verdict
    message = f"student {verdict.line()}"
    if not allow_over_budget:
        raise EdgeIQAError(f"{message}; pass --allow-over-budget or pick smaller views "
                           f"(edge-iqa profile {config.name} --fit)")
    warnings.warn(f"{message}; going on because --allow-over-budget was given", stacklevel=2)
    return verdict


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``size`` × ``scale`` on its exact aspect lattice (e.g. 9:16 × k) when it has a fine one."""
    height, width = size
    step = math.gcd(height, width)
    base_h, base_w = height // step, width // step
    if max(base_h, base_w) <= 64:
        k = max(math.ceil(_MIN_SIDE / min(base_h, base_w)), math.floor(step * scale + 1e-9))
        return (base_h * k, base_w * k)
    return (max(_MIN_SIDE, math.floor(height * scale)), max(_MIN_SIDE, math.floor(width * scale)))


def scale_view(view: ViewConfig, scale: float, source: tuple[int, int]) -> ViewConfig:
    """``view`` with its size (or fragment grid) scaled by ``scale``; ``full`` becomes a resize."""
    if view.kind == "full":
        return ViewConfig("resize", size=_scaled_size(tuple(source), scale))
    if view.kind == "fragments":
        return ViewConfig("fragments", grid=max(1, math.floor(view.grid * scale + 1e-9)), patch=view.patch)
    return ViewConfig(view.kind, size=_scaled_size(view.size, scale))


def _largest_scale(view: ViewConfig, source: tuple[int, int]) -> float:
    """The largest scale at which the view still comes from the source's own pixels."""
    if view.kind == "full":
        return 1.0
    if view.kind == "fragments":
        return (min(source) // view.patch) / view.grid
    return min(source[0] / view.size[0], source[1] / view.size[1])


def _smallest_scale(view: ViewConfig, source: tuple[int, int]) -> float:
    """The scale at which the view's shorter side reaches ``_MIN_INPUT_SIDE`` (never above 1)."""
    side = min(view.output_size(source))
    if view.kind == "fragments":
        return min(1.0, math.ceil(_MIN_INPUT_SIDE / view.patch) / view.grid)
    return min(1.0, _MIN_INPUT_SIDE / side)


def _largest_true(test, low: float, high: float) -> float:
    """The largest scale in [low, high] passing a monotone ``test`` (``test(low)`` holds)."""
    if test(high):
        return high
    while high - low > 2e-3 * high:  # finer than the views' own size steps (e.g. 1/80 for 720x1280)
        middle = (low + high) / 2
        low, high = (middle, high) if test(middle) else (low, middle)
    return low


def fit_to_budget(config: ModelConfig, budget_gmac: float = DEFAULT_BUDGET_GMAC,
                  source: tuple[int, int] | None = None) -> ModelConfig:
    """The config with the largest views (same aspects) whose MACs at ``source`` fit the budget.

    First the largest common scale of all views; then, since a fragments grid only moves in
    whole cells, the other views take the budget those jumps leave over.
    """
    import torch

    from edge_iqa.model import build_model, example_inputs
    from profiling.macs import count_macs

    source = tuple(source or config.source_size)
    budget = budget_gmac * GIGA
    with torch.device("meta"):
        model = build_model(config).eval()  # one branch per view: its weights do not depend on view sizes

    def scaled(scale: float, grid_scale: float) -> ModelConfig:
        return config.replace(views=tuple(
            scale_view(v, grid_scale if v.kind == "fragments" else scale, source) for v in config.views))

    def fits(candidate: ModelConfig) -> bool:
        with torch.device("meta"):
            inputs = example_inputs(candidate, source)
        return count_macs(model, inputs).total <= budget

    high = min(_largest_scale(v, source) for v in config.views)
    low = min(high, max(_smallest_scale(v, source) for v in config.views))
    if not fits(scaled(low, low)):
        raise EdgeIQAError(f"{config.name} does not fit {budget_gmac:g} GMAC even with the smallest views; "
                           f"pick a lighter backbone")
    common = _largest_true(lambda s: fits(scaled(s, s)), low, high)
    scale = common
    kinds = {v.kind for v in config.views}
    if "fragments" in kinds and kinds != {"fragments"}:
        others_high = min(_largest_scale(v, source) for v in config.views if v.kind != "fragments")
        scale = _largest_true(lambda s: fits(scaled(s, common)), common, max(common, others_high))
    return scaled(scale, common).replace(
        name=f"{config.name}-fit",
        source_size=source,
        description=f"{config.name} with views scaled to fit {budget_gmac:g} GMAC at {format_size(source)}",
    )
