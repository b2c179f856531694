"""Evaluation metrics: how well predicted quality scores agree with ground truth.

Whole-set IQA metrics follow the AIM 2024 UHD-IQA challenge report (Moskalenko et al., "AIM 2024
Challenge on UHD Blind Photo Quality Assessment", ECCV Workshops 2024): SRCC, PLCC, KRCC, MAE
and RMSE, and the challenge's final rank score, the mean over those five metrics of each
model's rank among the submitted models (``aim_rank_score``).

``plcc_fitted`` is PLCC after mapping the predictions through a monotone 4-parameter logistic
fitted to the ground truth, as recommended by VQEG (Final Report from the Video Quality Experts
Group on the Validation of Objective Models of Video Quality Assessment, Phase II, 2003):
``logistic4(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

Burst metrics follow the burst image-quality paper's protocol: SRCC computed per burst
sequence and averaged over sequences, also in a relaxed form R_t (R0, R0.02, R0.05, R0.1)
where frames whose ground-truth scores differ by at most ``t`` count as ties (see
``relaxed_srcc`` for the exact grouping rule); and pairwise preference accuracy for Photo
Triage-style labelled pairs (``pairwise_accuracy``).

Conventions, shared by every function here:

- Inputs are array-likes of numbers, flattened to 1-D; paired inputs must have equal length.
- Non-finite values (NaN, inf), non-numeric values, empty inputs and length mismatches raise
  ``EdgeIQAError`` with a one-line message.
- A correlation is 0.0, not NaN, when it is undefined: fewer than two samples, or either side
  constant. A model that predicts a constant carries no ranking information, and 0.0 keeps
  averages and rank scores well defined. No numpy/scipy warnings leak out in these cases.
- Results are Python ``float`` / ``int``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
from scipy import optimize, special, stats

from edge_iqa.errors import EdgeIQAError

__all__ = [
    "srcc",
    "krcc",
    "plcc",
    "logistic4",
    "fit_logistic4",
    "plcc_fitted",
    "mae",
    "rmse",
    "iqa_metrics",
    "AIM_RANK_METRICS",
    "aim_rank_score",
    "BURST_THRESHOLDS",
    "relaxed_srcc",
    "sequence_srcc",
    "burst_metrics",
    "pairwise_accuracy",
    "pairwise_accuracy_from_scores",
]

# Metric name -> True when higher is better; the five metrics of the AIM 2024 rank score.
AIM_RANK_METRICS: dict[str, bool] = {
    "mae": False,
    "rmse": False,
    "plcc": True,
    "srcc": True,
    "krcc": True,
}

# Relaxation thresholds of the burst protocol's R0 / R0.02 / R0.05 / R0.1.
BURST_THRESHOLDS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1)

_EPS = 1e-8


# --------------------------------------------------------------------------- input checks


def _as_1d(values: Any, name: str) -> np.ndarray:
    """``values`` as a finite, non-empty 1-D float64 array, or an EdgeIQAError."""
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise EdgeIQAError(f"{name} must be an array of numbers ({exc})") from None
    if arr.size == 0:
        raise EdgeIQAError(f"{name} is empty: nothing to evaluate")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise EdgeIQAError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first at index {first}: {arr[first]}); "
            "drop or fix those samples before computing metrics"
        )
    return arr


def _pair(pred: Any, target: Any, names: tuple[str, str] = ("pred", "target")) -> tuple[np.ndarray, np.ndarray]:
    x = _as_1d(pred, names[0])
    y = _as_1d(target, names[1])
    if x.size != y.size:
        raise EdgeIQAError(f"{names[0]} has {x.size} values but {names[1]} has {y.size}; they must match")
    return x, y


def _ids(sequence_ids: Any, n: int) -> np.ndarray:
    """Integer group index per frame for ``sequence_ids`` (any hashable labels)."""
    ids = np.asarray(sequence_ids).reshape(-1)
    if ids.size != n:
        raise EdgeIQAError(f"sequence_ids has {ids.size} values but pred has {n}; they must match")
    try:
        _, inverse = np.unique(ids, return_inverse=True)
    except TypeError as exc:
        raise EdgeIQAError(f"sequence_ids must be labels of one comparable type ({exc})") from None
    return inverse.reshape(-1)


def _members(groups: np.ndarray) -> list[np.ndarray]:
    """Frame indices of each group (in input order), from the integer indices of ``_ids``."""
    order = np.argsort(groups, kind="stable")
    cuts = np.flatnonzero(np.diff(groups[order])) + 1
    return np.split(order, cuts)


# --------------------------------------------------------------------------- correlations


def _constant(x: np.ndarray) -> bool:
    return x.size < 2 or bool(np.ptp(x) == 0)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of validated arrays; 0.0 when undefined (n < 2 or a constant side)."""
    if _constant(x) or _constant(y):
        return 0.0
    dx = x - x.mean()
    dy = y - y.mean()
    denom = math.sqrt(float(dx @ dx)) * math.sqrt(float(dy @ dy))
    if denom == 0.0 or not math.isfinite(denom):
        return 0.0
    return float(np.clip(float(dx @ dy) / denom, -1.0, 1.0))


