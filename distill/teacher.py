"""Teachers and their cached outputs: the teacher runs once per image, not once per epoch.

A teacher is either a trained checkpoint (any backbone, any views, over budget allowed) or a
CSV table of its scores (``path,score``; e.g. written by ``edge-iqa pseudo-label`` on a
machine where the teacher can run). :func:`teacher_outputs` runs a checkpoint teacher over a
list of images on its own deterministic evaluation views and keeps, per image, its score in
normalised units and the requested features compacted (``distill.features.compact``: maps
pooled to a small grid and mirror-averaged, stored as float16). The student trains on random
crops and mirrors of the same photos; a photo's quality, and the pooled, mirror-symmetric
teacher features, do not depend on the crop, so one evaluation-view pass per image serves
every epoch. Under ``torchrun`` each rank runs its share of the images and the shares are
gathered. The outputs are saved next to the run (``teacher_cache.pt``) with a fingerprint of
teacher, images and features, so ``--resume`` does not run the teacher again.

A burst teacher runs once per whole burst (``distill.burst_data.run_burst_teacher``): its rows
are still one per frame, its scores (frames, teacher tasks).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from distill.features import FeatureCapture, compact
from edge_iqa.checkpoint import load_checkpoint
from edge_iqa.config import ModelConfig
from edge_iqa.data.manifest import csv_rows, parse_score
from edge_iqa.errors import EdgeIQAError

CACHE_NAME = "teacher_cache.pt"
CACHE_FORMAT = "edge-iqa-teacher-cache/1"


def image_key(path: str | Path) -> str:
    """One spelling per file, so paths from a manifest, a folder and a CSV meet."""
    return os.path.normpath(os.path.abspath(str(path)))


@dataclass
class TeacherOutputs:
    """Teacher scores (normalised units) and compacted features, one row per image."""

    paths: list[str]
    scores: torch.Tensor  # (N,) float32, bursts (N, tasks); NaN where the teacher has no score for the image
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # "address@grid" -> (N, ...) float16

    def rows(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Row of each path (−1 where the teacher has none)."""
        where = {p: i for i, p in enumerate(self.paths)}
        return torch.tensor([where.get(image_key(p), -1) for p in paths], dtype=torch.long)

    def missing(self, paths: Sequence[str | Path]) -> list[str]:
        rows = self.rows(paths)
        return [str(p) for p, r in zip(paths, rows.tolist()) if r < 0 or bool(self.scores[r].isnan().any())]


@dataclass
class Teacher:
    """A checkpoint teacher (``model`` set) or a table of scores (``table`` set)."""

    source: str
    model: torch.nn.Module | None = None
    table: dict[str, float] | None = None  # normalised scores by image key
    fingerprint: str = ""

    @property
    def config(self) -> ModelConfig | None:
        return self.model.config if self.model is not None else None

    def describe(self) -> dict:
        if self.model is None:
            return {"source": self.source, "kind": "scores-csv", "images": len(self.table or {})}
        config = self.model.config
        return {"source": self.source, "kind": "checkpoint", "model": config.name, "backbone": config.backbone,
                "views": [v.spec() for v in config.views]}


def load_teacher(path: str | Path, score_range: tuple[float, float]) -> Teacher:
    """A teacher from a checkpoint (``.pt``) or a CSV of scores in the dataset's units."""
    path = Path(path)
    if not path.is_file():
        raise EdgeIQAError(f"{path}: teacher not found; give a checkpoint (.pt) or a CSV of teacher scores (path,score)")
    fingerprint = _file_fingerprint(path)
    if path.suffix.lower() == ".csv":
        return Teacher(str(path), table=read_score_table(path, score_range), fingerprint=fingerprint)
    model, _ = load_checkpoint(path)
    return Teacher(str(path), model=model, fingerprint=fingerprint)


