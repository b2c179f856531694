"""Bursts through the export pipeline: whole bursts for INT8 calibration, and parity on burst data.

A burst model's artifact follows the graph contract of :mod:`edge_iqa.burst_model`: views of
every frame, (B, T, 3, H, W) per view with the reference as frame 0, in; (B, n_tasks, T)
scores out. The export pipeline feeds it whole bursts of a burst dataset
(:class:`edge_iqa.burst_eval.BurstEvalSet`: the reference first, as training and evaluation
order them), each frame cut into views by the code that scores at inference
(:func:`edge_iqa.data.loader.load_views`), bursts of one length stacked into one batch.

- Calibration (:class:`BurstCalibrationReader`): ONNX Runtime's calibration data reader and
  the CoreML W8A8 observers see 5-D batches of real bursts. ``--calib-images N`` counts
  frames: bursts evenly spread over the split, as many as fit in N frames (at least one).
- Parity (:func:`check_burst_parity`): the artifact and the FP32 PyTorch model score the same
  bursts. Per task: Spearman of the artifact's scores against FP32's within each burst,
  the reference frame left out (the burst paper's per-burst SRCC, Liang et al., "Burst Image
  Quality Assessment"), its mean and minimum over bursts, and top-1 agreement: the share of
  bursts whose best non-reference frame is the same for both. Over all non-reference
  frames and tasks: max and mean |Δscore| and SQNR. Where the dataset has the task's targets
  (``score_<task>``), R0 of both models against them (:func:`edge_iqa.burst_eval.rank_metrics`)
  and its drop. Limits: :data:`export.parity.THRESHOLDS` (``burst_*`` beside the photo ones).

A burst whose frames cannot all be decoded is left out of both and counted in the report.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError, ImageError
from export.metadata import input_names

BurstBatchFn = Callable[[Sequence[np.ndarray]], np.ndarray]


def read_bursts(data: str | Path, split: str) -> list:
    """The bursts (:class:`edge_iqa.burst_eval.EvalBurst`, reference first) of ``split`` (``all``: every split)."""
    from edge_iqa.burst_eval import BurstEvalSet

    return BurstEvalSet(data, None if split == "all" else split).bursts


def burst_batches(bursts: Sequence, config: ModelConfig, batch_size: int = 8
                  ) -> Iterator[tuple[list[int], list[np.ndarray], list[int]]]:
    """(indices of the bursts batched, view arrays (B, T, 3, H, W), indices that failed), in order.

    Consecutive bursts of one length share a batch of at most ``batch_size`` bursts.
    """
    from edge_iqa.data.loader import load_views

    pending: list[int] = []
    stacks: list[list[np.ndarray]] = []
    failed: list[int] = []

    def flush():
        if not pending:
            return None
        out = (list(pending), [np.stack([s[v] for s in stacks]) for v in range(len(config.views))], list(failed))
        pending.clear(), stacks.clear(), failed.clear()
        return out

    for index, burst in enumerate(bursts):
        try:
            frames = [load_views(f.path, config.views) for f in burst.frames]
        except ImageError:
            failed.append(index)
            continue
        views = [np.stack([frame[v] for frame in frames]) for v in range(len(config.views))]
        if pending and (len(pending) >= batch_size or views[0].shape[0] != stacks[0][0].shape[0]):
            yield flush()
        pending.append(index)
        stacks.append(views)
    done = flush()
    if done is not None:
        yield done
    elif failed:
        yield [], [], list(failed)


# --------------------------------------------------------------------------- calibration


def calibration_bursts(data: str | Path, split: str, max_frames: int) -> list:
    """Bursts of ``split`` evenly spread over it, as many as fit in ``max_frames`` frames (at least one)."""
    from export.quantize import MIN_CALIB_IMAGES

    bursts = read_bursts(data, split)
    frames = np.array([len(b.frames) for b in bursts])
    count = len(bursts)
    while count > 1 and int(frames[_spread(len(bursts), count)].sum()) > max_frames:
        count -= 1
    chosen = [bursts[i] for i in _spread(len(bursts), count)]
    total = sum(len(b.frames) for b in chosen)
    if total < MIN_CALIB_IMAGES:
        warnings.warn(f"calibrating INT8 on only {total} frames ({len(chosen)} bursts) of {data} [{split}]; "
                      f"use at least {MIN_CALIB_IMAGES} frames for stable activation ranges", stacklevel=2)
    return chosen


def _spread(n: int, count: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist()))


class BurstCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over 5-D batches of whole bursts (the interface of
    :class:`export.quantize.ViewCalibrationReader`; ``images`` counts the frames fed)."""

    def __init__(self, config: ModelConfig, bursts: Sequence, batch_size: int = 8):
        self.config, self.bursts, self.batch_size = config, list(bursts), batch_size
        self.images = 0
        self.n_bursts = 0
        self._batches: Iterator | None = None

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        names = input_names(self.config)
        self.images = self.n_bursts = 0
        for done, views, _ in burst_batches(self.bursts, self.config, self.batch_size):
            if done:
                self.n_bursts += len(done)
                self.images += int(views[0].shape[0] * views[0].shape[1])
                yield {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in zip(names, views)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = self._iterate()
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches, self.images, self.n_bursts = None, 0, 0

    def __iter__(self):
        return self._iterate()


# --------------------------------------------------------------------------- parity


def score_bursts(batch_fn: BurstBatchFn, config: ModelConfig, bursts: Sequence, batch_size: int = 8
                 ) -> dict[str, np.ndarray]:
    """``{burst name: (n_tasks, T) scores}`` of a batch function giving (B, n_tasks, T); failed bursts absent."""
    tasks = len(config.burst.tasks)
    out: dict[str, np.ndarray] = {}
    for done, views, _ in burst_batches(bursts, config, batch_size):
        if not done:
            continue
        scores = np.asarray(batch_fn(views), dtype=np.float64)
        want = (len(done), tasks, views[0].shape[1])
        if scores.shape != want:
            raise EdgeIQAError(f"the burst artifact gave scores of shape {scores.shape} for {want[0]} bursts of "
                               f"{want[2]} frames; the burst graph contract is (B, {tasks} tasks, T)")
        for row, index in enumerate(done):
            out[bursts[index].name] = scores[row]
    return out


def torch_burst_batch_fn(model) -> BurstBatchFn:
    """The FP32 PyTorch burst model's (B, n_tasks, T) scores (``forward_all_tasks``)."""
    import torch

    model = model.float().cpu().eval()

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return model.forward_all_tasks(*(torch.as_tensor(v) for v in views)).numpy()

    return run


def module_batch_fn(net) -> BurstBatchFn:
    """A module's own ``forward`` on the views as a batch function (CoreML's readback nets: a photo
    model, a burst model's :class:`~edge_iqa.burst_model.AllTaskScores`, or their W8A8 fx graphs)."""
    import torch

    net = net.eval()

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return net(*(torch.as_tensor(v) for v in views)).float().numpy()

    return run


def burst_reference_scores(model, data: str | Path, split: str = "test", batch_size: int = 8) -> dict[str, np.ndarray]:
    """The FP32 PyTorch model's scores of every burst of ``split`` (reusable across artifacts)."""
    return score_bursts(torch_burst_batch_fn(model), model.config, read_bursts(data, split), batch_size)


def burst_agreement(reference: dict[str, np.ndarray], test: dict[str, np.ndarray], tasks: Sequence[str]
                    ) -> dict[str, Any]:
    """How closely the artifact's per-frame scores follow FP32's, burst by burst (reference frames left out)."""
    from edge_iqa.metrics import srcc

    names = [n for n in reference if n in test]
    per_task: dict[str, Any] = {}
    for m, task in enumerate(tasks):
        rhos, top1 = [], []
        for name in names:
            ref, got = reference[name][m, 1:], test[name][m, 1:]
            if ref.size >= 2:
                rhos.append(1.0 if np.array_equal(ref, got) else float(srcc(got, ref)))
            top1.append(int(np.argmax(ref)) == int(np.argmax(got)))
        per_task[task] = {"mean_spearman": float(np.mean(rhos)) if rhos else math.nan,
                          "min_spearman": float(np.min(rhos)) if rhos else math.nan,
                          "ranked_bursts": len(rhos), "top1_agreement": float(np.mean(top1)) if top1 else math.nan}
    ref = np.concatenate([reference[n][:, 1:].ravel() for n in names]) if names else np.zeros(0)
    got = np.concatenate([test[n][:, 1:].ravel() for n in names]) if names else np.zeros(0)
    delta = np.abs(ref - got)
    noise = float(np.sum((ref - got) ** 2))
    means = [t["mean_spearman"] for t in per_task.values()]
    return {
        "n_bursts": len(names), "n_frames": int(sum(reference[n].shape[1] for n in names)),
        "tasks": per_task,
        "mean_burst_spearman": float(min(means)) if means else math.nan,  # the worst task's mean
        "min_burst_spearman": float(min(t["min_spearman"] for t in per_task.values())) if per_task else math.nan,
        "top1_agreement": float(min(t["top1_agreement"] for t in per_task.values())) if per_task else math.nan,
        "max_abs_delta": float(delta.max()) if delta.size else math.nan,
        "mean_abs_delta": float(delta.mean()) if delta.size else math.nan,
        "sqnr_db": math.inf if noise == 0 else float(10 * math.log10(float(np.sum(ref ** 2)) / noise)),
    }


def outputs_agreement(reference: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """Mean per-burst Spearman (worst task) between two graphs' (B, n_tasks, T) outputs of the same batches."""
    ref = {(b, i): r for b, batch in enumerate(reference) for i, r in enumerate(batch)}
    got = {(b, i): g for b, batch in enumerate(test) for i, g in enumerate(batch)}
    tasks = [str(m) for m in range(next(iter(ref.values())).shape[0])]
    return burst_agreement(ref, got, tasks)["mean_burst_spearman"]


def truth_r0(scores: dict[str, np.ndarray], data: str | Path, split: str, config: ModelConfig) -> dict[str, float]:
    """R0 (mean per-burst SRCC with ties) of the scores against each task's targets, where the data has them."""
    from edge_iqa.burst_eval import BurstEvalSet, rank_metrics

    eval_set = BurstEvalSet(data, None if split == "all" else split)
    low, span = config.score_range[0], config.score_range[1] - config.score_range[0]
    out: dict[str, float] = {}
    for m, task in enumerate(config.burst.tasks):
        try:
            targets = eval_set.targets(task)
        except EdgeIQAError:
            continue  # no score_<task> column: agreement with FP32 only
        pairs = [((scores[b.name][m] - low) / span, t) for b, t in zip(eval_set.bursts, targets) if b.name in scores]
        try:
            out[task] = float(rank_metrics([p for p, _ in pairs], [t for _, t in pairs])["srcc_r0"])
        except EdgeIQAError:
            continue
    return out


def burst_accuracy_check(precision: str, reference: dict[str, np.ndarray], test: dict[str, np.ndarray],
                         config: ModelConfig, *, status: str, reason: str = "", thresholds=None,
                         truth: tuple[dict[str, float], dict[str, float]] | None = None):
    """The pass/fail accuracy check of a burst artifact at its precision's limits."""
    from export.parity import THRESHOLDS, Check, precision_class

    thresholds = thresholds or THRESHOLDS
    detail: dict[str, Any] = {"burst": True, **burst_agreement(reference, test, config.burst.tasks)}
    if truth is not None:
        fp32_r0, artifact_r0 = truth
        detail["fp32_r0"], detail["artifact_r0"] = fp32_r0, artifact_r0
        detail["r0_drop"] = {t: fp32_r0[t] - artifact_r0[t] for t in fp32_r0 if t in artifact_r0}
    kind = precision_class(precision)
    if kind in ("fp32", "fp16"):
        limit = thresholds.fp32_max_abs_delta if kind == "fp32" else thresholds.fp16_max_abs_delta
        limits = {"max_abs_delta <=": limit}
        passed = detail["max_abs_delta"] <= limit
    else:
        limits = {"mean_burst_spearman >=": thresholds.burst_int8_min_mean_spearman,
                  "top1_agreement >=": thresholds.burst_int8_min_top1_agreement}
        passed = (detail["mean_burst_spearman"] >= thresholds.burst_int8_min_mean_spearman
                  and detail["top1_agreement"] >= thresholds.burst_int8_min_top1_agreement)
    detail["limits"] = limits
    return Check("accuracy", status, bool(passed), detail, reason)
