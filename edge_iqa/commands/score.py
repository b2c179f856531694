"""``edge-iqa score``: score photos (files or folders) with a checkpoint or exported model.

With ``--out``, rows reach ``OUT.partial`` as they are scored (flushed batch by batch), and
the finished CSV replaces ``OUT`` atomically. ``--resume`` continues a killed run from the rows
already on disk; an existing ``OUT`` is kept unless ``--resume`` or ``--overwrite`` says what
to do with it. ``pseudo-label`` writes its CSV through the same ``score_to_csv``.
"""

from __future__ import annotations

import argparse

HELP = "score image files or folders; one row per file (score or error); exit 1 if any file failed"
COLUMNS = ("path", "score", "error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import add_max_pixels_option, non_negative_int, positive_int

    parser.add_argument("model", help="checkpoint (.pt) or exported model (.onnx)")
    parser.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", help="write the rows to this CSV file (path,score,error)")
    add_resume_options(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, default=0)
    add_max_pixels_option(parser)
    add_runtime_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--runtime`` and ``--threads``: where and how a model file is run (:mod:`edge_iqa.runtimes`)."""
    from edge_iqa.commands.common import non_negative_int
    from edge_iqa.runtimes import RUNTIMES

    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", choices=tuple(RUNTIMES), default=None,
                        help="runtime to score in (default: the fastest that runs the file here: .pt torch, .onnx "
                             "openvino where installed and it reads the graph, else onnxruntime, ...)")
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="intra-op threads of the runtime (default 0: the runtime's own default)")


def add_resume_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run: keep the scored rows of OUT.partial and OUT, score the rest "
                             "(failed rows are tried again)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def check_out(out: str, *, resume: bool, overwrite: bool) -> None:
    """Before any work: ``--out`` is writable and no earlier result would be silently replaced."""
    from edge_iqa.outputs import ensure_writable_file, refuse_to_clobber

    ensure_writable_file(out)
    refuse_to_clobber(out, resume=resume, overwrite=overwrite)


def score_to_csv(scorer, files, out: str, *, resume: bool, batch_size: int, workers: int,
                 progress: bool) -> tuple[list, int]:
    """Score ``files`` into the CSV ``out``, skipping the paths an earlier run already scored.

    Returns every row's ``ScoreResult`` in the order of ``files`` (then rows of an earlier run
    whose paths are not among ``files``), which is also the order of the finished file, and
    how many rows were kept from the earlier run.
    """
    from edge_iqa.outputs import RowWriter, partial_path, read_rows

    kept: dict[str, list[str]] = {}
    if resume:
        for row in read_rows(out, COLUMNS) + read_rows(partial_path(out), COLUMNS):
            if row[1] and not row[2]:
                kept.setdefault(row[0], row)
    todo = [str(f) for f in files if str(f) not in kept]
    writer = RowWriter(out, COLUMNS, list(kept.values()))
    try:
        new = {}
        for result in scorer.iter_score_paths(todo, batch_size, workers, progress=progress):
            writer.write(_row(result))
            new[result.path] = result
        ordered = dict.fromkeys([*(str(f) for f in files), *kept])
        results = [new[p] if p in new else _result(kept[p]) for p in ordered]
        writer.finish([_row(r) for r in results])
    finally:
        writer.close()
    return results, len(kept)


def _row(result) -> list[str]:
    return [result.path, "" if result.score is None else f"{result.score:.6f}", result.error or ""]


def _result(row: list[str]):
    from edge_iqa.scoring import ScoreResult

    return ScoreResult(row[0], float(row[1]))


def run(args: argparse.Namespace) -> int:
    import edge_iqa
    from edge_iqa.commands.common import check_model_file, print_json, say
    from edge_iqa.io import scan_images
    from edge_iqa.tables import format_table

    if args.out:
        check_out(args.out, resume=args.resume, overwrite=args.overwrite)
    elif args.resume or args.overwrite:
        from edge_iqa.errors import EdgeIQAError

        raise EdgeIQAError("--resume and --overwrite are about the --out file; pass --out CSV")
    check_model_file(args.model)  # before torch loads
    scan = scan_images(args.paths)  # a missing path stays, to become a row with its error
    scan.warn_skipped()
    files = list(scan.files)
    scorer = edge_iqa.load(args.model, args.device, args.runtime, args.threads)
    scorer.max_pixels = args.max_pixels
    if args.out:
        results, resumed = score_to_csv(scorer, files, args.out, resume=args.resume, batch_size=args.batch_size,
                                        workers=args.workers, progress=not args.json)
    else:
        results, resumed = scorer.score_paths(files, args.batch_size, args.workers, progress=not args.json), 0
    failed = [r for r in results if r.error]
    loaded = scorer.loaded
    runtime = f"{loaded.runtime} {loaded.version} ({loaded.device})" if loaded else "in-memory model"
    if args.json:
        print_json({"model": args.model, "runtime": runtime, "n": len(results), "failed": len(failed),
                    "resumed": resumed, "results": [{"path": r.path, "score": r.score, "error": r.error} for r in results]})
    else:
        say(format_table(("path", "score"), [(r.path, r.score if r.score is not None else f"ERROR {r.error}")
                                              for r in results]))
        say(f"{len(results) - len(failed)} scored, {len(failed)} failed"
            + (f" ({resumed} kept from the earlier run)" if resumed else "")
            + (f"; rows in {args.out}" if args.out else "") + f"; runtime {runtime}")
    return 1 if failed else 0
