"""Checks of burst labels, the way the burst IQA paper characterises its own (Findings 1–2).

Liang et al. ("Burst Image Quality Assessment: A New Benchmark and Unified Framework for
Multiple Downstream Tasks") report that 40 % of frames are redundant (|Δ| ≤ 0.1 dB), 25 %
cost PSNR when removed and removing the other 35 % gives slight gains (Finding 1), and that
per-frame rankings are stable across burst lengths, PLCC > 0.7 (Finding 2).

:func:`label_statistics` computes both from a burst dataset's manifest columns
(``delta_<task>_db`` and ``delta_<task>_first<k>_db``, written by
:mod:`edge_iqa.data.burst_synth`), reference frames left out:

- ``redundant`` / ``harmful_to_remove`` / ``helpful_to_remove``: shares of frames with
  |Δ| ≤ 0.1 dB, Δ > 0.1 dB and Δ < −0.1 dB;
- ``stability``: for each shorter length k, the PLCC between the Δ of frames 1 … k−1
  computed in the burst's first k frames and their Δ in the full burst, pooled over all
  bursts (a k-frame burst has too few frames for a per-burst correlation; pooling is our
  choice, the paper does not say).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge_iqa.data.manifest import BurstFrame, read_burst_manifest

REDUNDANT_DB = 0.1
_DELTA = re.compile(r"^delta_(?P<task>.+?)_db$")
_PREFIX = re.compile(r"^delta_(?P<task>.+?)_first(?P<k>\d+)_db$")


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _tasks(frames: Sequence[BurstFrame]) -> dict[str, list[int]]:
    """Task name → the shorter lengths k with columns, from the columns of the first frame."""
    keys = frames[0].extra.keys() if frames else ()
    tasks: dict[str, list[int]] = {}
    for key in keys:
        if (m := _PREFIX.match(key)) is not None:
            tasks.setdefault(m["task"], []).append(int(m["k"]))
        elif (m := _DELTA.match(key)) is not None:
            tasks.setdefault(m["task"], [])
    return {t: sorted(ks) for t, ks in tasks.items()}


def _is_reference(frame: BurstFrame) -> bool:
    return frame.extra.get("reference", "0").strip() == "1"


def _shares(deltas: np.ndarray) -> dict[str, Any]:
    n = int(deltas.size)
    if n == 0:
        return {"frames": 0}
    return {
        "frames": n,
        "redundant": float(np.mean(np.abs(deltas) <= REDUNDANT_DB)),
        "harmful_to_remove": float(np.mean(deltas > REDUNDANT_DB)),
        "helpful_to_remove": float(np.mean(deltas < -REDUNDANT_DB)),
        "mean_db": float(deltas.mean()),
        "median_db": float(np.median(deltas)),
    }


def _plcc(x: np.ndarray, y: np.ndarray) -> float:
    from edge_iqa.metrics import plcc

    return float(plcc(x, y)) if x.size >= 3 else math.nan


def label_statistics(dataset: Path | str | Mapping[str, Sequence[BurstFrame]]) -> dict[str, Any]:
    """Per task: shares of redundant / harmful / helpful frames and rank stability (see above).

    ``dataset``: a burst dataset folder or its sequences (``read_burst_manifest``'s result).
    Tasks are found from the ``delta_<task>_db`` columns; none gives ``{}``.
    """
    sequences = read_burst_manifest(dataset) if isinstance(dataset, (str, Path)) else dataset
    frames = [f for seq in sequences.values() for f in seq]
    out: dict[str, Any] = {}
    for task, lengths in _tasks(frames).items():
        scored = [f for f in frames if not _is_reference(f)]
        deltas = np.array([_float(f.extra.get(f"delta_{task}_db")) for f in scored])
        stats = _shares(deltas[np.isfinite(deltas)])
        stability = {}
        for k in lengths:
            short = np.array([_float(f.extra.get(f"delta_{task}_first{k}_db")) for f in scored])
            both = np.isfinite(short) & np.isfinite(deltas)
            stability[str(k)] = {"plcc": _plcc(short[both], deltas[both]), "frames": int(both.sum())}
        if stability:
            stats["stability"] = stability
        out[task] = stats
    return out


def format_label_statistics(stats: Mapping[str, Any]) -> list[str]:
    """Lines for a table: one per task, shares in % and stability PLCC per shorter length."""
    lines = []
    for task, s in stats.items():
        if not s.get("frames"):
            lines.append(f"{task}: no labelled frames")
            continue
        stab = ", ".join(f"k={k}: PLCC {v['plcc']:.3f}" for k, v in s.get("stability", {}).items())
        lines.append(
            f"{task}: {s['frames']} frames, redundant (|Δ| ≤ {REDUNDANT_DB} dB) {100 * s['redundant']:.0f} %, "
            f"harmful to remove {100 * s['harmful_to_remove']:.0f} %, helpful to remove "
            f"{100 * s['helpful_to_remove']:.0f} %, median Δ {s['median_db']:.3f} dB"
            + (f"; rank stability {stab}" if stab else "")
        )
    return lines
