"""Teacher → student distillation: one call from a teacher and a student preset to a run.

:func:`distill` runs the teacher once over the training images (and over unlabeled images,
whose teacher scores become pseudo-labels), then trains the student with the shared trainer
(``distill.trainer.train``) and a :class:`Distiller` step hook that adds, to every batch, the
cached teacher scores and features and the student features its forward hooks captured.
The loss is the weighted sum of registered terms named by ``--loss``: ground-truth terms,
``kd_*`` score terms and feature terms, the latter expanded into one loss per
:class:`distill.features.FeaturePair` with its own learned projection.

A burst student (``config.burst``) learns from a burst teacher run once over whole bursts;
the teacher's per-frame scores of the student's tasks and its per-frame features reach the
losses as (bursts, tasks, T) and (bursts, T, ...) tensors, of which the losses keep the
frames that count (``LossInputs.bursts``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from distill.features import FeatureCapture, FeaturePair, compact, default_pairs, feature_shapes
from distill.burst_data import burst_rows, load_burst_train_data
from distill.losses import LossInputs, burst_frames, get_loss, is_feature_loss, needs_teacher
from distill.teacher import TeacherOutputs, image_key, load_teacher, teacher_outputs
from distill.trainer import SplitData, TrainConfig, TrainData, init_distributed, load_train_data, resolve_device, train
from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import IQAModel

log = logging.getLogger("edge_iqa.distill")


class PairTerm(nn.Module):
    """One feature-loss term of the weighted sum: Σ pair.weight · loss(pair)."""

    def __init__(self, pairs: Sequence[FeaturePair], losses: Sequence[nn.Module]):
        super().__init__()
        self.weights = [p.weight for p in pairs]
        self.losses = nn.ModuleList(losses)

    def forward(self, x: LossInputs) -> torch.Tensor:
        return sum(w * loss(x) for w, loss in zip(self.weights, self.losses))


class Distiller:
    """The trainer's step hook for distillation (``distill.trainer.StepHook``)."""

    def __init__(self, outputs: TeacherOutputs, terms: Sequence[tuple[str, float]], pairs: Sequence[FeaturePair],
                 task_columns: Sequence[int] | None = None):
        self.outputs = outputs
        self.terms = tuple(terms)
        self.pairs = tuple(pairs)
        self.task_columns = None if task_columns is None else list(task_columns)  # bursts: teacher column per task
        self.loss_modules: dict[str, nn.Module] = {}
        self.rows: torch.Tensor | None = None
        self.capture: FeatureCapture | None = None

    def bind(self, paths: Sequence[str]) -> None:
        if self.task_columns is not None:  # bursts: one row of frame rows per burst
            self.rows, paths = burst_rows(self.outputs, paths), [p for burst in paths for p in burst]
        else:
            self.rows = self.outputs.rows(paths)
        if any(needs_teacher(name) for name, _ in self.terms):
            missing = self.outputs.missing(paths)
            if missing:
                raise EdgeIQAError(f"the teacher has no score for {len(missing)} training image(s), e.g. {missing[0]}; "
                                   "give a teacher that covers every training image")

    def prepare(self, student: IQAModel) -> list[nn.Module]:
        shapes = feature_shapes(student.config, [(p.student, p.grid) for p in self.pairs])
        for name, _ in self.terms:
            pairs = [p for p in self.pairs if p.loss == name]
            if not is_feature_loss(name):
                continue
            losses = [get_loss(name, key=p.key, student_shape=shapes[(p.student, p.grid)],
                               teacher_shape=tuple(self.outputs.features[p.teacher_key].shape[1:])) for p in pairs]
            self.loss_modules[name] = PairTerm(pairs, losses)
        self.capture = FeatureCapture(student, [p.student for p in self.pairs], only_training=True)
        return list(self.loss_modules.values())

    def fill(self, inputs: LossInputs, indices: torch.Tensor, views: tuple[torch.Tensor, ...]) -> None:
        rows = self.rows[indices.cpu()]
        device = inputs.pred.device
        if self.task_columns is not None:
            return self._fill_bursts(inputs, rows[:, :views[0].shape[1]], device)
        inputs.teacher_pred = self.outputs.scores[rows].to(device)
        for pair in self.pairs:
            inputs.student_features[pair.key] = compact(self.capture.features[pair.student].float(), pair.grid)
            inputs.teacher_features[pair.key] = self.outputs.features[pair.teacher_key][rows].to(device).float()

    def _fill_bursts(self, inputs: LossInputs, rows: torch.Tensor, device: torch.device) -> None:
        """``rows`` (bursts, T): teacher rows of the batch's frames (−1: padding, masked out)."""
        rows = rows.clamp(min=0)
        scores = self.outputs.scores[rows][..., self.task_columns]  # (bursts, T, tasks)
        inputs.teacher_pred = burst_frames(scores.transpose(1, 2).to(device), inputs.frame_mask)
        bursts, frames = rows.shape
        for pair in self.pairs:
            student = compact(self.capture.features[pair.student].float(), pair.grid)  # (bursts·T, ...)
            inputs.student_features[pair.key] = student.reshape(bursts, frames, *student.shape[1:])
            inputs.teacher_features[pair.key] = self.outputs.features[pair.teacher_key][rows].to(device).float()


