"""``edge-iqa evaluate``: IQA metrics of a checkpoint or export on one split of a dataset."""

from __future__ import annotations

import argparse

HELP = "evaluate a checkpoint or exported model on a dataset split (SRCC, PLCC, KRCC, MAE, RMSE)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import add_max_pixels_option, model_file, non_negative_int, positive_int

    parser.add_argument("model", type=model_file, help="checkpoint (.pt) or exported model (.onnx)")
    parser.add_argument("--data", required=True, help="dataset directory with manifest.csv")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, default=2)
    add_max_pixels_option(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    import edge_iqa
    from edge_iqa.commands.common import check_dataset_folder, print_json, say
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.metrics import iqa_metrics

    check_dataset_folder(args.data)  # before the model loads (torch)
    scorer = edge_iqa.load(args.model, args.device)
    scorer.max_pixels = args.max_pixels
    records = read_manifest(args.data, split=None if args.split == "all" else args.split)
    results = scorer.score_paths([r.path for r in records], args.batch_size, args.workers, progress=not args.json)
    pairs = [(res.score, rec.score) for res, rec in zip(results, records) if res.score is not None]
    failed = len(records) - len(pairs)
    if len(pairs) < 2:
        raise EdgeIQAError(f"{args.data}: only {len(pairs)} images of split {args.split!r} could be scored")
    metrics = iqa_metrics(*zip(*pairs))
    metrics["failed"] = failed
    if args.json:
        print_json(metrics)
    else:
        say(f"{args.model} on {args.data} [{args.split}]: SRCC {metrics['srcc']:.4f}  PLCC {metrics['plcc']:.4f}  "
            f"KRCC {metrics['krcc']:.4f}  MAE {metrics['mae']:.4f}  RMSE {metrics['rmse']:.4f}  n={metrics['n']}"
            + (f"  ({failed} failed)" if failed else ""))
    return 0
