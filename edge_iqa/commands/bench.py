"""``edge-iqa bench``: latency of a model on every runtime, at each precision, thread count and
batch size, beside its accuracy and its cost end to end from a JPEG on disk (issue 15 §3).

MODEL is a checkpoint (``.pt``), an export (``.onnx``, ``.plan``, ``.mlpackage``, ``.pte``) or
``preset:NAME`` (that preset with seeded random weights: latency does not depend on what the
weights learned). From a checkpoint each backend's artifact is exported with the export
pipeline into ``--out`` (INT8 calibrated on ``--calib``, default the ``--check`` data). Each
(artifact × backend × threads × batch) is one row that *ran*, was *skipped* (with why: the
runtime is missing here, no artifact for it) or hit an *error*; a skipped row is never counted
as run. With ``--check DATA`` each row also carries its Spearman against the FP32 model's
scores and its SRCC on the split, and a row below ``--min-spearman`` fails: exit 1.
Measurement: :mod:`edge_iqa.bench`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

HELP = ("benchmark a checkpoint or its exports on every runtime: load, p50/p90/p99 latency, throughput, size, "
        "memory, GMAC/s vs this CPU's GEMM peak, accuracy vs FP32 (--check), end to end from JPEG")
PRECISIONS = ("fp32", "fp16", "int8")
FORMAT_OF = {"onnxruntime": "onnx", "openvino": "onnx", "tensorrt": "tensorrt", "coreml": "coreml",
             "executorch": "executorch"}  # the export format each backend runs; torch runs the checkpoint


def comma_list(kind, what: str, choices=None):
    """An argparse type: ``a,b,c`` of ``kind`` values (whole numbers >= 1 for thread/batch lists)."""

    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        values = []
        for item in items:
            if kind is int:
                if not item.isdigit() or int(item) < 1:
                    raise argparse.ArgumentTypeError(f"{what} must be whole numbers of 1 or more, got {item!r} "
                                                     f"in {text!r}")
                values.append(int(item))
            else:
                if choices is not None and item not in choices:
                    raise argparse.ArgumentTypeError(f"unknown {what} {item!r}; choose from {', '.join(choices)}")
                values.append(item)
        return list(dict.fromkeys(values))

    parse.__name__ = what
    return parse


def source_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. 3840x2160) -> (height, width), as ``ModelConfig.source_size``."""
    try:
        width, height = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"source must be WIDTHxHEIGHT, e.g. 3840x2160, got {text!r}") from None
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f"source must be at least 8x8 px, got {text!r}")
    return (height, width)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a Spearman floor lies in (0, 1], got {text}")
    return value


def dataset_folder(text: str) -> str:
    from edge_iqa.commands.common import _user_error, check_dataset_folder

    _user_error(check_dataset_folder, text)
    return text


