"""Burst evaluation: per-burst rank metrics and the top-M downstream gain, with baselines.

The protocol of the burst IQA paper (Liang et al., "Burst Image Quality Assessment: A New
Benchmark and Unified Framework for Multiple Downstream Tasks"), on a burst dataset
(:func:`edge_iqa.data.manifest.read_burst_manifest`) and any per-frame scores:

- **R0, R0.02, R0.05, R0.1** — SRCC within each burst, ground-truth scores closer than the
  threshold counted as ties, averaged over bursts (:func:`edge_iqa.metrics.burst_metrics`;
  result keys ``srcc_r0`` … ``srcc_r0.1``). The target of task m is the manifest column
  ``score_<m>`` (``score`` for ``task=None``, e.g. an imported Photo Triage set), normalised
  over the dataset's ``score_range``: the units the thresholds assume (0.02 = 0.1 dB with the
  synthetic sets' rule ``edge_iqa.data.merges.LABEL_RULE``).
- **pairwise accuracy** — within each burst, the share of frame pairs of different targets
  that the scores order correctly (:func:`edge_iqa.metrics.pairwise_accuracy_from_scores`
  burst by burst), mean ± std over bursts (population std), as the paper reports it.
- **top-M downstream gain** — for M = 3 and 5, the task's real merge
  (:data:`edge_iqa.data.merges.TASKS`) of the reference and the M−1 non-reference frames with
  the highest scores, PSNR against the clean scene, mean over bursts; beside it the same merge
  of M random frames (the reference + M−1 drawn uniformly, mean of 10 seeded draws), of the
  first M frames, of all frames, and of the oracle's M (the reference + the top M−1 by the true
  Δ label). ``gain_vs_random_db`` = PSNR(scores' top-M) − PSNR(random-M), the oracle's the
  same, ``oracle_share`` = the first over the second.

The reference frame (``reference`` = 1; a burst without one takes its lowest frame index, as
training does in ``distill.burst_data``) is frame 0 of every prediction array, is left out of
the rank metrics, and is always part of a merge. Predictions are one score per frame in that
order (higher = better); a NaN score marks a frame that could not be scored: it is left out of
the rank metrics and never picked, and the result counts such frames.

Choices where the paper is silent:

- Bursts with at most M frames are left out of the top-M rows: every selector would merge the
  whole burst. Each row states how many bursts it averages.
- Ties between scores are broken by frame order (the earlier frame is picked).
- ``oracle_share`` is a ratio of the mean gains (not a mean of per-burst ratios, which a burst
  with a near-zero oracle gain would dominate); NaN when the oracle gains nothing over random.
- Bursts whose frames or clean scene cannot be read, or that have no ``clean`` / Δ column
  (imported real bursts), get rank metrics but no downstream rows; the result names them.

Merges are expensive (alignment) but reused: a :class:`BurstEvalSet` loads each burst's
frames once and prepares each task's merge once (:meth:`~edge_iqa.data.merges.BurstTask.prepare`);
every subset after that is a weighted sum (:meth:`~edge_iqa.data.merges.BurstTask.combine`).
Evaluate several scorers on one set to pay for the alignment once.

Baselines (:data:`BASELINES`) are plain per-frame scorers of a burst (frames HxWx3 float in
[0, 1] → one score per frame): ``random`` (seeded), ``sharpness`` (variance of the Laplacian,
Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy: a comparative study",
ICPR 2000), and ``photo``, a photo model (:class:`edge_iqa.scoring.Scorer`) scoring each frame
alone, blind to the rest of the burst.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from edge_iqa.data.burst_synth import noise_sigma
from edge_iqa.data.manifest import BurstFrame, read_burst_manifest, read_dataset_info
from edge_iqa.data.merges import BurstTask, Prepared, get_task, psnr
from edge_iqa.data.synth import read_png_float
from edge_iqa.errors import EdgeIQAError
from edge_iqa.metrics import BURST_THRESHOLDS, burst_metrics, pairwise_accuracy_from_scores

log = logging.getLogger("edge_iqa.data")

TOP_M = (3, 5)
RANDOM_DRAWS = 10
RANDOM_SEED = 0
SELECTORS = ("model", "random", "first", "all", "oracle")
TRUE_FLAGS = ("1", "true", "yes", "y")

BurstScorer = Callable[[Sequence[np.ndarray]], np.ndarray]


# ---------------------------------------------------------------- the bursts of a split


def _is_reference(frame: BurstFrame) -> bool:
    return (frame.extra.get("reference") or "").strip().lower() in TRUE_FLAGS


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


@dataclass(frozen=True)
class EvalBurst:
    """One burst to evaluate: its name and frames, the reference first."""

    name: str
    frames: tuple[BurstFrame, ...]

    def column(self, key: str) -> np.ndarray:
        """A manifest column per frame as floats (NaN where empty or not a number)."""
        return np.array([_float(f.extra.get(key)) for f in self.frames])


@dataclass(frozen=True)
class Downstream:
    """A burst made ready for subset merges of one task: its preparation and clean target."""

    task: BurstTask
    prepared: Prepared
    target: np.ndarray

    def psnr(self, keep: np.ndarray) -> float:
        return psnr(self.task.combine(self.prepared, keep), self.target, self.task.border)


class BurstEvalSet:
    """The bursts of one split of a burst dataset, with frames and merge preparations cached.

    ``root``: the dataset folder; ``split``: ``train``/``val``/``test`` or None for all.
    Bursts of fewer than two frames are left out with a warning (nothing to rank).
    """

    def __init__(self, root: Path | str, split: str | None = None):
        self.root = Path(root)
        self.split = split
        self.info = read_dataset_info(self.root)
        self.bursts: list[EvalBurst] = []
        for name, frames in read_burst_manifest(self.root, split).items():
            references = [f for f in frames if _is_reference(f)]
            if len(references) > 1:
                raise EdgeIQAError(f"{self.root}: sequence {name!r} marks frames {[f.frame for f in references]} "
                                   "as the reference; mark exactly one")
            if len(frames) < 2:
                log.warning("%s: sequence %r has %d frame; a burst needs a reference and another frame, left out",
                            self.root, name, len(frames))
                continue
            reference = references[0] if references else frames[0]
            self.bursts.append(EvalBurst(name, (reference, *(f for f in frames if f is not reference))))
        if not self.bursts:
            raise EdgeIQAError(f"{self.root}: split {split!r} has no burst of two or more frames; "
                               "evaluate a split that has bursts")
        self._frames: dict[int, np.ndarray] = {}
        self._downstream: dict[tuple[str, int], Downstream | str] = {}

    def __len__(self) -> int:
        return len(self.bursts)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bursts]

    def targets(self, task: str | None) -> list[np.ndarray]:
        """Each burst's normalised target per frame (NaN at the reference): ``score_<task>``,
        or ``score`` for ``task=None``."""
        low, high = self.info.score_range
        key = "score" if task is None else f"score_{task}"
        if task is not None and not any(key in f.extra for b in self.bursts for f in b.frames):
            present = sorted({k.removeprefix("score_") for b in self.bursts for f in b.frames for k in f.extra
                              if k.startswith("score_")})
            raise EdgeIQAError(f"{self.root}/manifest.csv has no {key} column (tasks in the data: "
                               f"{', '.join(present) or 'none'}); pick one of them as the task")
        out = []
        for b in self.bursts:
            values = np.array([f.score for f in b.frames]) if task is None else b.column(key)
            values = (values - low) / (high - low)
            values[0] = math.nan
            out.append(values)
        return out

    def frames(self, index: int) -> np.ndarray:
        """Burst ``index``'s frames as float32 (T, H, W, 3) in [0, 1], decoded once."""
        if index not in self._frames:
            burst = self.bursts[index]
            self._frames[index] = np.stack([read_png_float(f.path) for f in burst.frames]).astype(np.float32)
        return self._frames[index]

    def downstream(self, task: str, index: int) -> Downstream | str:
        """Burst ``index`` prepared for subset merges of ``task``, or why it cannot be."""
        key = (task, index)
        if key not in self._downstream:
            self._downstream[key] = self._prepare(task, index)
        return self._downstream[key]

    def _prepare(self, task_name: str, index: int) -> Downstream | str:
        burst = self.bursts[index]
        reference = burst.frames[0]
        clean = (reference.extra.get("clean") or "").strip()
        if not clean:
            return "no clean column"
        if not np.isfinite(burst.column(f"delta_{task_name}_db")[1:]).all():
            return f"no delta_{task_name}_db label on every frame"
        task = get_task(task_name)
        try:
            frames = self.frames(index)
            target = task.target(read_png_float(self.root / clean).astype(np.float32))
        except EdgeIQAError as err:
            return str(err)
        shot, read = _float(reference.extra.get("lambda_shot")), _float(reference.extra.get("lambda_read"))
        sigma = noise_sigma(frames[0], shot, read) if math.isfinite(shot) and math.isfinite(read) else None
        try:
            return Downstream(task, task.prepare(frames, 0, sigma), target)
        except EdgeIQAError as err:
            return str(err)


