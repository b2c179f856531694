"""``edge-iqa evaluate``: IQA metrics of a checkpoint or export on one split of a dataset.

On a photo dataset: SRCC, PLCC, KRCC, MAE, RMSE. On a burst dataset (``manifest.csv`` with
``sequence,frame`` columns): the burst IQA protocol of :mod:`edge_iqa.burst_eval` — R0, R0.02,
R0.05, R0.1, pairwise accuracy mean ± std and the top-M downstream gain (M = 3, 5, against
random-M, first-M, all frames and the oracle) — per task, through the Scorer, so checkpoints
and exports are evaluated alike:

- a burst model is evaluated for ``--task``, or by default for every task of the model that the
  dataset labels (a ``score_<task>`` column); a dataset that labels none of them (an imported
  Photo Triage set) is evaluated against its ``score`` column with the model's first task;
- a photo model scores each frame alone (the ``photo`` baseline of ``edge_iqa.burst_eval``),
  for every task the dataset labels;
- a burst split across splits is refused by the manifest reader; a scene (``scene`` column)
  whose bursts lie in two splits is one warning line (the split should be by scene).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("evaluate a checkpoint or exported model on a dataset split (SRCC, PLCC, KRCC, MAE, RMSE; "
        "bursts: R0..R0.1, pairwise accuracy, top-M downstream gain)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import add_max_pixels_option, model_file, non_negative_int, positive_int
    from edge_iqa.commands.score import add_runtime_options

    parser.add_argument("model", type=model_file, help="checkpoint (.pt) or exported model (.onnx)")
    parser.add_argument("--data", required=True, help="dataset directory with manifest.csv")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    parser.add_argument("--task", help="burst datasets: the downstream task to evaluate (default: every task of the "
                        "model that the dataset labels)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, default=2)
    add_max_pixels_option(parser)
    add_runtime_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    import edge_iqa
    from edge_iqa.commands.common import check_dataset_folder, print_json, say
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.metrics import iqa_metrics

    check_dataset_folder(args.data)  # before the model loads (torch)
    if is_burst_dataset(args.data):
        return run_burst(args)
    scorer = edge_iqa.load(args.model, args.device, args.runtime, args.threads)
    scorer.max_pixels = args.max_pixels
    if scorer.config.burst is not None:
        raise EdgeIQAError(f"{args.model} is a burst model and {args.data} a photo dataset; evaluate it on a burst "
                           "dataset (manifest.csv with sequence,frame,path,score,split)")
    if args.task:
        raise EdgeIQAError(f"--task is for burst datasets; {args.data} is a photo dataset")
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


def is_burst_dataset(root) -> bool:
    from edge_iqa.commands.data import _is_burst
    from edge_iqa.data.manifest import BURST_COLUMNS

    return _is_burst(Path(root), BURST_COLUMNS)


def labelled_tasks(root) -> list[str]:
    """The tasks a burst dataset labels: its ``score_<task>`` columns, in column order."""
    import csv

    from edge_iqa.data.manifest import manifest_path

    with open(manifest_path(root), newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return [h.strip()[len("score_"):] for h in header if h.strip().startswith("score_")]


def warn_scene_leakage(root) -> str | None:
    """One line when a scene's bursts lie in more than one split (the split should be by scene)."""
    from edge_iqa.data.manifest import BURST_COLUMNS, csv_rows, manifest_path

    splits: dict[str, set[str]] = {}
    for _, row in csv_rows(manifest_path(root), BURST_COLUMNS):  # bad rows are reported by the reader, once
        scene, split = (row.get("scene") or "").strip(), (row.get("split") or "").strip().lower()
        if scene and split:
            splits.setdefault(scene, set()).add(split)
    leaking = sorted(s for s, found in splits.items() if len(found) > 1)
    if not leaking:
        return None
    return (f"{root}: scene {leaking[0]!r} has bursts in splits {', '.join(sorted(splits[leaking[0]]))}"
            + (f" (and {len(leaking) - 1} more scenes)" if len(leaking) > 1 else "")
            + "; test scores of a model trained on them are optimistic: split by scene")


