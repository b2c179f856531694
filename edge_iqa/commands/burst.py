"""``edge-iqa burst score``: score every frame of bursts with a burst model, keep the best K.

``edge-iqa burst score MODEL BURST_DIR... --keep K [--task NAME] [--reference FILE] [--json]
[--out frames.csv [--resume | --overwrite]]``

- A ``BURST_DIR`` is a folder of frames (one burst: the image files directly inside it, sorted
  by name), a folder of burst folders (no image directly inside: each subfolder holding images
  is one burst) or a burst dataset (``manifest.csv`` with ``sequence,frame``, e.g. ``data synth
  --kind burst``: each sequence is a burst, named ``DIR:SEQUENCE``, its ``reference`` frame
  first). Frame 0, the reference every frame is scored against (Liang et al., "Burst Image
  Quality Assessment", 2025), is the first name, or ``--reference FILE`` (one burst only).
- Kept: the reference and the K−1 best-scored other frames — the frames an app keeps or feeds
  to its merge, which is built on the reference, so the reference always counts among the K
  (as the top-M protocol of :mod:`edge_iqa.burst_eval` merges them). ``--keep`` at least the
  burst's usable frames keeps them all, with one warning line saying so.
- One row per frame: ``burst,path,index,score,kept,error`` (index 0 = the reference, whose
  score is defined but meaningless). A table on stderr; ``--json``: one object on stdout;
  ``--out``: rows reach ``OUT.partial`` burst by burst and ``OUT`` is replaced atomically when
  done (:mod:`edge_iqa.outputs`); ``--resume`` keeps the bursts an earlier run scored whole and
  without error, and scores the others again, whole (their keep decision needs every frame).

Bad input: a frame that fails to decode or whose size differs from the reference's, and a
second file of one frame name (``IMG_1.JPG`` beside ``IMG_1.HEIC``) get their error in their
row and the burst is scored without them; a burst whose reference fails, or of one usable
frame, gets its error in every row; a folder without images is one warning line. Exit 0 when
every frame was scored, 1 when a row or folder could not be, 2 (one line, nothing started)
for a user error: no burst at all, a photo model, an unknown task, a bad option.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

HELP = "score every frame of bursts (folders of frames) with a burst model and keep the best K"
COLUMNS = ("burst", "path", "index", "score", "kept", "error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import add_max_pixels_option, model_file, positive_int
    from edge_iqa.commands.score import add_resume_options

    sub = parser.add_subparsers(dest="burst_command", metavar="ACTION", required=True)
    score = sub.add_parser("score", help=HELP, description=HELP)
    score.add_argument("model", type=model_file, help="burst model: checkpoint (.pt) or exported model (.onnx)")
    score.add_argument("bursts", nargs="+", metavar="BURST_DIR",
                       help="a folder of frames (one burst, frames sorted by name, the first is the reference) "
                            "or a folder of burst folders")
    score.add_argument("--keep", type=positive_int, default=3, metavar="K",
                       help="frames to keep per burst: the reference and the K-1 best others (default: 3)")
    score.add_argument("--task", help="downstream task whose scores rank the frames (default: the model's first)")
    score.add_argument("--reference", metavar="FILE",
                       help="the reference frame (a path or a file name of the burst; one burst only)")
    score.add_argument("--out", help="write the rows to this CSV file (" + ",".join(COLUMNS) + ")")
    add_resume_options(score)
    add_max_pixels_option(score)
    score.add_argument("--device", default="cpu")
    score.add_argument("--json", action="store_true", help="print one JSON object on stdout")


# ---------------------------------------------------------------- finding the bursts (no torch)


@dataclass
class BurstFolder:
    """One burst: its folder, its frames (reference first) and files left out with their error."""

    name: str
    frames: list[Path]
    left_out: list[tuple[Path, str]] = field(default_factory=list)
    error: str | None = None  # why no frame can be scored (fewer than two frames)


def _images_in(folder: Path) -> list[Path]:
    from edge_iqa.io import IMAGE_SUFFIXES

    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        from edge_iqa.errors import EdgeIQAError

        raise EdgeIQAError(f"{folder}: cannot be read ({err.strerror or err})") from None
    return [p for p in entries if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]


def _burst_of(folder: Path, files: list[Path]) -> BurstFolder:
    """Frames by name; a second file of one frame name (another suffix) is left out with its error."""
    frames, left_out, first = [], [], {}
    for path in files:
        stem = path.stem.lower()
        if stem in first:
            left_out.append((path, f"{path}: the same frame name as {first[stem].name} (frame "
                                   f"{frames.index(first[stem])}, a second copy?); left out of the burst"))
            continue
        first[stem] = path
        frames.append(path)
    burst = BurstFolder(str(folder), frames, left_out)
    if len(frames) < 2:
        burst.error = (f"{folder}: a burst needs a reference and at least one more frame, found {len(frames)} "
                       "image" + ("" if len(frames) == 1 else "s"))
    return burst


def find_bursts(paths: list[str]) -> tuple[list[BurstFolder], list[str], list[str]]:
    """The bursts of the ``BURST_DIR`` arguments, one line per folder that holds no image, one
    per burst folder named twice (scored once). A path that is not a folder raises ``EdgeIQAError``."""
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.io import IMAGE_SUFFIXES

    bursts, empty, repeated, seen = [], [], [], set()
    for raw in paths:
        folder = Path(raw)
        if not folder.is_dir():
            what = "not found" if not folder.exists() else "is a file, not a folder"
            raise EdgeIQAError(f"{folder}: {what}; give a folder of burst frames or a folder of burst folders")
        if _is_burst_dataset(folder):
            for burst in _dataset_bursts(folder):
                if burst.name in {b.name for b in bursts}:
                    repeated.append(f"{burst.name}: named twice; scored once")
                else:
                    bursts.append(burst)
            continue
        images = _images_in(folder)
        if images:
            candidates = [(folder, images)]
        else:
            subfolders = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
            candidates = [(sub, found) for sub in subfolders if (found := _images_in(sub))]
        if not candidates:
            empty.append(f"{folder}: no images (suffixes {' '.join(IMAGE_SUFFIXES)}) in it or in its subfolders; "
                            "give a folder of burst frames or a folder of burst folders")
        for sub, found in candidates:
            key = os.path.realpath(sub)
            if key in seen:
                repeated.append(f"{sub}: named twice; scored once")
                continue
            seen.add(key)
            bursts.append(_burst_of(sub, found))
    return bursts, empty, repeated


def _is_burst_dataset(folder: Path) -> bool:
    from edge_iqa.commands.evaluate import is_burst_dataset

    return (folder / "manifest.csv").is_file() and is_burst_dataset(folder)


def _dataset_bursts(root: Path) -> list[BurstFolder]:
    """The sequences of a burst dataset, each its reference first (``reference`` column, else
    its lowest frame index, as training and evaluation take it)."""
    from edge_iqa.burst_eval import BurstEvalSet

    return [BurstFolder(f"{root}:{b.name}", [f.path for f in b.frames]) for b in BurstEvalSet(root).bursts]


def put_reference_first(burst: BurstFolder, reference: str) -> None:
    """Make ``reference`` (a path or a file name of the burst) frame 0."""
    from edge_iqa.errors import EdgeIQAError

    wanted = os.path.realpath(reference)
    matches = [f for f in burst.frames if os.path.realpath(f) == wanted or f.name == reference]
    if not matches:
        raise EdgeIQAError(f"--reference {reference}: not a frame of the burst {burst.name}; give one of its files")
    burst.frames.remove(matches[0])
    burst.frames.insert(0, matches[0])


# ---------------------------------------------------------------- scoring and keeping


def keep_mask(scores, keep: int):
    """The reference and the ``keep``−1 best scored other frames (NaN: never kept)."""
    import numpy as np

    from edge_iqa.burst_eval import top_frames

    return top_frames(scores, keep) & (np.isfinite(scores) | (np.arange(scores.size) == 0))


def _rows(burst: BurstFolder, result, keep: int, say) -> list[list[str]]:
    """The CSV rows of one burst: its frames in order (reference first), then the left-out files."""
    import numpy as np

    rows = []
    if result is None or result.error:
        error = burst.error or result.error
        frames = result.frames if result is not None else []
        for i, path in enumerate(burst.frames):
            rows.append([burst.name, str(path), str(i), "", "0", (frames[i].error if frames else None) or error])
    else:
        scores = result.scores
        kept = keep_mask(scores, keep)
        usable = int(np.isfinite(scores).sum())
        if keep > usable:
            say(f"{burst.name}: --keep {keep} but the burst has {usable} usable frame"
                f"{'' if usable == 1 else 's'} ({len(burst.frames)} in all); all {usable} kept")
        for frame, path, k in zip(result.frames, burst.frames, kept):
            score = "" if frame.score is None else f"{frame.score:.6f}"
            rows.append([burst.name, str(path), str(frame.index), score, "1" if k else "0", frame.error or ""])
    rows += [[burst.name, str(path), "", "", "0", error] for path, error in burst.left_out]
    return rows


def _earlier_bursts(out: str) -> dict[str, list[list[str]]]:
    """Rows of an earlier run (``OUT`` and ``OUT.partial``) by burst, each path once."""
    from edge_iqa.outputs import partial_path, read_rows

    by_burst: dict[str, dict[str, list[str]]] = {}
    for row in read_rows(out, COLUMNS) + read_rows(partial_path(out), COLUMNS):
        by_burst.setdefault(row[0], {}).setdefault(row[1], row)
    return {name: list(rows.values()) for name, rows in by_burst.items()}


def _complete(rows: list[list[str]], burst: BurstFolder) -> bool:
    """The earlier rows hold every file of the burst, in its order, and none has an error."""
    paths = [str(p) for p in burst.frames] + [str(p) for p, _ in burst.left_out]
    return [r[1] for r in rows] == paths and not burst.left_out and all(not r[5] for r in rows)


def run(args: argparse.Namespace) -> int:
    import edge_iqa
    from edge_iqa.commands.common import check_model_file, print_json, say
    from edge_iqa.commands.score import check_out
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.outputs import RowWriter
    from edge_iqa.tables import format_table

    if args.out:
        check_out(args.out, resume=args.resume, overwrite=args.overwrite)
    elif args.resume or args.overwrite:
        raise EdgeIQAError("--resume and --overwrite are about the --out file; pass --out CSV")
    check_model_file(args.model)
    bursts, empty, repeated = find_bursts(args.bursts)
    if not bursts:
        raise EdgeIQAError(empty[0])
    if all(b.error for b in bursts):
        raise EdgeIQAError(bursts[0].error + ("" if len(bursts) == 1 else f" (and {len(bursts) - 1} more bursts)"))
    if args.reference:
        if len(bursts) != 1:
            raise EdgeIQAError(f"--reference names the reference of one burst; {len(bursts)} bursts were given: "
                               "score them one by one, or rename each burst's reference to sort first")
        put_reference_first(bursts[0], args.reference)
    for line in empty + repeated:
        say(line)
    scorer = edge_iqa.load(args.model, args.device)
    scorer.max_pixels = args.max_pixels
    scorer.task_row(args.task)  # a photo model or an unknown task: one line, before any frame is decoded
    task = args.task or scorer.config.burst.tasks[0]

    earlier = _earlier_bursts(args.out) if args.out and args.resume else {}
    kept_rows = {b.name: earlier[b.name] for b in bursts if b.name in earlier and _complete(earlier[b.name], b)}
    others = [rows for name, rows in earlier.items() if name not in {b.name for b in bursts}]
    writer = RowWriter(args.out, COLUMNS, [r for rows in kept_rows.values() for r in rows]) if args.out else None
    rows_of: dict[str, list[list[str]]] = {}
    burst_errors: dict[str, str | None] = {b.name: b.error for b in bursts}
    try:
        for burst in bursts:
            if burst.name in kept_rows:
                rows_of[burst.name] = kept_rows[burst.name]
                continue
            result = None if burst.error else scorer.score_burst_frames(burst.frames, args.task)
            rows_of[burst.name] = _rows(burst, result, args.keep, say)
            if result is not None and result.error:
                burst_errors[burst.name] = result.error
                say(f"{burst.name}: {result.error}")
            if writer:
                for row in rows_of[burst.name]:
                    writer.write(row)
        rows = [r for b in bursts for r in rows_of[b.name]] + [r for extra in others for r in extra]
        if writer:
            writer.finish(rows)
    finally:
        if writer:
            writer.close()

    failed = [r for r in rows if r[5]]
    if args.json:
        print_json({"model": args.model, "task": task, "keep": args.keep, "n_bursts": len(bursts),
                    "n_frames": len(rows), "failed": len(failed), "resumed_bursts": len(kept_rows),
                    "folders_without_images": empty,
                    "bursts": [_burst_json(b.name, burst_errors[b.name], rows_of[b.name]) for b in bursts]})
    else:
        table = [(Path(r[0]).name, Path(r[1]).name, r[2], float(r[3]) if r[3] else f"ERROR {r[5]}",
                  "kept" if r[4] == "1" else "") for r in rows]
        say(format_table(("burst", "frame", "index", "score", "kept"), table))
        say(f"{len(bursts)} bursts, {len(rows) - len(failed)} frames scored, {len(failed)} failed; task {task}, "
            f"keep {args.keep}" + (f" ({len(kept_rows)} bursts kept from the earlier run)" if kept_rows else "")
            + (f"; rows in {args.out}" if args.out else ""))
    return 1 if failed or empty else 0


def _burst_json(name: str, error: str | None, rows: list[list[str]]) -> dict:
    return {"burst": name, "error": error,
            "kept": [r[1] for r in rows if r[4] == "1"],
            "frames": [{"path": r[1], "index": int(r[2]) if r[2] else None, "score": float(r[3]) if r[3] else None,
                        "kept": r[4] == "1", "error": r[5] or None} for r in rows]}
