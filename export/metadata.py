"""What every exported artifact says about itself: model config, preprocessing, export settings.

ONNX files carry these as ``metadata_props``, CoreML packages as user-defined metadata, TensorRT
engines in a JSON sidecar. The keys are the same everywhere, so ``edge_iqa.load`` and the
parity checks read any artifact the same way. Values are JSON strings; readers go through
``ModelConfig.from_json`` / ``ExportConfig.from_json`` (allow-listed fields, no code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_iqa.config import ModelConfig
from edge_iqa.runtimes import CONFIG_KEY
from edge_iqa.runtimes.base import EXPORT_KEY

PREPROCESSING_KEY = "edge_iqa.preprocessing"
PRODUCER = "edge-iqa"


def input_names(config: ModelConfig) -> list[str]:
    """``view0``, ``view1``, …: one network input per view, in the config's order."""
    return [f"view{i}" for i in range(len(config.views))]


def output_name(config: ModelConfig) -> str:
    """``score`` (B,) for a photo model; ``scores`` (B, n_tasks, T) for a burst model (every task's row)."""
    return "score" if config.burst is None else "scores"


def output_contract(config: ModelConfig) -> dict[str, Any]:
    """The graph output of an export: its name, shape and units (the burst graph contract of
    :mod:`edge_iqa.burst_model` for a burst model)."""
    out: dict[str, Any] = {"name": output_name(config), "score_range": list(config.score_range),
                           "higher_is_better": True}
    if config.burst is None:
        return out | {"shape": ["batch"]}
    return out | {"shape": ["batch", "tasks", "frames"], "tasks": list(config.burst.tasks),
                  "frames": "dynamic, >= 2 (the same T as the inputs)", "counted_frames": config.burst.frames,
                  "reference_frame": 0,
                  "reference_score": "defined but meaningless: the reference is never removed from a burst"}


def preprocessing(config: ModelConfig) -> dict[str, Any]:
    """How an app turns a photo (or every frame of a burst) into the inputs: the views, then RGB
    float [0, 1] NCHW (NTCHW for a burst: T frames, the reference first)."""
    burst = config.burst is not None
    return {
        "inputs": [
            {"name": name, "view": view.spec(), "size": list(view.size) if view.size else None,
             "grid": view.grid, "patch": view.patch}
            for name, view in zip(input_names(config), config.views)
        ],
        "color": "RGB",
        "range": [0.0, 1.0],
        "layout": "NTCHW (batch, frames, channels, height, width); frame 0 is the reference" if burst else "NCHW",
        "dtype": "float32",
        "normalization": "inside the model (mean/std of the config); feed plain pixels / 255",
        "views_doc": "edge_iqa.views: resize = center-crop to aspect then bilinear resize; "
                     "center_crop = native pixels; fragments = GxG grid, one PxP native patch per cell; "
                     "full = native resolution",
        "output": output_contract(config),
    }


def artifact_metadata(config: ModelConfig, export: dict[str, Any]) -> dict[str, str]:
    """The string key/value pairs every artifact stores."""
    return {
        CONFIG_KEY: config.to_json(),
        PREPROCESSING_KEY: json.dumps(preprocessing(config), sort_keys=True),
        EXPORT_KEY: json.dumps(export, sort_keys=True),
    }


def file_size(path: str | Path) -> int:
    """Bytes of a file, or of every file in a directory (CoreML packages are directories)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
