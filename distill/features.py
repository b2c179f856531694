"""Teacher/student feature pairs, described as data and captured with forward hooks.

As in torchdistill (Matsubara, "torchdistill", ICPR 2021 workshops), a distillation recipe
says *which* feature of the teacher pairs with *which* feature of the student, through which
registered loss and with which weight (:class:`FeaturePair`); forward hooks capture the named
features during the ordinary forward pass, so the models need no distillation code.

Feature addresses name what a hook captures in an :class:`edge_iqa.model.IQAModel`:

- ``head``: the pooled multi-level vector the quality head regresses, (B, D);
- ``branches.B.levelL``: feature level L of branch (view) B, a (B, C, H, W) map;
- any other module path (``branches.0.blocks.3``): that module's output tensor.

Teachers and students differ in channels, resolution and views. Maps are therefore average-
pooled to one common ``grid`` × ``grid`` before a loss sees them (``grid`` 0: global average,
a vector), and losses learn the channel projection. Training views are mirrored at random
while the teacher's outputs are cached once on its deterministic evaluation views, so pooled
maps are averaged with their left-right mirror on both sides: the loss compares the mirror-
symmetric part of each map, which a flip does not change.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from distill.losses import LOSSES, is_feature_loss
from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError

DEFAULT_GRID = 4
_LEVEL = re.compile(r"^branches\.(\d+)\.level(\d+)$")


@dataclass(frozen=True)
class FeaturePair:
    """One distillation term over features: ``loss`` between ``student`` and ``teacher``.

    ``weight`` scales the pair inside its loss term (the term's own weight comes from
    ``--loss NAME=WEIGHT``); ``grid`` is the side maps are pooled to (0: a vector).
    """

    loss: str
    student: str
    teacher: str
    weight: float = 1.0
    grid: int = DEFAULT_GRID

    def __post_init__(self) -> None:
        if not is_feature_loss(self.loss):
            features = sorted(n for n in LOSSES if is_feature_loss(n))
            raise EdgeIQAError(f"feature pair loss {self.loss!r} is not a feature loss; choose from {', '.join(features)}")
        if not (math.isfinite(self.weight) and self.weight >= 0) or self.grid < 0:
            raise EdgeIQAError(f"feature pair {self.spec()}: need weight >= 0 and grid >= 0")

    @property
    def key(self) -> str:
        """The pair's name in ``LossInputs.student_features`` / ``teacher_features``."""
        return f"{self.loss}:{self.student}->{self.teacher}@{self.grid}"

    @property
    def teacher_key(self) -> str:
        """The teacher output the cache must hold for this pair."""
        return f"{self.teacher}@{self.grid}"

    def spec(self) -> str:
        return f"{self.loss}:{self.student}:{self.teacher}:{self.weight:g}:{self.grid}"

    @classmethod
    def parse(cls, text: str) -> "FeaturePair":
        """``LOSS:STUDENT:TEACHER[:WEIGHT[:GRID]]``, e.g. ``hint:branches.0.level4:branches.0.level4:1:4``."""
        parts = text.strip().split(":")
        if not 3 <= len(parts) <= 5 or not all(parts[:3]):
            raise EdgeIQAError(f"cannot parse feature pair {text!r}; use LOSS:STUDENT:TEACHER[:WEIGHT[:GRID]], "
                               "e.g. hint:branches.0.level4:branches.0.level4")
        try:
            weight = float(parts[3]) if len(parts) > 3 else 1.0
            grid = int(parts[4]) if len(parts) > 4 else DEFAULT_GRID
        except ValueError:
            raise EdgeIQAError(f"cannot parse feature pair {text!r}: WEIGHT must be a number, GRID an integer") from None
        return cls(parts[0], parts[1], parts[2], weight, grid)


