"""INT8 per target for several trained seeds: PTQ with ``--calib-method auto`` against QAT.

    OMP_NUM_THREADS=1 python benchmarks/int8_seeds.py --data runs/bench/data256 \\
        --checkpoint runs/bench/.../distill-score+pseudo-s0/best.pt --checkpoint .../s1/best.pt ...

For every checkpoint and every INT8 target (ONNX Runtime U8S8, TensorRT S8S8 QDQ, CoreML W8A8)
it runs two real commands and reads their ``parity.json`` (test split against the FP32 PyTorch
model):

- PTQ: ``edge-iqa export CKPT --format F --precision int8 --calib DATA --calib-method auto``
  (the calibration chosen on the val split; CoreML W8A8 among coremltools' min/max and quantiles);
- QAT: ``edge-iqa qat CKPT --data DATA --format F --epochs N``, starting from quantile 99.99
  (CoreML: from coremltools' own moving-average min/max observers, the only start it takes); it
  exports the best of its PTQ start and each epoch on the val split (``--select-split val``);
- for ONNX also both with ``--cpu-weight-bits 8`` (methods ``ptq-w8``, ``qat-w8``): full-range
  weights, exact on VNNI and ARM64 cores (the 7-bit default gives the same scores on every x86 CPU);
- PTQ with AdaRound's learned weight rounding (``--weight-rounding adaround``; methods ``ptq-ada``
  and, for ONNX, ``ptq-w8-ada``); and AdaRound with ``--float-layer auto``, the stages that cost most
  agreement on the calibration images left in float (``ptq-ada-float``, ``ptq-w8-ada-float``).

``--methods`` runs a subset of these.

It writes ``benchmarks/results/NAME.{json,md}``: Spearman vs FP32 and SRCC drop per seed ×
target × method, whether the artifact ran or was simulated (TensorRT's graph in ONNX Runtime,
CoreML's weights in PyTorch: neither runtime runs here), and the issue's goal (Spearman ≥ 0.99
and SRCC drop ≤ 0.01) counted over the rows. A run whose ``parity.json`` exists is not run again.

Burst checkpoints (``edge-iqa data synth --kind burst`` data) run the same commands; their rows
carry the burst parity figures instead: mean per-burst Spearman vs FP32 (reference frame left
out, worst task), top-1 agreement and the R0 drop of the worst task, against issue 13's goal
(mean per-burst Spearman ≥ 0.98).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from edge_iqa.bench import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ("onnx", "tensorrt", "coreml")
GOAL_SPEARMAN, GOAL_DROP = 0.99, 0.01  # issue 14's goal (export --check's own limits: 0.98, 0.01)
BURST_GOAL_SPEARMAN = 0.98  # issue 13's: mean per-burst Spearman vs FP32, worst task
METHODS = ("ptq", "qat", "ptq-w8", "qat-w8", "ptq-ada", "ptq-w8-ada", "ptq-ada-float", "ptq-w8-ada-float")
START = ("--calib-method", "quantile", "--percentile", "99.99")  # seed 0's choice on its val split


def commands(checkpoint: Path, data: Path, out: Path, target: str, args) -> dict[str, list[str]]:
    """The command line of each method for one checkpoint and target (as recorded: ``edge-iqa ...``)."""
    common = ["--check", str(data), "--json"]
    ptq_calib = ("--calib-method", "auto")
    qat_calib = () if target == "coreml" else START  # CoreML QAT starts from coremltools' own min/max observers
    found = {}
    for suffix, extra in [("", ())] + ([("-w8", ("--cpu-weight-bits", "8"))] if target == "onnx" else []):
        found["ptq" + suffix] = ["edge-iqa", "export", str(checkpoint), "--format", target, "--precision", "int8",
                                 "--calib", str(data), *ptq_calib, *extra, "--out", str(out / f"{target}-ptq{suffix}"),
                                 *common]
        found["qat" + suffix] = ["edge-iqa", "qat", str(checkpoint), "--data", str(data), "--format", target,
                                 "--epochs", str(args.qat_epochs), "--max-images", str(args.qat_max_images), *qat_calib,
                                 *extra, "--no-ptq", "--out", str(out / f"{target}-qat{suffix}"), *common]
        floats = ("--float-layer", "auto") + (("--float-target", f"{args.float_target:g}") if args.float_target else ())
        for method, extra_floats in ((f"ptq{suffix}-ada", ()), (f"ptq{suffix}-ada-float", floats)):
            found[method] = ["edge-iqa", "export", str(checkpoint), "--format", target, "--precision", "int8",
                             "--calib", str(data), *ptq_calib, *extra, "--weight-rounding", "adaround", *extra_floats,
                             "--out", str(out / f"{target}-{method_name(method, args)}"), *common]
    return {method_name(method, args): argv for method, argv in found.items() if method in args.methods}


def method_name(method: str, args) -> str:
    """``ptq-ada-float@0.999`` for a float search with ``--float-target`` given: its own row and folder."""
    return f"{method}@{args.float_target:g}" if method.endswith("-float") and args.float_target else method


def run_one(argv: list[str], out: Path, threads: int) -> dict:
    report = out / "parity.json"
    started = time.perf_counter()
    if not report.is_file():
        exe = [str(Path(sys.executable).with_name(argv[0])), *argv[1:]]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(exe, cwd=ROOT, env=env, capture_output=True, text=True)
        (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
        if not report.is_file():
            return {"error": f"exit {proc.returncode}, no parity.json: {proc.stderr.strip().splitlines()[-1:]}"}
    parity = json.loads(report.read_text())
    accuracy = next(c for c in parity["checks"] if c["name"] == "accuracy")
    detail = accuracy["detail"]
    auto = parity.get("calib_auto") or {}
    selection = (parity.get("qat") or {}).get("selection") or {}
    common = {"status": accuracy["status"], "passed_export_limits": accuracy["passed"], "calib_chosen": auto.get("chosen"),
              "qat_epoch": selection.get("chosen_epoch"), "seconds": round(time.perf_counter() - started, 1)}
    if detail.get("burst"):  # per-burst agreement, worst task; R0 against the labels per task
        worst = max(detail["r0_drop"], key=detail["r0_drop"].get)
        return {**common, "burst": True, "spearman_vs_fp32": detail["mean_burst_spearman"],
                "min_burst_spearman": detail["min_burst_spearman"], "top1_agreement": detail["top1_agreement"],
                "r0_drop": detail["r0_drop"][worst], "r0_task": worst, "fp32_r0": detail["fp32_r0"][worst],
                "int8_r0": detail["artifact_r0"][worst], "n": detail.get("n_bursts")}
    return {**common, "spearman_vs_fp32": detail.get("spearman_vs_fp32"), "srcc_drop": detail.get("srcc_drop"),
            "fp32_srcc": detail.get("fp32", {}).get("srcc"), "int8_srcc": detail.get("artifact", {}).get("srcc"),
            "n": detail.get("n")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, action="append", required=True, help="one per seed (repeat)")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (train calibrates, val chooses, test checks)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "int8_seeds")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="which methods to run (those a target does not take are left out)")
    parser.add_argument("--float-target", type=float, help="the -float methods' --float-target (default: export's)")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--qat-max-images", type=int, default=0, help="training images per QAT epoch (0: all)")
    parser.add_argument("--parallel", type=int, default=2, help="commands at a time")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per command")
    parser.add_argument("--name", default="int8_seeds", help="results file stem")
    parser.add_argument("--note", action="append", default=[])
    args = parser.parse_args()

    jobs = []
    for seed, checkpoint in enumerate(args.checkpoint):
        if not checkpoint.is_file():
            print(f"{checkpoint}: no such checkpoint", file=sys.stderr)
            return 2
        for target in args.targets:
            for method, argv in commands(checkpoint, args.data, args.work / f"seed{seed}", target, args).items():
                jobs.append({"seed": seed, "checkpoint": str(checkpoint), "target": target, "method": method,
                             "command": shlex.join(argv), "argv": argv,
                             "out": args.work / f"seed{seed}" / f"{target}-{method}"})
    for job in jobs:
        job["out"].parent.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        futures = {pool.submit(run_one, j["argv"], j["out"], args.threads): j for j in jobs}
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            job.update(future.result())
            print(f"  seed {job['seed']} {job['target']:<8} {job['method']}: "
                  + (job.get("error") or f"Spearman {job['spearman_vs_fp32']:.4f}, drop {job[drop_key(job)]:+.4f}"
                     f" ({job['status']}, {job['seconds']} s)"), file=sys.stderr, flush=True)
    rows = [{k: v for k, v in j.items() if k not in ("argv", "out")} for j in jobs]
    result = {"date": datetime.date.today().isoformat(), "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "data": str(args.data), "qat_epochs": args.qat_epochs, "qat_max_images": args.qat_max_images, "threads": args.threads, "parallel": args.parallel,
              "goal": {"spearman_vs_fp32 >=": GOAL_SPEARMAN, "srcc_drop <=": GOAL_DROP}, "notes": args.note,
              "machine": machine(), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(render(result))
    print(RESULTS / f"{args.name}.md")
    return 0 if all("error" not in r for r in rows) else 1


def drop_key(row: dict) -> str:
    """The accuracy drop against the labels: SRCC, or a burst model's R0 (worst task)."""
    return "r0_drop" if row.get("burst") else "srcc_drop"


