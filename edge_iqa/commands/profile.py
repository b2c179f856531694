"""``edge-iqa profile``: MACs through the views, the 50 GMAC budget gate, fitting to budget.

MODEL is a preset name, ``timm:NAME`` (the plain timm classifier on one input of the source
size, to check against papers), a bare timm name (a student on the default views), an
edge-iqa checkpoint, or an ``.onnx`` file (counted from the graph). A burst model is counted
per burst of ``--frames`` T frames (default: its config's T). Over budget → exit
status 1 with a one-line verdict on stderr. Tables go to stderr; ``--json`` prints one JSON
object on stdout; ``--fit`` prints the fitted config as JSON on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from edge_iqa.config import UHD_SOURCE
from edge_iqa.errors import EdgeIQAError

HELP = "count MACs through a model's views and check the 50 GMAC budget"
ONNX_TOLERANCE = 0.01  # relative MAC difference allowed between a model and its ONNX export
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def parse_source(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. 3840x2160) → (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"source must be WIDTHxHEIGHT, e.g. 3840x2160, got {text!r}") from None
    return (height, width)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import non_negative_int, positive_float, positive_int

    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="preset, timm:NAME (plain classifier), checkpoint (.pt) or exported .onnx file")
    parser.add_argument("--source", type=parse_source, default=None, metavar="WxH",
                        help="source photo size, width x height (default: the model's declared source: "
                             "3840x2160 for UHD presets and timm:NAME, the graph's input size for .onnx)")
    parser.add_argument("--budget", type=positive_float, default=50.0, metavar="GMAC", help="MAC budget in GMAC (default 50)")
    parser.add_argument("--frames", type=positive_int, default=None, metavar="T",
                        help="burst models: count a whole burst of T frames, the reference once "
                             "(default: the model's own T)")
    parser.add_argument("--depth", type=non_negative_int, default=1, metavar="N",
                        help="per-module breakdown down to N levels (default 1: branches and head; 0: none)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--fit", action="store_true",
                        help="find the largest views (same aspect) that fit the budget and print that config")
    parser.add_argument("--all", action="store_true",
                        help="table of every preset: MACs, params, within budget (exit 1 if a student is over)")
    parser.add_argument("--no-fvcore", action="store_true",
                        help="skip fvcore's second opinion (it runs the model for real on the CPU: slow for teachers)")
    parser.add_argument("--onnx-check", action="store_true",
                        help="also export the model to ONNX, count the graph and require agreement within 1%%")


def run(args: argparse.Namespace) -> int:
    if args.all:
        if args.model or args.fit or args.frames is not None:
            raise EdgeIQAError("--all profiles every preset (bursts at their own T); give it no MODEL, --fit or --frames")
        return _run_all(args)
    if not args.model:
        raise EdgeIQAError("give a MODEL (preset, timm:NAME, checkpoint or .onnx file), or --all")
    if args.frames is not None and args.model.startswith("timm:"):
        raise EdgeIQAError("--frames counts a burst model; give a burst preset, checkpoint or .onnx file")
    if args.fit:
        return _run_fit(args)
    return _run_one(args)


# --- resolving MODEL -------------------------------------------------------------------------

def _config_of(model: str):
    """The ModelConfig named by MODEL: a checkpoint's, a preset or a bare timm name."""
    from edge_iqa.presets import get_preset

    if model.endswith(_CHECKPOINT_SUFFIXES) or Path(model).is_file():
        from edge_iqa.checkpoint import read_checkpoint

        return read_checkpoint(model)["config"]
    return get_preset(model)


def _profile(model: str, source: tuple[int, int] | None, onnx_check: bool, fvcore: bool,
             frames: int | None = None):
    from profiling.report import profile_config, profile_timm_classifier

    if model.endswith(".onnx"):
        if onnx_check:
            raise EdgeIQAError("--onnx-check compares a PyTorch model with its export; MODEL is already ONNX")
        return _profile_onnx_file(Path(model), source, frames)
    if model.startswith("timm:"):
        report = profile_timm_classifier(model.removeprefix("timm:"), source or UHD_SOURCE, fvcore=fvcore)
        build = _timm_builder(model.removeprefix("timm:"))
    else:
        config = _config_of(model)
        report = profile_config(config, source, fvcore=fvcore, frames=frames)
        build = _config_builder(config)
    if onnx_check:
        import torch

        from profiling.onnx_macs import count_export_macs

        lead = (1,) if report.frames is None else (1, report.frames)
        inputs = tuple(torch.rand(*lead, 3, *size) for size in report.view_sizes.values())
        report = dataclasses.replace(report, onnx_macs=count_export_macs(build(), inputs))
    return report


def _timm_builder(name: str):
    import timm

    return lambda: timm.create_model(name, pretrained=False)


