"""``edge-iqa pseudo-label``: a teacher scores unlabeled photos; the CSV feeds ``edge-iqa distill``.

The CSV (``path,score,error``, absolute paths, scores in the teacher's units) is what
``edge-iqa distill --teacher CSV`` and ``--unlabeled CSV`` read, so a teacher too large for
the training machine can score the photos elsewhere. Rows are saved as they are scored and
``--resume`` continues a killed run (the same ``score_to_csv`` as ``edge-iqa score``).
"""

from __future__ import annotations

import argparse

HELP = "score unlabeled photos with a teacher and write pseudo-labels (path,score,error) to a CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import add_max_pixels_option, non_negative_int, positive_int
    from edge_iqa.commands.score import add_resume_options

    parser.add_argument("teacher", help="teacher checkpoint (.pt) or exported model (.onnx)")
    parser.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True, help="CSV file to write (path,score,error)")
    add_resume_options(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, default=0)
    add_max_pixels_option(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print a summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    import os

    from edge_iqa.commands.common import check_model_file, print_json, say
    from edge_iqa.commands.score import check_out, score_to_csv
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.io import scan_images

    check_out(args.out, resume=args.resume, overwrite=args.overwrite)
    check_model_file(args.teacher)  # before torch loads
    scan = scan_images(args.paths)  # a missing path stays, to become a row with its error
    scan.warn_skipped()
    files = [os.path.abspath(p) for p in scan.files]
    from edge_iqa.scoring import load

    scorer = load(args.teacher, args.device)
    scorer.max_pixels = args.max_pixels
    if not files:
        raise EdgeIQAError(f"no images found in {', '.join(args.paths)}")
    results, resumed = score_to_csv(scorer, files, args.out, resume=args.resume, batch_size=args.batch_size,
                                    workers=args.workers, progress=not args.json)
    failed = sum(1 for r in results if r.error)
    summary = {"teacher": args.teacher, "out": args.out, "n": len(results), "labeled": len(results) - failed,
               "failed": failed, "resumed": resumed, "score_range": list(scorer.config.score_range)}
    if args.json:
        print_json(summary)
    else:
        say(f"{summary['labeled']} pseudo-labels written to {args.out}" + (f"; {failed} files failed" if failed else ""))
    return 1 if failed else 0  # as `score`: the CSV is complete (failed rows carry their error), the status tells scripts
