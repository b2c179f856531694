"""The canonical dataset format every edge-iqa stage reads and writes.

A dataset is a directory holding two files:

- ``manifest.csv`` with columns ``path,score,split`` (plus any extra columns, kept as strings).
  ``path`` is relative to the directory, a higher ``score`` means a better photo and ``split``
  is one of ``train``, ``val``, ``test``.
- ``dataset.json`` with ``name``, ``score_range`` ``[low, high]`` (the dataset's official
  scale), ``provenance`` (where the data came from), optionally ``image_roots`` and any further
  keys.

Image paths stay inside the dataset: after symlinks are resolved, every manifest path must lie
in the dataset folder or in a folder that ``dataset.json`` lists under ``image_roots``
(relative to the dataset folder, or absolute). The writers list them when the images live
elsewhere (``data import`` points at the download, the images are not copied), so a row such as
``../../etc/passwd``, an absolute path or a link out of the folder is never opened.

Bursts use the same two files with ``manifest.csv`` columns
``sequence,frame,path,score,split``: one row per frame, the frames of a sequence ordered by
``frame``.

Readers are forgiving about single rows and strict about the file: a row with a missing or
non-numeric score, an unknown split, a path outside the dataset or a missing image is skipped
with one warning line on the ``edge_iqa.data`` logger (naming ``manifest.csv`` and the line); a
photo listed twice, or in two splits (train/test leakage), is kept with a warning naming both
lines. A missing or unreadable file, missing columns or a manifest with no usable row raise
:class:`edge_iqa.errors.DatasetError`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from edge_iqa.errors import DatasetError
from edge_iqa.outputs import atomic_write

MANIFEST = "manifest.csv"
DATASET_JSON = "dataset.json"
SPLITS = ("train", "val", "test")
COLUMNS = ("path", "score", "split")
BURST_COLUMNS = ("sequence", "frame", "path", "score", "split")
IMAGE_ROOTS = "image_roots"  # the dataset.json key

log = logging.getLogger("edge_iqa.data")


@dataclass(frozen=True)
class Record:
    """One labelled photo: absolute ``path``, ``score`` (higher = better), ``split``."""

    path: Path
    score: float
    split: str
    extra: dict[str, str] = field(default_factory=dict, compare=True, hash=False)


@dataclass(frozen=True)
class BurstFrame:
    """One frame of a burst: the ``frame``-th photo of ``sequence``."""

    sequence: str
    frame: int
    path: Path
    score: float
    split: str
    extra: dict[str, str] = field(default_factory=dict, compare=True, hash=False)


@dataclass(frozen=True)
class DatasetInfo:
    """The contents of ``dataset.json``; keys beyond the three known ones live in ``extra``."""

    name: str
    score_range: tuple[float, float]
    provenance: dict[str, Any] = field(default_factory=dict, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.score_range)
        object.__setattr__(self, "score_range", (lo, hi))

    def to_dict(self) -> dict[str, Any]:
        # Known keys first so the file reads top-down; extra keys cannot shadow them.
        data = {"name": self.name, "score_range": list(self.score_range), "provenance": self.provenance}
        data.update({k: v for k, v in self.extra.items() if k not in data})
        return data


class SkippedRows:
    """Reports skipped rows of one input file, one warning line each, then a summary.

    Used by the readers here and by the adapters. After ``limit`` lines the rest are only
    counted, so a moved image folder gives a readable log rather than ten thousand lines.
    """

    def __init__(self, source: Path | str, limit: int = 50, unit: str = "line") -> None:
        self.source = str(source)
        self.limit = limit
        self.unit = unit  # "line" for CSV files, "entry" for arrays such as .mat files
        self.reasons: Counter[str] = Counter()

    def skip(self, line: int | str, reason: str, kind: str = "bad row") -> None:
        self.reasons[kind] += 1
        if self.count <= self.limit:
            log.warning("%s %s %s: %s; skipping the row", self.source, self.unit, line, reason)

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def finish(self) -> None:
        if self.count > self.limit:
            detail = ", ".join(f"{n} {kind}" for kind, n in sorted(self.reasons.items()))
            log.warning("%s: skipped %d rows in all (%s)", self.source, self.count, detail)


# ---------------------------------------------------------------- parsing single fields


def parse_score(text: str | None) -> float:
    """A finite float, or ValueError with a message fit for the user."""
    if text is None or not text.strip():
        raise ValueError("score is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"score {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"score {text.strip()!r} is not a finite number")
    return value


def parse_split(text: str | None) -> str:
    value = (text or "").strip().lower()
    if value not in SPLITS:
        raise ValueError(f"split {text!r} is not one of {', '.join(SPLITS)}")
    return value


def _check_split_arg(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _resolve(root: Path, text: str | None) -> Path:
    """Absolute path of a manifest entry; normpath (not resolve) keeps symlinked folders."""
    if text is None or not text.strip():
        raise ValueError("path is empty")
    if "\0" in text:
        raise ValueError("path holds a NUL byte (a binary file saved as CSV?)")
    return Path(os.path.normpath(root.absolute() / text.strip()))


# ---------------------------------------------------------------- containment


class ImageRoots:
    """The folders a dataset's images may lie in: the dataset folder and its ``image_roots``.

    Membership is decided on real paths (symlinks resolved), so neither ``..`` nor an absolute
    path nor a link inside the folder leads out of it.
    """

    def __init__(self, root: Path, extra: Iterable[str | Path] = ()) -> None:
        self.root = Path(root).absolute()
        self.folders = tuple(dict.fromkeys(Path(os.path.realpath(self.root / f)) for f in (".", *extra)))

    @classmethod
    def of_dataset(cls, root: Path) -> "ImageRoots":
        """The roots ``root/dataset.json`` declares (the folder alone when it has none)."""
        if not (root / DATASET_JSON).is_file():
            return cls(root)
        return cls(root, _declared_roots(root / DATASET_JSON, read_dataset_info(root).extra.get(IMAGE_ROOTS)))

    def real_path(self, path: Path) -> Path | None:
        """``path`` with symlinks resolved when it lies inside a root, else None."""
        real = Path(os.path.realpath(path))
        return real if any(real == f or f in real.parents for f in self.folders) else None

    def refusal(self, text: str, path: Path) -> str:
        real = os.path.realpath(path)
        where = f" ({real})" if str(real) != text.strip() else ""
        declared = f" and its {IMAGE_ROOTS}" if len(self.folders) > 1 else ""
        return (f"path {text.strip()!r}{where} is outside the dataset folder {self.root}{declared}; edge-iqa "
                f"reads no image from elsewhere (list its folder under {IMAGE_ROOTS!r} in {DATASET_JSON} to allow it)")


def _declared_roots(path: Path, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DatasetError(f"{path}: {IMAGE_ROOTS} must be a list of folder paths, got {value!r}")
    return list(value)


class _RepeatedImages:
    """Warns, once per repeat, about a photo listed twice: in one split it counts twice; in two
    splits the test scores a photo the model was trained on (the classic IQA leakage)."""

    def __init__(self, source: Path, limit: int = 20) -> None:
        self.source = source
        self.limit = limit
        self.first: dict[Path, tuple[int, str]] = {}
        self.repeats = 0
        self.across_splits = 0

    def see(self, line: int, image: Path, text: str, split: str) -> None:
        first_line, first_split = self.first.setdefault(image, (line, split))
        if first_line == line:
            return
        self.repeats += 1
        if first_split != split:
            self.across_splits += 1
            problem = (f"image {text.strip()!r} is in split {split!r} here and in {first_split!r} on line "
                       f"{first_line}: the same photo in two splits leaks training data into the evaluation; "
                       "keep it in one split")
        else:
            problem = f"image {text.strip()!r} repeats line {first_line} (split {split!r}): it counts twice; remove one row"
        if self.repeats <= self.limit:
            log.warning("%s line %d: %s", self.source, line, problem)

    def finish(self) -> None:
        if self.repeats > self.limit:
            log.warning("%s: %d rows repeat an earlier image in all, %d of them in another split",
                        self.source, self.repeats, self.across_splits)


# ---------------------------------------------------------------- reading


def manifest_path(root: Path | str) -> Path:
    """``root/manifest.csv``, or DatasetError with one line saying what is wrong with ``root``."""
    root = Path(root)
    if root.is_file():
        if root.name != MANIFEST:
            raise DatasetError(f"{root} is a file, expected a dataset folder (with {MANIFEST} and {DATASET_JSON}); "
                               "give the folder")
        root = root.parent  # be kind to users who name the manifest itself
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; build one with `edge-iqa data synth` or `edge-iqa data import`")
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path} not found; a dataset folder needs {MANIFEST} and {DATASET_JSON}")
    return path


def csv_rows(path: Path, required: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a CSV whose header has the ``required`` columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: files saved by Excel
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetError(
                    f"{path} lacks column(s) {', '.join(missing)}; the header must include {','.join(required)}"
                )
            reader.fieldnames = header
            for row in reader:
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue  # blank line
                yield reader.line_num, row
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as err:
        raise DatasetError(f"{path} is not a readable CSV ({err}); fix the file") from None


def _extra(row: dict[str, Any], known: Iterable[str]) -> dict[str, str]:
    known = set(known)
    # DictReader puts surplus cells under the key None; they have no column name to keep.
    return {k: (v or "") for k, v in row.items() if k is not None and k not in known}


def read_manifest(root: Path | str, split: str | None = None, check_files: bool = True) -> list[Record]:
    """The usable rows of ``root/manifest.csv`` (optionally of one split), in file order.

    Bad rows are skipped with one warning each; ``check_files`` also skips rows whose image is
    missing. Raises DatasetError when the file or a column is missing or no row is usable.
    """
    _check_split_arg(split)
    path = manifest_path(root)
    base = path.parent
    roots = ImageRoots.of_dataset(base)
    skipped = SkippedRows(path)
    repeats = _RepeatedImages(path)
    records = []
    for line, row in csv_rows(path, COLUMNS):
        try:
            score = parse_score(row["score"])
            row_split = parse_split(row["split"])
            image = _resolve(base, row["path"])
        except ValueError as err:
            skipped.skip(line, str(err))
            continue
        real = roots.real_path(image)
        if real is None:
            skipped.skip(line, roots.refusal(row["path"], image), "outside the dataset")
            continue
        repeats.see(line, real, row["path"], row_split)
        if split is not None and row_split != split:
            continue
        if check_files and not image.is_file():
            skipped.skip(line, f"image {image} not found", "missing image")
            continue
        records.append(Record(image, score, row_split, _extra(row, COLUMNS)))
    skipped.finish()
    repeats.finish()
    if not records:
        raise DatasetError(_no_rows_message(path, split, skipped))
    return records


def _no_rows_message(path: Path, split: str | None, skipped: SkippedRows) -> str:
    where = f" in split {split!r}" if split else ""
    why = f" ({skipped.count} rows skipped, see the warnings above)" if skipped.count else ""
    return f"{path} has no usable rows{where}{why}; fix the rows or rebuild the dataset"


def read_burst_manifest(
    root: Path | str, split: str | None = None, check_files: bool = True
) -> dict[str, list[BurstFrame]]:
    """The sequences of a burst dataset, ``{sequence: frames ordered by frame index}``.

    Sequences keep the order of their first row. All frames of a sequence must share one
    split (a burst split across train and test would leak); a repeated frame index is skipped.
    """
    _check_split_arg(split)
    path = manifest_path(root)
    base = path.parent
    roots = ImageRoots.of_dataset(base)
    skipped = SkippedRows(path)
    sequences: dict[str, dict[int, BurstFrame]] = {}
    split_of: dict[str, tuple[str, int]] = {}
    for line, row in csv_rows(path, BURST_COLUMNS):
        try:
            frame = _parse_burst_row(base, row)
        except ValueError as err:
            skipped.skip(line, str(err))
            continue
        if roots.real_path(frame.path) is None:
            skipped.skip(line, roots.refusal(row["path"], frame.path), "outside the dataset")
            continue
        first = split_of.setdefault(frame.sequence, (frame.split, line))
        if first[0] != frame.split:
            raise DatasetError(
                f"{path} line {line}: sequence {frame.sequence!r} is in split {frame.split!r} here but "
                f"{first[0]!r} on line {first[1]}; put every frame of a burst in one split"
            )
        if split is not None and frame.split != split:
            continue
        frames = sequences.setdefault(frame.sequence, {})
        if frame.frame in frames:
            skipped.skip(line, f"frame {frame.frame} of sequence {frame.sequence!r} appears twice")
            continue
        if check_files and not frame.path.is_file():
            skipped.skip(line, f"image {frame.path} not found", "missing image")
            continue
        frames[frame.frame] = frame
    skipped.finish()
    result = {seq: [frames[i] for i in sorted(frames)] for seq, frames in sequences.items() if frames}
    if not result:
        raise DatasetError(_no_rows_message(path, split, skipped))
    return result


def _parse_burst_row(base: Path, row: dict[str, str]) -> BurstFrame:
    sequence = (row["sequence"] or "").strip()
    if not sequence:
        raise ValueError("sequence is empty")
    try:
        frame = int((row["frame"] or "").strip())
    except ValueError:
        raise ValueError(f"frame {row['frame']!r} is not an integer") from None
    return BurstFrame(
        sequence,
        frame,
        _resolve(base, row["path"]),
        parse_score(row["score"]),
        parse_split(row["split"]),
        _extra(row, BURST_COLUMNS),
    )


def read_dataset_info(root: Path | str) -> DatasetInfo:
    """The dataset's ``dataset.json``; without one, a default built from the scores' min/max."""
    root = Path(root)
    path = root / DATASET_JSON
    if not path.is_file():
        return _default_info(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); fix it or delete it to use defaults") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object with name, score_range and provenance")
    return _info_from_dict(path, data)


def _info_from_dict(path: Path, data: dict[str, Any]) -> DatasetInfo:
    rng = data.get("score_range")
    try:
        lo, hi = (float(v) for v in rng)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: score_range must be [low, high], got {rng!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise DatasetError(f"{path}: score_range must be [low, high] with high > low, got {rng!r}")
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise DatasetError(f"{path}: provenance must be a JSON object, got {provenance!r}")
    name = str(data.get("name") or path.parent.name)
    extra = {k: v for k, v in data.items() if k not in ("name", "score_range", "provenance")}
    return DatasetInfo(name, (lo, hi), provenance, extra)


def _default_info(root: Path) -> DatasetInfo:
    path = manifest_path(root)
    scores = []
    # Only the score column matters here; the readers report bad rows when records are read.
    for _, row in csv_rows(path, ("score",)):
        try:
            scores.append(parse_score(row["score"]))
        except ValueError:
            continue
    if not scores:
        raise DatasetError(f"{path} has no usable scores; fix the rows or rebuild the dataset")
    lo, hi = min(scores), max(scores)
    if hi <= lo:
        hi = lo + 1.0  # a constant-score manifest still needs a non-empty range
    log.warning(
        "%s not found; using name %r and score_range [%g, %g] from the scores (write a %s to fix the scale)",
        root / DATASET_JSON, root.absolute().name, lo, hi, DATASET_JSON,
    )
    return DatasetInfo(root.absolute().name, (lo, hi), {}, {})


# ---------------------------------------------------------------- writing


def write_dataset(root: Path | str, records: Iterable[Record], info: DatasetInfo) -> Path:
    """Write ``manifest.csv`` (paths relative to ``root``) and ``dataset.json``; return ``root``."""
    rows = []
    for r in records:
        rows.append({"path": r.path, "score": r.score, "split": r.split, **r.extra})
    return _write(Path(root), rows, COLUMNS, info)


def write_burst_dataset(
    root: Path | str,
    frames: Mapping[str, Iterable[BurstFrame]] | Iterable[BurstFrame],
    info: DatasetInfo,
) -> Path:
    """Write a burst ``manifest.csv`` and ``dataset.json``; ``frames`` may be grouped by sequence."""
    if isinstance(frames, Mapping):
        frames = [f for seq in frames.values() for f in seq]
    rows = [
        {"sequence": f.sequence, "frame": f.frame, "path": f.path, "score": f.score, "split": f.split, **f.extra}
        for f in frames
    ]
    return _write(Path(root), rows, BURST_COLUMNS, info)


def _write(root: Path, rows: list[dict[str, Any]], columns: tuple[str, ...], info: DatasetInfo) -> Path:
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} is a file; give a folder for the dataset")
    if not rows:
        raise DatasetError(f"no records to write to {root / MANIFEST}")
    root.mkdir(parents=True, exist_ok=True)
    extra_columns = list(dict.fromkeys(k for row in rows for k in row if k not in columns))
    fieldnames = [*columns, *extra_columns]
    base = root.absolute()
    info = _with_image_roots(info, base, [Path(row["path"]).absolute() for row in rows])
    roots = ImageRoots(base, info.extra.get(IMAGE_ROOTS, ()))
    for row in rows:
        _check_row(row, root)
        if roots.real_path(Path(row["path"]).absolute()) is None:
            raise DatasetError(f"record {row['path']} is outside {root} and the {IMAGE_ROOTS} of its dataset.json; "
                               f"list its folder in DatasetInfo.extra[{IMAGE_ROOTS!r}]")
        # Posix separators so a dataset written on one OS reads on another.
        row["path"] = Path(os.path.relpath(Path(row["path"]).absolute(), base)).as_posix()
        row["score"] = repr(float(row["score"]))  # repr round-trips the float exactly
    atomic_write(root / MANIFEST, lambda fh: _write_csv(fh, fieldnames, rows))  # a crash never leaves half a manifest
    text = json.dumps(info.to_dict(), indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(root / DATASET_JSON, lambda fh: fh.write(text))
    return root


def _with_image_roots(info: DatasetInfo, base: Path, images: list[Path]) -> DatasetInfo:
    """``info`` listing the folders of the images outside ``base`` as ``image_roots`` (relative
    to ``base``), unless the writer gave them: what is written here, the readers will read."""
    if IMAGE_ROOTS in info.extra:
        return info
    inside = ImageRoots(base)
    folders = sorted({Path(os.path.realpath(p)).parent for p in images if inside.real_path(p) is None})
    outermost = [f for f in folders if not any(o in f.parents for o in folders)]
    if not outermost:
        return info
    relative = [Path(os.path.relpath(f, os.path.realpath(base))).as_posix() for f in outermost]
    return DatasetInfo(info.name, info.score_range, info.provenance, {**info.extra, IMAGE_ROOTS: relative})


def _check_row(row: dict[str, Any], root: Path) -> None:
    # Refuse to write what read_manifest would later skip: the error belongs to the writer.
    if row["split"] not in SPLITS:
        raise DatasetError(f"record {row['path']} has split {row['split']!r}; use one of {', '.join(SPLITS)}")
    if not math.isfinite(float(row["score"])):
        raise DatasetError(f"record {row['path']} has score {row['score']!r}; scores must be finite numbers")


def _write_csv(fh, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(fh, fieldnames=fieldnames, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


