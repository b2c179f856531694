"""Bursts for training: whole bursts as dataset items, their losses' inputs, their validation.

What ``distill.trainer`` and ``distill.distiller`` need to train a burst model
(``edge_iqa.burst_model``) with the same loop as a photo model:

- :func:`load_burst_train_data` reads a burst dataset (``read_burst_manifest``). A frame's
  target for task m is its manifest column ``score_<m>``, normalised over the dataset's
  ``score_range`` like ``score``. The reference frame is the one whose ``reference`` column is
  true (1/true/yes); a burst without one takes its lowest frame index. The reference always
  becomes frame 0 and gets no target (NaN): it is left out of every loss and metric.
- :class:`BurstDataset` yields one whole burst: for each view a (T, 3, H, W) tensor, the
  targets (tasks, T) and the burst's index. Training draws one set of random crop offsets and
  one mirror decision per burst and applies them to all its frames, so frames stay comparable
  with their reference. :func:`collate_bursts` pads a batch to its longest burst (padding
  repeats frame 0 and has NaN targets), so a batch holds whole bursts of any length.
- :func:`burst_loss_inputs` turns (bursts, tasks, T) scores into ``LossInputs.bursts``.
- :func:`evaluate_bursts` scores a split and gives the burst metrics per task
  (``edge_iqa.metrics.burst_metrics``: R0 … R0.1 = mean per-burst SRCC with ties, and the
  within-burst pairwise accuracy) and ``r0``, their mean R0 over tasks, which picks ``best.pt``.
- :func:`run_burst_teacher` runs a burst teacher once over whole bursts, for the teacher cache.

A frame that fails to decode is reported once and left out (its place holds a copy of the
reference, with no target); a burst whose reference fails is dropped from its batch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from distill.losses import LossInputs
from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.data.loader import load_views
from edge_iqa.data.manifest import BurstFrame, read_burst_manifest, read_dataset_info
from edge_iqa.errors import DatasetError, EdgeIQAError, ImageError
from edge_iqa.metrics import burst_metrics, pairwise_accuracy_from_scores

log = logging.getLogger("edge_iqa.data")
TRUE_FLAGS = ("1", "true", "yes", "y")
VALIDATION_METRIC = "r0"


@dataclass
class BurstSplit:
    """The bursts of one split: frame paths (reference first), normalised targets
    (tasks, T) with NaN for the reference, and the sequence names."""

    names: list[str]
    paths: list[list[str]]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class BurstTrainData:
    train: BurstSplit
    val: BurstSplit
    test: BurstSplit | None
    score_range: tuple[float, float]
    name: str
    tasks: tuple[str, ...]


def is_reference(frame: BurstFrame) -> bool:
    return (frame.extra.get("reference") or "").strip().lower() in TRUE_FLAGS


def _task_target(root: Path, sequence: str, frame: BurstFrame, task: str) -> float:
    text = (frame.extra.get(f"score_{task}") or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{root}: sequence {sequence!r} frame {frame.frame} has score_{task} {text!r}; "
                           "give every non-reference frame a finite score for each task")
    return value


def burst_split(root: Path, sequences: dict[str, list[BurstFrame]], tasks: Sequence[str],
                score_range: tuple[float, float]) -> BurstSplit:
    """Bursts with the reference moved to frame 0 and targets normalised; bursts of fewer
    than two frames are left out with a warning."""
    low, high = score_range
    split = BurstSplit([], [], [])
    for name, frames in sequences.items():
        references = [f for f in frames if is_reference(f)]
        if len(references) > 1:
            raise DatasetError(f"{root}: sequence {name!r} marks frames {[f.frame for f in references]} as the "
                               "reference; mark exactly one")
        if len(frames) < 2:
            log.warning("%s: sequence %r has %d frame; a burst needs a reference and another frame, left out",
                        root, name, len(frames))
            continue
        reference = references[0] if references else frames[0]
        ordered = [reference] + [f for f in frames if f is not reference]
        targets = np.full((len(tasks), len(ordered)), np.nan)
        for t, frame in enumerate(ordered[1:], start=1):
            for m, task in enumerate(tasks):
                targets[m, t] = (_task_target(root, name, frame, task) - low) / (high - low)
        split.names.append(name)
        split.paths.append([str(f.path) for f in ordered])
        split.targets.append(targets)
    return split


def load_burst_train_data(root: str | Path, tasks: Sequence[str]) -> BurstTrainData:
    """The train/val/test bursts of a burst dataset, with targets for ``tasks``."""
    root = Path(root)
    info = read_dataset_info(root)
    sequences = read_burst_manifest(root)
    columns = {key for frames in sequences.values() for f in frames for key in f.extra}
    missing = [t for t in tasks if f"score_{t}" not in columns]
    if missing:
        present = sorted(c.removeprefix("score_") for c in columns if c.startswith("score_"))
        raise DatasetError(f"{root}/manifest.csv has no score_{missing[0]} column for the model's task {missing[0]!r} "
                           f"(tasks in the data: {', '.join(present) or 'none'}); pick them with --task")
    splits = {}
    for name in ("train", "val", "test"):
        chosen = {s: frames for s, frames in sequences.items() if frames[0].split == name}
        splits[name] = burst_split(root, chosen, tasks, info.score_range)
    for name in ("train", "val"):
        if len(splits[name]) < 1:
            raise DatasetError(f"{root}: the {name} split has no burst of two or more frames; need at least one")
    for m, task in enumerate(tasks):
        if not any(t.shape[1] > 2 and np.ptp(t[m, 1:]) > 0 for t in splits["val"].targets):
            raise DatasetError(f"{root}: no val burst has two non-reference frames of different score_{task}; "
                               "validation R0 would be undefined")
    return BurstTrainData(splits["train"], splits["val"], splits["test"] if len(splits["test"]) else None,
                          info.score_range, info.name, tuple(tasks))


class BurstDataset(Dataset):
    """One item per burst: (views, targets, index); see the module docstring."""

    def __init__(self, split: BurstSplit, views: Sequence[ViewConfig], train: bool = False, seed: int = 0):
        self.split = split
        self.views = tuple(views)
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def _frame(self, path: str, index: int) -> list[np.ndarray]:
        # the same seed for every frame of a burst: the same crop offsets for all of them
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.train else None
        return load_views(path, self.views, rng)

    def __getitem__(self, index: int):
        paths = self.split.paths[index]
        targets = torch.tensor(self.split.targets[index], dtype=torch.float32)
        try:
            reference = self._frame(paths[0], index)
        except ImageError as err:
            log.warning("skipped burst %s: its reference frame failed: %s", self.split.names[index], err)
            return None
        frames = [reference]
        for t, path in enumerate(paths[1:], start=1):
            try:
                frames.append(self._frame(path, index))
            except ImageError as err:
                log.warning("left out a frame of burst %s: %s", self.split.names[index], err)
                frames.append(reference)
                targets[:, t] = math.nan
        mirror = self.train and np.random.default_rng((self.seed, self.epoch, index, 1)).random() < 0.5
        views = []
        for v in range(len(self.views)):
            stacked = np.stack([frame[v] for frame in frames])
            views.append(torch.from_numpy(np.ascontiguousarray(stacked[..., ::-1] if mirror else stacked)))
        return tuple(views), targets, index


def collate_bursts(items):
    """Stack whole bursts, padded to the longest (padding: frame 0 repeated, NaN targets);
    bursts that failed (``None``) are dropped."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    longest = max(item[1].shape[1] for item in items)
    views, targets = [], []
    for item_views, item_targets, _ in items:
        pad = longest - item_targets.shape[1]
        views.append([torch.cat([v, v[:1].expand(pad, *v.shape[1:])]) if pad else v for v in item_views])
        targets.append(torch.cat([item_targets, item_targets.new_full((item_targets.shape[0], pad), math.nan)], 1))
    return (tuple(torch.stack(group) for group in zip(*views)), torch.stack(targets),
            torch.tensor([item[2] for item in items]))