# ---------------------------------------------------------------- evaluation


def _check_predictions(eval_set: BurstEvalSet, predictions: Mapping[str, Any]) -> list[np.ndarray]:
    out = []
    for burst in eval_set.bursts:
        if burst.name not in predictions:
            raise EdgeIQAError(f"the predictions have no scores for burst {burst.name!r} of split "
                               f"{eval_set.split!r}; score every burst of the split")
        scores = np.asarray(predictions[burst.name], dtype=np.float64).ravel()
        if scores.size != len(burst.frames):
            raise EdgeIQAError(f"burst {burst.name!r} has {len(burst.frames)} frames but {scores.size} predicted "
                               "scores; give one score per frame, the reference first")
        if np.isinf(scores).any():
            raise EdgeIQAError(f"burst {burst.name!r} has an infinite predicted score; scores must be finite "
                               "(NaN marks a frame that could not be scored)")
        out.append(scores)
    return out


def rank_metrics(scores: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> dict[str, Any]:
    """R0 … R0.1 and pairwise accuracy (mean ± std over bursts) of per-burst scores against
    targets; frames where either is NaN (the reference, unscored frames) are left out."""
    pred, target, ids, pairwise = [], [], [], []
    for b, (s, t) in enumerate(zip(scores, targets)):
        keep = np.isfinite(s) & np.isfinite(t)
        pred.append(s[keep])
        target.append(t[keep])
        ids.append(np.full(int(keep.sum()), b))
        if keep.sum() >= 2:
            accuracy = pairwise_accuracy_from_scores(s[keep], t[keep], np.zeros(int(keep.sum())))
            if math.isfinite(accuracy):
                pairwise.append(accuracy)
    pred_all, target_all = np.concatenate(pred), np.concatenate(target)
    if pred_all.size < 2:
        raise EdgeIQAError("fewer than 2 scored non-reference frames with a target; nothing to rank")
    out: dict[str, Any] = dict(burst_metrics(pred_all, target_all, np.concatenate(ids)))
    out["pairwise_accuracy_mean"] = float(np.mean(pairwise)) if pairwise else math.nan
    out["pairwise_accuracy_std"] = float(np.std(pairwise)) if pairwise else math.nan
    out["pairwise_bursts"] = len(pairwise)
    return out


def top_frames(scores: np.ndarray, m: int) -> np.ndarray:
    """Keep mask: the reference (frame 0) and the m−1 other frames of highest score (NaN
    never picked while a scored frame is left; ties go to the earlier frame)."""
    others = np.arange(1, scores.size)
    key = np.where(np.isnan(scores[1:]), -np.inf, scores[1:])
    order = others[np.argsort(-key, kind="stable")]
    keep = np.zeros(scores.size, dtype=bool)
    keep[0] = True
    keep[order[: m - 1]] = True
    return keep


def _random_keep(size: int, m: int, draw: int, index: int) -> np.ndarray:
    rng = np.random.default_rng((RANDOM_SEED, draw, index))
    keep = np.zeros(size, dtype=bool)
    keep[0] = True
    keep[1 + rng.choice(size - 1, m - 1, replace=False)] = True
    return keep


def _selector_psnrs(down: Downstream, scores: np.ndarray, oracle: np.ndarray, m: int, index: int) -> dict[str, float]:
    size = scores.size
    return {
        "model": down.psnr(top_frames(scores, m)),
        "random": float(np.mean([down.psnr(_random_keep(size, m, d, index)) for d in range(RANDOM_DRAWS)])),
        "first": down.psnr(np.arange(size) < m),
        "all": down.psnr(np.ones(size, dtype=bool)),
        "oracle": down.psnr(top_frames(oracle, m)),
    }


def downstream_gain(eval_set: BurstEvalSet, task: str, scores: Sequence[np.ndarray],
                    top_m: Sequence[int] = TOP_M) -> dict[str, Any]:
    """The top-M rows (see the module docstring): ``{"top3": {...}, "top5": {...}}`` plus
    ``skipped`` ({burst: why} for bursts without a downstream merge)."""
    rows: dict[str, list[dict[str, float]]] = {f"top{m}": [] for m in top_m}
    skipped: dict[str, str] = {}
    for index, (burst, s) in enumerate(zip(eval_set.bursts, scores)):
        down = eval_set.downstream(task, index)
        if isinstance(down, str):
            skipped[burst.name] = down
            continue
        oracle = burst.column(f"delta_{task}_db")
        for m in top_m:
            if len(burst.frames) > m:
                rows[f"top{m}"].append(_selector_psnrs(down, s, oracle, m, index))
    out: dict[str, Any] = {key: _summarise(int(key[3:]), values) for key, values in rows.items()}
    out["skipped"] = skipped
    return out


def _summarise(m: int, per_burst: list[dict[str, float]]) -> dict[str, Any]:
    means = {k: float(np.mean([r[k] for r in per_burst])) if per_burst else math.nan for k in SELECTORS}
    gain = means["model"] - means["random"]
    oracle_gain = means["oracle"] - means["random"]
    return {
        "m": m,
        "n_bursts": len(per_burst),
        "psnr_db": means,
        "gain_vs_random_db": gain,
        "oracle_gain_vs_random_db": oracle_gain,
        "oracle_share": gain / oracle_gain if oracle_gain > 0 else math.nan,
        "gain_vs_first_db": means["model"] - means["first"],
    }


def burst_evaluation(data: BurstEvalSet | Path | str, split: str | None, task: str | None,
                     predictions: Mapping[str, Any]) -> dict[str, Any]:
    """Burst metrics of per-frame ``predictions`` ({sequence: scores, frame 0 = the reference})
    on ``split`` of ``data`` (a dataset folder, or a :class:`BurstEvalSet` to reuse its cache)
    for ``task`` (a name of ``edge_iqa.data.merges.TASKS``; None: the ``score`` column, no
    downstream rows).

    Keys: ``task``, ``split``, ``n_bursts``, ``n_frames`` (non-reference frames ranked),
    ``n_unscored_frames``, ``srcc_r0``, ``srcc_r0.02``, ``srcc_r0.05``, ``srcc_r0.1``,
    ``n_sequences`` (bursts ranked), ``pairwise_accuracy_mean``, ``pairwise_accuracy_std``,
    ``pairwise_bursts``, and ``downstream``: ``{"top3": row, "top5": row, "skipped": {burst:
    why}}`` with each row ``m``, ``n_bursts``, ``psnr_db`` ({model, random, first, all,
    oracle}), ``gain_vs_random_db``, ``oracle_gain_vs_random_db``, ``oracle_share``,
    ``gain_vs_first_db`` (``downstream`` is None for ``task=None``).
    """
    eval_set = data if isinstance(data, BurstEvalSet) else BurstEvalSet(data, split)
    if eval_set.split != split:
        raise EdgeIQAError(f"the evaluation set holds split {eval_set.split!r}, not {split!r}; "
                           "build a BurstEvalSet for the split you evaluate")
    scores = _check_predictions(eval_set, predictions)
    targets = eval_set.targets(task)
    result: dict[str, Any] = {"task": task, "split": split, "n_bursts": len(eval_set)}
    ranks = rank_metrics(scores, targets)
    result["n_frames"] = ranks.pop("n_frames")
    result["n_unscored_frames"] = int(sum(np.isnan(s[1:]).sum() for s in scores))
    result.update(ranks)
    result["downstream"] = downstream_gain(eval_set, task, scores) if task is not None else None
    return result


# ---------------------------------------------------------------- the table


def format_burst_table(result: Mapping[str, Any]) -> str:
    """The result of :func:`burst_evaluation` as two plain-text tables (ranks, top-M PSNR)."""
    from edge_iqa.tables import format_table

    rank_headers = [f"R{t:g}" for t in BURST_THRESHOLDS] + ["pairwise acc", "bursts", "frames"]
    pairwise = f"{result['pairwise_accuracy_mean']:.3f} ± {result['pairwise_accuracy_std']:.3f}"
    rank_row = [result[f"srcc_r{t:g}"] for t in BURST_THRESHOLDS] + [pairwise, result["n_bursts"], result["n_frames"]]
    title = f"burst task {result['task'] or 'score'}, split {result['split'] or 'all'}"
    lines = [title, format_table(rank_headers, [rank_row])]
    down = result.get("downstream")
    if down:
        headers = ["M", "bursts", *(f"{s} dB" for s in SELECTORS), "gain vs random", "oracle gain", "oracle share"]
        rows = [[row["m"], row["n_bursts"], *(row["psnr_db"][s] for s in SELECTORS), row["gain_vs_random_db"],
                 row["oracle_gain_vs_random_db"], row["oracle_share"]]
                for key, row in down.items() if key != "skipped"]
        lines += ["", "top-M downstream PSNR (the reference + M−1 frames; random: mean of "
                  f"{RANDOM_DRAWS} draws)", format_table(headers, rows)]
        if down["skipped"]:
            name, why = next(iter(down["skipped"].items()))
            lines.append(f"{len(down['skipped'])} bursts without a downstream merge (e.g. {name}: {why})")
    return "\n".join(lines)


# ---------------------------------------------------------------- baselines


def random_baseline(seed: int = 0) -> BurstScorer:
    """Uniform random scores, from one seeded generator over the bursts it is called on."""
    rng = np.random.default_rng(seed)

    def score(frames: Sequence[np.ndarray]) -> np.ndarray:
        return rng.random(len(frames))

    return score


def laplacian_variance(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the frame's luma (Rec. 601): the focus measure of
    Pech-Pacheco et al. (2000); higher is sharper (and noisier)."""
    frame = np.asarray(frame, dtype=np.float64)
    luma = frame[..., :3] @ np.array([0.299, 0.587, 0.114]) if frame.ndim == 3 else frame
    return float(ndimage.laplace(luma, mode="reflect").var())


def sharpness_baseline() -> BurstScorer:
    """Each frame's variance of the Laplacian (:func:`laplacian_variance`)."""

    def score(frames: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([laplacian_variance(f) for f in frames])

    return score


def photo_baseline(scorer) -> BurstScorer:
    """A photo model (:class:`edge_iqa.scoring.Scorer`) scoring each frame alone."""

    def score(frames: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([scorer.score(f) for f in frames])

    return score


BASELINES: dict[str, Callable[..., BurstScorer]] = {
    "random": random_baseline,
    "sharpness": sharpness_baseline,
    "photo": photo_baseline,
}


def get_baseline(name: str, **options: Any) -> BurstScorer:
    """A baseline of :data:`BASELINES` by name; ``options`` go to its factory (``seed`` for
    ``random``, ``scorer`` for ``photo``)."""
    if name not in BASELINES:
        raise EdgeIQAError(f"unknown burst baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return BASELINES[name](**options)


def score_bursts(eval_set: BurstEvalSet, scorer: BurstScorer) -> dict[str, np.ndarray]:
    """``scorer``'s scores of every burst of ``eval_set`` ({sequence: scores}), frames decoded
    once and shared with the merges."""
    out = {}
    for index, burst in enumerate(eval_set.bursts):
        scores = np.asarray(scorer(list(eval_set.frames(index))), dtype=np.float64).ravel()
        if scores.size != len(burst.frames):
            raise EdgeIQAError(f"the burst scorer gave {scores.size} scores for the {len(burst.frames)} frames of "
                               f"{burst.name!r}; it must give one score per frame")
        out[burst.name] = scores
    return out
