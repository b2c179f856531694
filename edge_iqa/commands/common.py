"""Options and output helpers shared by the subcommands.

The argument types here (``positive_int``, ``dataset_folder``, ``model_name``, ...) check an
option while argparse parses it, so a wrong value costs one line and no torch import. They
import nothing heavy: presets, views and manifests are plain Python.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.errors import EdgeIQAError


# ---------------------------------------------------------------------------------------------
# Argument types: each returns the parsed value or raises ArgumentTypeError with one line.


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        return value

    parse.__name__ = f"int >= {low}"  # argparse names the type in some messages
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _user_error(check: Callable[[str], Any], text: str) -> None:
    """Run ``check``; its EdgeIQAError becomes argparse's error for the option."""
    try:
        check(text)
    except EdgeIQAError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def model_name(text: str) -> str:
    """A preset or timm backbone name (checked without importing timm or torch)."""
    from edge_iqa.presets import get_preset

    _user_error(get_preset, text)
    return text


def view_spec(text: str) -> str:
    _user_error(ViewConfig.parse, text)
    return text


def check_dataset_folder(path: str | Path) -> None:
    """EdgeIQAError unless ``path`` is a folder with ``manifest.csv``: for a command to call
    before it imports torch (the rows are read, and reported, by the command itself)."""
    from edge_iqa.data.manifest import manifest_path

    manifest_path(path)


def check_file(path: str | Path, what: str, hint: str) -> None:
    """EdgeIQAError unless ``path`` exists as a file (or a package folder such as ``.mlpackage``)."""
    path = Path(path)
    if not path.exists():
        raise EdgeIQAError(f"{path}: {what} not found; {hint}")
    if path.is_dir() and path.suffix != ".mlpackage":
        raise EdgeIQAError(f"{path} is a folder, expected the {what} file; {hint}")


MODEL_HINT = "give a checkpoint (.pt) or an exported model (.onnx, .plan/.engine, .mlpackage)"


def check_model_file(path: str | Path) -> None:
    check_file(path, "model", MODEL_HINT)


def existing_file(what: str, hint: str) -> Callable[[str], str]:
    """An argparse type: a path that exists, by ``check_file``."""

    def parse(text: str) -> str:
        _user_error(lambda t: check_file(t, what, hint), text)
        return text

    parse.__name__ = what
    return parse


model_file = existing_file("model", MODEL_HINT)


def max_pixels(text: str) -> int | None:
    """``--max-pixels``: a pixel count; 0 or ``none`` switch the decompression-bomb guard off,
    ``default`` is ``edge_iqa.io.MAX_PIXELS`` (imported only when a command parses it)."""
    word = text.strip().lower()
    if word in ("0", "none"):
        return None
    if word == "default":
        from edge_iqa.io import MAX_PIXELS

        return MAX_PIXELS
    return positive_int(text)


def add_max_pixels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=max_pixels, default="default", metavar="N",
                        help="refuse images of more pixels than N, read from the header before decoding (a "
                             "decompression-bomb guard; default 200 million, 0 or none: no limit)")


def add_view_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--view", action="append", metavar="SPEC", default=None, type=view_spec,
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


def say(text: str) -> None:
    """Human output goes to stderr so stdout stays clean for --json and pipes."""
    print(text, file=sys.stderr, flush=True)