def _config_builder(config):
    from edge_iqa.model import build_model

    return lambda: build_model(config)


def _profile_onnx_file(path: Path, source: tuple[int, int] | None, frames: int | None = None):
    """An exported graph: MACs from its nodes, params from its initializers, inputs from its image inputs.

    The graph does not know the photo it was exported for: without ``--source`` the size of
    its first image input stands in. A burst graph's inputs are (B, T, 3, H, W): a static T is
    counted as exported, a dynamic one at ``--frames`` (required then).
    """
    import onnx

    from profiling.onnx_macs import count_onnx_macs
    from profiling.report import ProfileReport

    graph = onnx.load(str(path), load_external_data=False).graph
    params = sum(math.prod(t.dims) for t in graph.initializer)
    images, burst_frames = {}, set()
    for graph_input in graph.input:
        dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
        if len(dims) in (4, 5) and all(dims[-2:]):
            images[graph_input.name] = (dims[-2], dims[-1])
        if len(dims) == 5:
            burst_frames.add(dims[1] or frames)
    if None in burst_frames:
        raise EdgeIQAError(f"{path} takes bursts of any length; give --frames T to count a burst of T frames")
    if frames is not None and not burst_frames:
        raise EdgeIQAError(f"--frames counts a burst, but {path} takes single photos; drop --frames")
    if frames is not None and burst_frames != {frames}:
        raise EdgeIQAError(f"{path} was exported for bursts of {min(burst_frames)} frames; drop --frames or re-export")
    macs = count_onnx_macs(path, frames=frames)
    source = source or next(iter(images.values()), UHD_SOURCE)
    return ProfileReport(model=str(path), role=None, source=source, view_sizes=images, macs=macs, per_view={},
                         head_macs=0, per_module={}, params=params, onnx_macs=macs, counted_from="onnx",
                         frames=min(burst_frames) if burst_frames else None)


# --- one model ------------------------------------------------------------------------------

def _run_one(args: argparse.Namespace) -> int:
    from profiling.budget import check_budget

    report = _profile(args.model, args.source, args.onnx_check, fvcore=not args.no_fvcore,
                      frames=args.frames)
    verdict = check_budget(report, args.budget)
    onnx_diff = _onnx_difference(report)
    if args.json:
        print(json.dumps(_report_json(report, verdict, args.depth, onnx_diff)))
    else:
        _print_report(report, verdict, args.depth, onnx_diff)
    status = 0
    if onnx_diff is not None and abs(onnx_diff) > ONNX_TOLERANCE:
        print(f"edge-iqa profile: ONNX export counts {report.onnx_macs / 1e9:.3f} GMAC against PyTorch's "
              f"{report.macs / 1e9:.3f} GMAC ({onnx_diff:+.2%}); the export does not match the model", file=sys.stderr)
        status = 1
    if not verdict.within:
        print(f"edge-iqa profile: over budget: {verdict.line()}", file=sys.stderr)
        status = 1
    return status


def _onnx_difference(report) -> float | None:
    if report.onnx_macs is None or report.counted_from == "onnx":
        return None
    return (report.onnx_macs - report.macs) / report.macs if report.macs else 0.0


def _report_json(report, verdict, depth: int, onnx_diff: float | None) -> dict:
    data = report.to_dict()
    data["per_module"] = report.modules_to_depth(depth)
    data.update(
        gmacs=report.macs / 1e9, budget=verdict.budget_macs, budget_gmac=verdict.budget_macs / 1e9,
        within_budget=verdict.within, over_by=verdict.over_by, costliest_view=verdict.costliest_view,
        onnx_relative_difference=onnx_diff, verdict=verdict.line(),
    )
    return data


def _table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table, columns padded so it also reads as plain text."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _share(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "-"


