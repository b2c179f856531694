"""edge-iqa: image-quality models from research to phones and Jetsons.

``edge_iqa.load(path).score(image)`` scores a photo with a checkpoint or an exported model.
"""

__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """A :class:`edge_iqa.scoring.Scorer` for a ``.pt`` checkpoint or an ``.onnx`` export."""
    from edge_iqa.scoring import load as _load

    return _load(path, device)


__all__ = ["load", "__version__"]
