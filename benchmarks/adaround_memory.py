"""Peak memory and time of AdaRound (:mod:`export.adaround`) on a UHD student at its real input.

    OMP_NUM_THREADS=1 python benchmarks/adaround_memory.py --data runs/adamem/data --label after

AdaRound caches each layer's input in the FP32 and in the rounded model for its calibration
images; at 720×1280 one MobileNetV2 expansion layer's input is 88 MB per image. This script
rounds a seeded random-init checkpoint of ``--preset`` (memory and time do not depend on what
the weights learned) on ``--images`` calibration images of ``--data``'s train split, in a fresh
process per run, and records the process's peak resident memory (``ru_maxrss``), the time spent
capturing inputs and the time spent optimising. ``--iterations`` below the default of 400 keeps a
memory run short (the peak does not depend on it); the time then is that of the given count.
Rows are merged into ``benchmarks/results/adaround_memory.json`` under ``--label``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "adaround_memory.json"


def run_once(args) -> dict:
    import torch

    from edge_iqa.model import build_model, example_inputs
    from edge_iqa.presets import get_preset
    from export.adaround import AdaRoundConfig, adaround, symmetric_grid
    from export.fold import fold_batchnorm
    from export.formats import ExportConfig
    from export.pipeline import _calib_tensors

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(get_preset(args.preset)).eval()
    folded = fold_batchnorm(model, example_inputs(model.config))
    export = ExportConfig("onnx", "int8", calib_images=args.images)
    fields = {f.name for f in dataclasses.fields(AdaRoundConfig)}
    settings = {"iterations": args.iterations, "images": args.images}
    if args.cache_mb is not None:
        if "cache_mb" not in fields:
            raise SystemExit("this export.adaround has no cache_mb")
        settings["cache_mb"] = args.cache_mb
    cfg = AdaRoundConfig(**settings)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    _, records = adaround(folded, _calib_tensors(model.config, export, args.data), symmetric_grid(127), cfg)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"label": args.label, "preset": args.preset, "images": args.images, "iterations": args.iterations,
            "config": dataclasses.asdict(cfg), "peak_rss_mb": round(peak, 1), "rss_before_mb": round(base, 1),
            "seconds": round(wall, 1), "layers": len(records),
            "capture_seconds": round(sum(r.get("capture_seconds", 0.0) for r in records), 1),
            "images_per_layer": sorted({r.get("images", args.images) for r in records}),
            "kept_adaround": sum(r["kept"] == "adaround" for r in records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder whose train images calibrate")
    parser.add_argument("--preset", default="mobilenetv2-uhd")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--cache-mb", type=int, default=None, help="AdaRoundConfig.cache_mb (default: its own)")
    parser.add_argument("--label", required=True)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the measured process: one AdaRound, its row as JSON on stdout
        print(json.dumps(run_once(args)))
        return 0
    done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the AdaRound run failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["command"] = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} python benchmarks/adaround_memory.py " \
                     + shlex.join(sys.argv[1:])
    row["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip()
    row["pythonpath"] = os.environ.get("PYTHONPATH")
    row["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {_cpu()}"
    row["torch"] = importlib.metadata.version("torch")
    runs = json.loads(RESULTS.read_text())["runs"] if RESULTS.is_file() else {}
    runs[args.label] = row
    RESULTS.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(json.dumps(row, indent=2))
    return 0


def _cpu() -> str:
    from edge_iqa.bench import cpu_name

    return cpu_name()


if __name__ == "__main__":
    sys.exit(main())
