"""Adapters: public IQA datasets, read in their own layouts, written in the canonical format.

Each adapter reads a dataset as its authors distribute it and returns canonical records; the
images are not copied, ``manifest.csv`` points at them with paths relative to the output
folder. Scores keep each dataset's official scale (recorded as ``score_range``):

- ``uhd-iqa`` — Hosu et al., "UHD-IQA Benchmark Database: Pushing the Boundaries of Blind
  Photo Quality Assessment", ECCV Workshops (AIM) 2024. Metadata CSV ``image_name,
  quality_mos, set`` with set ∈ training/validation/test (the official split); MOS in [0, 1].
- ``koniq10k`` — Hosu et al., "KonIQ-10k: An Ecologically Valid Database for Deep Learning of
  Blind Image Quality Assessment", IEEE TIP 2020. ``koniq10k_scores_and_distributions.csv``
  (``image_name``, ``MOS`` on the 1–5 ACR scale); images in ``1024x768/`` or ``512x384/``.
  That CSV has no split, so a seeded 7:1:2 split is drawn (the paper's proportions) unless a
  CSV with a ``set`` column (``koniq10k_distributions_sets.csv``) is present.
- ``spaq`` — Fang et al., "Perceptual Quality Assessment of Smartphone Photography", CVPR 2020.
  ``MOS and Image attribute scores.xlsx`` saved as CSV (``Image name``, ``MOS`` in [0, 100]);
  images in ``TestImage/``; seeded 8:1:1 split.
- ``live-challenge`` — Ghadiyaram & Bovik, "Massive Online Crowdsourced Study of Subjective
  and Objective Picture Quality", IEEE TIP 2016. ``Data/AllImages_release.mat`` and
  ``Data/AllMOS_release.mat`` (MOS in [0, 100]); images in ``Images/``, the first 7 (the
  raters' training images) in ``Images/trainingImages/``; seeded 8:1:1 split.
- ``csv`` — any ``path,score[,split]`` CSV, paths relative to the CSV; seeded 8:1:1 split when
  there is no split column.

Seeded splits are drawn over every image name the metadata lists, before any image is looked
up, so a partial download keeps each image in the same split as the full one.

Images are looked up inside the download only (SRC, or the folder of a metadata file given as
SRC): a name such as ``../../etc/passwd`` or an absolute path elsewhere is refused with its line
number and left out of the new manifest, whose ``dataset.json`` lists the download under
``image_roots`` so the readers accept exactly those images. A photo listed twice is kept once.
"""

from __future__ import annotations

import csv
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edge_iqa.data.manifest import (
    IMAGE_ROOTS,
    DatasetInfo,
    ImageRoots,
    Record,
    SkippedRows,
    csv_rows,
    parse_score,
    write_dataset,
)
from edge_iqa.errors import DatasetError
from edge_iqa.io import IMAGE_SUFFIXES

# Split names as the datasets spell them → canonical names.
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


@dataclass
class _Entry:
    """One image as the dataset's metadata lists it, before validation."""

    line: int
    name: str
    score: str
    split: str | None = None  # raw split text; None where the split is drawn by seed
    extra: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- shared helpers


def seeded_split(names: Iterable[str], ratios: Sequence[float], seed: int) -> dict[str, str]:
    """Assign each distinct name to train/val/test in proportion to ``ratios``, by seed.

    Names are sorted first so the split depends on the set of names and the seed only, not on
    the order of the metadata file. Every split gets at least one name when there are three.
    """
    unique = sorted(set(names))
    order = np.random.default_rng(seed).permutation(len(unique))
    n = len(unique)
    total = float(sum(ratios))
    n_val = int(round(n * ratios[1] / total))
    n_test = int(round(n * ratios[2] / total))
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_train = n - n_val - n_test
    labels = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return {unique[i]: labels[rank] for rank, i in enumerate(order)}


