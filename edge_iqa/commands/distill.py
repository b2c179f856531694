"""``edge-iqa distill``: train a student preset from a teacher (checkpoint or CSV of scores)."""

from __future__ import annotations

import argparse

HELP = "distill a student preset from a teacher checkpoint or a CSV of teacher scores"
DEFAULT_LOSSES = ("mse=1", "plcc=0.5", "kd_mse=1")
# the burst paper's alpha = 1 (relational distillation) and beta = 10 (ranking); kd_mse anchors the score scale
BURST_DISTILL_LOSSES = ("burst_rank=10", "burst_relational=1", "kd_mse=1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import add_view_option, model_name, positive_int
    from edge_iqa.commands.train import add_train_options

    parser.add_argument("--teacher", required=True, type=teacher_source,
                        help="teacher checkpoint (.pt; any backbone and views, over budget allowed), a CSV of "
                             "teacher scores (path,score in the dataset's units, e.g. from edge-iqa pseudo-label), "
                             "or nima: NIMA (AVA) from the weights folder (--weights-dir or EDGE_IQA_WEIGHTS)")
    parser.add_argument("--student", required=True, type=model_name, help="student preset or timm backbone (edge-iqa presets)")
    add_view_option(parser)
    add_train_options(parser)
    parser.add_argument("--loss", action="append", metavar="NAME=WEIGHT",
                        help=f"loss terms (repeat); default {' '.join(DEFAULT_LOSSES)}, burst students "
                             f"{' '.join(BURST_DISTILL_LOSSES)}. Ground truth: mse l1 plcc rank fidelity burst_rank; "
                             "teacher score: kd_mse kd_l1 kd_rank kd_fidelity; teacher features: "
                             "hint head_mse relational hetero_relational burst_relational")
    parser.add_argument("--pair", action="append", metavar="LOSS:STUDENT:TEACHER[:WEIGHT[:GRID]]",
                        help="a feature pair for a feature loss (repeat), e.g. hint:branches.0.level4:branches.0.level4; "
                             "features: head, branches.B.levelL or a module path; default: the loss's own pairs")
    parser.add_argument("--unlabeled", action="append", metavar="DIR|CSV",
                        help="unlabeled images (a folder, or a CSV with a path column); the teacher's scores "
                             "become their training targets (repeat)")
    parser.add_argument("--teacher-batch-size", type=positive_int, help="batch size of the teacher's one pass (default --batch-size)")


def teacher_source(text: str) -> str:
    """``--teacher``: ``nima`` or a file that exists (checked while parsing)."""
    from edge_iqa.commands.common import existing_file

    if text == "nima":
        return text
    return existing_file("teacher", "give a teacher checkpoint (.pt), a CSV of teacher scores or nima")(text)


def nima_teacher(out, weights_dir):
    """``--teacher nima``: NIMA from the weights folder, imported once into ``OUT/teacher_nima.pt``
    (kept while the weights file is the same, so a resumed run reuses its teacher cache)."""
    from pathlib import Path

    from edge_iqa.checkpoint import read_checkpoint
    from edge_iqa.commands.import_teacher import import_teacher
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.nima import NIMA_FILE_NAMES, find_nima_file
    from edge_iqa.pretrained import WEIGHTS_ENV, file_sha256, weights_folder

    folder = weights_folder(weights_dir)
    found = find_nima_file(folder[0]) if folder else None
    if found is None:
        where = f"{folder[1]} {folder[0]}" if folder else f"no --weights-dir or {WEIGHTS_ENV} given"
        raise EdgeIQAError(f"--teacher nima: no NIMA weights ({where}); put {NIMA_FILE_NAMES[-1]}.pth in the weights "
                           "folder, or run edge-iqa import-teacher nima FILE --out nima.pt and pass --teacher nima.pt")
    path = Path(out) / "teacher_nima.pt"
    if path.is_file() and read_checkpoint(path)["info"].get("sha256") == file_sha256(found):
        return path
    import_teacher("nima", found, path)
    return path


def run(args: argparse.Namespace) -> int:
    from edge_iqa.commands.common import check_dataset_folder, resolve_model
    from edge_iqa.outputs import ensure_writable_dir

    ensure_writable_dir(args.out)
    from edge_iqa.commands.train import with_tasks

    config = with_tasks(resolve_model(args.student, args.view).replace(role="student"), args.task)
    check_dataset_folder(args.data)
    from distill.distiller import distill  # torch: only once the cheap checks have passed
    from distill.features import FeaturePair
    from edge_iqa.commands.train import initial_weights, print_summary, train_config_from_args
    from profiling.budget import ensure_within_budget

    ensure_within_budget(config, allow_over_budget=args.allow_over_budget)
    source = initial_weights(args, config)
    teacher = nima_teacher(args.out, args.weights_dir) if args.teacher == "nima" else args.teacher
    pairs = [FeaturePair.parse(spec) for spec in args.pair or ()]
    losses = BURST_DISTILL_LOSSES if config.burst else DEFAULT_LOSSES
    summary = distill(config, args.data, args.out, train_config_from_args(args, losses, burst=config.burst is not None),
                      teacher,
                      pairs=pairs, unlabeled=args.unlabeled or (), resume=args.resume, progress=not args.quiet,
                      init_weights=source, teacher_batch_size=args.teacher_batch_size)
    if summary:
        if source:
            summary["init_weights"] = source.to_dict()
        print_summary(summary, args.json)
    return 0
