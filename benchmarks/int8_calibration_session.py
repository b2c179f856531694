"""Memory of ONNX Runtime's MinMax calibration session by session option, on one FP32 graph.

    OMP_NUM_THREADS=1 python benchmarks/int8_calibration_session.py runs/cal/aim720/model_fp32.onnx

Each option set runs in a fresh process: ONNX Runtime's MinMax augmented graph (ReduceMin and
ReduceMax after every calibrated tensor) on ``--images`` random inputs at the graph's shape,
and the growth of the process's peak resident memory (``VmHWM`` after the runs minus ``VmRSS``
before them) is printed. ``default`` is the session ONNX Runtime's calibrator makes itself;
``lean`` is :func:`export.calibration.lean_session` (priority-based order, no memory arena).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MODES = ("default", "no-arena", "priority", "lean")


def memory_mb() -> dict[str, float]:
    fields = ("VmHWM", "VmRSS")
    return {line.split(":")[0]: int(line.split()[1]) / 1024
            for line in open("/proc/self/status") if line.startswith(fields)}


def probe(onnx_path: str, mode: str, images: int) -> dict:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from export.calibration import _calibrated_ops, lean_session

    graph = onnx.load(onnx_path, load_external_data=False).graph
    shapes = {i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim] for i in graph.input}
    del graph
    calibrator = create_calibrator(Path(onnx_path), _calibrated_ops(),
                                   augmented_model_path=str(Path(tempfile.mkdtemp()) / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax)
    if mode == "lean":
        lean_session(calibrator)
    elif mode != "default":
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.enable_cpu_mem_arena = mode != "no-arena"
        if mode == "priority":
            options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, options,
                                                        providers=calibrator.execution_providers)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = memory_mb()["VmRSS"]
    rng = np.random.default_rng(0)
    for _ in range(images):
        calibrator.infer_session.run(None, {n: rng.random(s, dtype=np.float32) for n, s in shapes.items()})
    return {"mode": mode, "rss_before_mb": round(before, 1), "peak_growth_mb": round(memory_mb()["VmHWM"] - before, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", help="an FP32 edge-iqa export (model_fp32.onnx)")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--mode", choices=MODES, help="one mode in this process (default: each in its own)")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(probe(args.onnx, args.mode, args.images)))
        return 0
    for mode in MODES:
        done = subprocess.run([sys.executable, __file__, args.onnx, "--images", str(args.images), "--mode", mode],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        print(done.stdout.strip() or f'{{"mode": "{mode}", "error": {json.dumps(done.stderr.strip()[-300:])}}}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