def frame_mask(targets: torch.Tensor) -> torch.Tensor:
    """(bursts, tasks, T) targets → (bursts, T): the frames with a target for every task."""
    return torch.isfinite(targets).all(dim=1)


def burst_loss_inputs(pred: torch.Tensor, targets: torch.Tensor) -> LossInputs:
    """Normalised (bursts, tasks, T) scores and targets → ``LossInputs.bursts``."""
    mask = frame_mask(targets)
    return LossInputs.bursts(pred, targets.nan_to_num(0.0), mask)


def burst_loader(split: BurstSplit, config: ModelConfig, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(BurstDataset(split, config.views), batch_size=batch_size, num_workers=num_workers,
                      collate_fn=collate_bursts)


@torch.no_grad()
def predict_bursts(model: torch.nn.Module, split: BurstSplit, device: torch.device, batch_size: int,
                   num_workers: int) -> list[np.ndarray | None]:
    """Each burst's normalised scores (tasks, T) from ``model.forward_all_tasks``; None where
    its reference could not be read."""
    model = model.to(device).eval()
    low, span = float(model.score_low), float(model.score_span)
    out: list[np.ndarray | None] = [None] * len(split)
    for batch in burst_loader(split, model.config, batch_size, num_workers):
        if batch is None:
            continue
        views, _, indices = batch
        scores = model.forward_all_tasks(*(v.to(device) for v in views)).float().cpu().numpy()
        for row, index in enumerate(indices.tolist()):
            out[index] = (scores[row, :, :len(split.paths[index])] - low) / span
    return out


def evaluate_bursts(model: torch.nn.Module, split: BurstSplit, device: torch.device, batch_size: int,
                    num_workers: int) -> dict[str, Any]:
    """Burst metrics of ``model`` on ``split`` per task, and ``r0`` = their mean R0.

    Reference frames and frames without a target are left out; scores and targets are in
    normalised units, the units the metrics' thresholds (0.02 … 0.1) assume.
    """
    predictions = predict_bursts(model, split, device, batch_size, num_workers)
    tasks = model.config.burst.tasks
    per_task: dict[str, Any] = {}
    for m, task in enumerate(tasks):
        pred, target, sequence = [], [], []
        for index, (scores, targets) in enumerate(zip(predictions, split.targets)):
            if scores is None:
                continue
            keep = np.isfinite(targets).all(axis=0)
            pred += scores[m][keep].tolist()
            target += targets[m][keep].tolist()
            sequence += [index] * int(keep.sum())
        if len(pred) < 2:
            raise EdgeIQAError("fewer than 2 frames of the split could be scored")
        metrics = burst_metrics(pred, target, sequence)
        metrics["pairwise_accuracy"] = pairwise_accuracy_from_scores(pred, target, sequence)
        per_task[task] = metrics
    r0 = [per_task[t]["srcc_r0"] for t in tasks]
    return {VALIDATION_METRIC: float(np.nanmean(r0)) if not all(math.isnan(v) for v in r0) else math.nan,
            "tasks": per_task, "n_bursts": sum(p is not None for p in predictions)}


@torch.no_grad()
def run_burst_teacher(model: torch.nn.Module, bursts: Sequence[Sequence[str]], specs: Sequence[tuple[str, int]],
                      device: torch.device | str, batch_size: int, num_workers: int, progress: bool):
    """A burst teacher's normalised scores (frames, teacher tasks) and compacted features, one
    row per frame of ``bursts`` (in order); rows of frames it could not read are NaN / zero."""
    from tqdm import tqdm

    from distill.features import FeatureCapture, compact
    from distill.teacher import TeacherOutputs, image_key

    device = torch.device(device)
    model = model.to(device).eval()
    low, span = float(model.score_low), float(model.score_span)
    split = BurstSplit([str(i) for i in range(len(bursts))], [list(b) for b in bursts],
                       [np.zeros((1, len(b))) for b in bursts])
    starts = np.cumsum([0] + [len(b) for b in bursts])
    scores = torch.full((int(starts[-1]), len(model.config.burst.tasks)), math.nan)
    features: dict[str, torch.Tensor] = {}
    capture = FeatureCapture(model, (address for address, _ in specs))
    bar = tqdm(total=len(bursts), unit="burst", desc="teacher", disable=not progress, leave=False)
    try:
        for batch in burst_loader(split, model.config, batch_size, num_workers):
            if batch is None:
                continue
            views, targets, indices = batch
            inputs = [v.to(device) for v in views]
            bar.update(len(indices))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = model.forward_all_tasks(*inputs).float().cpu()
            frames = out.shape[2]
            kept = torch.isfinite(targets[:, 0])  # placeholder targets: NaN marks a frame that failed to decode
            for row, index in enumerate(indices.tolist()):
                length = len(bursts[index])
                rows = torch.arange(int(starts[index]), int(starts[index]) + length)
                good = kept[row, :length]
                scores[rows[good]] = ((out[row, :, :length].T - low) / span)[good]
            for address, grid in specs:
                value = compact(capture.features[address].float(), grid).cpu().half()
                value = value.reshape(len(indices), frames, *value.shape[1:])
                key = f"{address}@{grid}"
                if key not in features:
                    features[key] = torch.zeros((int(starts[-1]), *value.shape[2:]), dtype=torch.float16)
                for row, index in enumerate(indices.tolist()):
                    length = len(bursts[index])
                    features[key][int(starts[index]):int(starts[index]) + length] = value[row, :length]
    finally:
        capture.remove()
        bar.close()
    return TeacherOutputs([image_key(p) for b in bursts for p in b], scores, features)


def burst_rows(outputs, bursts: Sequence[Sequence[str]]) -> torch.Tensor:
    """(bursts, longest) rows of each burst's frames in ``outputs`` (−1 past a burst's end)."""
    longest = max(len(b) for b in bursts)
    rows = torch.full((len(bursts), longest), -1, dtype=torch.long)
    for i, burst in enumerate(bursts):
        rows[i, :len(burst)] = outputs.rows(burst)
    return rows
