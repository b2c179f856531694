"""The quality model: one timm backbone per view, multi-level pooled features, an MLP head.

Each branch is ``timm.create_model(backbone, features_only=True, out_indices=levels)``
(Wightman, "PyTorch Image Models"), so the same code serves MobileNetV3 (Howard et al., ICCV
2019), GhostNet (Han et al., CVPR 2020), GhostNetV2 and any timm teacher. Global-average-pooled
features of several stages are concatenated over branches and regressed to one score, the
multi-level design of light IQA heads such as MobileIQA (Chen et al., 2024).

``forward(*views)`` takes one RGB tensor in [0, 1] per view and returns a (B,) score; it has no
Python control flow on tensor values, so it traces and exports to ONNX and CoreML as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError

if TYPE_CHECKING:
    from edge_iqa.pretrained import WeightSource


def create_backbone(config: ModelConfig) -> nn.Module:
    import timm

    try:
        return timm.create_model(
            config.backbone, pretrained=False, features_only=True, out_indices=config.feature_levels
        )
    except (RuntimeError, ValueError, IndexError, AssertionError) as err:
        raise EdgeIQAError(
            f"timm backbone {config.backbone!r} cannot give feature levels {config.feature_levels}: {err}"
        ) from None


class QualityHead(nn.Module):
    """Pooled multi-level features → hidden layer → one value in [0, 1] units of the score range.

    ``bounded`` (``ModelConfig.score_bound == "sigmoid"``, every version-3 photo config): the value
    goes through a sigmoid, so the score stays inside ``score_range`` whatever the input (an
    unbounded head extrapolates: a distilled student scored -1.28 on [0, 1]). A sigmoid is
    monotonic, so it changes no rank (SRCC) of the scores it keeps in range; it adds no weight, so
    the state dicts of both heads are alike. Unbounded: the head of configs before version 3.
    """

    def __init__(self, in_features: int, hidden: int, dropout: float, bounded: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)
        # start mid-range: sigmoid(0) = 0.5; unbounded, 0.5 itself (scores are regressed in [0, 1] units)
        nn.init.constant_(self.fc2.bias, 0.0 if bounded else 0.5)
        self.bound = nn.Sigmoid() if bounded else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.bound(self.fc2(self.drop(self.act(self.fc1(features))))).squeeze(-1)


class BackboneBranches(nn.Module):
    """What every edge-iqa model shares: one timm backbone per view (``branches``), the input
    normalisation inside the model, and the score range. :class:`IQAModel` and the burst model
    (``edge_iqa.burst_model``) add their heads on top."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.branches = nn.ModuleList(create_backbone(config) for _ in config.views)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        low, high = config.score_range
        self.register_buffer("score_low", torch.tensor(float(low)), persistent=False)
        self.register_buffer("score_span", torch.tensor(float(high - low)), persistent=False)

    def level_channels(self) -> list[int]:
        """Channels of every feature level of every branch, in ``feature_maps`` order."""
        return [c for branch in self.branches for c in branch.feature_info.channels()]

    def feature_maps(self, *views: torch.Tensor) -> list[list[torch.Tensor]]:
        """Multi-scale feature maps of every branch: ``[branch][level]`` tensors (B, C, H, W)."""
        return [branch((view - self.mean) / self.std) for branch, view in zip(self.branches, views)]


class IQAModel(BackboneBranches):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.head = QualityHead(sum(self.level_channels()), config.head_hidden, config.head_dropout,
                                bounded=config.score_bound == "sigmoid")

    def head_features(self, *views: torch.Tensor) -> torch.Tensor:
        """The (B, D) vector the head regresses: pooled features of every level and branch."""
        pooled = [level.mean(dim=(2, 3)) for levels in self.feature_maps(*views) for level in levels]
        return torch.cat(pooled, dim=1)

    def forward_head(self, head_features: torch.Tensor) -> torch.Tensor:
        """Head features → score in ``config.score_range`` units (B,)."""
        return self.score_low + self.score_span * self.head(head_features)

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.head_features(*views))


def build_model(config: ModelConfig, weights: "str | Path | WeightSource | None" = None) -> IQAModel:
    """A model for ``config`` (a burst model when ``config.burst`` is set).

    ``weights``: the initial backbone weights of every branch, a local timm state dict file or a
    :class:`edge_iqa.pretrained.WeightSource` (random init included), recorded in the model's
    ``config.extra["init_weights"]``; None leaves the config's own record as it is (a
    checkpoint being loaded).
    """
    from edge_iqa.pretrained import WeightSource, file_source, with_weight_source

    if isinstance(weights, (str, Path)):
        weights = file_source(weights, "--weights")
    if weights is not None:
        config = with_weight_source(config, weights)
    if config.burst is not None:
        from edge_iqa.burst_model import BurstIQAModel

        model = BurstIQAModel(config)
    elif config.head == "nima":
        from edge_iqa.nima import NIMAModel

        model = NIMAModel(config)
    else:
        model = IQAModel(config)
    if isinstance(weights, WeightSource) and weights.kind != "random":
        load_backbone_weights(model, weights.path)
    return model


def load_backbone_weights(model: IQAModel, weights: str | Path) -> None:
    """Load a local timm state dict (no download) into every branch. Every tensor of the
    backbone must be in the file with its shape: a file for another model is refused, never
    loaded in part. Classifier and head tensors of the file are ignored."""
    from edge_iqa.pretrained import read_state_dict

    path = Path(weights)
    if not path.is_file():
        raise EdgeIQAError(f"{path}: backbone weights file not found")
    state = read_state_dict(path)
    for branch in model.branches:
        own = {k: v for k, v in branch.state_dict().items() if not k.endswith("num_batches_tracked")}
        matched = {k: state[k] for k, v in own.items()
                   if k in state and isinstance(state[k], torch.Tensor) and state[k].shape == v.shape}
        if len(matched) < len(own):
            missing = next(k for k in own if k not in matched)
            raise EdgeIQAError(f"{path}: {len(own) - len(matched)} of the {len(own)} tensors of the "
                               f"{model.config.backbone} backbone are missing or of another shape (e.g. {missing}); "
                               "weights for another model?")
        branch.load_state_dict(matched, strict=False)


def example_inputs(config: ModelConfig, source: tuple[int, int] | None = None, batch: int = 1,
                   frames: int | None = None) -> tuple[torch.Tensor, ...]:
    """Random inputs of the exact shapes the views give for a (height, width) source:
    (batch, 3, H, W) per view, or (batch, T, 3, H, W) for a burst model (T = ``frames``,
    default ``config.burst.frames``)."""
    source = source or config.source_size
    lead = (batch,) if config.burst is None else (batch, frames or config.burst.frames)
    return tuple(torch.rand(*lead, 3, *view.output_size(source)) for view in config.views)
