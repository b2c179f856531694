"""``edge-iqa demo``: the whole path on the embedded data, from photos to scores.

Builds the synthetic dataset from photos shipped by installed packages, trains the
``demo-teacher`` preset (or takes ``--teacher``), distills the ``demo-student`` preset from it,
evaluates teacher and student on the test split and scores a few photos, then prints a
summary. Steps already done in ``--out`` (data, a finished teacher) are reused.

The demo presets are made for photos of 512 px (:data:`PRESET_SIDE`). The demo builds its
photos at ``--max-side`` (256 by default, so that teacher and student train in about a quarter
of an hour on two CPU cores) and scales both presets' views by ``max_side / 512``, the setting
``benchmarks/distill_synth.py`` measures (there with more teacher epochs, pseudo-labels and
three seeds).

Both models start from ImageNet weights wherever these can be had without a download: the
local weights folder (``--weights-dir`` or ``EDGE_IQA_WEIGHTS``, files named by timm model),
then timm's hub cache; otherwise from random init, so the demo runs offline. Where resnet18
(demo-teacher) has none but mobilenetv2_100 has, the teacher is ``demo-teacher-mobilenetv2``
(the same views, about a sixth of the MACs). The summary says which weights each model used.
"""

from __future__ import annotations

import argparse

PRESET_SIDE = 512  # the longer photo side the demo presets' views are made for
TEACHERS = ("demo-teacher", "demo-teacher-mobilenetv2")  # in order of preference, the first with ImageNet weights
HELP = ("run the whole path on the embedded data: synth data -> train a teacher -> distill a student -> "
        "evaluate -> score")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import model_name

    parser.add_argument("--out", default="runs/demo", help="folder for the data, the runs and the summary")
    parser.add_argument("--epochs", type=int, default=30, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=6, help="teacher epochs (when the demo trains it)")
    parser.add_argument("--teacher", help="a trained teacher checkpoint or CSV of teacher scores to distill from "
                                          "instead of training demo-teacher")
    parser.add_argument("--loss", action="append", metavar="NAME=WEIGHT",
                        help="distillation loss terms (repeat); default those of edge-iqa distill")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-side", type=int, default=256,
                        help=f"longer side of the synthetic photos; the presets' views scale by MAX_SIDE/{PRESET_SIDE}")
    parser.add_argument("--student", default="demo-student", type=model_name,
                        help="student preset (default demo-student; e.g. demo-student-mobilenetv2)")
    parser.add_argument("--weights-dir", metavar="DIR",
                        help="folder of ImageNet weights named by timm model (default: $EDGE_IQA_WEIGHTS); the "
                             "hub cache is looked at too, nothing is downloaded")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from distill.distiller import distill
    from distill.losses import parse_loss_terms
    from distill.trainer import TrainConfig
    from edge_iqa.commands.common import print_json, say
    from edge_iqa.commands.distill import DEFAULT_LOSSES
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.data.synth import build_synth_dataset
    from edge_iqa.outputs import atomic_write_text
    from edge_iqa.pretrained import available_weights
    from edge_iqa.scoring import load
    from edge_iqa.tables import format_table
    from profiling.budget import ensure_within_budget

    out = Path(args.out)
    data = out / "data"
    started = time.time()
    progress = not args.json
    max_side = args.max_side
    if (data / "manifest.csv").is_file():
        info = data / "dataset.json"  # missing: the dataset check downstream says so in one line
        built = json.loads(info.read_text()).get("max_side", max_side) if info.is_file() else max_side
        say(f"[1/5] reusing the synthetic dataset in {data}" +
            (f" (built at {built} px, not {max_side}: the views follow the data)" if built != max_side else ""))
        max_side = built
    else:
        say(f"[1/5] building the synthetic dataset in {data}")
        build_synth_dataset(data, seed=args.seed, max_side=max_side)

    teacher_path, teacher_test, teacher_name, teacher_weights = _teacher(args, data, out, max_side, progress, say)

    student = scaled_preset(args.student, max_side).replace(role="student")
    ensure_within_budget(student)
    student_weights = available_weights(student.backbone, args.weights_dir)
    say(f"[3/5] distilling {student.name} (views {' + '.join(v.spec() for v in student.views)}; initial weights: "
        f"{weights_line(student_weights, student.backbone)}) from {teacher_path}")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, num_workers=args.workers,
                         losses=parse_loss_terms(args.loss or DEFAULT_LOSSES))
    summary = distill(student, data, out / "student", config, teacher_path, progress=progress,
                      init_weights=student_weights)

    say("[4/5] test split of the best checkpoints")
    test = summary.get("test", {})
    rows = [(f"{student.name} (distilled)", test.get("srcc"), test.get("plcc"), test.get("n"))]
    if teacher_test:
        rows.insert(0, (teacher_name, teacher_test.get("srcc"), teacher_test.get("plcc"), teacher_test.get("n")))
    say(format_table(("model", "SRCC", "PLCC", "n"), rows))

    say("[5/5] scoring a few test photos with the student")
    test_records = read_manifest(data, split="test")
    records = test_records[:: max(1, len(test_records) // 5)][:5]
    scorer = load(out / "student" / "best.pt")
    scored = scorer.score_paths([r.path for r in records])
    say(format_table(("photo", "SSIM label", "predicted"),
                     [(Path(r.path).name, rec.score, r.score) for r, rec in zip(scored, records)]))

    result = {"data": str(data), "teacher": str(teacher_path), "teacher_test": teacher_test,
              "checkpoint": str(out / "student" / "best.pt"), "losses": [list(t) for t in config.losses],
              "test": test, "best_val_srcc": summary["best_val_srcc"],
              "init_weights": {"teacher": teacher_weights, "student": student_weights.to_dict()}, "train_seconds": summary["train_seconds"],
              "total_seconds": round(time.time() - started, 1),
              "scored": [{"path": r.path, "label": rec.score, "score": r.score} for r, rec in zip(scored, records)]}
    atomic_write_text(out / "summary.json", json.dumps(result, indent=2))
    if args.json:
        print_json(result)
    else:
        say(f"done in {result['total_seconds']:.0f} s; summary in {out / 'summary.json'}")
    return 0


def _teacher(args: argparse.Namespace, data, out, max_side: int, progress: bool, say):
    """The teacher to distill from, its test metrics when the demo trained it, its name and its
    initial weights (a WeightSource dict; None where the demo did not train it)."""
    import json

    from distill.trainer import TrainConfig, train
    from edge_iqa.checkpoint import read_checkpoint

    if args.teacher:
        say(f"[2/5] using the teacher {args.teacher}")
        return args.teacher, {}, "teacher", None
    run = out / "teacher"
    if (run / "metrics.json").is_file() and (run / "best.pt").is_file():
        recorded = read_checkpoint(run / "best.pt")
        name, source = recorded["config"].name, recorded["init_weights"]
        say(f"[2/5] reusing the trained demo-teacher in {run} ({name})")
        return (run / "best.pt", json.loads((run / "metrics.json").read_text()).get("test", {}), name,
                source.to_dict() if source else None)
    teacher, source = demo_teacher(max_side, args.weights_dir)
    views = " + ".join(v.spec() for v in teacher.views)
    say(f"[2/5] training {teacher.name} ({args.teacher_epochs} epochs, views {views}; initial weights: "
        f"{weights_line(source, teacher.backbone)})")
    config = TrainConfig(epochs=args.teacher_epochs, batch_size=args.batch_size, seed=args.seed,
                         num_workers=args.workers)
    summary = train(teacher, data, run, config, resume=(run / "last.pt").is_file(), progress=progress,
                    init_weights=source)
    return run / "best.pt", summary.get("test", {}), teacher.name, source.to_dict()


def demo_teacher(max_side: int, weights_dir=None):
    """The first of :data:`TEACHERS` whose backbone has ImageNet weights at hand (else
    demo-teacher from random init), scaled for ``max_side``, and its WeightSource."""
    from edge_iqa.pretrained import RANDOM_INIT, available_weights

    choices = [scaled_preset(name, max_side) for name in TEACHERS]
    for config in choices:
        source = available_weights(config.backbone, weights_dir)
        if source.kind != "random":
            return config, source
    return choices[0], RANDOM_INIT


def weights_line(source, backbone: str) -> str:
    """What the demo prints about a model's initial weights."""
    from edge_iqa.pretrained import WEIGHTS_ENV

    if source.kind == "random":
        return f"random init (no {backbone} ImageNet weights in --weights-dir/{WEIGHTS_ENV} or the hub cache)"
    return source.describe()


def scaled_preset(name: str, max_side: int):
    """The demo preset ``name`` with its views scaled for photos of ``max_side`` px."""
    from edge_iqa.presets import get_preset

    config = get_preset(name)
    factor = max_side / PRESET_SIDE
    return config if factor == 1 else config.replace(views=tuple(v.scaled(factor) for v in config.views))