def folder(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_iqa.commands.common import model_file, non_negative_int, positive_float, positive_int
    from edge_iqa.runtimes import RUNTIMES

    parser.add_argument("models", nargs="+", metavar="CKPT_OR_ARTIFACT",
                        help="checkpoint (.pt), export (.onnx, .plan, .mlpackage, .pte) or preset:NAME (random init)")
    parser.add_argument("--backends", type=comma_list(str, "backend", tuple(RUNTIMES)), default=list(RUNTIMES),
                        help=f"comma-separated runtimes (default all: {','.join(RUNTIMES)})")
    parser.add_argument("--precision", type=comma_list(str, "precision", PRECISIONS), default=None,
                        help="comma-separated precisions to export from a checkpoint and to keep of given exports "
                             "(default: fp32 from a checkpoint, every given export)")
    parser.add_argument("--threads", type=comma_list(int, "thread counts"), default=[1],
                        help="comma-separated intra-op thread counts, applied exactly in every runtime (default 1)")
    parser.add_argument("--batch", type=comma_list(int, "batch sizes"), default=[1],
                        help="comma-separated batch sizes (default 1)")
    parser.add_argument("--source", type=source_size, default=None, metavar="WxH",
                        help="source photo size: of the generated end-to-end JPEGs and of 'full' views "
                             "(default: the model's declared source)")
    parser.add_argument("--images", type=folder, help="end to end: time these JPEGs "
                        "(default: generated photos at --source)")
    parser.add_argument("--e2e-images", type=non_negative_int, default=4,
                        help="images timed end to end per row (0: no end-to-end timing)")
    parser.add_argument("--check", type=dataset_folder, metavar="DATA",
                        help="dataset folder: Spearman vs FP32 and SRCC of each row on --split")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    parser.add_argument("--min-spearman", type=fraction, default=0.98,
                        help="with --check: a row whose Spearman vs FP32 is below this fails (exit 1)")
    parser.add_argument("--reference", type=model_file, metavar="CKPT",
                        help="with --check: the FP32 checkpoint given exports are compared with (default: the "
                             "row's own checkpoint; for a given export, its FP32 self)")
    parser.add_argument("--calib", type=dataset_folder, metavar="DATA",
                        help="dataset folder that calibrates INT8 exports (default: --check DATA)")
    parser.add_argument("--calib-images", type=positive_int, default=64)
    parser.add_argument("--cpu-layout", choices=("qoperator", "qdq"), default="qdq",
                        help="INT8 ONNX layout (default qdq: the file ONNX Runtime, OpenVINO and TensorRT all take)")
    parser.add_argument("--runs", type=positive_int, default=20, help="timed runs per row at least")
    parser.add_argument("--min-seconds", type=positive_float, default=3.0, help="timed seconds per row at least")
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--out", default="runs/bench", help="folder for exports, bench.json, bench.md, bench.png")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from dataclasses import asdict

    from edge_iqa.bench import Timing, machine
    from edge_iqa.commands.common import print_json, say
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.outputs import ensure_writable_dir

    out = ensure_writable_dir(args.out)
    if args.runs < 3:
        raise EdgeIQAError(f"--runs must be at least 3 for p50/p90/p99, got {args.runs}")
    timing = Timing(warmup=args.warmup, min_runs=args.runs, min_seconds=args.min_seconds,
                    max_runs=max(500, args.runs))
    subjects = [_subject(m, out) for m in args.models]  # bad files: one line before any work
    out.mkdir(parents=True, exist_ok=True)
    plan = [row for s in subjects for row in _plan(s, args)]
    load_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    rows = _measure(plan, args, timing, out)
    argv = sys.argv[1:] if sys.argv[1:2] == ["bench"] else ["bench", *args.models, "..."]  # main([...]) callers
    result = {"command": "edge-iqa " + shlex.join(argv), "machine": {**machine(), "load_average_start": load_start},
              "timing": asdict(timing), "gemm_peak": _GEMM, "rows": rows}
    failed = [r for r in rows if r["status"] == "error" or (r.get("accuracy") or {}).get("passed") is False]
    result["failed_rows"] = len(failed)
    _write(out, result)
    say(format_rows(rows))
    say(_gemm_line(_GEMM))
    say(f"{sum(r['status'] == 'ran' for r in rows)} ran, {sum(r['status'] == 'skipped' for r in rows)} skipped, "
        f"{len(failed)} failed; {out / 'bench.md'}, bench.json, bench.png")
    if args.json:
        print_json(_finite(result))
    return 1 if failed else 0


# --------------------------------------------------------------------------- what to benchmark


def _subject(text: str, out: Path) -> dict[str, Any]:
    """A model to benchmark: a checkpoint (exported as needed) or a given export."""
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.runtimes import runtime_for

    if text.startswith("preset:"):
        return {"name": text, "checkpoint": _random_checkpoint(text.removeprefix("preset:"), out), "artifact": None}
    path = Path(text)
    if not path.exists():
        raise EdgeIQAError(f"{path}: file not found")
    if runtime_for(path) == "torch":
        return {"name": path.stem, "checkpoint": path, "artifact": None}
    return {"name": path.name, "checkpoint": None, "artifact": path}


def _random_checkpoint(preset: str, out: Path) -> Path:
    import torch

    from edge_iqa.checkpoint import save_checkpoint
    from edge_iqa.model import build_model
    from edge_iqa.presets import get_preset

    config = get_preset(preset)  # an unknown name: one line with the near matches
    path = out / "models" / f"{preset}_random_init.pt"
    if not path.exists():
        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, build_model(config).eval(), info={"note": "random init (seed 0), latency only"})
    return path


