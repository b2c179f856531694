"""Burst importers: real photo series and burst folders, written as burst datasets.

``edge-iqa data import phototriage|burst-folders SRC --out DIR`` (registered in
:func:`edge_iqa.data.adapters.import_dataset`) writes a burst ``manifest.csv``
(``sequence,frame,path,score,split`` plus ``reference``) and ``dataset.json``; the images
stay in the download (listed under ``image_roots``).

- ``phototriage`` — Chang et al., "Automatic Triage for a Photo Series", SIGGRAPH 2016. Pair
  lists ``*pairlist*.txt`` with lines ``SERIES_ID PHOTO1 PHOTO2 PREF_1_OVER_2 RANK1 RANK2``
  (``PREF_1_OVER_2``: the share of raters preferring photo 1), images
  ``SSSSSS-PP.JPG`` (``train_val/train_val_imgs/``, ``test/test_imgs/``). A series is a
  sequence, its photos the frames in photo order. The pairs are kept in ``pairs.csv``
  (``sequence,frame_a,frame_b,path_a,path_b,prefer_a,split``) for pairwise accuracy
  (:func:`edge_iqa.metrics.pairwise_accuracy`). Per-photo scores are Bradley–Terry strengths
  fitted per series by the MM algorithm (Hunter, "MM algorithms for generalized Bradley–Terry
  models", Annals of Statistics 2004), each pair one comparison whose outcome is the share
  ``PREF_1_OVER_2`` (a fractional win); each photo also ties once against a virtual photo of
  strength 1, a prior that keeps the strength of a photo that always wins finite. Scores are
  the log-strengths min-max normalised to [0, 1] within the series (0.5 for all photos of a
  series whose strengths are equal). Splits come from the file names (``train``, ``val``,
  ``test``); without a test list, the val series are halved by seed into val and test. No
  photo is a reference (``reference`` = 0): every photo has a human score, so all are scored.
- ``burst-folders`` — one sub-folder of SRC per burst, frames sorted by file name, the first
  the reference (``reference`` = 1). Scores come from ``SRC/scores.csv`` with columns
  ``path,score`` (paths relative to SRC) and optionally ``split``; without it the import is
  refused: a placeholder score would be a label nobody gave, and unlabelled bursts can be
  scored as they are. A burst with a frame lacking a score, or with fewer than 2 frames, is
  left out with a warning; without a ``split`` column bursts are split 8:1:1 by seed.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from edge_iqa.data.adapters import IMAGE_SUFFIXES, _canonical_split, _ImageFinder, seeded_split
from edge_iqa.data.manifest import (
    IMAGE_ROOTS,
    BurstFrame,
    DatasetInfo,
    SkippedRows,
    csv_rows,
    parse_score,
    write_burst_dataset,
)
from edge_iqa.errors import DatasetError
from edge_iqa.outputs import atomic_write

log = logging.getLogger("edge_iqa.data")
PAIRS = "pairs.csv"
SCORES = "scores.csv"


# ---------------------------------------------------------------- Bradley–Terry


def bradley_terry(n_items: int, pairs: list[tuple[int, int, float]], iterations: int = 1000,
                  tolerance: float = 1e-10) -> np.ndarray:
    """Bradley–Terry strengths (geometric mean 1) by Hunter's MM algorithm.

    ``pairs``: ``(i, j, share)`` — one comparison of items i and j that i won with weight
    ``share`` ∈ [0, 1] (j with 1 − share). Each item also ties once against a virtual item of
    strength 1 (the prior of the module docstring).
    """
    wins = np.full(n_items, 0.5)  # the half win of the virtual tie
    for i, j, share in pairs:
        wins[i] += share
        wins[j] += 1.0 - share
    ii = np.array([p[0] for p in pairs], dtype=np.int64)
    jj = np.array([p[1] for p in pairs], dtype=np.int64)
    p = np.ones(n_items)
    for _ in range(iterations):
        inv = 1.0 / (p[ii] + p[jj])
        denom = np.bincount(ii, inv, n_items) + np.bincount(jj, inv, n_items) + 1.0 / (p + 1.0)
        new = wins / denom
        new /= math.exp(np.log(new).mean())
        done = np.max(np.abs(new - p) / p) < tolerance
        p = new
        if done:
            break
    return p


def normalised_scores(strengths: np.ndarray) -> np.ndarray:
    """Log-strengths min-max normalised to [0, 1]; 0.5 everywhere when they are all equal."""
    log_p = np.log(strengths)
    span = log_p.max() - log_p.min()
    if span < 1e-9:
        return np.full(log_p.shape, 0.5)
    return (log_p - log_p.min()) / span


# ---------------------------------------------------------------- Photo Triage


_SPLIT_OF_FILE = re.compile(r"(train|val|valid|validation|test)", re.IGNORECASE)


def _pairlists(src: Path) -> list[tuple[Path, str]]:
    if src.is_file():
        files = [src]
    else:
        files = sorted(p for depth in ("*", "*/*", "*/*/*") for p in src.glob(depth)
                       if p.is_file() and "pairlist" in p.name.lower() and p.suffix.lower() == ".txt")
    out = []
    for f in files:
        m = _SPLIT_OF_FILE.search(f.name)
        if m is None:
            raise DatasetError(f"{f}: cannot tell its split from the name; name it train_/val_/test_pairlist.txt")
        out.append((f, _canonical_split(m.group(1))))
    if not out:
        raise DatasetError(f"no *pairlist*.txt under {src}; point SRC at the unpacked Photo Triage folder")
    return out


def _read_pairlist(path: Path) -> list[tuple[int, int, int, float]]:
    skipped = SkippedRows(path)
    pairs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not a readable text file ({err}); download it again") from None
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) < 4:
                raise ValueError(f"{len(fields)} fields, expected SERIES_ID PHOTO1 PHOTO2 PREF_1_OVER_2 RANK1 RANK2")
            series, a, b = (int(v) for v in fields[:3])
            share = parse_score(fields[3])
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"PREF_1_OVER_2 {share} is not a share in [0, 1]")
            if a == b:
                raise ValueError(f"photo {a} is compared with itself")
        except ValueError as err:
            skipped.skip(n, str(err))
            continue
        pairs.append((series, a, b, share))
    skipped.finish()
    return pairs


def _phototriage(src: Path, seed: int):
    root = src if src.is_dir() else src.parent
    finder = _ImageFinder([root / "train_val" / "train_val_imgs", root / "test" / "test_imgs", root], root, root)
    split_of: dict[int, tuple[str, Path]] = {}
    by_series: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
    for path, split in _pairlists(src):
        for series, a, b, share in _read_pairlist(path):
            first = split_of.setdefault(series, (split, path))
            if first[0] != split:
                raise DatasetError(f"series {series} is in {first[1].name} ({first[0]}) and {path.name} ({split}); "
                                   "a series must stay in one split")
            by_series[series].append((a, b, share))
    splits = {s: sp for s, (sp, _) in split_of.items()}
    split_note = "from the pair-list file names"
    if "test" not in splits.values():
        val = sorted(s for s, sp in splits.items() if sp == "val")
        order = np.random.default_rng(seed).permutation(len(val))
        splits.update({val[i]: "test" if rank % 2 else "val" for rank, i in enumerate(order)})
        split_note += f"; no test list, so the val series were halved into val and test by seed {seed}"
    frames, pairs_out, missing = [], [], 0
    for series in sorted(by_series):
        photos = sorted({p for a, b, _ in by_series[series] for p in (a, b)})
        paths = {}
        for p in photos:
            try:
                found = finder.find(f"{series:06d}-{p:02d}.JPG")
            except ValueError as err:
                raise DatasetError(str(err)) from None
            if found is None:
                missing += 1
            else:
                paths[p] = found
        kept = [p for p in photos if p in paths]
        index = {p: k for k, p in enumerate(kept)}
        comparisons = [(index[a], index[b], s) for a, b, s in by_series[series] if a in index and b in index]
        if len(kept) < 2 or not comparisons:
            continue
        scores = normalised_scores(bradley_terry(len(kept), comparisons))
        name = f"{series:06d}"
        for p in kept:
            frames.append(BurstFrame(name, index[p], paths[p], float(scores[index[p]]), splits[series],
                                     {"reference": "0", "photo": str(p), "series": str(series)}))
        pairs_out += [(name, a, b, paths[kept[a]], paths[kept[b]], s, splits[series]) for a, b, s in comparisons]
    if missing:
        log.warning("%s: %d photos named in the pair lists were not found; their series keep the others", src, missing)
    if not frames:
        raise DatasetError(f"no Photo Triage series with images under {root}; unpack the images next to the pair lists")
    info = DatasetInfo(
        "phototriage", (0.0, 1.0),
        {"paper": "Chang et al., Automatic Triage for a Photo Series, SIGGRAPH 2016", "split": split_note},
        {"kind": "burst", "score": "Bradley-Terry log-strength per series (MM, Hunter 2004), min-max to [0, 1] "
         "within the series", "reference": "none: every photo has a human score (reference = 0 everywhere)",
         "pairs": f"{PAIRS}: sequence,frame_a,frame_b,path_a,path_b,prefer_a (share preferring a),split"},
    )
    return frames, info, pairs_out


def _write_pairs(out: Path, pairs) -> None:
    base = out.absolute()

    def write(fh):
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["sequence", "frame_a", "frame_b", "path_a", "path_b", "prefer_a", "split"])
        for seq, a, b, pa, pb, share, split in pairs:
            rel = [Path(os.path.relpath(p.absolute(), base)).as_posix() for p in (pa, pb)]
            writer.writerow([seq, a, b, *rel, repr(float(share)), split])

    atomic_write(out / PAIRS, write)


# ---------------------------------------------------------------- burst folders


def _burst_folders(src: Path, seed: int):
    if not src.is_dir():
        raise DatasetError(f"{src} is not a folder; give the folder holding one sub-folder per burst")
    scores_path = src / SCORES
    if not scores_path.is_file():
        raise DatasetError(f"{scores_path} not found; add it with columns path,score (paths relative to {src}): "
                           "edge-iqa does not invent placeholder scores")
    scores: dict[str, tuple[float, str | None]] = {}
    skipped = SkippedRows(scores_path)
    for line, row in csv_rows(scores_path, ("path", "score")):
        try:
            key = Path(os.path.normpath(row["path"].strip())).as_posix()
            scores[key] = (parse_score(row["score"]), row.get("split"))
        except (ValueError, AttributeError) as err:
            skipped.skip(line, str(err))
    skipped.finish()
    bursts = sorted(p for p in src.iterdir() if p.is_dir())
    if not bursts:
        raise DatasetError(f"{src} has no sub-folders; put each burst's frames in a folder of its own")
    kept: dict[str, list[tuple[Path, float, str | None]]] = {}
    for folder in bursts:
        images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        rel = [f"{folder.name}/{p.name}" for p in images]
        if len(images) < 2:
            log.warning("%s holds %d images; a burst needs at least 2, left out", folder, len(images))
            continue
        unscored = [r for r in rel if r not in scores]
        if unscored:
            log.warning("%s: %s has no row in %s; the burst is left out", folder, unscored[0], SCORES)
            continue
        kept[folder.name] = [(p, *scores[r]) for p, r in zip(images, rel)]
    if not kept:
        raise DatasetError(f"no burst under {src} has 2 or more scored frames; check {SCORES} and the folders")
    splits = _burst_splits(kept, scores_path, seed)
    frames = [
        BurstFrame(name, i, path, score, splits[name], {"reference": "1" if i == 0 else "0"})
        for name, items in kept.items() for i, (path, score, _) in enumerate(items)
    ]
    values = [f.score for f in frames]
    lo, hi = min(values), max(values)
    info = DatasetInfo(
        src.name, (lo, hi if hi > lo else lo + 1.0),
        {"scores": str(scores_path.absolute())},
        {"kind": "burst", "score": "as given in scores.csv; score_range is their min/max",
         "reference": "the first frame of each folder by name (reference = 1)"},
    )
    return frames, info, []


def _burst_splits(kept, scores_path: Path, seed: int) -> dict[str, str]:
    given = {name: {s for _, _, s in items} for name, items in kept.items()}
    if all(s == {None} or s == {""} for s in given.values()):
        return seeded_split(kept, (8, 1, 1), seed)
    splits = {}
    for name, values in given.items():
        if len(values) != 1:
            raise DatasetError(f"{scores_path}: burst {name!r} has frames in splits {sorted(map(str, values))}; "
                               "put every frame of a burst in one split")
        try:
            splits[name] = _canonical_split(next(iter(values)))
        except ValueError as err:
            raise DatasetError(f"{scores_path}: burst {name!r}: {err}") from None
    return splits


# ---------------------------------------------------------------- registry

BURST_ADAPTERS: dict[str, Callable] = {"phototriage": _phototriage, "burst-folders": _burst_folders}


def import_burst_dataset(kind: str, src: Path | str, out: Path | str, seed: int = 0) -> Path:
    """Read burst dataset ``kind`` at ``src`` and write it as a burst dataset to ``out``."""
    src, out = Path(src), Path(out)
    frames, info, pairs = BURST_ADAPTERS[kind](src, seed)
    download = src if src.is_dir() else src.parent
    roots = [Path(os.path.relpath(os.path.realpath(download), os.path.realpath(out.absolute()))).as_posix()]
    provenance = {"source": str(src.absolute()), "adapter": kind, "seed": seed, **info.provenance}
    info = DatasetInfo(info.name, info.score_range, provenance, {**info.extra, IMAGE_ROOTS: roots})
    root = write_burst_dataset(out, frames, info)
    if pairs:
        _write_pairs(root, pairs)
    return root
