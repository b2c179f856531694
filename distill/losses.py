"""Training losses: small classes in one registry, combined as a weighted sum.

Every loss takes a :class:`LossInputs` and returns a scalar. Scores are in normalised units
([0, 1] over the dataset's score range) so weights transfer between datasets.

Ground-truth terms: MSE, L1; PLCC loss (1 − Pearson, as in Li et al., "Norm-in-Norm Loss with
Faster Convergence and Better Performance for Image Quality Assessment", ACM MM 2020); pairwise
margin ranking; and the fidelity loss of pairwise preference probabilities (Tsai et al.,
"FRank", SIGIR 2007; used for IQA by Zhang et al., "UNIQUE", TIP 2021).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from edge_iqa.errors import EdgeIQAError

LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        LOSSES[name] = cls
        cls.registry_name = name
        return cls

    return add


def get_loss(name: str, **kwargs) -> nn.Module:
    if name not in LOSSES:
        raise EdgeIQAError(f"unknown loss {name!r}; choose from {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**kwargs)


@dataclass
class LossInputs:
    """What one training step gives the losses; distillation fills the teacher fields."""

    pred: torch.Tensor  # (B,) student scores, normalised units
    target: torch.Tensor  # (B,) ground truth (or pseudo-label), normalised units
    teacher_pred: torch.Tensor | None = None  # (B,) teacher scores, normalised units
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)


def _pairwise_sign(values: torch.Tensor) -> torch.Tensor:
    """sign(v_i − v_j) for every pair, (B, B)."""
    return torch.sign(values[:, None] - values[None, :])


def _upper_pairs(batch: int, device: torch.device) -> torch.Tensor:
    return torch.triu(torch.ones(batch, batch, dtype=torch.bool, device=device), diagonal=1)


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + eps)


def margin_rank(pred: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge over ordered pairs: pred must order every pair as target does, by ``margin``."""
    sign = _pairwise_sign(target)
    mask = _upper_pairs(len(pred), pred.device) & (sign != 0)
    if not mask.any():
        return pred.sum() * 0.0
    diff = pred[:, None] - pred[None, :]
    return torch.relu(margin - sign * diff)[mask].mean()


def fidelity(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Fidelity between Thurstone preference probabilities of pred and of target pairs."""
    mask = _upper_pairs(len(pred), pred.device)
    if not mask.any():
        return pred.sum() * 0.0
    normal = torch.distributions.Normal(0.0, 1.0)
    scale = 2.0 ** 0.5 * max(float(pred.detach().std()), 1e-3)
    p = normal.cdf((pred[:, None] - pred[None, :]) / scale)[mask]
    q = (_pairwise_sign(target)[mask] + 1) / 2
    return (1 - torch.sqrt(p * q + eps) - torch.sqrt((1 - p) * (1 - q) + eps)).mean()


@register_loss("mse")
class MSELoss(nn.Module):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return torch.mean((x.pred - x.target) ** 2)


@register_loss("l1")
class L1Loss(nn.Module):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return torch.mean(torch.abs(x.pred - x.target))


@register_loss("plcc")
class PLCCLoss(nn.Module):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return 1.0 - pearson(x.pred, x.target)


@register_loss("rank")
class RankLoss(nn.Module):
    def __init__(self, margin: float = 0.0):
        super().__init__()
        self.margin = margin

    def forward(self, x: LossInputs) -> torch.Tensor:
        return margin_rank(x.pred, x.target, self.margin)


@register_loss("fidelity")
class FidelityLoss(nn.Module):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return fidelity(x.pred, x.target)


class WeightedLoss(nn.Module):
    """Σ weight · loss over named terms; returns the total and each term for logging."""

    def __init__(self, terms: tuple[tuple[str, float], ...]):
        super().__init__()
        if not terms:
            raise EdgeIQAError("no loss terms given; use e.g. --loss mse=1")
        self.weights = dict(terms)
        self.terms = nn.ModuleDict({name: get_loss(name) for name, _ in terms})

    def forward(self, x: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {name: loss(x) for name, loss in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}


def parse_loss_terms(specs: list[str] | tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """``["mse=1", "plcc=0.5"]`` → ``(("mse", 1.0), ("plcc", 0.5))``, checked against the registry."""
    terms = []
    for spec in specs:
        name, _, weight = spec.partition("=")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise EdgeIQAError(f"cannot parse loss {spec!r}; use NAME=WEIGHT, e.g. mse=1") from None
        if name not in LOSSES:
            raise EdgeIQAError(f"unknown loss {name!r}; choose from {', '.join(sorted(LOSSES))}")
        terms.append((name, value))
    return tuple(terms)