def _artifact_precision(path: Path) -> str:
    """The precision an export says it has (``edge_iqa.export`` metadata), or ``?``."""
    import json

    try:
        if path.suffix == ".onnx":
            from edge_iqa.runtimes.onnxruntime import onnx_session

            meta = onnx_session(path).get_modelmeta().custom_metadata_map
            return json.loads(meta.get("edge_iqa.export", "{}")).get("precision", "?")
        if path.suffix in (".plan", ".engine"):
            from edge_iqa.runtimes.tensorrt import read_sidecar

            return read_sidecar(path).get("edge_iqa.export", {}).get("precision", "?")
    except Exception:  # an unreadable file fails later, in its row, with the runtime's own line
        return "?"
    return "?"


def _plan(subject: dict, args) -> list[dict[str, Any]]:
    """The rows of one model: (backend, precision, artifact or how to make it), threads × batch."""
    from edge_iqa.runtimes import can_load, get_runtime, runtime_names

    known = set(runtime_names())
    combos = []
    for backend in args.backends:
        if backend not in known:
            combos.append((backend, "-", None, f"the {backend} backend module is not in this install"))
            continue
        reason = get_runtime(backend).unavailable()
        if subject["artifact"] is not None:
            path = subject["artifact"]
            if not can_load(backend, path):
                continue  # e.g. an .onnx file is not a TensorRT engine: no row
            precision = _artifact_precision(path)
            if args.precision and precision not in args.precision:
                continue
            combos.append((backend, precision, path, reason))
            continue
        for precision in args.precision or ["fp32"]:
            if backend == "torch":
                why = reason or (None if precision == "fp32" else
                                 f"torch eager runs the FP32 checkpoint; {precision} is an export's precision")
                combos.append((backend, precision, subject["checkpoint"], why))
            else:
                combos.append((backend, precision, ("export", FORMAT_OF[backend], precision), reason))
    return [{"model": subject["name"], "checkpoint": subject["checkpoint"], "backend": b, "precision": p,
             "source": a, "skip": why, "threads": t, "batch": n}
            for b, p, a, why in combos for t in args.threads for n in args.batch]


# --------------------------------------------------------------------------- measuring


_GEMM: dict[str, Any] = {}  # GEMM peak per thread count, measured once per process
_MACS: dict[tuple, int | None] = {}


def _measure(plan: list[dict], args, timing, out: Path) -> list[dict[str, Any]]:
    from tqdm import tqdm

    exports: dict = {}
    accuracy: dict = {}
    e2e: dict = {}
    rows = []
    bar = tqdm(plan, unit="row", desc="bench", disable=args.json)
    for item in bar:
        bar.set_postfix_str(f"{item['model']} {item['backend']} {item['precision']} "
                            f"t{item['threads']} b{item['batch']}")
        rows.append(_row(item, args, timing, out, exports, accuracy, e2e))
    bar.close()
    return rows


