"""ExecuTorch XNNPACK against ONNX Runtime on the CPU: FP32 and INT8 latency of the same models.

Issue 15 §2/§4 ask how the phone runtime compares with what ``edge-iqa score`` uses on a CPU.
Two models: the export test fixture (``tests/fixtures/student.pt``, MobileNetV3-Small, 48×64
resize + 2×2×24 px fragments) and the preset ``demo-student-mobilenetv2`` (MobileNetV2-1.0 on
8×8 fragments of 32 px, 256×256 input; random init: latency does not depend on the weights).
Each is exported with ``export_model`` to ONNX fp32, ONNX int8 (U8S8 QOperator, the default)
and ExecuTorch fp32 / int8 (XNNPACK delegate, PT2E), INT8 calibrated on the fixture's synthetic
images (the fixture) or on a 320 px synthetic set (the preset). Timing: batch 1, one thread in
every runtime, the four artifacts of a model run interleaved (one call of each per round, so
load changes hit all alike), ``--warmup`` rounds dropped, the median and p90 of ``--runs`` rounds.

    /work/et-venv/bin/python benchmarks/executorch_latency.py --work runs/executorch_latency --phase export
    /work/et-venv/bin/python benchmarks/executorch_latency.py --work runs/executorch_latency --phase time

Needs executorch (``pip install edge-iqa[executorch]``). Writes
``benchmarks/results/executorch.{json,md}`` with the command, the CPU (lscpu) and load averages.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ARTIFACTS = (("onnx", "fp32", "onnxruntime"), ("onnx", "int8", "onnxruntime"),
             ("executorch", "fp32", "executorch"), ("executorch", "int8", "executorch"))


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_fixture", ROOT / "tests" / "fixtures" / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_fixture"] = module
    spec.loader.exec_module(module)
    return module


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "")
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags.split()]
    return (f"{fields.get('Model name', '?').strip()} (family {fields.get('CPU family', '?').strip()}, "
            f"model {fields.get('Model:', fields.get('Model', '?')).strip()}), {fields.get('CPU(s)', '?').strip()} "
            f"CPUs, {'/'.join(isa)}")


def models(work: Path):
    """(name, model, calibration data folder) of both models."""
    from edge_iqa.checkpoint import load_checkpoint
    from edge_iqa.data.synth import build_synth_dataset
    from edge_iqa.model import build_model
    from edge_iqa.presets import get_preset

    fixture = _fixture_module()
    data = work / "fixture_data"
    if not (data / "manifest.csv").is_file():
        fixture.build_data(data)
    student, _ = load_checkpoint(fixture.STUDENT)
    yield "fixture (tests/fixtures/student.pt)", student, data
    big = work / "synth320"
    if not (big / "manifest.csv").is_file():
        build_synth_dataset(big, max_side=320, seed=0, workers=1)
    import torch

    torch.manual_seed(0)
    yield "demo-student-mobilenetv2 (random init)", build_model(get_preset("demo-student-mobilenetv2")).eval(), big


def time_interleaved(runners: dict, views: list[np.ndarray], runs: int, warmup: int) -> dict[str, dict]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(warmup + runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run(views)
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": len(t)}
            for name, t in times.items()}


def export_all(work: Path, calib_images: int) -> list[dict]:
    """Every artifact of both models into ``work``; returns what the timing process loads."""
    from export.formats import ExportConfig
    from export.pipeline import export_model

    plan = []
    for name, model, calib in models(work):
        tag = name.split()[0]
        for fmt, precision, runtime in ARTIFACTS:
            export = ExportConfig(format=fmt, precision=precision, calib_images=calib_images)
            artifact = export_model(model, export, work / tag / f"{fmt}_{precision}", calib=calib)
            plan.append({"model": name, "artifact": f"{fmt} {precision}", "path": str(artifact.path),
                         "runtime": runtime, "bytes": artifact.path.stat().st_size})
            print(f"exported {name} {fmt} {precision}: {artifact.path}", flush=True)
    return plan


def time_all(plan: list[dict], runs: int, warmup: int) -> list[dict]:
    """Load every artifact at one thread and time each model's four interleaved. Runs in its own
    process: the export's parity check loaded the programs at ExecuTorch's default pool (one
    thread per core), and the pool cannot be resized once a program's forward is loaded."""
    import torch

    torch.set_num_threads(1)
    from edge_iqa.model import example_inputs
    from edge_iqa.runtimes import load_artifact

    rows = []
    for name in dict.fromkeys(p["model"] for p in plan):
        entries = [p for p in plan if p["model"] == name]
        loaded = {p["artifact"]: load_artifact(p["path"], p["runtime"], threads=1) for p in entries}
        torch.manual_seed(1)
        config = next(iter(loaded.values())).config
        views = [v.numpy() for v in example_inputs(config, batch=1)]
        timing = time_interleaved({k: v.batch_fn for k, v in loaded.items()}, views, runs, warmup)
        for p in entries:
            t = timing[p["artifact"]]
            threads = getattr(loaded[p["artifact"]].batch_fn, "threads", loaded[p["artifact"]].threads)
            rows.append({**p, "threads": threads, **t})
            print(f"{name:42s} {p['artifact']:16s} {t['median_ms']:8.3f} ms (p90 {t['p90_ms']:.3f}) "
                  f"threads {threads}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "executorch_latency")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--phase", choices=("all", "export", "time"), default="all",
                        help="export: write the artifacts and WORK/plan.json only; time: time an earlier export "
                             "(in this process, which loaded no program before); all: both, timing in a fresh process")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    plan_path = args.work / "plan.json"
    if args.phase in ("all", "export"):
        plan_path.write_text(json.dumps(export_all(args.work, args.calib_images)))
        if args.phase == "export":
            return 0
        return subprocess.run([sys.executable, __file__, "--phase", "time", "--work", str(args.work), "--runs",
                               str(args.runs), "--warmup", str(args.warmup), "--calib-images", str(args.calib_images)],
                              check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
    load_start = os.getloadavg()
    rows = time_all(json.loads(plan_path.read_text()), args.runs, args.warmup)
    import importlib.metadata as md

    result = {
        "command": "/work/et-venv/bin/python benchmarks/executorch_latency.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "export": "the artifacts of --phase export (export_model, calib_images below)",
        "cpu": cpu_name(), "machine": platform.platform(),
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "versions": {d: md.version(d) for d in ("torch", "executorch", "onnxruntime")},
        "batch": 1, "runs": args.runs, "warmup": args.warmup, "calib_images": args.calib_images, "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "executorch.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# ExecuTorch XNNPACK vs ONNX Runtime, batch 1", "", f"Command: `{result['command']}`", "",
             f"CPU: {result['cpu']}; load average at start {load_start[0]:.2f}, end {result['load_average_end'][0]:.2f}; "
             f"versions {result['versions']}; median / p90 of {args.runs} interleaved rounds after {args.warmup} "
             "warm-up rounds.", "",
             "| model | artifact | threads | median ms | p90 ms | vs ONNX Runtime same precision | MB |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        same = next(r for r in rows if r["model"] == row["model"] and r["artifact"] == f"onnx {row['artifact'].split()[1]}")
        lines.append(f"| {row['model']} | {row['artifact']} | {row['threads']} | {row['median_ms']:.3f} | "
                     f"{row['p90_ms']:.3f} | {row['median_ms'] / same['median_ms']:.2f}x | {row['bytes'] / 1e6:.2f} |")
    (RESULTS / "executorch.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'executorch.json'} and {RESULTS / 'executorch.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
