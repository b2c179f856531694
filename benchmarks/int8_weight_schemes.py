"""Which INT8 scheme for ONNX Runtime on CPU: accuracy and latency of U8S8 (7- and 8-bit weights), S8S8, U8U8.

    OMP_NUM_THREADS=1 python benchmarks/int8_weight_schemes.py --checkpoint runs/.../best.pt --data runs/bench/data256

One checkpoint, one calibration (quantile 99.99 on the train split, the ranges every scheme shares),
and each scheme built by ONNX Runtime's ``quantize_static`` from the same FP32 graph, as
:func:`export.quantize.quantize_onnx` builds the CPU flavour; then Spearman against the FP32
graph on the calibration images and on the test split, and the median latency of one image at
the model's input, 1 thread, interleaved rounds. It shows what the 7th weight bit costs (the
default 7-bit weights give the same scores on every x86 CPU, see ``int8_kernel_families.py``) and
why ONNX Runtime's other schemes (S8S8, U8U8) are not used.
Writes ``benchmarks/results/NAME.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_iqa.bench import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# name: (quant format, activation type, weight type, activations symmetric, weights symmetric, reduce_range)
SCHEMES = {
    "U8S8, 7-bit weights (export default)": ("QOperator", "QUInt8", "QInt8", False, True, True),
    "U8S8, 8-bit weights (--cpu-weight-bits 8)": ("QOperator", "QUInt8", "QInt8", False, True, False),
    "S8S8 (symmetric activations)": ("QOperator", "QInt8", "QInt8", True, True, False),
    "U8U8 (asymmetric weights)": ("QOperator", "QUInt8", "QUInt8", False, False, False),
}


def build(fp32: Path, cache: Path, out: Path, scheme: tuple) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from export.quantize import _quiet_ort

    fmt, act, weight, act_sym, weight_sym, reduce = scheme
    with _quiet_ort():
        quantize_static(str(fp32), str(out), None, quant_format=getattr(QuantFormat, fmt),
                        activation_type=getattr(QuantType, act), weight_type=getattr(QuantType, weight),
                        per_channel=True, reduce_range=reduce, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": act_sym, "WeightSymmetric": weight_sym},
                        calibration_cache_path=str(cache))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset: train calibrates, test checks")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds (median of their medians)")
    parser.add_argument("--name", default="int8_weight_schemes")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        print(f"{args.checkpoint}: no such checkpoint", file=sys.stderr)
        return 2

    from edge_iqa.checkpoint import load_checkpoint
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.metrics import srcc
    from export.calibration import calibrate
    from export.onnx import torch2onnx
    from export.quantize import ViewCalibrationReader, calibration_paths, graph_scores, onnx_latency_ms

    model, _ = load_checkpoint(args.checkpoint)
    tmp = Path(tempfile.mkdtemp(prefix="edge-iqa-schemes-"))
    fp32 = torch2onnx(model, tmp / "fp32.onnx", node_scopes=True)
    reader = ViewCalibrationReader(model.config, calibration_paths(args.data, "train", args.calib_images))
    cache = calibrate(fp32, reader, tmp / "cache.json", method="quantile", percentile=99.99)
    calib_batches = list(reader)
    test = ViewCalibrationReader(model.config, [r.path for r in read_manifest(args.data, split="test")])
    test_batches = list(test)
    graphs = {"FP32": fp32, **{name: build(fp32, cache, tmp / f"{i}.onnx", scheme)
                               for i, (name, scheme) in enumerate(SCHEMES.items())}}
    reference = {split: graph_scores(fp32, batches) for split, batches in (("calib", calib_batches),
                                                                            ("test", test_batches))}
    rows = {name: {"scheme": name, "bytes": path.stat().st_size} for name, path in graphs.items()}
    for name, path in graphs.items():
        for split, batches in (("calib", calib_batches), ("test", test_batches)):
            rows[name][f"spearman_{split}"] = float(srcc(graph_scores(path, batches), reference[split]))
        print(f"  {name}: Spearman vs FP32 calib {rows[name]['spearman_calib']:.4f}, test "
              f"{rows[name]['spearman_test']:.4f}", file=sys.stderr, flush=True)
    rounds: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(args.rounds):
        for name, path in graphs.items():
            rounds[name].append(onnx_latency_ms(path, model.config, runs=30, warmup=3, threads=1))
    for name in graphs:
        rows[name]["latency_ms"] = float(np.median(rounds[name]))
        rows[name]["latency_over_fp32"] = rows[name]["latency_ms"] / float(np.median(rounds["FP32"]))
    import onnxruntime

    result = {"date": datetime.date.today().isoformat(),
              "command": shlex.join(["python", "benchmarks/int8_weight_schemes.py", *sys.argv[1:]]),
              "checkpoint": str(args.checkpoint), "preset": model.config.name, "onnxruntime": onnxruntime.__version__,
              "calib_images": reader.images, "test_images": test.images, "machine": machine(),
              "rows": list(rows.values())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [f"# INT8 schemes for ONNX Runtime on CPU ({result['date']})", "",
             f"Command: `OMP_NUM_THREADS=1 {result['command']}`", "",
             f"Checkpoint `{args.checkpoint}` ({model.config.name}); one calibration (quantile 99.99, "
             f"{reader.images} train images) shared by every scheme, QOperator layout, per-channel weights; "
             f"Spearman against the FP32 graph on the calibration images and on the {test.images} test images; "
             f"median latency of one image at the model's input, 1 thread, {args.rounds} interleaved rounds of 30 "
             f"runs. ONNX Runtime {result['onnxruntime']}; {m['cpu']} (VNNI {'yes' if m['vnni'] else 'no'}, "
             f"{m['cores']} cores, load {m['load_average']}).", "",
             "| scheme | Spearman vs FP32 (calib) | (test) | latency ms | × FP32 | file bytes |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['scheme']} | {r['spearman_calib']:.4f} | {r['spearman_test']:.4f} | {r['latency_ms']:.2f} | "
              f"{r['latency_over_fp32']:.2f} | {r['bytes']} |" for r in rows.values()]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