def _row(item: dict, args, timing, out: Path, exports: dict, accuracy: dict, e2e: dict) -> dict[str, Any]:
    from edge_iqa.bench import PeakMemory, measure_latency
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.runtimes import load_artifact

    row: dict[str, Any] = {k: item[k] for k in ("model", "backend", "precision", "threads", "batch")}
    row.update(status="skipped", reason=item["skip"], artifact=None)
    if item["skip"]:
        return row
    try:
        path = item["source"]
        if isinstance(path, tuple):
            path = _exported(item, args, out, exports)
        row["artifact"] = str(path)
        row["size_bytes"] = _size(path)
        import time

        with PeakMemory() as memory:
            start = time.perf_counter()
            loaded = load_artifact(path, item["backend"], threads=item["threads"])
            row["load_s"] = time.perf_counter() - start
            config = _with_source(loaded.config, args.source)
            row.update(measure_latency(loaded.batch_fn, config, item["batch"], timing))
        row.update(status="ran", reason="", runtime_version=loaded.version, device=loaded.device,
                   peak_rss_mb=memory.peak_mb, rss_growth_mb=memory.peak_mb - memory.start_mb
                   if memory.start_mb is not None else None, peak_rss_reset=memory.resetting)
        _add_macs(row, item, path, config, out)
        _add_accuracy(row, item, loaded, args, accuracy)
        _add_end_to_end(row, item, loaded, args, out, e2e)
    except EdgeIQAError as err:
        row.update(status="skipped" if row["artifact"] is None else "error", reason=str(err))
    except Exception as err:  # a runtime's own failure on this artifact: the row says it, the rest still run
        row.update(status="error", reason=f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}")
    return row


def _with_source(config, source):
    return config if source is None else config.replace(source_size=source)


def _size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _exported(item: dict, args, out: Path, exports: dict) -> Path:
    """The artifact of (format, precision) exported from the row's checkpoint, once per run."""
    from edge_iqa.errors import EdgeIQAError

    _, fmt, precision = item["source"]
    key = (str(item["checkpoint"]), fmt, precision)
    if key not in exports:
        try:
            exports[key] = _export(item["checkpoint"], fmt, precision, args, out)
        except EdgeIQAError as err:
            exports[key] = err
    if isinstance(exports[key], EdgeIQAError):
        raise EdgeIQAError(f"no {fmt} {precision} artifact: {exports[key]}")
    return exports[key]


