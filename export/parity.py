"""Accuracy regression: an exported artifact against the FP32 PyTorch model on the same images.

Both score the same split through the same views. ``parity.json`` records, for each model,
SRCC/PLCC/MAE against ground truth, and between the two: the SRCC drop, max and mean
|Δscore|, SQNR (dB, the torchao-style numerics check) and Spearman(FP32 scores, artifact
scores). Every check says whether it *ran* (the artifact in its own runtime), was *simulated*
(another runtime stood in, e.g. ONNX Runtime on the TensorRT QDQ graph) or was *skipped*
(with the reason); a skipped check is never counted as passed. Thresholds live in one place,
:data:`THRESHOLDS`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

RAN, SIMULATED, SKIPPED = "ran", "simulated", "skipped"


@dataclass(frozen=True)
class Thresholds:
    """Issue 5's limits. |Δscore| is in the model's score units.

    Burst models (:mod:`export.burst`): FP32 and FP16 keep the photo |Δscore| limits over every
    non-reference frame and task; INT8 must keep issue 13's per-burst Spearman against FP32 (mean
    over bursts, worst task) and pick the same best frame in most bursts (worst task).
    """

    fp32_max_abs_delta: float = 1e-4
    fp16_max_abs_delta: float = 1e-2
    int8_max_srcc_drop: float = 0.01
    int8_min_spearman_vs_fp32: float = 0.98
    burst_int8_min_mean_spearman: float = 0.98
    burst_int8_min_top1_agreement: float = 0.9
    version: int = 2  # 2: burst limits


THRESHOLDS = Thresholds()


@dataclass
class Check:
    """One verification: what it measured, how it ran, whether it passed (None = not judged)."""

    name: str
    status: str
    passed: bool | None
    detail: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def __post_init__(self) -> None:
        assert self.status in (RAN, SIMULATED, SKIPPED), self.status
        if self.status == SKIPPED:
            self.passed = None  # never report a skipped check as passed

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[self.passed]
        why = f" ({self.reason})" if self.reason else ""
        return f"{verdict}  {self.name:<24} {self.status:<9}{why}"


def precision_class(precision: str) -> str:
    """Which limits apply: ``fp32``, ``fp16``, or ``int8`` (W8 and W8A8 included)."""
    return {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "w8": "int8"}[precision]


def score_agreement(reference: Sequence[float], test: Sequence[float]) -> dict[str, float]:
    """How closely ``test`` scores follow ``reference`` scores (same images, same order)."""
    from edge_iqa.metrics import srcc

    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(test, dtype=np.float64)
    delta = np.abs(ref - got)
    noise = float(np.sum((ref - got) ** 2))
    return {
        "max_abs_delta": float(delta.max()),
        "mean_abs_delta": float(delta.mean()),
        "sqnr_db": math.inf if noise == 0 else float(10 * math.log10(float(np.sum(ref ** 2)) / noise)),
        "spearman_vs_fp32": float(srcc(got, ref)),
    }


def truth_metrics(scores: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    from edge_iqa.metrics import mae, plcc, srcc

    return {"srcc": srcc(scores, truth), "plcc": plcc(scores, truth), "mae": mae(scores, truth)}


def accuracy_check(precision: str, fp32: Sequence[float], artifact: Sequence[float], truth: Sequence[float], *,
                   status: str, reason: str = "", thresholds: Thresholds = THRESHOLDS) -> Check:
    """The pass/fail accuracy check of one artifact at its precision's limits."""
    ref_m, art_m = truth_metrics(fp32, truth), truth_metrics(artifact, truth)
    agree = score_agreement(fp32, artifact)
    detail: dict[str, Any] = {"n": len(truth), "fp32": ref_m, "artifact": art_m,
                              "srcc_drop": ref_m["srcc"] - art_m["srcc"], **agree}
    kind = precision_class(precision)
    if kind == "fp32":
        limits = {"max_abs_delta <=": thresholds.fp32_max_abs_delta}
        passed = agree["max_abs_delta"] <= thresholds.fp32_max_abs_delta
    elif kind == "fp16":
        limits = {"max_abs_delta <=": thresholds.fp16_max_abs_delta}
        passed = agree["max_abs_delta"] <= thresholds.fp16_max_abs_delta
    else:
        limits = {"srcc_drop <=": thresholds.int8_max_srcc_drop,
                  "spearman_vs_fp32 >=": thresholds.int8_min_spearman_vs_fp32}
        passed = (detail["srcc_drop"] <= thresholds.int8_max_srcc_drop
                  and agree["spearman_vs_fp32"] >= thresholds.int8_min_spearman_vs_fp32)
    detail["limits"] = limits
    return Check("accuracy", status, bool(passed), detail, reason)


def failed(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if c.passed is False]


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """Write ``report`` as JSON, atomically: a killed export leaves the old report or the new one."""
    from edge_iqa.outputs import atomic_write_text

    return atomic_write_text(path, json.dumps(_finite(report), indent=2, sort_keys=False, default=str) + "\n")


def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: write them as strings so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
