"""``edge-iqa qat``: quantization-aware fine-tuning of a checkpoint into an INT8 artifact (:mod:`export.qat`).

Writes into ``--out``: the INT8 ONNX graph (U8S8 for ONNX Runtime, or TensorRT's S8S8 QDQ graph)
and its calibration cache with the learned ranges, or the CoreML W8A8 package, ``qat.json`` (settings, loss per epoch, how far the
ranges moved, and ``selection``: the PTQ start and each epoch scored on ``--select-split``, the best of which
is the artifact) and, with ``--check DATA``, ``parity.json``: the QAT artifact against the FP32
checkpoint, beside the PTQ artifact QAT started from (``ptq/``: the same graph, calibration and
quantizer; ``--no-ptq`` leaves it out), so one can see whether QAT beat PTQ. Exits 1 when the QAT artifact fails the INT8 limits.
"""

from __future__ import annotations

import argparse

from export.formats import CPU_WEIGHT_BITS, QAT_FORMATS, QAT_SELECT_SPLITS  # torch-free: the CLI parses before torch loads

HELP = "fine-tune a checkpoint through INT8 fake quantization (QAT) and export it (ONNX Runtime, TensorRT or CoreML)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import positive_int

    parser.add_argument("checkpoint", help="checkpoint (.pt) written by edge-iqa train/distill")
    parser.add_argument("--data", required=True, help="dataset folder: its train split fine-tunes and calibrates")
    parser.add_argument("--format", required=True, help=f"one of {', '.join(QAT_FORMATS)}")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--epochs", type=positive_int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--max-images", type=int, default=0, help="training images per epoch (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calib-method", default="minmax", help="PTQ ranges QAT starts from (minmax, percentile, "
                                                                 "entropy, quantile)")
    parser.add_argument("--calib-images", type=positive_int, default=256)
    parser.add_argument("--percentile", type=float, default=99.999)
    parser.add_argument("--cpu-weight-bits", type=int, default=7, choices=CPU_WEIGHT_BITS,
                        help="--format onnx: 7-bit weights (default, same scores on every x86-64 CPU) or 8 (exact on "
                             "VNNI and ARM64; see edge-iqa export --cpu-weight-bits)")
    parser.add_argument("--select-split", default="val", choices=QAT_SELECT_SPLITS,
                        help="split that picks the exported state: the PTQ start or an epoch, by Spearman vs FP32 of "
                             "its INT8 artifact (none: the last epoch)")
    parser.add_argument("--check", metavar="DATA", help="dataset folder: compare QAT (and PTQ) with PyTorch FP32")
    parser.add_argument("--check-split", default="test", choices=("train", "val", "test", "all"))
    parser.add_argument("--no-ptq", action="store_true", help="with --check: do not build the PTQ artifact beside")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    from edge_iqa.checkpoint import load_checkpoint
    from edge_iqa.commands.common import print_json, say
    from edge_iqa.outputs import ensure_writable_dir
    from export.parity import failed, write_report
    from export.pipeline import check_parity, mac_check, reference_scores
    from export.qat import QATConfig, qat_export

    qat = QATConfig(format=args.format, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                    calib_method=args.calib_method, percentile=args.percentile, calib_images=args.calib_images,
                    max_images=args.max_images, select_split=args.select_split,
                    cpu_weight_bits=args.cpu_weight_bits)
    ensure_writable_dir(args.out)
    out = Path(args.out)
    model, _ = load_checkpoint(args.checkpoint)
    command = "edge-iqa " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["qat"] else ""
    progress = None if args.json else (lambda e: say(f"qat epoch {e['epoch']}: kd_mse {e['kd_mse']:.5f} "
                                                     f"({e['batches']} batches, {e['seconds']} s)"))
    artifact, record = qat_export(model, args.data, out, qat, progress=progress, ptq_beside=not args.no_ptq)
    artifact.checks.insert(0, mac_check(model, artifact))
    record |= {"checkpoint": args.checkpoint, "command": command, "artifact": str(artifact.path)}
    write_report(out / "qat.json", record)
    checks, report = artifact.checks, None
    if args.check:
        reference = reference_scores(model, args.check, args.check_split)
        report, checks = check_parity(artifact, model, args.check, split=args.check_split, reference=reference)
        report |= {"checkpoint": args.checkpoint, "command": command, "qat": record}
        if artifact.ptq is not None:
            report["ptq"], _ = check_parity(artifact.ptq, model, args.check, split=args.check_split,
                                            reference=reference)
            report["qat_vs_ptq"] = _versus(checks, report["ptq"])
        write_report(out / "parity.json", report)
    bad = failed(checks)
    if args.json:
        print_json({"qat": record, "parity": report, "passed": not bad})
    else:
        say(f"qat {qat.format} int8: {artifact.path}")
        if record.get("selection"):
            pick = record["selection"]
            say(f"  exported epoch {pick['chosen_epoch']} (0 = the PTQ start); Spearman vs FP32 on {pick['split']} "
                f"(n={pick['n']}) by epoch: "
                + ", ".join(f"{c['epoch']}: {c['spearman_vs_fp32']:.4f}" for c in pick["candidates"]))
        for check in checks:
            say("  " + check.line())
        if report and "qat_vs_ptq" in report:
            say("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in report["qat_vs_ptq"].items()))
    return 1 if bad else 0


def _versus(qat_checks, ptq_report: dict) -> dict:
    """QAT's and PTQ's accuracy figures side by side (a burst model's: mean per-burst Spearman)."""
    qat = next(c for c in qat_checks if c.name == "accuracy").detail
    ptq = next(c for c in ptq_report["checks"] if c["name"] == "accuracy")["detail"]
    metric = "mean_burst_spearman" if qat.get("burst") else "spearman_vs_fp32"
    keys = [metric] if qat.get("burst") else [metric, "srcc_drop"]
    versus = {f"{who}_{key}": detail[key] for key in keys for who, detail in (("qat", qat), ("ptq", ptq))}
    return {**versus, "qat_beats_ptq": bool(qat[metric] > ptq[metric])}