def _export(checkpoint: Path, fmt: str, precision: str, args, out: Path) -> Path:
    """Export with the export pipeline into ``OUT/exports/<checkpoint>/<format>_<precision>``;
    reused when ``bench_export.json`` there says the same checkpoint file and settings made it."""
    import json

    from edge_iqa.checkpoint import load_checkpoint
    from edge_iqa.errors import EdgeIQAError
    from export.formats import ExportConfig
    from export.pipeline import export_model

    calib = args.calib or args.check
    settings = {"calib_images": args.calib_images}
    if precision == "int8" and fmt == "onnx":
        settings["cpu_layout"] = args.cpu_layout
    export = ExportConfig(fmt, precision, **settings)
    if export.needs_calib and calib is None:
        raise EdgeIQAError(f"{precision} calibrates on real images; pass --calib DATA or --check DATA")
    folder = out / "exports" / Path(checkpoint).stem / f"{fmt}_{precision}"
    stat = Path(checkpoint).stat()
    made_from = json.loads(json.dumps({  # as read back from JSON (tuples become lists)
        "checkpoint": str(Path(checkpoint).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "export": export.to_dict(), "calib": str(Path(calib).resolve()) if calib and export.needs_calib else None}))
    record = folder / "bench_export.json"
    if record.is_file():  # an earlier bench exported the same checkpoint with the same settings: reuse it
        earlier = json.loads(record.read_text(encoding="utf-8"))
        if earlier.get("made_from") == made_from and Path(earlier.get("artifact", "")).exists():
            return Path(earlier["artifact"])
    model, _ = load_checkpoint(checkpoint)
    artifact = export_model(model, export, folder, calib=calib, command=f"edge-iqa bench {checkpoint}")
    if not artifact.path.exists():
        raise EdgeIQAError(f"{fmt} export wrote no {artifact.path.name} here ({artifact.runner_note})")
    record.write_text(json.dumps({"made_from": made_from, "artifact": str(artifact.path)}, indent=2) + "\n")
    return artifact.path


def _add_macs(row: dict, item: dict, path: Path, config, out: Path) -> None:
    """MACs of one image (burst) at the benchmarked input; achieved GMAC/s and its share of the
    GEMM peak at the row's threads (INT8 peak for int8 rows)."""
    from edge_iqa.bench import gemm_peak

    key = (item["model"], str(path) if item["checkpoint"] is None else "checkpoint", config.source_size)
    if key not in _MACS:  # one count per model: every precision and runtime runs the same convolutions
        _MACS[key] = _macs(item, path, config)
    macs = row["macs"] = _MACS[key]
    key = str(item["threads"])
    if key not in _GEMM:
        _GEMM[key] = gemm_peak(item["threads"])
    peak = _GEMM[key].get("int8_gmacs" if item["precision"] == "int8" else "fp32_gmacs")
    if macs:
        row["gmacs"] = macs * item["batch"] / (row["p50_ms"] / 1e3) / 1e9
        row["peak_gmacs"] = peak
        row["peak_fraction"] = row["gmacs"] / peak if peak else None


def _macs(item: dict, path: Path, config) -> int | None:
    try:
        if item["checkpoint"] is not None:
            from edge_iqa.checkpoint import load_checkpoint
            from edge_iqa.model import example_inputs
            from profiling.macs import count_macs

            model, _ = load_checkpoint(item["checkpoint"])
            return int(count_macs(model, example_inputs(config, batch=1)).total)
        if Path(path).suffix == ".onnx":
            from profiling.onnx_macs import count_onnx_macs
            from export.pipeline import static_for_counting

            frames = config.burst.frames if config.burst is not None else None
            return int(count_onnx_macs(static_for_counting(Path(path), config), frames=frames))
    except Exception:  # noqa: BLE001  MACs are informative; a graph the counter cannot read leaves them blank
        return None
    return None


def _add_accuracy(row: dict, item: dict, loaded, args, cache: dict) -> None:
    """Spearman vs the FP32 model's scores and SRCC on ``--check``'s split, once per
    (model, backend, precision): threads and batch do not change what a runtime computes."""
    if not args.check:
        return
    key = (item["model"], item["backend"], item["precision"])
    if key not in cache:
        cache[key] = _accuracy(item, loaded, args, cache)
    row["accuracy"] = cache[key]


def _accuracy(item: dict, loaded, args, cache: dict) -> dict[str, Any]:
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.metrics import srcc
    from edge_iqa.scoring import Scorer

    if loaded.config.burst is not None:
        return {"passed": None, "note": "burst models: per-burst parity is `edge-iqa export --check`'s"}
    records = read_manifest(args.check, split=None if args.split == "all" else args.split)
    paths = [str(r.path) for r in records]
    scores = Scorer.from_loaded(loaded).score_paths(paths, batch_size=8)
    key = ("fp32", item["model"])
    if key not in cache:
        cache[key] = _reference_scores(item, paths, scores, args.reference)
    reference = cache[key]
    got = {r.path: r.score for r in scores if r.score is not None}
    if not got:
        return {"n": 0, "srcc": None, "spearman_vs_fp32": None, "passed": None, "reference": None,
                "note": f"no image of {args.check} [{args.split}] could be scored: {scores[0].error if scores else ''}"}
    truth = {str(r.path): r.score for r in records}
    both = [p for p in paths if p in got and reference and p in reference["scores"]]
    result: dict[str, Any] = {"n": len(got), "srcc": srcc([got[p] for p in got], [truth[p] for p in got])
                              if len(got) > 1 else None, "reference": reference["what"] if reference else None}
    if reference and len(both) > 1:
        result["spearman_vs_fp32"] = srcc([got[p] for p in both], [reference["scores"][p] for p in both])
        result["passed"] = bool(result["spearman_vs_fp32"] >= args.min_spearman)
    else:
        result.update(spearman_vs_fp32=None, passed=None)
    return result


def _reference_scores(item: dict, paths: list[str], scores, reference: str | None) -> dict | None:
    """The FP32 scores rows are compared with: the row's checkpoint (or ``--reference``) in
    PyTorch, or else the row's own scores when it is an FP32 export (a given INT8 export alone
    has no reference)."""
    checkpoint = item["checkpoint"] or reference
    if item["backend"] == "torch" and item["precision"] == "fp32" and item["checkpoint"] is not None \
            and reference is None:  # the row is the reference: its scores once, not twice
        return {"what": f"PyTorch FP32 {Path(checkpoint).name}",
                "scores": {r.path: r.score for r in scores if r.score is not None}}
    if checkpoint is not None:
        from edge_iqa.runtimes import load_artifact
        from edge_iqa.scoring import Scorer

        ref = Scorer.from_loaded(load_artifact(checkpoint, "torch")).score_paths(paths, batch_size=8)
        return {"what": f"PyTorch FP32 {Path(checkpoint).name}",
                "scores": {r.path: r.score for r in ref if r.score is not None}}
    if item["precision"] == "fp32":
        return {"what": f"{item['backend']} FP32", "scores": {r.path: r.score for r in scores if r.score is not None}}
    return None


def _add_end_to_end(row: dict, item: dict, loaded, args, out: Path, cache: dict) -> None:
    """End to end once per (model, backend, precision, threads), at the largest batch asked."""
    from edge_iqa.bench import end_to_end
    from edge_iqa.scoring import Scorer

    if not args.e2e_images or item["batch"] != max(args.batch):
        return
    if loaded.config.burst is not None:
        row["e2e"] = {"note": "burst models: time `edge-iqa burst score`"}
        return
    files = _e2e_files(loaded.config, args, out)
    workers = max(1, min(2, (os.cpu_count() or 1) - item["threads"]))  # decode threads beside inference
    row["e2e"] = end_to_end(Scorer.from_loaded(loaded), files, max(args.batch), workers)
    row["e2e"]["inference_ms"] = row["p50_ms"] / item["batch"]
    row["e2e"]["overhead_vs_parts"] = row["e2e"]["score_ms_per_image"] / (row["e2e"]["decode_views_ms"]
                                                                          + row["p50_ms"] / item["batch"])


def _e2e_files(config, args, out: Path) -> list[Path]:
    from edge_iqa.bench import write_photos
    from edge_iqa.errors import EdgeIQAError
    from edge_iqa.io import scan_images

    if args.images:
        files = list(scan_images(args.images).files)[:args.e2e_images]
        if not files:
            raise EdgeIQAError(f"--images {args.images}: no image files in it")
        return files
    height, width = args.source or config.source_size
    folder = out / f"photos_{width}x{height}"
    existing = sorted(folder.glob("photo_*.jpg"))
    if len(existing) >= args.e2e_images:
        return existing[:args.e2e_images]
    return write_photos(folder, args.e2e_images, (width, height))


# --------------------------------------------------------------------------- output


COLUMNS = ("model", "backend", "precision", "thr", "batch", "status", "load s", "p50 ms", "p90 ms", "p99 ms",
           "img/s", "MB", "peak MB", "GMAC/s", "% peak", "Spearman", "SRCC", "e2e ms/img", "reason")


def _cells(r: dict) -> list[str]:
    def num(value, fmt):
        return "" if value is None else format(value, fmt)

    acc, e2e = r.get("accuracy") or {}, r.get("e2e") or {}
    share = r.get("peak_fraction")
    return [r["model"], r["backend"], r["precision"], str(r["threads"]), str(r["batch"]), r["status"],
            num(r.get("load_s"), ".2f"), num(r.get("p50_ms"), ".2f"), num(r.get("p90_ms"), ".2f"),
            num(r.get("p99_ms"), ".2f"), num(r.get("throughput_per_s"), ".1f"),
            num(r["size_bytes"] / 1e6 if r.get("size_bytes") else None, ".2f"), num(r.get("peak_rss_mb"), ".0f"),
            num(r.get("gmacs"), ".1f"), num(share * 100 if share is not None else None, ".0f"),
            num(acc.get("spearman_vs_fp32"), ".4f") + (" FAIL" if acc.get("passed") is False else ""),
            num(acc.get("srcc"), ".4f"), num(e2e.get("score_ms_per_image"), ".1f"), r.get("reason") or ""]


def format_rows(rows: list[dict]) -> str:
    from edge_iqa.tables import format_table

    return format_table(COLUMNS, [_cells(r) for r in rows])


def _gemm_line(gemm: dict) -> str:
    if not gemm:
        return "GEMM peak: not measured (no row ran)"
    return "GEMM peak (ONNX Runtime 1024^3): " + "; ".join(
        f"{t} thread{'s' if t != '1' else ''} FP32 {g['fp32_gmacs']:.1f} GMAC/s, INT8 {g['int8_gmacs']:.1f} "
        f"({g['int8_over_fp32']:.2f}x)" for t, g in gemm.items() if g.get("fp32_gmacs"))


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# edge-iqa bench", "", f"`{result['command']}`", "",
             f"Machine: {m['cpu']} ({m['arch']}, {m['cores']} cores, VNNI {'yes' if m['vnni'] else 'no'}"
             f"{' ' + ','.join(m['int8_dot_product_flags']) if m['vnni'] else ''}), load average (1, 5, 15 min) "
             f"{m.get('load_average_start')} at the start, {m['load_average']} at the end. "
             f"{_gemm_line(result['gemm_peak'])}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in result["rows"]]
    e2e = [r for r in result["rows"] if (r.get("e2e") or {}).get("score_ms_per_image")]
    if e2e:
        lines += ["", "End to end (JPEG on disk → decode with JPEG draft → views → inference), per image:", "",
                  "| model | backend | precision | thr | decode+views ms | inference ms | score ms/img | "
                  "× (decode + inference) | batch | workers | batch img/s |", "|---" * 11 + "|"]
        for r in e2e:
            e = r["e2e"]
            lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['threads']} | "
                         f"{e['decode_views_ms']:.1f} | {e['inference_ms']:.1f} | {e['score_ms_per_image']:.1f} | "
                         f"{e['overhead_vs_parts']:.2f} | {e['batch']} | {e['workers']} | "
                         f"{e['batch_throughput_per_s']:.2f} |")
    lines += ["", "Latency: p50/p90/p99 of timed runs on random inputs at the model's input size "
              f"(timing {result['timing']}). Status: ran / skipped (why) / error; a skipped row is not a result.", ""]
    return "\n".join(lines)


