"""``edge-iqa score``: score photos (files or folders) with a checkpoint or exported model."""

from __future__ import annotations

import argparse

HELP = "score image files or folders; one row per file (score or error); exit 1 if any file failed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint (.pt) or exported model (.onnx)")
    parser.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", help="write the rows to this CSV file (path,score,error)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def write_results_csv(path: str, results) -> None:
    import csv
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "error"])
        for r in results:
            writer.writerow([r.path, "" if r.score is None else f"{r.score:.6f}", r.error or ""])


def run(args: argparse.Namespace) -> int:
    import edge_iqa
    from edge_iqa.commands.common import format_table, print_json, say
    from edge_iqa.io import iter_image_files

    scorer = edge_iqa.load(args.model, args.device)
    files = iter_image_files(args.paths)
    results = scorer.score_paths(files, args.batch_size, args.workers, progress=not args.json)
    if args.out:
        write_results_csv(args.out, results)
    failed = [r for r in results if r.error]
    if args.json:
        print_json({"model": args.model, "n": len(results), "failed": len(failed),
                    "results": [{"path": r.path, "score": r.score, "error": r.error} for r in results]})
    else:
        say(format_table(("path", "score"), [(r.path, r.score if r.score is not None else f"ERROR {r.error}")
                                              for r in results]))
        say(f"{len(results) - len(failed)} scored, {len(failed)} failed" + (f"; rows in {args.out}" if args.out else ""))
    return 1 if failed else 0