def default_pairs(loss: str, student: ModelConfig, teacher: ModelConfig) -> list[FeaturePair]:
    """The pairs a feature loss uses when the user names none.

    ``head`` losses pair the two head vectors. ``maps`` losses pair the deepest level of every
    student branch with the deepest level of the teacher branch of the same view kind (else
    its first branch), pooled to the fragments grid when either view is a fragments mosaic (its
    cells then line up with the photo's cells) and to :data:`DEFAULT_GRID` otherwise. Weights
    are 1/len(pairs), so a term's weight is the mean over its pairs.
    """
    if LOSSES[loss].default_pairs == "head":
        return [FeaturePair(loss, "head", "head", 1.0, 0)]
    s_level, t_level = max(student.feature_levels), max(teacher.feature_levels)
    pairs = []
    for b, view in enumerate(student.views):
        same = [i for i, t in enumerate(teacher.views) if t.kind == view.kind]
        t_branch = same[0] if same else 0
        grids = [v.grid for v in (view, teacher.views[t_branch]) if v.kind == "fragments"]
        grid = grids[0] if grids else DEFAULT_GRID
        pairs.append((f"branches.{b}.level{s_level}", f"branches.{t_branch}.level{t_level}", grid))
    return [FeaturePair(loss, s, t, 1.0 / len(pairs), g) for s, t, g in pairs]


def compact(feature: torch.Tensor, grid: int) -> torch.Tensor:
    """A captured feature in the form losses compare: maps pooled to ``grid``² and mirror-averaged
    (``grid`` 0: global average); vectors unchanged."""
    if feature.dim() == 2:
        return feature
    if feature.dim() != 4:
        raise EdgeIQAError(f"cannot pool a feature of shape {tuple(feature.shape)}; address a (B, C) or (B, C, H, W) output")
    if grid == 0:
        return feature.mean(dim=(2, 3))
    pooled = F.adaptive_avg_pool2d(feature, grid)
    return (pooled + pooled.flip(-1)) / 2


class FeatureCapture:
    """Forward hooks that keep the latest output of each named feature of a model.

    ``features`` maps address → tensor after each forward; ``remove()`` takes the hooks off.
    With ``only_training`` the hooks keep nothing while the model is in eval mode, so
    validation passes do not hold on to tensors.
    """

    def __init__(self, model: nn.Module, addresses: Iterable[str], only_training: bool = False):
        self.features: dict[str, torch.Tensor] = {}
        self.handles = []
        self.only_training = only_training
        for address in dict.fromkeys(addresses):
            module, pick = _locate(model, address)
            self.handles.append(module.register_forward_hook(self._hook(address, pick)))

    def _hook(self, address: str, pick):
        def keep(module: nn.Module, args, output) -> None:
            if self.only_training and not module.training:
                return
            self.features[address] = pick(args, output)

        return keep

    def clear(self) -> None:
        self.features.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _locate(model: nn.Module, address: str):
    """(module to hook, function of (args, output) giving the feature) for an address."""
    if address == "head":
        return model.head, lambda args, output: args[0]
    match = _LEVEL.match(address)
    if match:
        branch, level = int(match.group(1)), int(match.group(2))
        levels = model.config.feature_levels
        if branch >= len(model.branches) or level not in levels:
            raise EdgeIQAError(f"{model.config.name} has no feature {address!r}: it has branches 0-"
                               f"{len(model.branches) - 1} and levels {', '.join(map(str, levels))}")
        index = levels.index(level)
        return model.branches[branch], lambda args, output: output[index]
    try:
        module = model.get_submodule(address)
    except AttributeError:
        raise EdgeIQAError(f"{model.config.name} has no feature {address!r}; use head, branches.B.levelL "
                           "or a module path of the model") from None

    def pick(args, output):
        if not isinstance(output, torch.Tensor):
            raise EdgeIQAError(f"{address!r} outputs {type(output).__name__}, not a tensor; address a tensor output")
        return output

    return module, pick


def feature_shapes(config: ModelConfig, specs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, ...]]:
    """Per-sample shapes of the compacted features (address, grid) of a model built from
    ``config``, from one forward pass on the meta device (no memory, no compute)."""
    from edge_iqa.model import build_model, example_inputs

    specs = list(dict.fromkeys(specs))
    with torch.device("meta"):
        model = build_model(config).eval()
        inputs = example_inputs(config, batch=2)
    capture = FeatureCapture(model, (address for address, _ in specs))
    try:
        with torch.no_grad():
            model(*inputs)
        return {(a, g): tuple(compact(capture.features[a], g).shape[1:]) for a, g in specs}
    finally:
        capture.remove()
