"""Which presets a per-preset test runs: one per architecture, so a new size of a known network costs nothing.

Presets that share backbone, head and kind (photo or burst) differ only in their views, sizes
and widths, which change no operator of the exported graph; one of them stands for all, and
the chosen ones still cover every view kind (checked in ``test_export_presets``).
"""

from __future__ import annotations

from edge_iqa.config import ModelConfig
from edge_iqa.presets import PRESETS


def architecture(config: ModelConfig) -> tuple:
    return config.backbone, config.to_dict().get("head", "mlp"), config.burst is not None


def one_preset_per_architecture(*, burst: bool | None = None, role: str | None = None) -> list[str]:
    """The first preset (by name) of each architecture, optionally only photo/burst ones or one role."""
    first: dict[tuple, str] = {}
    for name in sorted(PRESETS):
        config = PRESETS[name]
        if (burst is None or (config.burst is not None) == burst) and (role is None or config.role == role):
            first.setdefault(architecture(config), name)
    return sorted(first.values())
