"""edge-iqa: image-quality models from research to phones and Jetsons.

``edge_iqa.load(path).score(image)`` scores a photo with a checkpoint or an exported model.
"""

__version__ = "0.1.0"


def load(path, device: str = "cpu", runtime: str | None = None, threads: int = 0):
    """A :class:`edge_iqa.scoring.Scorer` for a ``.pt`` checkpoint or an export (``.onnx``,
    ``.plan``/``.engine``, ``.mlpackage``, ...), in ``runtime`` (None: the file's own; see
    :mod:`edge_iqa.runtimes`) with ``threads`` intra-op threads (0: the runtime's default)."""
    from edge_iqa.scoring import load as _load

    return _load(path, device, runtime, threads)


__all__ = ["load", "__version__"]