def resolve_pairs(terms: Sequence[tuple[str, float]], pairs: Sequence[FeaturePair], student: ModelConfig,
                  teacher: ModelConfig | None) -> list[FeaturePair]:
    """The feature pairs of a run: those given, plus the defaults of feature losses given none."""
    names = {name for name, _ in terms}
    orphans = sorted({p.loss for p in pairs} - names)
    if orphans:
        raise EdgeIQAError(f"feature pairs use loss(es) {', '.join(orphans)} that --loss does not name; "
                           f"add e.g. --loss {orphans[0]}=1")
    result = list(pairs)
    for name, _ in terms:
        if is_feature_loss(name) and not any(p.loss == name for p in pairs):
            if teacher is None:
                raise EdgeIQAError(f"loss {name!r} needs teacher features; give a teacher checkpoint, not a CSV of scores")
            result += default_pairs(name, student, teacher)
    return result


def unlabeled_images(sources: Sequence[str | Path], data: TrainData) -> list[str]:
    """Images of folders and CSV files (a ``path`` column), minus those of the dataset.

    Images of the training split are already labeled; images of the val or test split are
    left out with a warning, so the held-out metrics stay held out.
    """
    from edge_iqa.data.manifest import csv_rows
    from edge_iqa.io import iter_image_files

    found: list[str] = []
    for source in sources:
        source = Path(source)
        if source.is_file() and source.suffix.lower() == ".csv":
            for _, row in csv_rows(source, ("path",)):
                image = Path((row["path"] or "").strip())
                found.append(image_key(image if image.is_absolute() else source.parent / image))
        else:
            found += [image_key(p) for p in iter_image_files(source)]
    labeled = {image_key(p) for p in data.train.paths}
    held_out = {image_key(p) for split in (data.val, data.test) if split for p in split.paths}
    leaked = [p for p in found if p in held_out]
    if leaked:
        log.warning("left out %d unlabeled image(s) of the val/test splits, e.g. %s", len(leaked), leaked[0])
    return [p for p in dict.fromkeys(found) if p not in labeled and p not in held_out]


