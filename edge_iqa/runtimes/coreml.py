"""CoreML backend: ``.mlpackage`` exports, predicted where CoreML runs (macOS with
coremltools' native library). Elsewhere the package's metadata still reads, so a package
without edge-iqa's config is named as such, and ``unavailable()`` says that prediction needs
macOS; ``edge-iqa export --check`` then reads the weights back instead (:mod:`export.coreml`).

Note: coremltools itself imports torch when torch is installed; a macOS runtime-only install
without torch scores packages without it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import CONFIG_KEY, BatchFn, Loaded, importable, package_version

NAME = "coreml"
SUFFIXES = (".mlpackage",)


class ImportChatter(logging.Filter):
    """Drops what coremltools logs when it is imported off macOS or next to newer libraries: eight
    "Failed to load _MLModelProxy ..." lines (no CoreML runtime here; ``unavailable()`` and the
    parity check say so once) and "torch/scikit-learn version ... not tested/supported".
    Any other message of coremltools, and every error it raises, still reaches the user."""

    NOISE = ("Failed to load _ML", "Failed to load '_ML", "has not been tested with coremltools",
             "is not supported. Minimum required version")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(noise in record.getMessage() for noise in self.NOISE)


# coremltools logs through its one "coremltools" logger, on the first import (inside the functions below)
logging.getLogger("coremltools").addFilter(ImportChatter())


def unavailable() -> str | None:
    import platform

    if platform.system() != "Darwin":
        return "CoreML packages predict only on macOS; score the ONNX export here"
    if not importable("coremltools"):
        return "coremltools is not installed (pip install coremltools)"
    try:
        from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401
    except ImportError:
        return "coremltools' native CoreML library does not load here; CoreML packages predict only on macOS"
    return None


def coreml_runtime_available() -> bool:
    """True where CoreML can predict (macOS with the coremltools native library)."""
    return unavailable() is None


def version() -> str:
    return package_version("coremltools")


QUIET_LOGGERS = ("coremltools", "torch.utils._pytree")


@contextlib.contextmanager
def quiet_coremltools():
    """coremltools prints progress bars and version warnings; the CLI stays readable.

    Importing it also imports torchao where installed (executorch brings it), whose pytree
    registration makes torch log a deprecation warning through a handler that holds the real
    stderr: that logger is quietened too.
    """
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def read_coreml_metadata(path: str | Path) -> dict[str, str]:
    """The user-defined metadata of a saved package (works on Linux)."""
    if not importable("coremltools"):
        raise EdgeIQAError(f"{path}: reading a CoreML package needs coremltools (pip install coremltools)")
    with quiet_coremltools():
        import coremltools as ct

        try:
            spec = ct.utils.load_spec(str(path))
        except Exception as err:  # coremltools raises RuntimeError, ValueError or protobuf's errors
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise EdgeIQAError(f"{path}: not a readable CoreML package ({first}); re-export it") from None
    return dict(spec.description.metadata.userDefined)


def coreml_batch_fn(path: str | Path) -> BatchFn:
    """A Scorer batch function predicting with CoreML (macOS only), one image at a time; a
    burst package predicts a whole (B, T, 3, H, W) batch at once and gives (B, n_tasks, T)."""
    import coremltools as ct
    from PIL import Image

    mlmodel = ct.models.MLModel(str(path))
    names = [i.name for i in mlmodel.get_spec().description.input]
    if CONFIG_KEY in mlmodel.user_defined_metadata and \
            ModelConfig.stored_in(path, mlmodel.user_defined_metadata[CONFIG_KEY]).burst is not None:
        def run_bursts(views: Sequence[np.ndarray]) -> np.ndarray:
            feeds = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in zip(names, views)}
            return np.asarray(mlmodel.predict(feeds)["scores"], dtype=np.float32)

        return run_bursts

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        scores = []
        for i in range(len(views[0])):
            feeds = {name: Image.fromarray(np.round(np.clip(v[i], 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0))
                     for name, v in zip(names, views)}
            scores.append(float(np.asarray(mlmodel.predict(feeds)["score"]).reshape(-1)[0]))
        return np.asarray(scores, dtype=np.float32)

    return run


def load(path: str | Path, *, threads: int = 0, device: str = "cpu") -> Loaded:
    """``threads`` does not apply (CoreML schedules its compute units itself)."""
    metadata = read_coreml_metadata(path)
    if CONFIG_KEY not in metadata:
        raise EdgeIQAError(f"{path}: a CoreML package without edge-iqa's model config; score the packages "
                           "`edge-iqa export` writes")
    config = ModelConfig.stored_in(path, metadata[CONFIG_KEY])
    reason = unavailable()
    if reason:
        raise EdgeIQAError(f"{path}: {reason}")
    return Loaded(config, coreml_batch_fn(path), NAME, version(), "coreml (all compute units)", Path(path), threads)
