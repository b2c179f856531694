"""Latency measurement for ``edge-iqa bench``: one artifact in one runtime at one thread count
and batch size, the machine's GEMM peak it is compared with, and end to end from JPEGs on disk.

What a row measures (issue 15 §3; the ultralytics ``benchmark()`` layout of one row per format
with size, metric and ms per image):

- load time (``edge_iqa.runtimes.load_artifact``), the first (cold) run and ``warmup`` runs,
  then timed runs until both ``min_runs`` and ``min_seconds`` are reached (at most
  ``max_runs``): p50 / p90 / p99 / mean latency, throughput = batch / p50;
- peak resident memory while loading and running (Linux: ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``; elsewhere the process peak);
- achieved GMAC/s (the graph's MACs × batch / p50) as a share of this machine's measured GEMM
  peak at the same thread count: the fastest of >= 10 runs of a 1024³ MatMul (FP32) and
  MatMulInteger (U8S8, INT8) in ONNX Runtime's MLAS kernels. The ratio, not the absolute
  time, is what carries across machines.

This module imports no torch: the runtimes it times bring their own dependencies.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.runtimes import BatchFn

GEMM_SIZE = 1024  # M = N = K: 1.07 GMAC per call, large enough for the kernels' steady state


@dataclass(frozen=True)
class Timing:
    """How many runs a latency takes: ``warmup`` untimed runs after the first, then timed runs
    until ``min_runs`` and ``min_seconds`` are both reached, at most ``max_runs``."""

    warmup: int = 3
    min_runs: int = 20
    min_seconds: float = 3.0
    max_runs: int = 500

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_runs < 3 or self.max_runs < self.min_runs or self.min_seconds < 0:
            raise ValueError(f"bad timing {self}: warmup >= 0, 3 <= min_runs <= max_runs, min_seconds >= 0")


def percentiles(times_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min in ms of timed runs (numpy's linear interpolation)."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean()),
            "min_ms": float(ms.min()), "runs": int(ms.size)}


def time_calls(fn, timing: Timing, first: float | None = None) -> dict[str, float]:
    """Latency of ``fn()``: the first call (``first`` seconds when the caller made it), warm-up,
    then percentiles of the timed calls."""
    if first is None:
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
    for _ in range(timing.warmup):
        fn()
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < timing.max_runs and (len(times) < timing.min_runs
                                            or time.perf_counter() - began < timing.min_seconds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"first_ms": first * 1e3, "warmup_runs": timing.warmup, **percentiles(times)}


def example_views(config: ModelConfig, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Random float32 inputs of the shapes the views give at the config's source size:
    (batch, 3, H, W) per view, (batch, T, 3, H, W) for a burst model (T = ``burst.frames``)."""
    rng = np.random.default_rng(seed)
    lead = (batch,) if config.burst is None else (batch, config.burst.frames)
    return [rng.random((*lead, 3, *view.output_size(config.source_size)), dtype=np.float32)
            for view in config.views]


class PeakMemory:
    """Peak resident memory (MB) of this process inside a ``with`` block. On Linux the kernel's
    high-water mark is reset on entry (``/proc/self/clear_refs``), so the peak is the block's
    own; elsewhere it is the process peak so far (``resetting`` says which)."""

    def __enter__(self) -> "PeakMemory":
        self.resetting = _reset_peak_rss()
        self.start_mb = _rss_mb()
        self.peak_mb: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mb = _peak_rss_mb()


