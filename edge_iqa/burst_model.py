"""The burst model: a score for every frame of a burst, against the burst's reference frame.

Follows the unified framework of Liang et al., "Burst Image Quality Assessment: A New Benchmark
and Unified Framework for Multiple Downstream Tasks" (2025), on the same timm backbones and
views as the photo model (:class:`edge_iqa.model.BackboneBranches`):

1. Every frame goes through every view's backbone once: the B·T frames of a batch of B bursts
   of T frames are one backbone batch, so the reference frame's features are computed once
   per burst, never once per pair.
2. Each feature level of each branch is one *scale* k; a frame's descriptor at scale k is the
   spatial mean and spread (standard deviation) of its feature map, layer-normalised: x_k.
3. The prompt of frame i (Eq. 3–4) is its relation to the reference r_k = x_k of frame 0,
   broadcast over the burst (never recomputed per frame): the difference r_k − x_k and the product r_k ⊙ x_k, embedded per
   scale (p_k). The frame's own embedding plus its prompt gives z_k (the adapter of Eq. 9).
4. Multi-scale attention (Eq. 10–11): w = softmax(E(P)) over the K scales, with P the prompt
   embeddings of all scales and E a two-layer MLP whose second layer is one per task.
5. A small MLP head per downstream task maps Σ_k w_k z_k to the frame's score (Eq. 12).

Where the paper is silent, chosen here: scales are (branch, level) pairs; the prompt carries
the product beside the difference (the relation its distillation, Eq. 4–8, compares); the
downstream task is a head per task (and a row of attention weights per task), since the
paper's Finding 3 says labels of different tasks barely agree; frame 0 is the reference.

Graph contract (what exporters and scorers rely on):

- inputs: one tensor per view, (B, T, 3, H, W), RGB in [0, 1], the frames of each burst in
  order with the reference first (frame 0); views are those of ``config.views``, applied to
  every frame alike; T ≥ 2 is free at run time (``config.burst.frames`` is what the profiler
  counts).
- ``forward_all_tasks(*views)`` → (B, n_tasks, T) scores in ``config.score_range`` units, task
  rows in the order of ``config.burst.tasks``; :class:`AllTaskScores` wraps it as a module's
  ``forward`` for ``torch.onnx.export`` / ``torch.jit.trace``.
- ``forward(*views)`` → (B, T): the row of the task chosen by name with ``select_task``
  (default: the first task). A scorer reads ``config.burst.tasks`` from the artifact's config
  and picks the row by name (``BurstConfig.task_index``).
- frame 0's score is defined but meaningless (the reference is never removed from a burst);
  losses and metrics leave it out.

There is no Python control flow on tensor values, so the graph traces as is.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import BackboneBranches

SPREAD_EPS = 1e-6  # keeps the spread's gradient finite on constant (e.g. 1×1) maps


def mean_and_spread(feature_map: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, 2C): per-channel spatial mean, then spatial standard deviation."""
    mean = feature_map.mean(dim=(2, 3))
    variance = ((feature_map - mean[:, :, None, None]) ** 2).mean(dim=(2, 3))
    return torch.cat([mean, torch.sqrt(variance + SPREAD_EPS)], dim=1)


