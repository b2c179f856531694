"""Do INT8 exports give the same scores with and without VNNI? The export fixture on two kernel families.

ONNX Runtime picks its integer GEMM kernels by CPU: with AVX-512 VNNI (or AVX-VNNI) it multiplies
u8×s8 into int32 (``vpdpbusd``); on an AVX2-only core such as AMD Zen 3 it uses ``vpmaddubsw``,
which adds two u8×s8 products into a saturating int16. This script exports the test fixture
(``tests/fixtures/student.pt``) to INT8 as ``edge-iqa export`` does, plus the same network with
full 8-bit CPU weights, scores the check split natively and under ``qemu-x86_64 -cpu MODEL``
(user-mode emulation of an AVX2-only CPU, so ONNX Runtime really takes its AVX2 kernels), and
compares the scores. ``--checkpoint CKPT --data DATA`` does the same for a trained checkpoint (its
test split; quantile 99.99 calibration on its train split) instead of the fixture.

    python benchmarks/int8_kernel_families.py --work runs/kernel_families [--cpu EPYC-Milan]
    python benchmarks/int8_kernel_families.py --checkpoint runs/.../best.pt --data runs/bench/data256 \
        --work runs/kernel_families_s0 --name int8_kernel_families_s0

Needs ``qemu-user`` (Debian: ``apt-get install qemu-user``); the emulated run takes minutes.
Writes ``benchmarks/results/int8_kernel_families.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_iqa.bench import cpu_name, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_fixture", ROOT / "tests" / "fixtures" / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(work: Path, checkpoint: Path | None = None, data: Path | None = None) -> dict[str, Path]:
    """The artifacts to compare, and the check split's view arrays in ``work/inputs.npz``."""
    from edge_iqa.checkpoint import load_checkpoint
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.scoring import iter_view_batches
    from export.formats import ExportConfig
    from export.pipeline import export_model

    if checkpoint is None:
        fixture = _fixture_module()
        data = work / "data"
        if not (data / "manifest.csv").is_file():
            fixture.build_data(data)
        checkpoint, calib, split = fixture.STUDENT, fixture.CALIB, fixture.CHECK_SPLIT
    else:
        calib, split = {"calib_method": "quantile", "percentile": 99.99}, "test"
    model, _ = load_checkpoint(checkpoint)
    graphs: dict[str, Path] = {}
    for fmt, bits, name in (("onnx", 7, "onnx int8, 7-bit weights (default)"), ("onnx", 8, "onnx int8, 8-bit weights"),
                            ("tensorrt", 7, "tensorrt int8")):
        artifact = export_model(model, ExportConfig(format=fmt, precision="int8", cpu_weight_bits=bits, **calib),
                                work / f"{fmt}-{bits}", calib=data)
        graphs[name] = artifact.graph
    from export.onnx import torch2onnx

    graphs["fp32"] = torch2onnx(model, work / "fp32.onnx")
    paths = [r.path for r in read_manifest(data, split=split)]
    views: list[list[np.ndarray]] = [[] for _ in model.config.views]
    for batch, _, _ in iter_view_batches(paths, model.config, 16):
        for i, array in enumerate(batch):
            views[i].append(array)
    np.savez(work / "inputs.npz", *[np.concatenate(v) for v in views])
    (work / "graphs.json").write_text(json.dumps({k: str(v) for k, v in graphs.items()}, indent=2))
    return graphs


def score(work: Path, tag: str) -> None:
    """Score every graph on the saved views with ONNX Runtime (1 thread) into ``scores_TAG.npz``."""
    import onnxruntime as ort

    inputs = np.load(work / "inputs.npz")
    arrays = [inputs[k] for k in sorted(inputs.files)]
    out = {}
    for name, path in json.loads((work / "graphs.json").read_text()).items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        out[name] = np.concatenate([session.run(None, dict(zip(names, [a[i:i + 16] for a in arrays])))[0].reshape(-1)
                                    for i in range(0, len(arrays[0]), 16)])
    np.savez(work / f"scores_{tag}.npz", **out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "kernel_families")
    parser.add_argument("--cpu", default="EPYC-Milan", help="qemu CPU model without VNNI (Zen 3: EPYC-Milan)")
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint instead of the test fixture")
    parser.add_argument("--data", type=Path, help="with --checkpoint: its dataset (train calibrates, test scores)")
    parser.add_argument("--name", default="int8_kernel_families", help="results file stem")
    parser.add_argument("--score-only", metavar="TAG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score_only:
        score(args.work, args.score_only)
        return 0
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        print("int8_kernel_families: qemu-x86_64 not found; apt-get install qemu-user", file=sys.stderr)
        return 2
    from scipy.stats import spearmanr

    if (args.checkpoint is None) != (args.data is None):
        print("int8_kernel_families: --checkpoint and --data go together", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    build(args.work, args.checkpoint, args.data)
    me = [sys.executable, str(Path(__file__).resolve()), "--work", str(args.work), "--score-only"]
    subprocess.run([*me, "native"], check=True)
    subprocess.run([qemu, "-cpu", args.cpu, *me, "emulated"], check=True, stderr=subprocess.DEVNULL)
    native, emulated = np.load(args.work / "scores_native.npz"), np.load(args.work / "scores_emulated.npz")
    fp32 = native["fp32"]
    rows = []
    for name in native.files:
        rows.append({"graph": name,
                     "max_abs_diff_between_families": float(np.abs(native[name] - emulated[name]).max()),
                     "spearman_vs_fp32_native": float(spearmanr(fp32, native[name])[0]),
                     "spearman_vs_fp32_emulated": float(spearmanr(fp32, emulated[name])[0])})
    qemu_version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    import onnxruntime

    record = {
        "command": "python benchmarks/int8_kernel_families.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "native_cpu": cpu_name(), "native_has_vnni": machine()["vnni"],
        "emulated_cpu": f"{args.cpu} under {qemu_version} (AVX2, no VNNI)",
        "onnxruntime": onnxruntime.__version__, "n_images": int(len(fp32)), "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# INT8 scores on two x86 kernel families", "",
        f"Command: `{record['command']}`", "",
        f"Native: {record['native_cpu']} (VNNI: {'yes' if record['native_has_vnni'] else 'no'}); emulated: "
        f"{record['emulated_cpu']}; ONNX Runtime {record['onnxruntime']}, 1 thread; "
        + (f"the export fixture's check split, n = {record['n_images']}. INT8 exports use the fixture's calibration "
           "(minmax, 128 train images)" if args.checkpoint is None else
           f"checkpoint `{args.checkpoint}`, test split of `{args.data}`, n = {record['n_images']}. INT8 exports "
           "calibrate with quantile 99.99 on 256 train images")
        + " and no float layers; the 8-bit-weight row is the same U8S8 QOperator graph with `--cpu-weight-bits 8` "
        "(no `reduce_range`).", "",
        "| graph | max \\|score difference\\| between the families | Spearman vs FP32 (native) | (emulated AVX2) |",
        "|---|---|---|---|",
        *[f"| {r['graph']} | {r['max_abs_diff_between_families']:.2e} | {r['spearman_vs_fp32_native']:.4f} | "
          f"{r['spearman_vs_fp32_emulated']:.4f} |" for r in rows], "",
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