def meets_goal(row: dict) -> bool:
    if row.get("burst"):
        return row["spearman_vs_fp32"] >= BURST_GOAL_SPEARMAN
    return row.get("spearman_vs_fp32") is not None and row["spearman_vs_fp32"] >= GOAL_SPEARMAN \
        and row["srcc_drop"] <= GOAL_DROP


def render(result: dict) -> str:
    rows = result["rows"]
    burst = any(r.get("burst") for r in rows)
    if burst:
        scored = ("Test bursts against the FP32 PyTorch model: mean per-burst Spearman of the non-reference frames "
                  "(worst task), top-1 agreement, and the R0 drop of the task whose R0 drops the most. Goal (issue 13): "
                  f"mean per-burst Spearman vs FP32 ≥ {BURST_GOAL_SPEARMAN}.")
        header = ["| seed | target | method | calibration | mean per-burst Spearman vs FP32 | min | top-1 agreement | "
                  "R0 drop (task) | FP32 → INT8 R0 | accuracy | goal | s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    else:
        scored = (f"Test split against the FP32 PyTorch model. Goal (issue 14): Spearman vs FP32 ≥ {GOAL_SPEARMAN} and "
                  f"SRCC drop ≤ {GOAL_DROP}.")
        header = ["| seed | target | method | calibration | Spearman vs FP32 | SRCC drop | FP32 → INT8 test SRCC | accuracy "
                  "| goal | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines = [f"# INT8 per target and seed: PTQ (`--calib-method auto`) and QAT ({result['date']})", "",
             "QAT exports the best of its PTQ start (epoch 0) and each epoch on the val split; `-w8`: ONNX with "
             "`--cpu-weight-bits 8` (full-range weights; the default 7-bit weights give the same scores on every "
             "x86 CPU); `-ada`: `--weight-rounding adaround` (AdaRound's learned weight rounding); `-float`: "
             "`--float-layer auto` (stages left in float until Spearman vs FP32 ≥ 0.995 on the calibration images, "
             "or the `--float-target` after `@`; at most 25 % of the MACs).", "",
             f"Command: `{result['command']}` ({result['parallel']} commands at a time, {result['threads']} thread each).",
             "", scored + " *ran*: the artifact in its runtime (ONNX Runtime); *simulated*: TensorRT's QDQ graph in ONNX "
             "Runtime, CoreML W8A8 weights in PyTorch (neither runtime runs here).", "", *header]
    for r in rows:
        if "error" in r:
            columns = header[1].count("|") - 1
            lines.append(f"| {r['seed']} | {r['target']} | {r['method']} | | error: {r['error']} |" + " |" * (columns - 5))
            continue
        calib = r.get("calib_chosen") or ("minmax observers" if r["target"] == "coreml" and r["method"] == "qat"
                                          else "quantile:99.99")
        if r.get("qat_epoch") is not None:
            calib += f", epoch {r['qat_epoch']}"
        if burst:
            figures = (f"{r['spearman_vs_fp32']:.4f} | {r['min_burst_spearman']:.4f} | {r['top1_agreement']:.3f} | "
                       f"{r['r0_drop']:+.4f} ({r['r0_task']}) | {r['fp32_r0']:.4f} → {r['int8_r0']:.4f}")
        else:
            figures = f"{r['spearman_vs_fp32']:.4f} | {r['srcc_drop']:+.4f} | {r['fp32_srcc']:.4f} → {r['int8_srcc']:.4f}"
        lines.append(f"| {r['seed']} | {r['target']} | {r['method']} | {calib} | {figures} | {r['status']} | "
                     f"{'met' if meets_goal(r) else 'missed'} | {r['seconds']} |")
    lines += ["", "Goal met, by target and method (of the seeds):", ""]
    for target in dict.fromkeys(r["target"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            got = [r for r in rows if r["target"] == target and r["method"] == method and "error" not in r]
            if got:
                worst = min(r["spearman_vs_fp32"] for r in got)
                lines.append(f"- {target} {method}: {sum(map(meets_goal, got))}/{len(got)}; lowest Spearman {worst:.4f}, "
                             f"largest drop {max(r[drop_key(r)] for r in got):+.4f}")
    lines += ["", *[f"Note: {n}" for n in result["notes"]], "", "Commands:", ""]
    lines += [f"- seed {r['seed']} {r['target']} {r['method']}: `{r['command']}`" for r in rows]
    lines += ["", f"Machine: {result['machine']}", ""]
    return "\n".join(lines)

if __name__ == "__main__":
    raise SystemExit(main())