def _print_report(report, verdict, depth: int, onnx_diff: float | None) -> None:
    from profiling.report import format_macs, format_size

    role = f" ({report.role})" if report.role else ""
    burst = f", a burst of {report.frames} frames" if report.frames else ""
    out = [f"{report.model}{role}, source {format_size(report.source)}{burst}, counted from {report.counted_from}"]
    if report.per_view:
        rows = [[view, format_size(report.view_sizes[view]), format_macs(macs), _share(macs, report.macs)]
                for view, macs in report.per_view.items()]
        if report.role is not None:  # an edge-iqa model: the quality head sits outside the branches
            rows.append(["head", "", format_macs(report.head_macs), _share(report.head_macs, report.macs)])
        out.append(_table(rows, ["view", "input WxH", "MACs", "share"]))
    if report.counted_from == "onnx" and report.view_sizes:
        out.append("graph inputs: " + ", ".join(f"{name} {format_size(size)}" for name, size in report.view_sizes.items()))
    out.append(f"MACs (conv + linear + matmul): {report.macs / 1e9:.3f} GMAC = {report.macs:,}")
    if report.fvcore_macs is not None:
        out.append(f"fvcore (second opinion):       {report.fvcore_macs / 1e9:.3f} GMAC without BatchNorm, "
                   f"{report.fvcore_default_macs / 1e9:.3f} GMAC default total")
    elif report.counted_from == "pytorch":
        out.append("fvcore (second opinion):       not run (--no-fvcore)")
    if onnx_diff is not None:
        out.append(f"ONNX export:                   {report.onnx_macs / 1e9:.3f} GMAC ({onnx_diff:+.3%})")
    if report.other_ops is not None:
        other = ", ".join(f"{kind} {format_macs(n)}" for kind, n in report.other_ops.items() if n)
        out.append(f"other ops (element ops, not MACs, not in the budget): {other or 'none'}")
    out.append(f"parameters: {report.params:,}")
    if report.peak_activation_bytes is not None:
        out.append(f"peak activation memory (one forward, batch 1, fp32): {report.peak_activation_bytes / 2**20:.1f} MiB")
    modules = report.modules_to_depth(depth) if depth > 0 else {}
    modules.pop("", None)
    if modules:
        rows = [[name, format_macs(macs), _share(macs, report.macs)] for name, macs in modules.items()]
        out.append(_table(rows, [f"module (depth {depth})", "MACs", "share"]))
    if verdict.within:  # over budget, the caller ends with the verdict as its error line
        out.append(verdict.line())
    print("\n".join(out), file=sys.stderr)


# --- every preset ---------------------------------------------------------------------------

def _run_all(args: argparse.Namespace) -> int:
    from edge_iqa.presets import get_preset, list_presets
    from profiling.budget import check_budget
    from profiling.report import format_size, profile_config

    rows, records, over = [], [], []
    for name in list_presets():
        config = get_preset(name)
        report = profile_config(config, args.source, fvcore=False, details=False)
        verdict = check_budget(report, args.budget)
        views = " + ".join(view.spec() for view in config.views)
        per = f"burst of {report.frames}" if report.frames else "photo"
        rows.append([name, config.role, views, format_size(report.source), per, f"{report.macs / 1e9:.2f}",
                     f"{report.params / 1e6:.2f}", "yes" if verdict.within else "no"])
        records.append({"model": name, "role": config.role, "views": [v.spec() for v in config.views],
                        "source": format_size(report.source), "frames": report.frames, "macs": report.macs,
                        "params": report.params, "per_view": report.per_view, "within_budget": verdict.within})
        if not verdict.within and config.role == "student":
            over.append(verdict.line())
    if args.json:
        print(json.dumps({"budget": round(args.budget * 1e9), "budget_gmac": args.budget, "presets": records}))
    else:
        header = ["preset", "role", "views (HxW)", "source (WxH)", "counted per", "GMAC", "params (M)",
                  f"within {args.budget:g} GMAC"]
        print(_table(rows, header), file=sys.stderr)
    for line in over:
        print(f"edge-iqa profile: over budget: student {line}", file=sys.stderr)
    return 1 if over else 0


# --- fitting --------------------------------------------------------------------------------

def _run_fit(args: argparse.Namespace) -> int:
    from profiling.budget import check_budget, fit_to_budget
    from profiling.report import format_size, profile_config

    if args.model.endswith(".onnx") or args.model.startswith("timm:"):
        raise EdgeIQAError("--fit scales a model config's views; give a preset, a timm backbone name or a checkpoint")
    config = _config_of(args.model)
    if args.frames is not None:  # fit a burst of that many frames; the fitted config keeps T
        from profiling.report import burst_frames

        config = config.replace(burst=dataclasses.replace(config.burst, frames=burst_frames(config, args.frames)))
    fitted = fit_to_budget(config, args.budget, args.source)
    report = profile_config(fitted, fitted.source_size, fvcore=False, details=False)
    verdict = check_budget(report, args.budget)
    if args.json:
        print(json.dumps({"config": fitted.to_dict(), "views": [v.spec() for v in fitted.views],
                          "macs": report.macs, "params": report.params, "budget": verdict.budget_macs,
                          "within_budget": verdict.within, "per_view": report.per_view,
                          "source": format_size(report.source)}))
        return 0
    before = " + ".join(v.spec() for v in config.views)
    after = " + ".join(v.spec() for v in fitted.views)
    print(f"{config.name}: {before} → {after}\n{verdict.line()}; "
          f"{100 * report.macs / verdict.budget_macs:.1f}% of the budget used", file=sys.stderr)
    print(json.dumps(fitted.to_dict(), indent=2))
    return 0
