"""Shared fixtures: a tiny embedded dataset built once per test session.

The suite runs in two pytest-xdist workers (``addopts`` in ``pyproject.toml``: ``-n 2 --dist
loadfile``, so a module's fixtures, such as its exports, are built once, in one worker). Two
workers on a 2-core box each get one intra-op thread, here and in the processes they start;
``-n 0`` runs everything in one process.
"""

from __future__ import annotations

import logging
import os

import pytest

from edge_iqa.config import ModelConfig, ViewConfig


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # before any test module imports torch
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """The embedded synthetic dataset from the package photos at 64 px (all 18 references)."""
    from edge_iqa.data.synth import build_synth_dataset

    return build_synth_dataset(tmp_path_factory.mktemp("synth") / "data", seed=0, max_side=64)


@pytest.fixture(scope="session")
def tiny_student() -> ModelConfig:
    """demo-student's architecture at inputs small enough for a fast CPU test."""
    from edge_iqa.presets import get_preset

    return get_preset("demo-student").replace(
        name="tiny-student",
        views=(ViewConfig("resize", size=(32, 48)), ViewConfig("fragments", grid=2, patch=16)),
        source_size=(48, 64),
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: OpenMP threads spin, and on a shared 2-core CI box one
    thread is several times faster. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_edge_iqa_logs(caplog):
    caplog.set_level(logging.WARNING, logger="edge_iqa")
