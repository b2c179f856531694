"""``edge-iqa train``: supervised training of any preset on a canonical dataset."""

from __future__ import annotations

import argparse

HELP = "train a model preset on a dataset (manifest.csv + dataset.json)"


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Options every training command shares (train, distill)."""
    from edge_iqa.commands.common import (
        existing_file, int_at_least, non_negative_float, non_negative_int, positive_float, positive_int,
    )

    parser.add_argument("--data", required=True, help="dataset directory with manifest.csv and dataset.json")
    parser.add_argument("--out", required=True, help="run directory for best.pt, last.pt, metrics.json")
    parser.add_argument("--epochs", type=positive_int, default=20)
    parser.add_argument("--batch-size", type=int_at_least(2), default=16, help="at least 2 (batch norm)")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--weight-decay", type=non_negative_float, default=None,
                        help="default 1e-4 (AdamW); burst models: 0 (Adam, as the burst paper)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--workers", type=non_negative_int, default=2, help="DataLoader worker processes")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--allow-over-budget", action="store_true",
                        help="train a student even if it is over the MAC budget at its source resolution")
    parser.add_argument("--weights", type=existing_file("backbone weights", "give a local .pth or .safetensors file"),
                        help="local timm backbone weights (.pth/.safetensors) to start from")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from the backbone's ImageNet weights: the local weights folder (--weights-dir "
                             "or EDGE_IQA_WEIGHTS) when it has them, else timm's hub (downloaded once into the "
                             "Hugging Face cache, as timm.create_model(pretrained=True))")
    parser.add_argument("--weights-dir", metavar="DIR",
                        help="folder of weights files named by timm model (mobilenetv2_100.safetensors, "
                             "mobilenetv2_100.imagenet.pth, ...); implies --pretrained (default: $EDGE_IQA_WEIGHTS)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
    parser.add_argument("--task", action="append", metavar="NAME",
                        help="burst models: a downstream task to score frames for (repeat; its targets are the "
                             "manifest column score_NAME); default: the preset's tasks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import add_view_option, model_name

    parser.add_argument("--model", required=True, type=model_name, help="preset name or timm backbone (edge-iqa presets)")
    add_view_option(parser)
    add_train_options(parser)
    parser.add_argument("--loss", action="append", metavar="NAME=WEIGHT",
                        help=f"loss terms (repeat); default mse=1 plcc=0.5, burst models {' '.join(BURST_LOSSES)}")


BURST_LOSSES = ("burst_rank=10", "mse=1")  # the paper's beta = 10; mse keeps scores on the label scale


def with_tasks(config, tasks):
    """``config`` with its burst tasks replaced by ``--task`` names (None: unchanged)."""
    import dataclasses

    from edge_iqa.errors import EdgeIQAError

    if not tasks:
        return config
    if config.burst is None:
        raise EdgeIQAError(f"--task picks a burst model's downstream tasks; {config.name} is a photo model")
    return config.replace(burst=dataclasses.replace(config.burst, tasks=tuple(tasks)))


def train_config_from_args(args: argparse.Namespace, default_losses: tuple[str, ...], burst: bool = False):
    """The TrainConfig of the options; a burst model gets the burst paper's Adam (no weight
    decay) unless ``--weight-decay`` is given."""
    from distill.losses import parse_loss_terms
    from distill.trainer import TrainConfig

    weight_decay = args.weight_decay if args.weight_decay is not None else (0.0 if burst else 1e-4)
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=weight_decay, seed=args.seed, num_workers=args.workers,
                       device=args.device, losses=parse_loss_terms(args.loss or default_losses),
                       optimizer="adam" if burst else "adamw")


def initial_weights(args: argparse.Namespace, config):
    """The WeightSource the options ask for, resolved before any training work (offline
    ``--pretrained`` fails here, in one line). Resuming a run: the run's own record (its
    weights come from ``last.pt``)."""
    from pathlib import Path

    from edge_iqa.pretrained import resolve_weights

    last = Path(args.out) / "last.pt"
    if args.resume and last.is_file():
        from edge_iqa.checkpoint import read_checkpoint

        return read_checkpoint(last)["init_weights"]
    return resolve_weights(config.backbone, weights=args.weights, pretrained=args.pretrained,
                           weights_dir=args.weights_dir)


def print_summary(summary: dict, as_json: bool) -> None:
    from edge_iqa.commands.common import print_json, say

    if as_json:
        print_json({k: v for k, v in summary.items() if k != "history"})
        return
    if summary.get("init_weights"):
        from edge_iqa.pretrained import WeightSource

        say(f"initial weights: {WeightSource.from_dict(summary['init_weights']).describe()}")
    if "best_val_r0" in summary:  # a burst model
        say(f"best epoch {summary['best_epoch']}: val R0 {summary['best_val_r0']:.4f}")
        for task, t in summary.get("test", {}).get("tasks", {}).items():
            say(f"test {task}: R0 {t['srcc_r0']:.4f}  R0.02 {t['srcc_r0.02']:.4f}  R0.05 {t['srcc_r0.05']:.4f}  "
                f"R0.1 {t['srcc_r0.1']:.4f}  pairwise {t['pairwise_accuracy']:.4f}  (bursts={t['n_sequences']})")
        return
    say(f"best epoch {summary['best_epoch']}: val SRCC {summary['best_val_srcc']:.4f}")
    if "test" in summary:
        t = summary["test"]
        say(f"test: SRCC {t['srcc']:.4f}  PLCC {t['plcc']:.4f}  KRCC {t['krcc']:.4f}  "
            f"MAE {t['mae']:.4f}  RMSE {t['rmse']:.4f}  (n={t['n']})")


def run(args: argparse.Namespace) -> int:
    from edge_iqa.commands.common import check_dataset_folder, resolve_model
    from edge_iqa.outputs import ensure_writable_dir

    ensure_writable_dir(args.out)
    config = with_tasks(resolve_model(args.model, args.view), args.task)
    check_dataset_folder(args.data)
    from distill.trainer import train  # torch: only once the cheap checks have passed
    from profiling.budget import ensure_within_budget

    ensure_within_budget(config, allow_over_budget=args.allow_over_budget)
    source = initial_weights(args, config)
    losses = BURST_LOSSES if config.burst else ("mse=1", "plcc=0.5")
    summary = train(config, args.data, args.out, train_config_from_args(args, losses, burst=config.burst is not None),
                    resume=args.resume, progress=not args.quiet, init_weights=source,
                    run_info={"init_weights": source.to_dict()} if source else None)
    if summary:
        print_summary(summary, args.json)
    return 0
