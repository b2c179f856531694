"""``edge-iqa demo``: the whole path on the embedded data, from photos to scores.

Builds the synthetic dataset from photos shipped by installed packages, trains the small demo
student, evaluates it on the test split and scores a few photos, then prints a summary.
"""

from __future__ import annotations

import argparse

HELP = "run the whole path on the embedded data: synth data -> train a student -> evaluate -> score"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="folder for the data, the run and the summary")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-side", type=int, default=512, help="longer side of the synthetic references")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from distill.trainer import TrainConfig, train
    from edge_iqa.commands.common import format_table, print_json, say
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.data.synth import build_synth_dataset
    from edge_iqa.presets import get_preset
    from edge_iqa.scoring import load

    out = Path(args.out)
    data = out / "data"
    started = time.time()
    if (data / "manifest.csv").is_file():
        say(f"[1/4] reusing the synthetic dataset in {data}")
    else:
        say(f"[1/4] building the synthetic dataset in {data}")
        build_synth_dataset(data, seed=args.seed, max_side=args.max_side)

    say("[2/4] training demo-student")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, num_workers=args.workers)
    summary = train(get_preset("demo-student"), data, out / "student", config, progress=not args.json)

    say("[3/4] test split of the best checkpoint")
    test = summary.get("test", {})
    say(f"      SRCC {test.get('srcc', float('nan')):.4f}  PLCC {test.get('plcc', float('nan')):.4f}  n={test.get('n', 0)}")

    say("[4/4] scoring a few test photos")
    test_records = read_manifest(data, split="test")
    records = test_records[:: max(1, len(test_records) // 5)][:5]
    scorer = load(out / "student" / "best.pt")
    scored = scorer.score_paths([r.path for r in records])
    say(format_table(("photo", "SSIM label", "predicted"),
                     [(Path(r.path).name, rec.score, r.score) for r, rec in zip(scored, records)]))

    result = {"data": str(data), "checkpoint": str(out / "student" / "best.pt"), "test": test,
              "best_val_srcc": summary["best_val_srcc"], "train_seconds": summary["train_seconds"],
              "total_seconds": round(time.time() - started, 1),
              "scored": [{"path": r.path, "label": rec.score, "score": r.score} for r, rec in zip(scored, records)]}
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print_json(result)
    else:
        say(f"done in {result['total_seconds']:.0f} s; summary in {out / 'summary.json'}")
    return 0
