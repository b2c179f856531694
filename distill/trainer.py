"""The training loop shared by supervised training and distillation.

AdamW with linear warm-up and cosine decay (Loshchilov & Hutter, ICLR 2019 and 2017), a
weighted sum of registered losses, validation SRCC after every epoch, ``best.pt`` by that SRCC,
``last.pt`` with optimizer state for ``--resume``, ``metrics.json`` with the history.
Runs on one process or under ``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on GPU);
on a GPU it uses bfloat16 autocast and ``torch.compile``.

A ``StepHook`` lets distillation add teacher outputs and features to each step's
``LossInputs`` without a second loop; ``extra_train`` adds images with pseudo-labels to the
training set (labeled + pseudo-labeled training).

A burst model (``config.burst``) trains on whole bursts (``distill.burst_data``): a batch holds
``batch_size`` bursts, every task's head is trained at once, reference frames are left out of
losses and metrics, and ``best.pt`` is chosen by validation R0 (mean per-burst SRCC, averaged
over tasks) instead of SRCC.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from distill.burst_data import (VALIDATION_METRIC, BurstDataset, burst_loss_inputs, collate_bursts, evaluate_bursts,
                                load_burst_train_data)
from distill.losses import LossInputs, WeightedLoss
from edge_iqa.checkpoint import read_checkpoint, save_checkpoint
from edge_iqa.config import ModelConfig
from edge_iqa.data.loader import ViewDataset, collate_views
from edge_iqa.data.manifest import read_dataset_info, read_manifest
from edge_iqa.errors import EdgeIQAError
from edge_iqa.metrics import iqa_metrics
from edge_iqa.outputs import atomic_write_text
from edge_iqa.burst_model import AllTaskScores
from edge_iqa.model import IQAModel, build_model
from edge_iqa.runtimes.torch_eager import torch_batch_fn
from edge_iqa.scoring import Scorer

TRAIN_CONFIG_VERSION = 1
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    losses: tuple[tuple[str, float], ...] = (("mse", 1.0), ("plcc", 0.5))
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    amp: bool = True
    compile: bool = True
    version: int = TRAIN_CONFIG_VERSION
    optimizer: str = "adamw"  # or "adam" (the burst paper's, the default for burst models)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise EdgeIQAError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise EdgeIQAError(f"unknown optimizer {self.optimizer!r}; choose {' or '.join(OPTIMIZERS)}")
        object.__setattr__(self, "losses", tuple((str(n), float(w)) for n, w in self.losses))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return cls(**data)


class StepHook(Protocol):
    """Adds teacher information to a batch's LossInputs (distillation).

    The trainer calls ``bind(paths)`` with the training images in dataset-index order (the
    order of the ``indices`` that ``fill`` receives; for a burst model, one list of frame paths
    per burst, reference first), then ``prepare(student)``, which returns
    extra trainable modules (projections; optimised, saved for ``--resume``, gradients averaged
    over ranks). ``loss_modules`` gives ready-built loss terms by name for the weighted sum.
    """

    loss_modules: Mapping[str, nn.Module]

    def bind(self, paths: Sequence[str]) -> None: ...

    def prepare(self, student: IQAModel) -> list[nn.Module]: ...

    def fill(self, inputs: LossInputs, indices: torch.Tensor, views: tuple[torch.Tensor, ...]) -> None: ...


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the ``torchrun`` process group if launched by it (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EdgeIQAError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass
class SplitData:
    paths: list[str]
    targets: list[float]  # normalised to [0, 1] over the score range
    scores: list[float]  # in dataset units


@dataclass
class TrainData:
    train: SplitData
    val: SplitData
    test: SplitData | None
    score_range: tuple[float, float]
    name: str
    extra_train: list[SplitData] = field(default_factory=list)


def load_train_data(root: str | Path) -> TrainData:
    info = read_dataset_info(root)
    low, high = info.score_range
    records = read_manifest(root)
    splits = {}
    for split in ("train", "val", "test"):
        rows = [r for r in records if r.split == split]
        splits[split] = SplitData([str(r.path) for r in rows], [(r.score - low) / (high - low) for r in rows],
                                  [r.score for r in rows])
    for split in ("train", "val"):
        if len(splits[split].paths) < 2:
            raise EdgeIQAError(f"{root}: the {split} split has {len(splits[split].paths)} usable rows; need at least 2")
    test = splits["test"] if splits["test"].paths else None
    return TrainData(splits["train"], splits["val"], test, (low, high), info.name)


def evaluate_split(model: IQAModel, split: SplitData, device: torch.device, batch_size: int,
                   num_workers: int) -> dict[str, float]:
    scorer = Scorer(model.config, torch_batch_fn(model, device))
    results = scorer.score_paths(split.paths, batch_size=batch_size, num_workers=num_workers)
    pairs = [(r.score, s) for r, s in zip(results, split.scores) if r.score is not None]
    if len(pairs) < 2:
        raise EdgeIQAError("fewer than 2 images of the split could be scored")
    pred, target = zip(*pairs)
    return iqa_metrics(pred, target)


def average_gradients(modules: Sequence[nn.Module], world_size: int) -> None:
    """All-reduce the gradients of modules outside DDP (distillation projections), so every
    rank takes the same step."""
    import torch.distributed as dist

    for module in modules:
        for param in module.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= world_size


def weights_fingerprint(modules: Sequence[nn.Module]) -> str:
    """SHA-256 of every parameter, to check that ranks hold the same model.

    Buffers are left out: DDP broadcasts BatchNorm statistics from rank 0 at the start of each
    forward, so after the last step every rank holds its own (rank 0's are the ones saved).
    """
    import hashlib

    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.named_parameters():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_fingerprints(modules: Sequence[nn.Module], dist_info: Distributed) -> list[str]:
    """Every rank's :func:`weights_fingerprint` (one entry without ``torchrun``)."""
    own = weights_fingerprint(modules)
    if not dist_info.enabled:
        return [own]
    gathered: list[str | None] = [None] * dist_info.world_size
    torch.distributed.all_gather_object(gathered, own)
    return [str(g) for g in gathered]


def train(model_config: ModelConfig, data: str | Path, out: str | Path, cfg: TrainConfig, *,
          resume: bool = False, hook: StepHook | None = None, progress: bool = True,
          run_info: dict[str, Any] | None = None, init_weights: str | Path | None = None,
          extra_train: Sequence[SplitData] = ()) -> dict[str, Any]:
    """Train ``model_config`` on the dataset at ``data``; write checkpoints and metrics to ``out``.

    ``extra_train``: more training images with their (pseudo-)labels in normalised units,
    appended to the dataset's train split.
    """
    from tqdm import tqdm

    out = Path(out)
    dist_info = init_distributed(resolve_device(cfg.device))
    device = resolve_device(cfg.device, dist_info.local_rank)
    seed_everything(cfg.seed + dist_info.rank)
    burst = model_config.burst is not None
    data_split = load_burst_train_data(data, model_config.burst.tasks) if burst else load_train_data(data)
    if burst and extra_train:
        raise EdgeIQAError("unlabeled images cannot join burst training; drop --unlabeled")
    model_config = model_config.replace(score_range=data_split.score_range)
    metric = VALIDATION_METRIC if burst else "srcc"  # picks best.pt

    last_path, best_path = out / "last.pt", out / "best.pt"
    resume_state = read_checkpoint(last_path) if resume and last_path.is_file() else None
    if resume and resume_state is None and dist_info.is_main:
        print(f"edge-iqa: no {last_path} to resume from; starting fresh", flush=True)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(resume_state["config"] if resume_state else model_config,
                        None if resume_state else init_weights).to(device)
    model_config = model.config
    train_paths = data_split.train.paths + [p for split in extra_train for p in split.paths]
    train_targets = data_split.train.targets + [t for split in extra_train for t in split.targets]
    if hook:
        hook.bind(train_paths)
    extra_params = hook.prepare(model) if hook else []
    params = list(model.parameters()) + [p for module in extra_params for p in module.parameters()]
    for module in extra_params:
        module.to(device)

    if burst:
        dataset = BurstDataset(data_split.train, model_config.views, train=True, seed=cfg.seed)
    else:
        dataset = ViewDataset(train_paths, model_config.views, train_targets, train=True, seed=cfg.seed)
    if dist_info.enabled:
        sampler = DistributedSampler(dataset, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, collate_fn=collate_bursts if burst else collate_views,
                        persistent_workers=False, pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise EdgeIQAError(f"{data}: {len(dataset)} training {'bursts' if burst else 'images'} is fewer than one "
                           f"batch of {cfg.batch_size}; "
                           "lower --batch-size")

    optimizer = OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, cfg.warmup_epochs * len(loader)))
    criterion = WeightedLoss(cfg.losses, getattr(hook, "loss_modules", None), teacher=hook is not None).to(device)

    history: list[dict[str, Any]] = []
    start_epoch, best_val, best_epoch = 0, -math.inf, -1
    last_val = math.nan
    if resume_state:
        model.load_state_dict(resume_state["state_dict"])
        optimizer.load_state_dict(resume_state["state"]["optimizer"])
        scheduler.load_state_dict(resume_state["state"]["scheduler"])
        for module, state in zip(extra_params, resume_state["state"].get("extra", [])):
            module.load_state_dict(state)
        info = resume_state["info"]
        start_epoch, history = info["epoch"] + 1, info["history"]
        best_val, best_epoch = info[f"best_val_{metric}"], info["best_epoch"]
        last_val = history[-1]["val"][metric] if history else math.nan

    train_model: nn.Module = AllTaskScores(model) if burst else model  # bursts: (B, tasks, T) scores
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda" and cfg.compile:
        train_model = torch.compile(train_model)
    use_amp = device.type == "cuda" and cfg.amp
    low, span = model.score_low, model.score_span
    run_info = dict(run_info or {}, train_config=asdict(cfg), data=str(data), world_size=dist_info.world_size)

    for epoch in range(start_epoch, cfg.epochs):
        started = time.time()
        dataset.set_epoch(epoch)
        if dist_info.enabled:
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(cfg.seed * 1000 + epoch)
        train_model.train()
        running, count, term_sums = 0.0, 0, {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (progress and dist_info.is_main),
                   unit="batch", leave=False)
        for batch in bar:
            if batch is None:
                continue
            views, targets, indices = batch
            views = tuple(v.to(device, non_blocking=True) for v in views)
            targets = targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                scores = train_model(*views)
            pred = (scores.float() - low) / span
            inputs = burst_loss_inputs(pred, targets) if burst else LossInputs(pred=pred, target=targets)
            if hook:
                hook.fill(inputs, indices, views)
            loss, parts = criterion(inputs)
            if not torch.isfinite(loss):
                raise EdgeIQAError(f"loss became {float(loss)} at epoch {epoch + 1}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if dist_info.enabled:
                average_gradients(extra_params, dist_info.world_size)
            optimizer.step()
            scheduler.step()
            running, count = running + float(loss.detach()), count + 1
            term_sums = {name: term_sums.get(name, 0.0) + value for name, value in parts.items()}
            bar.set_postfix({"loss": f"{running / count:.4f}", f"val_{metric}": f"{last_val:.3f}", "best": f"{best_val:.3f}"})
        bar.close()

        if dist_info.is_main:
            evaluate = evaluate_bursts if burst else evaluate_split
            val = evaluate(model, data_split.val, device, cfg.batch_size, cfg.num_workers)
            record = {"epoch": epoch + 1, "train_loss": running / max(count, 1),
                      "train_terms": {name: value / max(count, 1) for name, value in term_sums.items()}, "val": val,
                      "seconds": round(time.time() - started, 2), "lr": scheduler.get_last_lr()[0]}
            history.append(record)
            last_val = val[metric]
            if val[metric] > best_val:
                best_val, best_epoch = val[metric], epoch + 1
            info = dict(run_info, epoch=epoch, history=history, best_epoch=best_epoch, **{f"best_val_{metric}": best_val})
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "extra": [m.state_dict() for m in extra_params]}
            if best_epoch == epoch + 1:
                save_checkpoint(best_path, model, info=info)
            save_checkpoint(last_path, model, info=info, state=state)
            if progress:
                shown = f"val R0 {val[metric]:.4f}" if burst else f"val SRCC {val['srcc']:.4f}  PLCC {val['plcc']:.4f}"
                tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['train_loss']:.4f}  "
                           f"{shown}  ({record['seconds']:.0f} s)")
        if dist_info.enabled:
            torch.distributed.barrier()

    summary: dict[str, Any] = {}
    fingerprints = rank_fingerprints([model, *extra_params], dist_info)
    if dist_info.is_main:
        best_model = build_model(model_config)
        best_model.load_state_dict(read_checkpoint(best_path)["state_dict"])
        summary = dict(run_info, model=model_config.name, best_epoch=best_epoch, **{f"best_val_{metric}": best_val},
                       history=history, train_seconds=round(sum(h["seconds"] for h in history), 1))
        if dist_info.enabled:
            summary["rank_weights_sha256"] = fingerprints
        if data_split.test:
            evaluate = evaluate_bursts if burst else evaluate_split
            summary["test"] = evaluate(best_model, data_split.test, device, cfg.batch_size, cfg.num_workers)
        atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    if dist_info.enabled:
        torch.distributed.barrier()
    return summary
