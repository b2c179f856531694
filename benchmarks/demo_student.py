"""Train the demo student on the embedded data and record its test accuracy and training time.

    python benchmarks/demo_student.py [--epochs 30] [--data runs/bench/data]
    python benchmarks/demo_student.py --model demo-student-mobilenetv2 --weights-dir ../shared/weights \
        --out runs/bench/mnv2-imagenet --name demo_student_mobilenetv2_imagenet

Writes benchmarks/results/NAME.{json,md} (default demo_student) with the exact commands, library
versions, the machine and its load average (other jobs on a 2-core machine stretch the wall time).
``--weights-dir`` starts the backbone from ImageNet weights (``edge-iqa train --weights-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run(command: list[str]) -> float:
    print("$", shlex.join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True)
    return time.time() - started


def versions() -> dict[str, str]:
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/bench/data")
    parser.add_argument("--out", default="runs/bench/demo-student")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="demo-student", help="model preset")
    parser.add_argument("--weights-dir", default=None, help="ImageNet weights folder (default: random init)")
    parser.add_argument("--name", default="demo_student", help="results file stem")
    args = parser.parse_args()

    cli = [sys.executable, "-m", "edge_iqa.cli"]
    commands = []
    if not (Path(args.data) / "manifest.csv").is_file():
        commands.append(cli + ["data", "synth", args.data, "--seed", str(args.seed)])
        run(commands[-1])
    commands.append(cli + ["train", "--data", args.data, "--model", args.model, "--out", args.out,
                           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                           "--seed", str(args.seed), "--quiet",
                           *(["--weights-dir", args.weights_dir] if args.weights_dir else [])])
    load_before = os.getloadavg()
    seconds = run(commands[-1])
    load_after = os.getloadavg()
    metrics = json.loads((Path(args.out) / "metrics.json").read_text())

    result = {
        "commands": [shlex.join(c) for c in commands], "model": args.model,
        "init": f"ImageNet ({args.weights_dir})" if args.weights_dir else "random",
        "test": metrics["test"], "best_epoch": metrics["best_epoch"], "best_val_srcc": metrics["best_val_srcc"],
        "train_wall_seconds": round(seconds, 1), "train_epoch_seconds": metrics["train_seconds"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": load_after},
        "versions": versions(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    t = result["test"]
    (RESULTS / f"{args.name}.md").write_text(
        f"# {args.model} ({result['init']} init) on the embedded synthetic data\n\n"
        + "".join(f"    {c}\n" for c in result["commands"])
        + f"\n| test SRCC | test PLCC | KRCC | RMSE | n | best epoch | train wall time |\n|---|---|---|---|---|---|---|\n"
        f"| {t['srcc']:.4f} | {t['plcc']:.4f} | {t['krcc']:.4f} | {t['rmse']:.4f} | {t['n']} | "
        f"{result['best_epoch']}/{args.epochs} | {seconds / 60:.1f} min |\n\n"
        f"Machine: {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before and {load_after[0]:.1f} after "
        "(other jobs on the machine stretch the wall time). Labels are SSIM, not human opinion.\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