def distill(student: ModelConfig, data: str | Path, out: str | Path, cfg: TrainConfig, teacher: str | Path, *,
            pairs: Sequence[FeaturePair] = (), unlabeled: Sequence[str | Path] = (), resume: bool = False,
            progress: bool = True, init_weights: str | Path | None = None,
            teacher_batch_size: int | None = None) -> dict[str, Any]:
    """Distill ``teacher`` (checkpoint or CSV of scores) into ``student`` on the dataset at ``data``.

    ``unlabeled``: folders or CSV lists of images without labels; the teacher's scores become
    their targets. Writes the run (``best.pt``, ``last.pt``, ``metrics.json``,
    ``teacher_cache.pt``) to ``out`` and returns the summary (on rank 0).
    """
    dist_info = init_distributed(resolve_device(cfg.device))
    device = resolve_device(cfg.device, dist_info.local_rank)
    data_split = load_burst_train_data(data, student.burst.tasks) if student.burst else load_train_data(data)
    source = load_teacher(teacher, data_split.score_range)
    task_columns = burst_teacher_columns(student, source) if student.burst else None
    if student.burst and unlabeled:
        raise EdgeIQAError("--unlabeled adds single photos; burst distillation learns from whole bursts, drop it")
    if source.config is not None and source.config.burst is not None and student.burst is None:
        raise EdgeIQAError(f"{teacher} is a burst teacher; distill it into a burst student (e.g. --student burst-student)")
    feature_pairs = resolve_pairs(cfg.losses, pairs, student, source.config)
    if feature_pairs:  # check every address now, before the teacher's pass over the images
        feature_shapes(student, [(p.student, p.grid) for p in feature_pairs])
        feature_shapes(source.config, [(p.teacher, p.grid) for p in feature_pairs])
    extra_paths = unlabeled_images(unlabeled, data_split) if unlabeled else []
    if unlabeled and not extra_paths:
        raise EdgeIQAError(f"no unlabeled images found in {', '.join(map(str, unlabeled))}")
    images = data_split.train.paths + extra_paths
    outputs = teacher_outputs(source, images, {(p.teacher, p.grid) for p in feature_pairs}, device=device,
                              batch_size=teacher_batch_size or cfg.batch_size, num_workers=cfg.num_workers,
                              cache_dir=out, progress=progress and dist_info.is_main,
                              bursts=data_split.train.paths if student.burst else None)
    described = source.describe()
    source.model = None  # the teacher's work is cached; free its memory for training
    extra = _pseudo_labeled(outputs, extra_paths, data_split.score_range)
    hook = Distiller(outputs, cfg.losses, feature_pairs, task_columns)
    run_info = {"teacher": described,
                "feature_pairs": [p.spec() for p in feature_pairs],
                "unlabeled": {"sources": [str(u) for u in unlabeled], "images": len(extra.paths)}}
    return train(student, data, out, cfg, resume=resume, hook=hook, progress=progress, run_info=run_info,
                 init_weights=init_weights, extra_train=[extra] if extra.paths else [])


def burst_teacher_columns(student: ModelConfig, source) -> list[int]:
    """The teacher's score column of each of a burst student's tasks; a burst student needs
    a burst teacher checkpoint that scores its tasks."""
    teacher = source.config
    if teacher is None or teacher.burst is None:
        kind = "a CSV of scores" if teacher is None else "a photo model"
        raise EdgeIQAError(f"{source.source} is {kind}; a burst student learns from a burst teacher checkpoint "
                           "(edge-iqa train --model burst-teacher on the bursts)")
    missing = [t for t in student.burst.tasks if t not in teacher.burst.tasks]
    if missing:
        raise EdgeIQAError(f"teacher {source.source} does not score task {missing[0]!r} (it scores "
                           f"{', '.join(teacher.burst.tasks)}); give the student those tasks with --task")
    return [teacher.burst.tasks.index(t) for t in student.burst.tasks]


def _pseudo_labeled(outputs: TeacherOutputs, paths: Sequence[str], score_range: tuple[float, float]) -> SplitData:
    """Unlabeled images with the teacher's scores as targets; images it could not score are left out."""
    rows = outputs.rows(paths).tolist()
    kept = [(p, float(outputs.scores[r])) for p, r in zip(paths, rows) if r >= 0 and outputs.scores[r] == outputs.scores[r]]
    if len(kept) < len(paths):
        log.warning("left out %d unlabeled image(s) the teacher has no score for", len(paths) - len(kept))
    low, high = score_range
    return SplitData([p for p, _ in kept], [t for _, t in kept], [low + (high - low) * t for _, t in kept])
