"""``edge-iqa export``: a checkpoint to ONNX, TensorRT, CoreML or ExecuTorch, with accuracy regression checks.

Writes the artifact into ``--out``, plus ``export.json`` (settings, files, structural checks)
and, with ``--check DATA``, ``parity.json`` (the artifact against the FP32 PyTorch model on one
split). Exits 1 when a check fails its limit; a skipped check is reported, never passed.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from export.formats import CALIB_METHODS, CPU_LAYOUTS, CPU_WEIGHT_BITS, FLOAT_TARGET, FORMATS, WEIGHT_ROUNDINGS

HELP = "export a checkpoint to ONNX, TensorRT, CoreML or ExecuTorch (FP32/FP16/INT8) and check it against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import positive_int

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "formats:\n" + "\n".join(f"  {f.help_line()}" for f in FORMATS.values())
    parser.add_argument("checkpoint", help="checkpoint (.pt) written by edge-iqa train/distill")
    parser.add_argument("--format", required=True, metavar="FORMAT", help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--precision", default="", help="fp32, fp16, int8 (w8 for coreml); default per format")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--calib", metavar="DATA", help="dataset folder whose images calibrate int8")
    parser.add_argument("--calib-split", default="train", choices=("train", "val", "test", "all"))
    parser.add_argument("--calib-images", type=positive_int, default=256, help="at most this many calibration images")
    parser.add_argument("--calib-method", default="minmax",
                        help=f"{', '.join(CALIB_METHODS)} (auto: try each --calib-candidate, keep the one whose INT8 "
                             "graph agrees best with FP32 on --calib-select-split; all figures in parity.json)")
    parser.add_argument("--calib-select-split", default="val", choices=("train", "val", "test", "all"),
                        help="labelled split of --calib DATA that --calib-method auto ranks its candidates on")
    parser.add_argument("--calib-candidate", action="append", default=[], metavar="METHOD[:P]",
                        help="for --calib-method auto (repeatable): minmax, entropy, percentile:P or quantile:P; "
                             "default minmax, percentile:99.99, percentile:99.999, entropy, quantile:99.9, "
                             "quantile:99.99, quantile:99.999")
    parser.add_argument("--percentile", type=float, default=99.999, help="for --calib-method percentile (of |x|) and quantile (each tail)")
    parser.add_argument("--cpu-layout", default="qoperator",
                        help=f"int8 ONNX for CPU: {', '.join(CPU_LAYOUTS)} (default qoperator; auto = time both "
                             "here and keep the faster, so the artifact depends on this machine)")
    parser.add_argument("--cpu-weight-bits", type=int, default=7, choices=CPU_WEIGHT_BITS,
                        help="int8 ONNX for CPU: 7-bit weights (default: the same scores on every x86-64 CPU) or 8 "
                             "(more accurate; exact on x86 with VNNI and on ARM64, saturates on AVX2-only cores)")
    parser.add_argument("--weight-rounding", default="nearest", choices=WEIGHT_ROUNDINGS,
                        help="int8 ONNX/TensorRT/CoreML weights: nearest (default) or adaround (learn each layer's "
                             "rounding on the calibration images; minutes on a CPU)")
    parser.add_argument("--float-layer", action="append", default=[], metavar="NODE",
                        help="leave in float in int8 ONNX/TensorRT graphs and CoreML packages (repeatable): an ONNX node name, a "
                             "PyTorch module path (glob, e.g. '*.se'), a stage (branches.0.stem, "
                             "branches.1.blocks.4, head, input) or 'auto' (search the stages that cost "
                             "most accuracy until Spearman(FP32, INT8) >= --float-target on the calibration images)")
    parser.add_argument("--float-target", type=float, default=FLOAT_TARGET,
                        help="--float-layer auto stops at this Spearman(FP32, INT8) on the calibration images "
                             f"(default {FLOAT_TARGET}; higher leaves more stages in float, within 25%% of the MACs)")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--check", metavar="DATA", help="dataset folder: compare the artifact with PyTorch FP32")
    parser.add_argument("--check-split", default="test", choices=("train", "val", "test", "all"))
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from edge_iqa.checkpoint import load_checkpoint
    from edge_iqa.commands.common import print_json, say
    from edge_iqa.outputs import ensure_writable_dir
    from export.formats import ExportConfig
    from export.parity import failed, write_report
    from export.pipeline import check_parity, export_model

    ensure_writable_dir(args.out)
    config = ExportConfig(format=args.format, precision=args.precision, calib_method=args.calib_method,
                          calib_split=args.calib_split, calib_images=args.calib_images, percentile=args.percentile,
                          cpu_layout=args.cpu_layout, float_layers=tuple(args.float_layer),
                          float_target=args.float_target, opset=args.opset,
                          calib_select_split=args.calib_select_split, calib_candidates=tuple(args.calib_candidate),
                          cpu_weight_bits=args.cpu_weight_bits, weight_rounding=args.weight_rounding)
    if config.needs_calib and not args.calib:
        from edge_iqa.errors import EdgeIQAError

        raise EdgeIQAError(f"--precision {config.precision} for --format {config.format} calibrates on real "
                           "images; pass --calib DATA (a dataset folder with manifest.csv)")
    model, _ = load_checkpoint(args.checkpoint)
    command = "edge-iqa " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["export"] else ""
    out = Path(args.out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        artifact = export_model(model, config, out, calib=args.calib, command=command)
    notes = [str(w.message) for w in caught if "calibrating INT8" in str(w.message)]
    summary = artifact.summary() | {"checkpoint": args.checkpoint, "command": command, "notes": notes}
    write_report(out / "export.json", summary)
    checks = artifact.checks
    report = None
    if args.check:
        report, checks = check_parity(artifact, model, args.check, split=args.check_split,
                                      batch_size=args.batch_size)
        report |= {"checkpoint": args.checkpoint, "command": command, "notes": notes}
        write_report(out / "parity.json", report)
    bad = failed(checks)
    if args.json:
        print_json({"export": summary, "parity": report, "passed": not bad})
    else:
        for note in notes:
            say(f"warning: {note}")
        say(f"{config.format} {config.precision}: {artifact.path}" + ("" if artifact.path.exists() else
                                                                       " (not built here, see build_engine.sh)"))
        say(f"scored by: {artifact.runner_status} — {artifact.runner_note}")
        auto = artifact.info.get("calib_auto")
        if auto:
            say(f"calibration auto on {auto['split']} (n={auto['n']}): chosen {auto['chosen']}; " + ", ".join(
                f"{r['candidate']} {r['spearman_vs_fp32']:.4f}" for r in auto["candidates"]))
        for check in checks:
            say("  " + check.line())
            if check.name == "accuracy" and check.detail.get("burst"):
                d = check.detail
                say(f"        per-burst Spearman vs fp32 mean {d['mean_burst_spearman']:.4f} min "
                    f"{d['min_burst_spearman']:.4f}, top-1 frame agreement {d['top1_agreement']:.3f} (worst task), "
                    f"max|Δ| {d['max_abs_delta']:.2e}, mean|Δ| {d['mean_abs_delta']:.2e}, "
                    f"{d['n_bursts']} bursts")
            elif check.name == "accuracy" and check.detail:
                d = check.detail
                say(f"        SRCC fp32 {d['fp32']['srcc']:.4f} -> {d['artifact']['srcc']:.4f} "
                    f"(drop {d['srcc_drop']:+.4f}), max|Δ| {d['max_abs_delta']:.2e}, mean|Δ| "
                    f"{d['mean_abs_delta']:.2e}, Spearman vs fp32 {d['spearman_vs_fp32']:.4f}, n={d['n']}")
        say(f"reports: {out / 'export.json'}" + (f", {out / 'parity.json'}" if report else ""))
    return 1 if bad else 0
