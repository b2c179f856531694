"""Datasets: the canonical on-disk format, adapters for public IQA datasets, and the
embedded synthetic default.

- :mod:`edge_iqa.data.manifest` — ``manifest.csv`` + ``dataset.json`` readers and writers.
- :mod:`edge_iqa.data.adapters` — KonIQ-10k, SPAQ, LIVE Challenge, UHD-IQA and generic CSV
  layouts converted to the canonical format (``import_dataset``).
- :mod:`edge_iqa.data.synth` — ``build_synth_dataset``: distorted package photos labelled by SSIM.

The adapters and the synthetic builder import scipy / scikit-image, so they load lazily.
"""

from __future__ import annotations

from typing import Any

from edge_iqa.data.manifest import (
    SPLITS,
    BurstFrame,
    DatasetInfo,
    Record,
    read_burst_manifest,
    read_dataset_info,
    read_manifest,
    write_burst_dataset,
    write_dataset,
)

_LAZY = {
    "import_dataset": "edge_iqa.data.adapters",
    "ADAPTERS": "edge_iqa.data.adapters",
    "build_synth_dataset": "edge_iqa.data.synth",
    "DISTORTIONS": "edge_iqa.data.synth",
}

__all__ = [
    "SPLITS",
    "BurstFrame",
    "DatasetInfo",
    "Record",
    "read_burst_manifest",
    "read_dataset_info",
    "read_manifest",
    "write_burst_dataset",
    "write_dataset",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