def _tasks_to_evaluate(args, scorer, labelled: list[str]) -> list[str | None]:
    """Dataset tasks to evaluate (None: the ``score`` column)."""
    from edge_iqa.errors import EdgeIQAError

    model_tasks = scorer.config.burst.tasks if scorer.config.burst is not None else None
    if args.task:
        if model_tasks is not None:
            scorer.task_row(args.task)  # an unknown task: one line naming the model's
        if args.task not in labelled:
            raise EdgeIQAError(f"{args.data}/manifest.csv has no score_{args.task} column (tasks in the data: "
                               f"{', '.join(labelled) or 'none'}); pick one of them with --task")
        return [args.task]
    tasks = [t for t in labelled if model_tasks is None or t in model_tasks]
    return tasks or [None]


def run_burst(args) -> int:
    """The burst protocol (module docstring) on ``args.data``'s ``args.split``."""
    import math

    import numpy as np

    import edge_iqa
    from edge_iqa.burst_eval import BurstEvalSet, burst_evaluation, format_burst_table
    from edge_iqa.commands.common import print_json, say

    split = None if args.split == "all" else args.split
    leak = warn_scene_leakage(args.data)
    eval_set = BurstEvalSet(args.data, split)  # a burst split across splits: one line here
    scorer = edge_iqa.load(args.model, args.device, args.runtime, args.threads)
    scorer.max_pixels = args.max_pixels
    tasks = _tasks_to_evaluate(args, scorer, labelled_tasks(args.data))
    if leak:
        say(leak)
    burst_model = scorer.config.burst is not None
    if not burst_model:
        paths = [str(f.path) for b in eval_set.bursts for f in b.frames]
        results = scorer.score_paths(paths, args.batch_size, args.workers, progress=not args.json)
        flat = np.array([math.nan if r.score is None else r.score for r in results])
        ends = np.cumsum([len(b.frames) for b in eval_set.bursts])
        photo = dict(zip(eval_set.names, np.split(flat, ends[:-1])))
    out = {"model": args.model, "data": args.data, "split": args.split, "kind": "burst",
           "scorer": "burst model" if burst_model else "photo model, each frame alone",
           "leakage_warning": leak, "tasks": {}}
    for task in tasks:
        model_task = (task or scorer.config.burst.tasks[0]) if burst_model else None
        if burst_model:
            predictions = {b.name: _burst_scores(scorer, b, model_task) for b in eval_set.bursts}
        else:
            predictions = photo
        result = burst_evaluation(eval_set, split, task, predictions)
        result["model_task"] = model_task
        out["tasks"][task or "score"] = result
        if not args.json:
            say(f"{args.model} on {args.data}" + (f" (model task {model_task})" if burst_model and task is None else "")
                + ("" if burst_model else " (a photo model scoring each frame alone)"))
            say(format_burst_table(result))
            if result["n_unscored_frames"]:
                say(f"{result['n_unscored_frames']} frames could not be scored (left out, see the warnings above)")
    if args.json:
        print_json(_no_nan(out))
    return 0


def _no_nan(obj):
    """NaN (a metric with nothing to average, e.g. top-5 of 4-frame bursts) as JSON null: strict
    JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _burst_scores(scorer, burst, task: str):
    """One burst's scores (NaN for frames that cannot be used; a failed reference: all NaN)."""
    import numpy as np

    from edge_iqa.commands.common import say

    result = scorer.score_burst_frames([str(f.path) for f in burst.frames], task)
    if result.error:
        say(f"burst {burst.name}: {result.error}")
    for frame in result.frames:
        if frame.error and not result.error:
            say(f"burst {burst.name}: left out: {frame.error}")
    return result.scores if not result.error else np.full(len(burst.frames), np.nan)