def _write(out: Path, result: dict) -> None:
    import json

    from edge_iqa.outputs import atomic_write_text

    atomic_write_text(out / "bench.json", json.dumps(_finite(result), indent=2, default=str) + "\n")
    atomic_write_text(out / "bench.md", markdown(result))
    _chart(out / "bench.png", result["rows"])


def _chart(path: Path, rows: list[dict]) -> None:
    """Latency bars (p50, p90-p99 whiskers) per row that ran; skipped rows listed by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in rows if r["status"] == "ran"]
    labels = [f"{r['model']} {r['backend']} {r['precision']} t{r['threads']} b{r['batch']}" for r in ran]
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.35 * max(1, len(ran))))
    if ran:
        p50 = [r["p50_ms"] for r in ran]
        err = [[0 for _ in ran], [r["p99_ms"] - r["p50_ms"] for r in ran]]
        ax.barh(range(len(ran)), p50, xerr=err, color="#4477aa", capsize=3)
        ax.set_yticks(range(len(ran)), labels, fontsize=8)
        ax.invert_yaxis()
    skipped = [f"{r['backend']} {r['precision']}: skipped" for r in rows if r["status"] != "ran"]
    ax.set_xlabel("latency ms (bar p50, whisker to p99)")
    ax.set_title("edge-iqa bench" + (f" ({len(set(skipped))} backend/precision pairs did not run)" if skipped else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finite(value):
    """JSON has no inf/NaN: as null."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