class ScaleNorm(nn.Module):
    """A LayerNorm per scale over the concatenated (B·T, Σ 2C_k) descriptors."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.widths = list(widths)
        self.norms = nn.ModuleList(nn.LayerNorm(w) for w in widths)

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        parts = torch.split(descriptors, self.widths, dim=1)
        return torch.cat([norm(part) for norm, part in zip(self.norms, parts)], dim=1)


class TaskHead(nn.Module):
    """Fused relation embedding → hidden layer → one value in score units (Eq. 12)."""

    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)
        nn.init.constant_(self.fc2.bias, 0.5)  # start mid-range: scores are regressed in [0, 1] units

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(fused)))).squeeze(-1)


class BurstHead(nn.Module):
    """Frame descriptors (B·T, D) and each burst's reference descriptor (B, 1, D) → one
    unbounded score per frame and task (B, T, M).

    ``forward``'s first argument is the normalised per-frame descriptor; it is what the
    feature address ``head`` captures for distillation. The reference enters by broadcasting
    over the burst's T frames; it is never recomputed per frame.
    """

    def __init__(self, widths: list[int], config: ModelConfig):
        super().__init__()
        burst = config.burst
        dim = burst.relation_dim
        self.widths = list(widths)
        self.width = sum(widths)
        self.frame_embed = nn.ModuleList(nn.Linear(w, dim) for w in widths)
        self.prompt_embed = nn.ModuleList(nn.Linear(2 * w, dim) for w in widths)
        self.act = nn.ReLU()
        self.encoder = nn.Sequential(nn.Linear(len(widths) * dim, burst.attention_hidden), nn.ReLU())
        self.attention = nn.ModuleList(nn.Linear(burst.attention_hidden, len(widths)) for _ in burst.tasks)
        self.tasks = nn.ModuleList(TaskHead(dim, config.head_hidden, config.head_dropout) for _ in burst.tasks)

    def forward(self, frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        # explicit sizes, no unflatten: ONNX shape inference then knows every shape (the MAC check)
        frames = frames.reshape(reference.shape[0], -1, self.width)  # (B, T, D)
        embedded, prompts = [], []
        for k, (x, r) in enumerate(zip(torch.split(frames, self.widths, 2), torch.split(reference, self.widths, 2))):
            prompt = self.prompt_embed[k](torch.cat([r - x, r * x], dim=2))  # Eq. 3–4, (B, T, d)
            prompts.append(self.act(prompt))
            embedded.append(self.act(self.frame_embed[k](x) + prompt))  # the frame with its prompt (Eq. 9)
        stacked = torch.stack(embedded, dim=2)  # (B, T, K, d)
        encoded = self.encoder(torch.cat(prompts, dim=2))  # E(P), (B, T, hidden)
        scores = []
        for attention, head in zip(self.attention, self.tasks):
            weights = torch.softmax(attention(encoded), dim=2)  # w = softmax(E(P)) over the K scales (Eq. 10–11)
            fused = torch.matmul(weights.unsqueeze(2), stacked).squeeze(2)  # Σ_k w_k z_k, (B, T, d)
            scores.append(head(fused))  # Eq. 12, (B, T)
        return torch.stack(scores, dim=2)


class BurstIQAModel(BackboneBranches):
    """Scores every frame of a burst against its reference (frame 0); see the module docstring."""

    def __init__(self, config: ModelConfig):
        if config.burst is None:
            raise EdgeIQAError(f"model {config.name!r} has no burst config; build it with edge_iqa.model.build_model")
        super().__init__(config)
        widths = [2 * c for c in self.level_channels()]
        self.scale_norm = ScaleNorm(widths)
        self.head = BurstHead(widths, config)
        self.task = 0

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.burst.tasks

    def select_task(self, task: str) -> "BurstIQAModel":
        """Make ``forward`` give the scores of ``task`` (one of ``config.burst.tasks``)."""
        self.task = self.config.burst.task_index(task)
        return self

    def frame_descriptors(self, *views: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) per view → normalised per-frame descriptors (B·T, D), one backbone pass."""
        flat = [view.flatten(0, 1) for view in views]
        pooled = [mean_and_spread(level) for levels in self.feature_maps(*flat) for level in levels]
        return self.scale_norm(torch.cat(pooled, dim=1))

    def forward_all_tasks(self, *views: torch.Tensor) -> torch.Tensor:
        """Scores (B, n_tasks, T) in ``config.score_range`` units; frame 0 is the reference."""
        batch, frames = views[0].shape[:2]
        descriptors = self.frame_descriptors(*views)
        reference = descriptors.reshape(batch, frames, self.head.width)[:, :1]  # once per burst
        scores = self.score_low + self.score_span * self.head(descriptors, reference)  # (B, T, M)
        return scores.transpose(1, 2)

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        """Scores (B, T) of the selected task (``select_task``)."""
        return self.forward_all_tasks(*views)[:, self.task]


class AllTaskScores(nn.Module):
    """``forward(*views)`` = ``model.forward_all_tasks(*views)``: (B, n_tasks, T), for training
    (DistributedDataParallel and ``torch.compile`` wrap a module's ``forward``) and for export."""

    def __init__(self, model: BurstIQAModel):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        return self.model.forward_all_tasks(*views)
