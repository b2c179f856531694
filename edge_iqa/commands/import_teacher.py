"""``edge-iqa import-teacher``: a published IQA model's weights as an edge-iqa teacher checkpoint.

The checkpoint is an ordinary one (config + weights, ``torch.load(weights_only=True)``), so
``distill --teacher``, ``pseudo-label``, ``score``, ``evaluate``, ``profile`` and ``export``
take it as they take a trained model. Importers: ``nima`` (``edge_iqa.nima``: NIMA's MobileNet
trained on AVA, a state dict with timm ``mobilenetv1_100`` key names).
"""

from __future__ import annotations

import argparse

HELP = "turn a published IQA model's weights into a teacher checkpoint (nima: NIMA MobileNet trained on AVA)"
IMPORTERS = ("nima",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import existing_file

    parser.add_argument("kind", choices=IMPORTERS, help="which model the weights are of")
    parser.add_argument("weights", type=existing_file("weights", "give the .pth/.safetensors state dict"),
                        help="the state dict (.pth/.safetensors), e.g. nima_aesthetic_ava_mobilenetv1_100.pth")
    parser.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--json", action="store_true", help="print a summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge_iqa.commands.common import print_json, say
    from edge_iqa.outputs import ensure_writable_dir

    ensure_writable_dir(Path(args.out).resolve().parent)
    summary = import_teacher(args.kind, args.weights, args.out)
    if args.json:
        print_json(summary)
    else:
        say(f"{args.kind} teacher written to {args.out} ({summary['backbone']}, scores "
            f"{summary['score_range'][0]:g}-{summary['score_range'][1]:g}; weights {summary['init_weights']['path']})")
    return 0


def import_teacher(kind: str, weights, out) -> dict:
    """Write the teacher checkpoint ``out`` from ``weights``; its summary."""
    from edge_iqa.checkpoint import save_checkpoint
    from edge_iqa.nima import import_nima
    from edge_iqa.pretrained import weight_source_of

    model = import_nima(weights)
    source = weight_source_of(model.config)
    info = {"imported": kind, "weights": source.path, "sha256": source.sha256}
    save_checkpoint(out, model, info=info)
    config = model.config
    return {"kind": kind, "out": str(out), "model": config.name, "backbone": config.backbone,
            "score_range": list(config.score_range), "init_weights": source.to_dict()}
