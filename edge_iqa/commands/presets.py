"""``edge-iqa presets``: list the registered model presets."""

from __future__ import annotations

import argparse

HELP = "list the registered model presets (backbone, views, role)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from edge_iqa.commands.common import print_json, say
    from edge_iqa.presets import PRESETS
    from edge_iqa.tables import format_table

    if args.json:
        print_json({name: cfg.to_dict() for name, cfg in sorted(PRESETS.items())})
        return 0
    rows = [(name, cfg.backbone, " + ".join(v.spec() for v in cfg.views),
             f"{cfg.source_size[1]}x{cfg.source_size[0]}", cfg.role) for name, cfg in sorted(PRESETS.items())]
    say(format_table(("preset", "backbone", "views", "source", "role"), rows))
    return 0
