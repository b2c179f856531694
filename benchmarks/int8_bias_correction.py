"""Does empirical bias correction bring PTQ INT8 closer to FP32? A probe, not an export option.

Bias correction (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019, §4.2; its empirical form) shifts each conv's bias by the mean error that
quantization adds to that conv's output channel, measured on calibration images, so the next
layer sees an unbiased input. Here, layer by layer in graph order (each correction is measured on
the INT8 graph that already holds the corrections before it):

1. the FP32 ONNX graph's per-channel mean of every Conv output on the calibration images;
2. the same means in the QDQ INT8 graph (Conv outputs are float there, so they can be read);
3. the conv's bias in the FP32 graph minus the difference; quantize again with the same ranges.

Then the corrected and the plain INT8 graph are scored against the FP32 graph on val and test
(Spearman vs FP32, SRCC drop), as ``--calib-method auto`` ranks candidates::

    OMP_NUM_THREADS=1 python benchmarks/int8_bias_correction.py CKPT --data runs/bench/data256 --name int8_bias_correction
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_iqa.bench import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def conv_output_means(graph: Path, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The per-channel mean of every Conv output of ``graph`` (graph order) over ``batches``."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(graph))
    tensors = [n.output[0] for n in model.graph.node if n.op_type == "Conv"]
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in outputs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sums, count = [0.0] * len(tensors), 0
    for feeds in batches:
        for k, out in enumerate(session.run(tensors, feeds)):
            sums[k] = sums[k] + out.astype(np.float64).mean(axis=(2, 3)).sum(axis=0)
        count += next(iter(feeds.values())).shape[0]
    return [s / count for s in sums]


def bias_corrected(fp32: Path, quantize, batches: list, folder: Path) -> tuple[Path, float]:
    """The INT8 graph of ``fp32`` with every Conv bias corrected in graph order; and the mean |shift|."""
    import onnx
    from onnx import numpy_helper

    reference = conv_output_means(fp32, batches)
    model = onnx.load(str(fp32))
    biases = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if any(len(n.input) < 3 or n.input[2] not in biases for n in convs):
        raise SystemExit(f"{fp32}: a Conv without a bias initializer; bias correction needs BatchNorm folded")
    current, shifts = quantize(fp32, folder / "int8_0.onnx"), []
    for k, conv in enumerate(convs):
        shift = conv_output_means(current, batches)[k] - reference[k]
        bias = biases[conv.input[2]]
        bias.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(bias) - shift).astype(np.float32), bias.name))
        shifts.append(float(np.abs(shift).mean()))
        onnx.save(model, str(folder / "fp32_corrected.onnx"))
        current = quantize(folder / "fp32_corrected.onnx", folder / f"int8_{(k + 1) % 2}.onnx")
    return current, float(np.mean(shifts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="train calibrates, val and test score")
    parser.add_argument("--flavour", choices=("cpu", "tensorrt"), default="cpu")
    parser.add_argument("--weight-bits", type=int, choices=(7, 8), default=7, help="the cpu flavour's weights")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--correction-images", type=int, default=64, help="calibration images the means are read on")
    parser.add_argument("--name", default="int8_bias_correction")
    args = parser.parse_args()

    from edge_iqa.checkpoint import load_checkpoint
    from export.calibration import calibrate
    from export.onnx import torch2onnx
    from export.quantize import SelectionSplit, calibration_reader, quantize_onnx

    model, _ = load_checkpoint(args.checkpoint)
    config = model.config
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-iqa-bias-") as tmp:
        folder = Path(tmp)
        fp32 = torch2onnx(model, folder / "fp32.onnx")
        reader = calibration_reader(config, args.data, "train", args.calib_images)
        cache = calibrate(fp32, reader, folder / "ranges.json", method="quantile", percentile=99.99)

        def quantize(src: Path, dst: Path) -> Path:
            return quantize_onnx(src, dst, None, flavour=args.flavour, layout="qdq", method="quantile",
                                 percentile=99.99, cache=cache, weight_bits=args.weight_bits)

        reader.rewind()
        batches = []
        while (feeds := reader.get_next()) is not None and sum(next(iter(b.values())).shape[0] for b in batches) < args.correction_images:
            batches.append(feeds)
        plain = quantize(fp32, folder / "plain.onnx")
        corrected, mean_shift = bias_corrected(fp32, quantize, batches, folder)
        figures = {split: SelectionSplit(config, args.data, split).measure(fp32, [plain, corrected])
                   for split in ("val", "test")}
    result = {"date": datetime.date.today().isoformat(),
              "command": shlex.join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "checkpoint": str(args.checkpoint), "flavour": args.flavour, "weight_bits": args.weight_bits,
              "calibration": "quantile 99.99", "calib_images": reader.images,
              "correction_images": sum(next(iter(b.values())).shape[0] for b in batches), "mean_abs_bias_shift": mean_shift,
              "figures": {s: {"plain": f[0], "corrected": f[1]} for s, f in figures.items()},
              "seconds": round(time.perf_counter() - started, 1), "machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# INT8 bias correction probe ({result['date']})", "", f"Command: `{result['command']}`", "",
             f"Checkpoint `{args.checkpoint}`; {args.flavour} QDQ"
             + (f" with {args.weight_bits}-bit weights" if args.flavour == "cpu" else "")
             + f", quantile 99.99 ranges from {reader.images} train images; biases corrected layer by layer on "
             f"{result['correction_images']} of them (mean |shift| {mean_shift:.4g}). Against the FP32 graph in ONNX Runtime.",
             "", "| split | graph | Spearman vs FP32 | SRCC drop |", "|---|---|---|---|"]
    for split, pair in result["figures"].items():
        for name, f in pair.items():
            lines.append(f"| {split} | {name} | {f['spearman_vs_fp32']:.4f} | {f['srcc_drop']:+.4f} |")
    lines += ["", f"{result['seconds']} s; machine: {result['machine']}", ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
