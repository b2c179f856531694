"""The ``edge-iqa`` command line.

One console script with subcommands. Each subcommand lives in its own module of
:mod:`edge_iqa.commands` that defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports stay inside ``run`` so ``edge-iqa --help`` is fast. The CLI is
the top layer: it is the one place that imports ``distill``, ``export`` and ``profiling``, and no
package imports it back (``tests/test_layering.py`` checks both).

Humans get tables and progress bars on stderr; ``--json`` prints one JSON object on stdout.
User errors (:class:`edge_iqa.errors.EdgeIQAError`) print one line and exit 2, and so does a
bad option: the cheap checks (numbers in range, preset and view names, files and folders that
must exist) run while the arguments are parsed, before any command imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edge_iqa.errors import EdgeIQAError

COMMANDS: tuple[tuple[str, str], ...] = (
    ("data", "edge_iqa.commands.data"),
    ("train", "edge_iqa.commands.train"),
    ("distill", "edge_iqa.commands.distill"),
    ("pseudo-label", "edge_iqa.commands.pseudo_label"),
    ("evaluate", "edge_iqa.commands.evaluate"),
    ("score", "edge_iqa.commands.score"),
    ("burst", "edge_iqa.commands.burst"),
    ("import-teacher", "edge_iqa.commands.import_teacher"),
    ("presets", "edge_iqa.commands.presets"),
    ("profile", "edge_iqa.commands.profile"),
    ("export", "edge_iqa.commands.export"),
    ("qat", "edge_iqa.commands.qat"),
    ("bench", "edge_iqa.commands.bench"),
    ("demo", "edge_iqa.commands.demo"),
)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, reporting a bad option in one line (the usage block is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="edge-iqa",
        description="Distill, profile, quantize and export image-quality models for phones and Jetsons.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS:
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # a usage error (2) or --help (0): the exit status, for callers of main too
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return int(args._run(args) or 0)
    except EdgeIQAError as err:
        print(f"edge-iqa {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-iqa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