def read_score_table(path: str | Path, score_range: tuple[float, float]) -> dict[str, float]:
    """``path,score`` rows (extra columns such as ``error`` allowed) → normalised score by image key.

    Relative paths are taken relative to the CSV's folder. Rows without a score (a file the
    teacher could not read) are left out.
    """
    path = Path(path)
    low, high = score_range
    table: dict[str, float] = {}
    for line, row in csv_rows(path, ("path", "score")):
        if not (row.get("score") or "").strip():
            continue
        try:
            score = parse_score(row["score"])
        except ValueError as err:
            raise EdgeIQAError(f"{path} line {line}: {err}; fix the row or delete it") from None
        image = Path((row["path"] or "").strip())
        table[image_key(image if image.is_absolute() else path.parent / image)] = (score - low) / (high - low)
    if not table:
        raise EdgeIQAError(f"{path} has no rows with a score")
    return table


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{image_key(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def teacher_outputs(teacher: Teacher, paths: Sequence[str | Path], feature_specs: Iterable[tuple[str, int]] = (), *,
                    device: torch.device | str = "cpu", batch_size: int = 8, num_workers: int = 0,
                    cache_dir: str | Path | None = None, progress: bool = False,
                    bursts: Sequence[Sequence[str | Path]] | None = None) -> TeacherOutputs:
    """The teacher's scores (and features ``(address, grid)``) for every image of ``paths``.

    Loads ``cache_dir/teacher_cache.pt`` when it was made by the same teacher for the same
    images and features; otherwise runs the teacher (sharded over ``torchrun`` ranks) and,
    on rank 0, writes that file. ``bursts`` (a burst teacher): the frames of each burst,
    reference first, run together; ``paths`` is then ignored.
    """
    if bursts is not None:
        paths = [p for burst in bursts for p in burst]
    keys = list(dict.fromkeys(image_key(p) for p in paths))
    specs = sorted(set(feature_specs))
    if teacher.model is None:
        if specs:
            raise EdgeIQAError(f"feature losses need a teacher checkpoint; {teacher.source} holds scores only")
        table = teacher.table or {}
        return TeacherOutputs(keys, torch.tensor([table.get(k, math.nan) for k in keys], dtype=torch.float32))
    grouping = [len(b) for b in bursts] if bursts is not None else None
    fingerprint = hashlib.sha256(json.dumps([teacher.fingerprint, keys, specs, grouping]).encode()).hexdigest()
    cache = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    if cache is not None and cache.is_file():
        cached = _read_cache(cache, fingerprint)
        if cached is not None:
            return cached
    rank, world = _rank_and_world()
    if bursts is not None:
        from distill.burst_data import run_burst_teacher

        share = run_burst_teacher(teacher.model, bursts[rank::world], specs, device, batch_size, num_workers,
                                  progress and rank == 0)
        outputs = _gather_by_key(share, keys, world)
    else:
        share = run_teacher(teacher.model, keys[rank::world], specs, device, batch_size, num_workers,
                            progress and rank == 0)
        outputs = _gather(share, keys, world)
    if cache is not None and rank == 0:
        cache.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "paths": json.dumps(outputs.paths),
                   "scores": outputs.scores, "features": outputs.features}
        torch.save(payload, cache.with_suffix(".tmp"))
        cache.with_suffix(".tmp").replace(cache)
    return outputs


@torch.no_grad()
def run_teacher(model: torch.nn.Module, paths: Sequence[str], specs: Sequence[tuple[str, int]],
                device: torch.device | str, batch_size: int, num_workers: int, progress: bool) -> TeacherOutputs:
    """Run a checkpoint teacher on its evaluation views; failed images get a NaN score."""
    from tqdm import tqdm

    from edge_iqa.scoring import iter_view_batches

    device = torch.device(device)
    model = model.to(device).eval()
    low, span = float(model.score_low), float(model.score_span)
    capture = FeatureCapture(model, (address for address, _ in specs))
    scores = torch.full((len(paths),), math.nan)
    features: dict[str, torch.Tensor] = {}
    bar = tqdm(total=len(paths), unit="img", desc="teacher", disable=not progress, leave=False)
    try:
        for views, done, failed in iter_view_batches(paths, model.config, batch_size, num_workers):
            bar.update(len(done) + len(failed))
            if not done:
                continue
            inputs = [torch.as_tensor(v, device=device) for v in views]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = model(*inputs).float()
            rows = torch.tensor(done)
            scores[rows] = ((out - low) / span).cpu()
            for address, grid in specs:
                value = compact(capture.features[address].float(), grid).cpu().half()
                key = f"{address}@{grid}"
                if key not in features:
                    features[key] = torch.zeros((len(paths), *value.shape[1:]), dtype=torch.float16)
                features[key][rows] = value
    finally:
        capture.remove()
        bar.close()
    return TeacherOutputs(list(paths), scores, features)


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(share: TeacherOutputs, keys: list[str], world: int) -> TeacherOutputs:
    """Every rank's share merged back into the order of ``keys``."""
    if world == 1:
        return share
    import torch.distributed as dist

    shares: list[TeacherOutputs | None] = [None] * world
    dist.all_gather_object(shares, share)
    scores = torch.full((len(keys),), math.nan)
    features: dict[str, torch.Tensor] = {}
    for rank, part in enumerate(shares):
        rows = torch.arange(rank, len(keys), world)
        scores[rows] = part.scores
        for key, value in part.features.items():
            if key not in features:
                features[key] = torch.zeros((len(keys), *value.shape[1:]), dtype=value.dtype)
            features[key][rows] = value
    return TeacherOutputs(keys, scores, features)


def _gather_by_key(share: TeacherOutputs, keys: list[str], world: int) -> TeacherOutputs:
    """Every rank's share (rows in any order, named by ``share.paths``) in the order of ``keys``."""
    if world == 1:
        return share
    import torch.distributed as dist

    shares: list[TeacherOutputs | None] = [None] * world
    dist.all_gather_object(shares, share)
    where = {key: (part, row) for part in shares for row, key in enumerate(part.paths)}
    order = [where[key] for key in keys]
    scores = torch.stack([part.scores[row] for part, row in order])
    features = {name: torch.stack([part.features[name][row] for part, row in order]) for name in share.features}
    return TeacherOutputs(keys, scores, features)


def _read_cache(path: Path, fingerprint: str) -> TeacherOutputs | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a cache from a killed run or an older format: recompute it
        return None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("fingerprint") != fingerprint:
        return None
    return TeacherOutputs(json.loads(payload["paths"]), payload["scores"], payload["features"])
