"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from edge_iqa.config import ModelConfig, ViewConfig


def add_view_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--view", action="append", metavar="SPEC", default=None,
                        help="replace the preset's views (repeat for several branches): resize:HxW, "
                             "center_crop:HxW, fragments:GRIDxPATCH or full")


def resolve_model(name: str, views: Sequence[str] | None = None) -> ModelConfig:
    """A preset or timm backbone by name, with the views replaced when ``--view`` was given."""
    from edge_iqa.presets import get_preset

    config = get_preset(name)
    if views:
        config = config.replace(views=tuple(ViewConfig.parse(v) for v in views))
    return config


def print_json(obj: Any) -> None:
    """The one JSON object a ``--json`` command prints on stdout."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def say(text: str) -> None:
    """Human output goes to stderr so stdout stays clean for --json and pipes."""
    print(text, file=sys.stderr, flush=True)