def _status_kb(field_name: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def _peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if platform.system() == "Darwin" else peak / 1024  # bytes on macOS, kB on Linux


def measure_latency(batch_fn: BatchFn, config: ModelConfig, batch: int, timing: Timing) -> dict[str, Any]:
    """Latency and throughput of ``batch_fn`` on random inputs of ``batch`` images (bursts)."""
    views = example_views(config, batch)
    start = time.perf_counter()
    out = np.asarray(batch_fn(views))
    first = time.perf_counter() - start
    if not np.all(np.isfinite(out)):
        raise ValueError("the model gave non-finite scores on random inputs")
    result = time_calls(lambda: batch_fn(views), timing, first)
    result["throughput_per_s"] = batch / (result["p50_ms"] / 1e3)
    return result


# --------------------------------------------------------------------------- the machine


def cpu_name() -> str:
    """The CPU's model name as ``lscpu`` prints it (``/proc/cpuinfo`` or the platform otherwise)."""
    import subprocess

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"}).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """The first core's ``flags`` in /proc/cpuinfo (empty where there is none)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86 int8 dot products that accumulate in int32


def int8_sums_saturate() -> bool:
    """Whether ONNX Runtime's U8S8 kernels here add u8×s8 pairs into a saturating int16: x86-64 without
    VNNI (AVX2 ``vpmaddubsw``). VNNI cores and ARM64 accumulate in int32."""
    flags = cpu_flags()
    return platform.machine().lower() in ("x86_64", "amd64") and bool(flags) and not (
        flags & set(INT8_DOT_FLAGS))


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, the int8 dot-product instructions, load."""
    flags = cpu_flags()
    vnni = sorted(f for f in flags if f in INT8_DOT_FLAGS)
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu_name(), "arch": platform.machine(), "cores": os.cpu_count(), "vnni": bool(vnni),
            "int8_dot_product_flags": vnni, "avx512": any(f.startswith("avx512") for f in flags),
            "platform": platform.platform(), "load_average": load}


def gemm_peak(threads: int, timing: Timing = Timing(warmup=2, min_runs=10, min_seconds=1.0)) -> dict[str, Any]:
    """This machine's GEMM GMAC/s at ``threads`` threads, FP32 (MatMul) and INT8 (MatMulInteger,
    uint8 x int8), in ONNX Runtime; None entries where onnx or onnxruntime is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        return {"fp32_gmacs": None, "int8_gmacs": None, "note": f"not measured: {err}"}
    result: dict[str, Any] = {"size": GEMM_SIZE, "threads": threads, "how": "ONNX Runtime MatMul / MatMulInteger"}
    for kind in ("fp32", "int8"):
        session, feeds = _gemm_session(kind, threads)
        timed = time_calls(lambda: session.run(None, feeds), timing)
        result[f"{kind}_gmacs"] = GEMM_SIZE ** 3 / (timed["min_ms"] / 1e3) / 1e9  # a peak: the fastest run
    result["int8_over_fp32"] = result["int8_gmacs"] / result["fp32_gmacs"]
    return result


def _gemm_session(kind: str, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = GEMM_SIZE
    rng = np.random.default_rng(0)
    if kind == "fp32":
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        types, out = (TensorProto.FLOAT, TensorProto.FLOAT), TensorProto.FLOAT
    else:
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = rng.integers(-127, 127, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        types, out = (TensorProto.UINT8, TensorProto.INT8), TensorProto.INT32
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", types[0], [n, n]),
                                               helper.make_tensor_value_info("b", types[1], [n, n])],
                              [helper.make_tensor_value_info("y", out, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, {"a": a, "b": b}


# --------------------------------------------------------------------------- end to end


def write_photos(folder: str | Path, n: int, size: tuple[int, int], seed: int = 0, quality: int = 90) -> list[Path]:
    """``n`` photo-like JPEGs of ``size`` (width, height): smooth gradients and shapes with mild
    noise, so they compress and decode like camera JPEGs, not like white noise."""
    from PIL import Image, ImageDraw, ImageFilter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for i in range(n):
        small = (max(8, width // 8), max(8, height // 8))
        base = Image.new("RGB", small, tuple(int(c) for c in rng.integers(40, 200, 3)))
        draw = ImageDraw.Draw(base)
        for _ in range(12):
            x0, y0 = rng.integers(0, small[0]), rng.integers(0, small[1])
            x1, y1 = x0 + rng.integers(4, small[0] // 2 + 5), y0 + rng.integers(4, small[1] // 2 + 5)
            draw.ellipse((int(x0), int(y0), int(x1), int(y1)), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        photo = base.filter(ImageFilter.GaussianBlur(2)).resize(size, Image.BICUBIC)
        noise = rng.normal(0, 4, (height, width, 1)).astype(np.float32)
        pixels = np.clip(np.asarray(photo, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:02d}.jpg"
        Image.fromarray(pixels).save(path, quality=quality)
        paths.append(path)
    return paths


def end_to_end(scorer, files: Sequence[str | Path], batch: int, workers: int) -> dict[str, Any]:
    """Per image, from JPEG on disk: decode + views alone, then ``score_paths`` one image at a
    time in the calling thread, then ``score_paths`` in batches of ``batch`` with ``workers``
    decoding threads (decode overlapping inference). Inference alone is the row's p50."""
    files = [str(f) for f in files]
    scorer.views_of(files[0])  # page cache and lazy imports, not counted
    start = time.perf_counter()
    for f in files:
        scorer.views_of(f)
    decode = (time.perf_counter() - start) / len(files)
    start = time.perf_counter()
    rows = scorer.score_paths(files, batch_size=1, num_workers=0)
    serial = (time.perf_counter() - start) / len(files)
    start = time.perf_counter()
    scorer.score_paths(files, batch_size=batch, num_workers=workers)
    batched = time.perf_counter() - start
    failed = [r.error for r in rows if r.error]
    return {"images": len(files), "decode_views_ms": decode * 1e3, "score_ms_per_image": serial * 1e3,
            "batch": batch, "workers": workers, "batch_throughput_per_s": len(files) / batched,
            "failed": len(failed), "first_error": failed[0] if failed else None}


def as_dict(timing: Timing) -> dict[str, Any]:
    return asdict(timing)
