"""Checkpoints: weights plus the model config, loadable with ``torch.load(weights_only=True)``.

Everything but tensors is stored as JSON strings (config, training config, metrics), so a
checkpoint never needs pickle to load and carries what is needed to rebuild its model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import IQAModel, build_model

CHECKPOINT_FORMAT = "edge-iqa-checkpoint/1"


def save_checkpoint(path: str | Path, model: IQAModel, *, info: dict[str, Any] | None = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (unwrapped from DDP/compile by the caller) with its config.

    ``info`` is JSON metadata (training config, metrics, epoch); ``state`` holds extra tensors
    or dicts of tensors for resuming (optimizer, scheduler, RNG states).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": json.dumps(info or {}, sort_keys=True),
        "state": state or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves half a checkpoint
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EdgeIQAError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise EdgeIQAError(f"{path}: not a readable edge-iqa checkpoint ({type(err).__name__}: {err})".splitlines()[0]) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise EdgeIQAError(f"{path}: not an edge-iqa checkpoint (no {CHECKPOINT_FORMAT!r} format tag)")
    payload["config"] = ModelConfig.from_json(payload["config"])
    payload["info"] = json.loads(payload["info"])
    return payload


def load_checkpoint(path: str | Path) -> tuple[IQAModel, dict[str, Any]]:
    """The model in eval mode, and the checkpoint's JSON info."""
    payload = read_checkpoint(path)
    model = build_model(payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload["info"]