def _rank(a: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged, as ``scipy.stats.rankdata(a)`` (without its per-call
    overhead, which dominates for the many short burst sequences)."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    starts = np.concatenate(([True], s[1:] != s[:-1]))
    dense = np.cumsum(starts)  # 1-based tie-group number of each sorted element
    bounds = np.concatenate((np.flatnonzero(starts), [a.size]))
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = 0.5 * (bounds[dense - 1] + bounds[dense] + 1)
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho (Pearson on average ranks, as scipy.stats.spearmanr) of validated arrays."""
    if _constant(x) or _constant(y):
        return 0.0
    return _pearson(_rank(x), _rank(y))


def srcc(pred: Any, target: Any) -> float:
    """Spearman rank correlation (ties get average ranks); 0.0 when undefined."""
    return _spearman(*_pair(pred, target))


def krcc(pred: Any, target: Any) -> float:
    """Kendall rank correlation, tau-b (tie-corrected); 0.0 when undefined."""
    x, y = _pair(pred, target)
    if _constant(x) or _constant(y):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = stats.kendalltau(x, y, variant="b").statistic
    tau = float(tau)
    return tau if math.isfinite(tau) else 0.0


def plcc(pred: Any, target: Any) -> float:
    """Pearson linear correlation of the raw predictions; 0.0 when undefined."""
    return _pearson(*_pair(pred, target))


# --------------------------------------------------------------------------- logistic mapping


def logistic4(x: Any, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

    Tends to b2 for x -> -inf and to b1 for x -> +inf (so b1 < b2 gives a decreasing map); b3 is
    the midpoint and |b4| the scale. Written with ``scipy.special.expit`` so large arguments do
    not overflow; |b4| is floored at a tiny positive value so b4 = 0 gives a step, not NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    scale = max(abs(float(b4)), np.finfo(np.float64).tiny)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        z = (x - b3) / scale
    return (b1 - b2) * special.expit(z) + b2


def _sse(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    r = logistic4(x, *params) - y
    val = float(r @ r)
    return val if math.isfinite(val) else math.inf


def _linear_params(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Logistic parameters that reproduce the least-squares line y ~ a x + c over x's range.

    Around its midpoint a logistic is linear: with b3 = mean(x) and a scale s far larger than
    the spread of x, logistic4(x) = (b1 + b2)/2 + (b1 - b2)(x - b3)/(4 s) up to O(((x - b3)/s)^3).
    Choosing (b1 + b2)/2 = mean(y) and b1 - b2 = 4 s a gives the line (relative error ~1e-7).
    A constant x or y gives slope 0, i.e. the constant mean(y).
    """
    mx, my = float(x.mean()), float(y.mean())
    dx = x - mx
    sxx = float(dx @ dx)
    slope = float(dx @ (y - my)) / sxx if sxx > 0 else 0.0
    scale = 1e3 * (float(np.max(np.abs(dx))) + _EPS)
    half = 2.0 * scale * slope
    return np.array([my + half, my - half, mx, scale])


def fit_logistic4(pred: Any, target: Any) -> np.ndarray:
    """Fit ``logistic4`` mapping pred to target; returns ``np.array([b1, b2, b3, b4])``.

    Least squares with ``scipy.optimize.curve_fit`` from the VQEG-style initial guess
    b1 = max(target), b2 = min(target), b3 = mean(pred), b4 = std(pred) + eps, and from the same
    guess with b1/b2 swapped (decreasing relations). Never raises on a failed or degenerate fit
    (fewer than 4 samples, constant input, no convergence): it then falls back to parameters
    that reproduce the least-squares straight line (see ``_linear_params``); the fit with the
    lowest squared error among the candidates is returned, so the mapping is never worse than
    linear. Invalid inputs (non-finite, empty, mismatched) still raise ``EdgeIQAError``.
    """
    x, y = _pair(pred, target)
    best = _linear_params(x, y)
    best_sse = _sse(best, x, y)
    if x.size < 4 or _constant(x) or _constant(y):
        return best
    p0 = np.array([y.max(), y.min(), x.mean(), x.std() + _EPS])
    for guess in (p0, p0[[1, 0, 2, 3]]):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                params, _ = optimize.curve_fit(logistic4, x, y, p0=guess, maxfev=20000)
        except (RuntimeError, ValueError, TypeError, FloatingPointError, np.linalg.LinAlgError):
            continue
        params = np.asarray(params, dtype=np.float64)
        if not np.all(np.isfinite(params)):
            continue
        sse = _sse(params, x, y)
        if sse < best_sse:
            best, best_sse = params, sse
    return best


def plcc_fitted(pred: Any, target: Any) -> float:
    """PLCC after mapping pred through the fitted 4-parameter logistic (VQEG); 0.0 when undefined."""
    x, y = _pair(pred, target)
    if _constant(x) or _constant(y):
        return 0.0
    mapped = logistic4(x, *fit_logistic4(x, y))
    return _pearson(mapped, y)


# --------------------------------------------------------------------------- errors


def mae(pred: Any, target: Any) -> float:
    """Mean absolute error."""
    x, y = _pair(pred, target)
    return float(np.mean(np.abs(x - y)))


def rmse(pred: Any, target: Any) -> float:
    """Root mean squared error."""
    x, y = _pair(pred, target)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def iqa_metrics(pred: Any, target: Any) -> dict[str, float | int]:
    """All whole-set metrics: keys ``srcc, plcc, plcc_fitted, krcc, mae, rmse, n``."""
    x, y = _pair(pred, target)
    return {
        "srcc": srcc(x, y),
        "plcc": plcc(x, y),
        "plcc_fitted": plcc_fitted(x, y),
        "krcc": krcc(x, y),
        "mae": mae(x, y),
        "rmse": rmse(x, y),
        "n": int(x.size),
    }


# --------------------------------------------------------------------------- AIM 2024 rank score


def aim_rank_score(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """AIM 2024 UHD-IQA final score per model: mean of its ranks over MAE, RMSE, PLCC, SRCC, KRCC.

    ``results`` maps model name -> metric dict (e.g. from ``iqa_metrics``). For each metric the
    models are ranked 1..M (1 = best; MAE/RMSE lower is better, correlations higher is better),
    tied values share the average rank (``scipy.stats.rankdata``), and a NaN metric ranks last.
    Returns model -> mean rank; lower is better. An empty ``results`` gives ``{}``.
    """
    names = list(results)
    if not names:
        return {}
    ranks = np.zeros(len(names))
    for metric, higher_better in AIM_RANK_METRICS.items():
        values = []
        for name in names:
            if metric not in results[name]:
                raise EdgeIQAError(f"model {name!r} has no {metric!r} metric; aim_rank_score needs {sorted(AIM_RANK_METRICS)}")
            try:
                v = float(results[name][metric])
            except (TypeError, ValueError):
                raise EdgeIQAError(f"model {name!r} metric {metric!r} is not a number: {results[name][metric]!r}") from None
            if math.isnan(v):
                v = math.inf  # worst after the sign flip below
            elif higher_better:
                v = -v
            values.append(v)
        ranks += stats.rankdata(values)  # ascending: smallest (best) value -> rank 1
    ranks /= len(AIM_RANK_METRICS)
    return {name: float(r) for name, r in zip(names, ranks)}


# --------------------------------------------------------------------------- burst metrics


def _relax(y: np.ndarray, threshold: float) -> np.ndarray:
    """Ground truth with near-equal scores merged: each group's members get the group mean.

    Sorted ascending, a group starts at its smallest value and takes every following value
    within ``threshold`` of that first member; the first value beyond starts the next group.
    A relative 1e-9 allowance absorbs float rounding (0.52 - 0.50 > 0.02 in binary); with
    threshold 0 the comparison is exact, so only equal values are grouped.
    """
    order = np.argsort(y, kind="stable")
    ys = y[order]
    limit = threshold * (1.0 + 1e-9)
    group = np.empty(ys.size, dtype=np.int64)
    g, first = 0, ys[0]
    for i, v in enumerate(ys):
        if v - first > limit:
            g += 1
            first = v
        group[i] = g
    means = np.bincount(group, weights=ys) / np.bincount(group)
    relaxed = np.empty_like(y)
    relaxed[order] = means[group]
    return relaxed


def _check_threshold(threshold: float) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise EdgeIQAError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(t) or t < 0:
        raise EdgeIQAError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return t


def relaxed_srcc(pred: Any, target: Any, threshold: float) -> float:
    """Relaxed SRCC R_threshold: Spearman with near-equal ground-truth scores counted as ties.

    Definition used here (burst-IQA protocol): sort the target values; walking upwards, a group
    starts at its first (smallest) value and contains every later value that exceeds that first
    value by at most ``threshold``; the next value beyond starts a new group (grouping is
    anchored at the group's first member, so it does not chain: with threshold 0.05, 0, 0.04 and
    0.08 form the groups {0, 0.04} and {0.08}). Every frame gets its group's mean target, and
    the result is Spearman between pred and that relaxed target. Threshold 0 groups only equal
    values, i.e. plain SRCC. 0.0 when undefined (e.g. all targets fall in one group).
    """
    t = _check_threshold(threshold)
    x, y = _pair(pred, target)
    return _spearman(x, _relax(y, t))


def _sequence_values(x: np.ndarray, y: np.ndarray, groups: np.ndarray, threshold: float) -> list[float]:
    values = []
    for m in _members(groups):
        xs, ys = x[m], y[m]
        if ys.size < 2:
            continue
        relaxed = _relax(ys, threshold)
        if _constant(relaxed):
            continue
        values.append(_spearman(xs, relaxed))
    return values


def sequence_srcc(pred: Any, target: Any, sequence_ids: Any, threshold: float = 0.0) -> float:
    """Mean over burst sequences of ``relaxed_srcc`` within each sequence.

    A sequence is skipped when its correlation is undefined: fewer than 2 frames, or a target
    that is constant after relaxation (all frames within ``threshold`` of the lowest one), so
    larger thresholds may average over fewer sequences. A constant *prediction* within a valid
    sequence counts as 0.0. Returns NaN when no sequence is valid.
    """
    t = _check_threshold(threshold)
    x, y = _pair(pred, target)
    values = _sequence_values(x, y, _ids(sequence_ids, x.size), t)
    return float(np.mean(values)) if values else math.nan


def burst_metrics(pred: Any, target: Any, sequence_ids: Any) -> dict[str, float | int]:
    """Per-sequence SRCC at the burst protocol's thresholds.

    Keys ``srcc_r0, srcc_r0.02, srcc_r0.05, srcc_r0.1`` (``sequence_srcc`` at 0, 0.02, 0.05,
    0.1; thresholds are in target units, so targets should be on the scale the thresholds
    assume, e.g. [0, 1]), ``n_sequences`` (distinct sequence ids in the input, valid or not)
    and ``n_frames``.
    """
    x, y = _pair(pred, target)
    groups = _ids(sequence_ids, x.size)
    out: dict[str, float | int] = {}
    for t in BURST_THRESHOLDS:
        values = _sequence_values(x, y, groups, t)
        out[f"srcc_r{t:g}"] = float(np.mean(values)) if values else math.nan
    out["n_sequences"] = int(np.unique(groups).size)
    out["n_frames"] = int(x.size)
    return out


def _agreement(diff: np.ndarray, label_a: np.ndarray) -> float:
    """Fraction of pairs whose predicted sign of (a - b) matches the label; ties count 1/2."""
    correct = np.where(label_a, diff > 0, diff < 0).astype(np.float64)
    correct[diff == 0] = 0.5
    return float(correct.mean())


def pairwise_accuracy(score_a: Any, score_b: Any, prefer_a: Any) -> float:
    """Photo Triage-style pairwise accuracy.

    For each pair, the model prefers a when ``score_a > score_b``; the label prefers a when
    ``prefer_a`` is True, or, for a probability / vote fraction in [0, 1], when it is > 0.5
    (so exactly 0.5 counts as preferring b: drop such pairs beforehand if they are not
    meaningful). Returns the fraction of pairs where the two agree; pairs the model scores
    equal count as half right. Inputs must be non-empty (``EdgeIQAError`` otherwise).
    """
    a, b = _pair(score_a, score_b, ("score_a", "score_b"))
    p = _as_1d(prefer_a, "prefer_a")
    if p.size != a.size:
        raise EdgeIQAError(f"prefer_a has {p.size} values but score_a has {a.size}; they must match")
    if np.any((p < 0) | (p > 1)):
        raise EdgeIQAError("prefer_a must be booleans or probabilities in [0, 1]")
    return _agreement(a - b, p > 0.5)


def pairwise_accuracy_from_scores(pred: Any, target: Any, sequence_ids: Any) -> float:
    """Pairwise accuracy over all within-sequence frame pairs whose targets differ.

    The label of pair (i, j) is target_i > target_j; the model's preference is pred_i > pred_j
    (equal predictions count as half right). Pairs with equal targets are skipped. NaN when no
    sequence has such a pair.
    """
    x, y = _pair(pred, target)
    groups = _ids(sequence_ids, x.size)
    diffs, labels = [], []
    for idx in _members(groups):
        if idx.size < 2:
            continue
        i, j = np.triu_indices(idx.size, k=1)
        ti, tj = y[idx[i]], y[idx[j]]
        keep = ti != tj
        diffs.append(x[idx[i]][keep] - x[idx[j]][keep])
        labels.append(ti[keep] > tj[keep])
    if not diffs or sum(d.size for d in diffs) == 0:
        return math.nan
    return _agreement(np.concatenate(diffs), np.concatenate(labels))