def _canonical_split(text: str | None) -> str:
    value = SPLIT_ALIASES.get((text or "").strip().lower())
    if value is None:
        raise ValueError(f"split {text!r} is not one of {', '.join(sorted(SPLIT_ALIASES))}")
    return value


class _ImageFinder:
    """Finds an image by the name the metadata gives, inside the download ``inside`` only.

    First the dataset's usual folders (one stat each), then, once, an index of every image
    under ``root`` by file name, for layouts that unpack into an extra folder level.
    """

    def __init__(self, folders: Iterable[Path], root: Path | None, inside: Path) -> None:
        self.folders = list(dict.fromkeys(folders))
        self.root = root
        self.inside = ImageRoots(inside)
        self._index: dict[str, Path] | None = None

    def find(self, name: str) -> Path | None:
        """The image's path, None when it is not there; ValueError when ``name`` leads outside."""
        for folder in self.folders:
            candidate = Path(os.path.normpath(folder.absolute() / name))
            if self.inside.real_path(candidate) is None:
                raise ValueError(f"path {name!r} leads outside {self.inside.root}; edge-iqa imports only images "
                                 "inside the download")
            if candidate.is_file():
                return candidate
        if self.root is None:
            return None
        index = self._build_index() if self._index is None else self._index
        base = Path(name).name
        found = index.get(base) or index.get(base.lower())
        if found is not None and self.inside.real_path(found) is None:
            raise ValueError(f"{found} links outside {self.inside.root}; edge-iqa imports only images inside the download")
        return found

    def _build_index(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()  # deterministic: the first folder in sorted order wins
            for fn in sorted(filenames):
                if Path(fn).suffix.lower() in IMAGE_SUFFIXES:
                    path = Path(os.path.normpath(Path(dirpath, fn).absolute()))
                    index.setdefault(fn, path)
                    index.setdefault(fn.lower(), path)
        self._index = index
        return index

    def describe(self) -> str:
        return str(self.root or (self.folders[0] if self.folders else "."))


def _records(
    source: Path,
    entries: Sequence[_Entry],
    finder: _ImageFinder,
    splits: dict[str, str] | None = None,
    unit: str = "line",
) -> list[Record]:
    """Validated records from metadata entries; bad rows and missing images are skipped."""
    skipped = SkippedRows(source, unit=unit)
    records: list[Record] = []
    seen: dict[Path, tuple[int | str, str]] = {}
    for e in entries:
        try:
            if not e.name.strip():
                raise ValueError("image name is empty")
            score = parse_score(e.score)
            split = splits[e.name] if splits is not None else _canonical_split(e.split)
        except ValueError as err:
            skipped.skip(e.line, str(err))
            continue
        try:
            image = finder.find(e.name.strip())
        except ValueError as err:
            skipped.skip(e.line, str(err), "outside the download")
            continue
        if image is None:
            skipped.skip(e.line, f"image {e.name} not found under {finder.describe()}", "missing image")
            continue
        real = Path(os.path.realpath(image))
        if real in seen:
            first_line, first_split = seen[real]
            where = f", in split {first_split!r} there and {split!r} here" if first_split != split else ""
            skipped.skip(e.line, f"image {e.name} is listed twice (first on {skipped.unit} {first_line}{where})",
                         "duplicate")
            continue
        seen[real] = (e.line, split)
        records.append(Record(image, score, split, e.extra))
    skipped.finish()
    if not records:
        why = f" ({skipped.count} skipped, see the warnings above)" if skipped.count else ""
        raise DatasetError(
            f"{source}: no usable rows{why}; check that the images are unpacked next to the metadata"
        )
    return records


def _walk_files(src: Path, depth: int = 2) -> list[Path]:
    """Files under ``src`` down to ``depth`` folder levels, shallowest first, sorted."""
    found, level = [], [src]
    for _ in range(depth + 1):
        next_level = []
        for folder in level:
            try:
                children = sorted(folder.iterdir())
            except OSError:
                continue
            found += [c for c in children if c.is_file()]
            next_level += [c for c in children if c.is_dir()]
        level = next_level
    return found


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _find_csvs(src: Path, columns: Sequence[str], preferred: Sequence[str] = ()) -> list[Path]:
    """CSV files whose header has ``columns``: ``src`` itself, or under it, preferred names first."""
    if src.is_file():
        if not set(columns) <= set(_header(src)):
            raise DatasetError(f"{src} lacks column(s) {', '.join(c for c in columns if c not in _header(src))}")
        return [src]
    csvs = [p for p in _walk_files(src) if p.suffix.lower() == ".csv"]
    csvs.sort(key=lambda p: (p.name not in preferred, preferred.index(p.name) if p.name in preferred else 0))
    return [p for p in csvs if set(columns) <= set(_header(p))]


def _one_csv(src: Path, columns: Sequence[str], preferred: Sequence[str], what: str) -> Path:
    found = _find_csvs(src, columns, preferred)
    if not found:
        want = preferred[0] if preferred else "a CSV"
        raise DatasetError(f"no {what} found under {src}: expected {want} with columns {', '.join(columns)}")
    return found[0]


def _src_dir(src: Path) -> Path:
    return src if src.is_dir() else src.parent


def _ratio_text(ratios: Sequence[int], seed: int) -> str:
    return f"seeded {':'.join(str(r) for r in ratios)} train:val:test by image name, seed {seed}"


# ---------------------------------------------------------------- the adapters


def _uhd_iqa(src: Path, seed: int) -> tuple[list[Record], DatasetInfo]:
    columns = ("image_name", "quality_mos", "set")
    metadata = _find_csvs(src, columns, ("uhd-iqa-metadata.csv",))
    if not metadata:
        raise DatasetError(f"no UHD-IQA metadata CSV under {src}: expected a CSV with columns {', '.join(columns)}")
    sets = ("training", "validation", "test", "train", "val")
    records: list[Record] = []
    for csv_path in metadata:  # the metadata may come as one file or one per set
        base = csv_path.parent
        folders = [base, base / "images", *(f / s for f in (base, base / "images", base / "challenge") for s in sets)]
        entries = [
            _Entry(line, row["image_name"] or "", row["quality_mos"], row["set"], _keep(row, columns))
            for line, row in csv_rows(csv_path, columns)
        ]
        records += _records(csv_path, entries, _ImageFinder(folders, _src_dir(src), _src_dir(src)))
    info = DatasetInfo(
        "uhd-iqa",
        (0.0, 1.0),
        {"file": [str(p.absolute()) for p in metadata], "split": "official (set column)",
         "citation": "Hosu et al., UHD-IQA Benchmark Database, ECCV Workshops 2024"},
        {"score": "quality_mos in [0, 1]"},
    )
    return records, info


def _koniq10k(src: Path, seed: int) -> tuple[list[Record], DatasetInfo]:
    preferred = ("koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv")
    csv_path = _one_csv(src, ("image_name", "MOS"), preferred, "KonIQ-10k scores CSV")
    rows = list(csv_rows(csv_path, ("image_name", "MOS")))
    official = bool(rows) and "set" in rows[0][1]
    entries = [
        _Entry(line, row["image_name"] or "", row["MOS"], row.get("set"), _keep(row, ("image_name", "MOS", "set")))
        for line, row in rows
    ]
    ratios = (7, 1, 2)
    splits = None if official else seeded_split((e.name for e in entries), ratios, seed)
    base, top = csv_path.parent, _src_dir(src)
    folders = [d / sub for d in (base, top) for sub in ("1024x768", "512x384", "images", ".")]
    records = _records(csv_path, entries, _ImageFinder(folders, top, top), splits)
    info = DatasetInfo(
        "koniq10k",
        (1.0, 5.0),
        {"file": str(csv_path.absolute()), "split": "official (set column)" if official else _ratio_text(ratios, seed),
         "citation": "Hosu et al., KonIQ-10k, IEEE TIP 2020"},
        {"score": "MOS on the 1-5 ACR scale"},
    )
    return records, info


def _spaq(src: Path, seed: int) -> tuple[list[Record], DatasetInfo]:
    columns = ("Image name", "MOS")
    found = _find_csvs(src, columns, ("MOS and Image attribute scores.csv",))
    if not found:
        xlsx = [p for p in _walk_files(_src_dir(src)) if p.suffix.lower() == ".xlsx"]
        hint = f"open {xlsx[0]} and save it as CSV (UTF-8) next to it" if xlsx else "give the annotations CSV"
        raise DatasetError(f"no SPAQ annotations CSV with columns 'Image name', 'MOS' under {src}; {hint}")
    csv_path = found[0]
    rows = list(csv_rows(csv_path, columns))
    # The five attribute scores (Brightness, Colorfulness, ...) travel along as extra columns.
    entries = [_Entry(line, row["Image name"] or "", row["MOS"], None, _keep(row, columns)) for line, row in rows]
    ratios = (8, 1, 1)
    splits = seeded_split((e.name for e in entries), ratios, seed)
    base, top = csv_path.parent, _src_dir(src)
    folders = [d / "TestImage" for d in (base, base.parent, top)] + [base, top]
    records = _records(csv_path, entries, _ImageFinder(folders, top, top), splits)
    info = DatasetInfo(
        "spaq",
        (0.0, 100.0),
        {"file": str(csv_path.absolute()), "split": _ratio_text(ratios, seed),
         "citation": "Fang et al., Perceptual Quality Assessment of Smartphone Photography, CVPR 2020"},
        {"score": "MOS in [0, 100]"},
    )
    return records, info


def _live_challenge(src: Path, seed: int) -> tuple[list[Record], DatasetInfo]:
    top = _src_dir(src)
    names_mat = _find_named(top, "AllImages_release.mat")
    mos_mat = _find_named(top, "AllMOS_release.mat")
    names = [_mat_string(v) for v in _mat_array(names_mat, "AllImages_release").ravel()]
    mos = _mat_array(mos_mat, "AllMOS_release").ravel()
    if len(names) != len(mos):
        raise DatasetError(
            f"{names_mat} lists {len(names)} images but {mos_mat} has {len(mos)} scores; use the files of one release"
        )
    entries = [_Entry(i + 1, n, repr(float(m)) if _is_number(m) else str(m)) for i, (n, m) in enumerate(zip(names, mos))]
    ratios = (8, 1, 1)
    splits = seeded_split((e.name for e in entries), ratios, seed)
    folders = [top / "Images", top / "Images" / "trainingImages", top]
    records = _records(names_mat, entries, _ImageFinder(folders, top, top), splits, unit="entry")
    info = DatasetInfo(
        "live-challenge",
        (0.0, 100.0),
        {"file": [str(names_mat.absolute()), str(mos_mat.absolute())], "split": _ratio_text(ratios, seed),
         "note": "includes the 7 rater-training images (Images/trainingImages); published results often use the other 1162",
         "citation": "Ghadiyaram & Bovik, Massive Online Crowdsourced Study of Subjective and Objective Picture Quality, IEEE TIP 2016"},
        {"score": "MOS in [0, 100]"},
    )
    return records, info


def _csv(src: Path, seed: int) -> tuple[list[Record], DatasetInfo]:
    if src.is_dir():
        csvs = [p for p in sorted(src.iterdir()) if p.suffix.lower() == ".csv"]
        if len(csvs) != 1:
            raise DatasetError(f"{src} holds {len(csvs)} CSV files; give the CSV file itself")
        src = csvs[0]
    rows = list(csv_rows(src, ("path", "score")))
    has_split = bool(rows) and "split" in rows[0][1]
    entries = [
        _Entry(line, row["path"] or "", row["score"], row.get("split"), _keep(row, ("path", "score", "split")))
        for line, row in rows
    ]
    ratios = (8, 1, 1)
    splits = None if has_split else seeded_split((e.name for e in entries), ratios, seed)
    # Paths are relative to the CSV (or absolute, inside its folder); no search, the file says where they are.
    records = _records(src, entries, _ImageFinder([src.parent], None, src.parent), splits)
    scores = [r.score for r in records]
    lo, hi = min(scores), max(scores)
    info = DatasetInfo(
        src.stem,
        (lo, hi if hi > lo else lo + 1.0),
        {"file": str(src.absolute()), "split": "split column" if has_split else _ratio_text(ratios, seed)},
        {"score": "as given; score_range is the min/max of the scores"},
    )
    return records, info


def _keep(row: dict, used: Sequence[str]) -> dict[str, str]:
    """The row's other columns, kept as strings in the manifest."""
    return {k: (v or "") for k, v in row.items() if k is not None and k not in used}


def _find_named(top: Path, name: str) -> Path:
    for candidate in (top / "Data" / name, top / name):
        if candidate.is_file():
            return candidate
    found = [p for p in _walk_files(top) if p.name == name]
    if not found:
        raise DatasetError(f"{name} not found under {top}; point SRC at the unpacked ChallengeDB_release folder")
    return found[0]


def _mat_array(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat  # scipy is heavy; only this adapter needs it

    try:
        data = loadmat(str(path))
    except Exception as err:  # scipy raises several types for a damaged file
        raise DatasetError(f"{path} is not a readable MATLAB file ({err}); download it again") from None
    if key not in data:
        keys = [k for k in data if not k.startswith("__")]
        raise DatasetError(f"{path} has no variable {key!r} (it has {', '.join(keys) or 'none'})")
    return np.asarray(data[key])


def _mat_string(value) -> str:
    """A MATLAB cell entry as loadmat returns it (nested 1-element arrays) → a plain string."""
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        if value.dtype.kind == "U" and value.ndim > 0 and value.size > 1:
            return "".join(value.ravel().tolist())  # a char matrix loaded without chars_as_strings
        value = value.ravel()[0]
    return str(value).strip()


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


# name → adapter(src, seed) -> (records, info). Help text is the first docstring line above.
ADAPTERS: dict[str, Callable[[Path, int], tuple[list[Record], DatasetInfo]]] = {
    "uhd-iqa": _uhd_iqa,
    "koniq10k": _koniq10k,
    "spaq": _spaq,
    "live-challenge": _live_challenge,
    "csv": _csv,
}


def import_dataset(kind: str, src: Path | str, out: Path | str, seed: int = 0) -> Path:
    """Read dataset ``kind`` at ``src`` and write it in the canonical format to ``out``."""
    from edge_iqa.data.burst_adapters import BURST_ADAPTERS, import_burst_dataset  # bursts: sequences, pairs.csv

    key = kind.strip().lower()
    kinds = [*ADAPTERS, *BURST_ADAPTERS]
    if key not in kinds:
        close = difflib.get_close_matches(key, kinds, n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise DatasetError(f"unknown dataset kind {kind!r}; {hint}choose one of {', '.join(kinds)}")
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{src} does not exist; give the folder (or metadata file) of the {key} download")
    if key in BURST_ADAPTERS:
        return import_burst_dataset(key, src, out, seed)
    records, info = ADAPTERS[key](src, seed)
    provenance = {"source": str(src.absolute()), "adapter": key, "seed": seed, **info.provenance}
    out = Path(out)
    # The images stay in the download: the readers accept paths inside it, and nowhere else.
    download = os.path.relpath(os.path.realpath(_src_dir(src)), os.path.realpath(out.absolute()))
    info = DatasetInfo(info.name, info.score_range, provenance, {**info.extra, IMAGE_ROOTS: [Path(download).as_posix()]})
    return write_dataset(out, records, info)

