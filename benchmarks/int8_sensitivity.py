"""Which stages of a student cost accuracy in INT8: per-stage sensitivity, then float stages by noise.

    OMP_NUM_THREADS=1 python benchmarks/int8_sensitivity.py --checkpoint runs/export_synth/distilled-student.pt \\
        --data runs/bench/data256

Post-training quantization noise adds up roughly stage by stage, so the classic way to find
the layers worth leaving in float is to quantize one stage at a time and measure the output
noise (the layer-wise sensitivity analysis of Krishnamoorthi, "Quantizing deep convolutional
networks for efficient inference: a whitepaper", 2018). For each stage group of
:func:`export.quantize.layer_groups` this script builds the ONNX Runtime INT8 graph with *only
that stage* quantized (the same ``quantize_onnx`` and calibration the export uses) and records
its SQNR and Spearman against the FP32 graph on one split. Then it leaves stages in float in
order of their noise, largest first, and records each step's agreement, MAC share and size:
the float set to pass to ``edge-iqa export --float-layer`` if its cost is acceptable.

SQNR (dB) is the steadier guide: Spearman on a few hundred images moves by ±0.01 between
calibrations. Measure on val, check the choice on test with ``benchmarks/export_synth.py``.
Results go to ``benchmarks/results/int8_sensitivity.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def split_batches(config, data: Path, split: str) -> list[dict[str, np.ndarray]]:
    from export.quantize import ViewCalibrationReader, calibration_paths

    return list(ViewCalibrationReader(config, calibration_paths(data, split, 10**6)))


def sensitivity(checkpoint: Path, data: Path, *, flavour: str, method: str, split: str, target: float,
                work: Path) -> dict:
    import onnx

    from edge_iqa.checkpoint import load_checkpoint
    from export.onnx import torch2onnx
    from export.parity import score_agreement
    from export.pipeline import deployable_bytes
    from export.quantize import (
        ViewCalibrationReader, calibrate, calibration_paths, graph_scores, group_macs, layer_groups, quantize_onnx,
    )

    model, _ = load_checkpoint(checkpoint)
    config = model.config
    fp32 = torch2onnx(model.eval(), work / "fp32.onnx", node_scopes=True)
    cache = calibrate(fp32, ViewCalibrationReader(config, calibration_paths(data, "train", 256)),
                      work / f"calibration_{method}.json", method=method)
    batches = split_batches(config, data, split)
    reference = graph_scores(fp32, batches)
    groups = layer_groups(fp32)
    macs = group_macs(fp32, groups)
    total_macs = sum(macs.values()) or 1
    every_node = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node]
    fp32_bytes = deployable_bytes(fp32)

    def measure(float_nodes: list[str]) -> dict:
        path = quantize_onnx(fp32, work / "trial.onnx", None, flavour=flavour, method=method,
                             float_nodes=float_nodes, cache=cache)
        agreement = score_agreement(reference, graph_scores(path, batches))
        return {"sqnr_db": agreement["sqnr_db"], "spearman_vs_fp32": agreement["spearman_vs_fp32"],
                "max_abs_delta": agreement["max_abs_delta"], "size_vs_fp32": deployable_bytes(path) / fp32_bytes}

    stages = [g for g in groups if macs[g] or g == "head"]  # the input normalisation has nothing to quantize
    alone = {}
    for g in stages:
        alone[g] = {**measure([n for n in every_node if n not in groups[g]]), "mac_share": macs[g] / total_macs}
        print(f"{flavour} only {g:24s} INT8: SQNR {alone[g]['sqnr_db']:5.1f} dB  "
              f"Spearman {alone[g]['spearman_vs_fp32']:.4f}", flush=True)
    steps = [{"float": [], "mac_share": 0.0, **measure([])}]
    for g in sorted(stages, key=lambda s: alone[s]["sqnr_db"]):  # noisiest stage first
        if steps[-1]["spearman_vs_fp32"] >= target:
            break
        chosen = steps[-1]["float"] + [g]
        steps.append({"float": chosen, "mac_share": sum(macs[c] for c in chosen) / total_macs,
                      **measure([n for c in chosen for n in groups[c]])})
        print(f"{flavour} float {'+'.join(chosen)}: SQNR {steps[-1]['sqnr_db']:.1f} dB  "
              f"Spearman {steps[-1]['spearman_vs_fp32']:.4f}  MACs in float {steps[-1]['mac_share']:.2f}", flush=True)
    return {"flavour": flavour, "method": method, "split": split, "n": int(reference.size), "target": target,
            "model": config.name, "alone": alone, "steps": steps}


def markdown(results: list[dict], command: str, checkpoint: Path, data: Path) -> str:
    lines = ["# INT8 sensitivity per stage", "",
             f"Checkpoint `{checkpoint}` ({results[0]['model']}), data `{data}`, measured on the "
             f"**{results[0]['split']}** split (n={results[0]['n']}); calibration: 256 train images, "
             f"{results[0]['method']}. Generated by `{command}`.", "",
             "Agreement is with the FP32 ONNX graph in ONNX Runtime. *cpu* = U8S8 QDQ, *tensorrt* = S8S8 QDQ "
             "run in ONNX Runtime (simulated: no TensorRT here).", ""]
    for r in results:
        lines += [f"## {r['flavour']}: one stage in INT8, the rest in float", "",
                  "| stage | MAC share | SQNR dB | Spearman vs FP32 |", "|---|---|---|---|"]
        lines += [f"| {g} | {a['mac_share']:.3f} | {a['sqnr_db']:.1f} | {a['spearman_vs_fp32']:.4f} |"
                  for g, a in sorted(r["alone"].items(), key=lambda kv: kv[1]["sqnr_db"])]
        lines += ["", f"## {r['flavour']}: stages left in float, noisiest first (stop at Spearman {r['target']})", "",
                  "| left in float | MAC share in float | size × FP32 | SQNR dB | Spearman vs FP32 | max \\|Δ\\| |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {', '.join(s['float']) or 'none'} | {s['mac_share']:.2f} | {s['size_vs_fp32']:.2f} | "
                  f"{s['sqnr_db']:.1f} | {s['spearman_vs_fp32']:.4f} | {s['max_abs_delta']:.3f} |" for s in r["steps"]]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with train and --split")
    parser.add_argument("--split", default="val", help="split to measure on (default val: keep test for the check)")
    parser.add_argument("--flavour", action="append", choices=("cpu", "tensorrt"), help="default: both")
    parser.add_argument("--calib-method", default="percentile", choices=("minmax", "percentile", "entropy"))
    parser.add_argument("--target", type=float, default=0.98, help="stop leaving stages in float at this Spearman")
    parser.add_argument("--name", default="int8_sensitivity", help="results file stem")
    args = parser.parse_args()
    from edge_iqa.errors import EdgeIQAError

    results = []
    with tempfile.TemporaryDirectory(prefix="edge-iqa-sensitivity-") as tmp:
        for flavour in args.flavour or ["cpu", "tensorrt"]:
            work = Path(tmp) / flavour
            work.mkdir()
            try:
                results.append(sensitivity(args.checkpoint, args.data, flavour=flavour, method=args.calib_method,
                                           split=args.split, target=args.target, work=work))
            except EdgeIQAError as err:
                raise SystemExit(f"int8_sensitivity: {err}") from None
    command = "python benchmarks/int8_sensitivity.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(results, command, args.checkpoint, args.data))
    print(f"wrote {RESULTS / (args.name + '.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
