"""Peak memory of INT8 calibration: ``edge-iqa export --precision int8`` under ``/usr/bin/time -v``.

    OMP_NUM_THREADS=1 python benchmarks/int8_calibration_memory.py --data runs/calib_mem/data \
        --label after --methods minmax quantile

Issue 14 item 4: calibrating the AIM baseline at 720×1280 on 100 images peaked at 12.8 GB. This
script exports a seeded random-init checkpoint of ``--preset`` with its resize view set to
``--size`` (memory does not depend on what the weights learned) once in FP32 (the export's
own peak without calibration) and once per calibration method in INT8, each in a fresh process,
and reads the process's maximum resident set size from GNU time. Rows are merged into
``benchmarks/results/int8_calibration_memory.json`` under ``--label`` (e.g. before/after a change),
and the Markdown table lists every label with its command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EDGE_IQA = str(Path(sys.executable).with_name("edge-iqa"))


def make_checkpoint(preset: str, size: tuple[int, int], path: Path) -> Path:
    import torch

    from edge_iqa.checkpoint import save_checkpoint
    from edge_iqa.config import ViewConfig
    from edge_iqa.model import build_model
    from edge_iqa.presets import get_preset

    torch.manual_seed(0)
    config = get_preset(preset)
    config = config.replace(views=(ViewConfig("resize", size=size),), name=f"{preset}-{size[0]}x{size[1]}")
    return save_checkpoint(path, build_model(config).eval())


def peak_rss(argv: list[str]) -> tuple[float, float, int]:
    """(max resident set size in MB, wall seconds, exit status) of ``argv`` run under GNU time."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if match is None:
        raise SystemExit(f"no peak memory in the output of {shlex.join(argv)}:\n{done.stderr[-2000:]}")
    return int(match.group(1)) / 1024, wall, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder whose train images calibrate")
    parser.add_argument("--preset", default="aim-baseline")
    parser.add_argument("--size", default="360x640", help="resize view HxW")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--methods", nargs="+", default=["minmax", "quantile"])
    parser.add_argument("--label", required=True, help="row label, e.g. before or after")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "int8_calibration_memory")
    args = parser.parse_args()
    size = tuple(int(s) for s in args.size.split("x"))
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = make_checkpoint(args.preset, size, args.work / f"{args.preset}-{args.size}.pt")
    rows = []
    for method in ["fp32", *args.methods]:
        out = args.work / f"{args.label}-{method}"
        precision = ["--precision", "fp32"] if method == "fp32" else [
            "--precision", "int8", "--calib", str(args.data), "--calib-images", str(args.calib_images),
            "--calib-method", method]
        argv = [EDGE_IQA, "export", str(checkpoint), "--format", "onnx", *precision, "--out", str(out), "--json"]
        mb, wall, code = peak_rss(argv)
        command = "/usr/bin/time -v edge-iqa " + shlex.join(argv[1:])
        rows.append({"label": args.label, "method": method, "peak_rss_mb": round(mb, 1), "wall_s": round(wall, 1),
                     "exit": code, "command": command})
        print(f"{args.label:8s} {method:10s} peak RSS {mb:8.1f} MB  {wall:6.1f} s  exit {code}", flush=True)
    meta = {"command": "python benchmarks/int8_calibration_memory.py " + shlex.join(sys.argv[1:]),
            "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                         cwd=ROOT).stdout.strip(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "preset": args.preset, "size": args.size, "calib_images": args.calib_images,
            "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
            "versions": {d: importlib.metadata.version(d) for d in ("torch", "onnx", "onnxruntime")}}
    store = RESULTS / "int8_calibration_memory.json"
    runs = json.loads(store.read_text())["runs"] if store.is_file() else {}
    runs[args.label] = {"meta": meta, "rows": rows}
    store.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
