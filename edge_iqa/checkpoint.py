"""Checkpoints: weights plus the model config, loadable with ``torch.load(weights_only=True)``.

Everything but tensors is stored as JSON strings (config, training config, metrics), so a
checkpoint never needs pickle to load and carries what is needed to rebuild its model. A file
that is not such a checkpoint (empty, truncated, a pickle with Python objects) is refused with
one line; it is never unpickled, since unpickling an untrusted file can run any code.

Where the model's initial weights came from (timm hub, a file and its sha256, or random init:
an :class:`edge_iqa.pretrained.WeightSource`) travels in the config (``extra["init_weights"]``);
:func:`read_checkpoint` gives it as ``payload["init_weights"]`` (None: not recorded).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import IQAModel, build_model
from edge_iqa.outputs import atomic_write
from edge_iqa.pretrained import weight_source_of

CHECKPOINT_FORMAT = "edge-iqa-checkpoint/1"


def save_checkpoint(path: str | Path, model: IQAModel, *, info: dict[str, Any] | None = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (unwrapped from DDP/compile by the caller) with its config.

    ``info`` is JSON metadata (training config, metrics, epoch); ``state`` holds extra tensors
    or dicts of tensors for resuming (optimizer, scheduler, RNG states).
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": json.dumps(info or {}, sort_keys=True),
        "state": state or {},
    }
    # a killed run leaves the old checkpoint or the new one, never half of one
    return atomic_write(path, lambda handle: torch.save(payload, handle), binary=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EdgeIQAError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of foreign files
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise _not_a_checkpoint(path, _why_unreadable(path, err)) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise _not_a_checkpoint(path, f"no {CHECKPOINT_FORMAT!r} format tag")
    payload["config"] = ModelConfig.stored_in(path, payload["config"])
    payload["init_weights"] = weight_source_of(payload["config"])
    payload["info"] = json.loads(payload["info"])
    return payload


def _not_a_checkpoint(path: Path, reason: str) -> EdgeIQAError:
    return EdgeIQAError(f"{path}: not an edge-iqa checkpoint ({reason}); re-run train/distill or pass the right file")


def _why_unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in our words: torch's own message advises
    ``weights_only=False``, the one thing not to do with a file of unknown origin."""
    import pickle

    if path.stat().st_size == 0 or isinstance(err, EOFError):
        return "empty or truncated file"
    if not zipfile.is_zipfile(path):
        if isinstance(err, pickle.UnpicklingError):
            return "a pickle that a weights-only load refuses; edge-iqa never unpickles Python objects, that can run code"
        if "zip archive" in str(err) or "central directory" in str(err):
            return "empty or truncated file"
        return "not a torch file"
    if isinstance(err, pickle.UnpicklingError):
        return "it holds Python objects besides tensors; edge-iqa loads weights only and never runs code from a file"
    return f"a damaged torch file ({type(err).__name__})"


def load_checkpoint(path: str | Path) -> tuple[IQAModel, dict[str, Any]]:
    """The model in eval mode, and the checkpoint's JSON info."""
    payload = read_checkpoint(path)
    model = build_model(payload["config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:  # weights of another architecture under a copied config
        first = str(err).strip().splitlines()[0]
        raise EdgeIQAError(f"{path}: its weights do not fit its model config ({first}); "
                           "re-run train/distill or pass the right file") from None
    return model.eval(), payload["info"]
