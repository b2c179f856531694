"""Streaming INT8 calibration: activation ranges from one image at a time, statistics reduced as they come.

ONNX Runtime's calibrators (``onnxruntime.quantization.calibrate``) run an augmented copy of the
FP32 graph. MinMax appends a ReduceMin and a ReduceMax to every tensor it will quantize; the
histogram calibrators (percentile, entropy) make every such tensor a graph output, so one
``session.run`` holds every activation of its batch, and ``collect_data`` keeps the outputs of
every batch its reader gives before it makes one histogram of them all. Fed a batch of 8 views at
a time, calibrating ``aim-baseline`` at 360×640 peaked at +2.9 GB over the FP32 graph (+3.2 GB
for quantile), and the peak scales with the pixels of a batch: the 12.8 GB of issue 14 at 720×1280
(``benchmarks/results/int8_calibration_memory.md``).

Here every batch of the reader is cut into runs of ``images_per_run`` images (a burst model: whole
bursts) and each run's statistics are folded into running totals before the next run, so memory
holds one image's activations and the totals, whatever the number of images or the batch size:

- ``minmax``: ONNX Runtime's MinMax calibrator given one run at a time; it merges each run's
  minima and maxima into its running range (a min of mins: exactly the range of all images).
- ``percentile``, ``entropy``: two passes. The first finds each tensor's min and max (and min |x|),
  the second adds up each tensor's histogram over the span ONNX Runtime would have chosen had it
  seen all values at once (its bins, its ``num_bins``); ONNX Runtime's ``HistogramCollector`` then
  finds the thresholds on those histograms. That is the result of ONNX Runtime's calibrator fed
  every image in one ``collect_data`` call, without holding the images' activations; fed batch
  by batch instead, ONNX Runtime re-bins as ranges grow and its result depends on the batch size.
- ``quantile``: each tail at its own percentile (see :mod:`export.quantize`), from the same two
  passes over a ``bins``-bin histogram of each tensor's [min, max].

Percentile and entropy come from Migacz, "8-bit Inference with TensorRT" (GTC 2017) and Wu et al.,
"Integer Quantization for Deep Learning Inference" (2020).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edge_iqa.errors import EdgeIQAError

CALIB_METHODS = ("minmax", "percentile", "entropy", "quantile")
PERCENTILE_BINS = 2048  # ONNX Runtime's default for percentile
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 512, 128  # see calibrate()
QUANTILE_BINS = 4096
IMAGES_PER_RUN = 1  # one image (burst) per session run: the peak is one image's activations


def split_batch(batch: dict[str, np.ndarray], size: int | None) -> Iterator[dict[str, np.ndarray]]:
    """``batch`` (feeds by input name, batch first) in runs of at most ``size`` images (None: whole)."""
    count = len(next(iter(batch.values())))
    step = count if size is None else size
    for start in range(0, count, step):
        yield {name: value[start:start + step] for name, value in batch.items()}


@dataclass(frozen=True)
class Candidate:
    """One calibration setting: a method and, for percentile and quantile, its percentile."""

    method: str
    percentile: float = 99.999

    def __post_init__(self) -> None:
        if self.method not in CALIB_METHODS:
            raise EdgeIQAError(f"unknown calibration method {self.method!r}; choose one of {', '.join(CALIB_METHODS)}")

    @property
    def label(self) -> str:
        """``minmax``, ``entropy``, ``percentile:99.99``, ``quantile:99.9``: what ``--calib-candidate`` takes."""
        return self.method if self.method in ("minmax", "entropy") else f"{self.method}:{self.percentile:g}"

    @classmethod
    def parse(cls, text: str) -> "Candidate":
        method, _, percentile = text.partition(":")
        if percentile and method in ("percentile", "quantile"):
            try:
                value = float(percentile)
            except ValueError:
                value = float("nan")
            if not 50.0 < value <= 100.0:
                raise EdgeIQAError(f"--calib-candidate {text!r}: the percentile must be a number in (50, 100]")
            return cls(method, value)
        if percentile or method not in CALIB_METHODS:
            raise EdgeIQAError(f"--calib-candidate {text!r} is not a calibration; give minmax, entropy, "
                               "percentile:P or quantile:P (e.g. quantile:99.99)")
        return cls(method)


# --calib-method auto: ONNX Runtime's methods and the per-tail quantile, at the percentiles around those
# benchmarks/results/int8_calibration_study.md found best on the distilled students
AUTO_CANDIDATES = (Candidate("minmax"), Candidate("percentile", 99.99), Candidate("percentile", 99.999),
                   Candidate("entropy"), Candidate("quantile", 99.9), Candidate("quantile", 99.99),
                   Candidate("quantile", 99.999))
# CoreML W8A8 calibrates with coremltools' observers: min/max, or each tail narrowed to its quantile
COREML_AUTO_CANDIDATES = (Candidate("minmax"), Candidate("quantile", 99.9), Candidate("quantile", 99.99),
                          Candidate("quantile", 99.999))
# what each histogram method bins: |x| over [min |x|, max |x|] (ONNX Runtime's symmetric percentile), x over
# [-max |x|, max |x|] (its entropy), x over [min, max] (quantile); and in how many bins
_HISTOGRAMS = {"percentile": ("abs", PERCENTILE_BINS), "entropy": ("signed", ENTROPY_BINS),
               "quantile": ("span", QUANTILE_BINS)}


def calibrate(fp32_path: str | Path, reader, cache: str | Path, *, method: str = "minmax",
              percentile: float = 99.999, images_per_run: int | None = IMAGES_PER_RUN) -> Path:
    """Activation ranges of the FP32 graph on the reader's images, written to ``cache`` (JSON).

    ``reader``: re-iterable batches with ``rewind()`` and an ``images`` count
    (:class:`export.quantize.ViewCalibrationReader`). ``images_per_run``: images per ONNX Runtime
    run (None: the reader's batches as they come; memory grows with the batch). Percentile uses
    2048 bins; entropy 512 bins for 128 quantized levels (ONNX Runtime's default of 128 bins leaves
    the KL search nothing to search, and its pure-Python search over TensorRT's 2048 bins takes
    minutes for a small student). Percentile is ONNX Runtime's (one threshold from |x| for both
    tails); quantile each tail at its own percentile.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    from export.quantize import _quiet_ort

    candidate = Candidate(method, percentile)
    if images_per_run is not None and images_per_run < 1:
        raise EdgeIQAError(f"images per calibration run must be at least 1, got {images_per_run}")
    reader.rewind()
    if method == "minmax":  # ONNX Runtime's ReduceMin/ReduceMax graph: no activation leaves the run
        with tempfile.TemporaryDirectory(prefix="edge-iqa-calib-") as tmp, _quiet_ort():
            calibrator = create_calibrator(Path(fp32_path), _calibrated_ops(),
                                           augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=CalibrationMethod.MinMax)
            lean_session(calibrator)
            ranges = minmax_ranges(calibrator, reader, images_per_run)
            del calibrator
    else:
        with _histogram_calibrator(fp32_path) as calibrator:
            (ranges,) = candidate_ranges(TensorStream(calibrator, reader, images_per_run), [candidate])
    save_tensors_data(ranges, Path(cache))
    return Path(cache)


def calibrate_candidates(fp32_path: str | Path, reader, candidates: Sequence[Candidate], folder: str | Path, *,
                         images_per_run: int | None = IMAGES_PER_RUN) -> list[Path]:
    """Ranges of every candidate from one streaming calibration (two passes), as cache files in ``folder``."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reader.rewind()
    with _histogram_calibrator(fp32_path) as calibrator:
        found = candidate_ranges(TensorStream(calibrator, reader, images_per_run), candidates)
    paths = []
    for c, ranges in zip(candidates, found):
        paths.append(folder / f"calibration_{c.label.replace(':', '_')}.json")
        save_tensors_data(ranges, paths[-1])
    return paths


@contextlib.contextmanager
def _histogram_calibrator(fp32_path: str | Path):
    """ONNX Runtime's percentile calibrator, for its augmented graph: every calibrated tensor an output."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from export.quantize import _quiet_ort

    with tempfile.TemporaryDirectory(prefix="edge-iqa-calib-") as tmp, _quiet_ort():
        calibrator = create_calibrator(Path(fp32_path), _calibrated_ops(),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Percentile)
        lean_session(calibrator)
        try:
            yield calibrator
        finally:
            del calibrator


def lean_session(calibrator) -> None:
    """Give ``calibrator`` a session that frees each activation as soon as its last consumer ran.

    ONNX Runtime's calibrators run their augmented graph in the default (topological) order, in
    which the ReduceMin/ReduceMax pairs of the MinMax graph run late and every activation they
    read stays alive until then: +1409 MB for 720×1280 images of ``aim-baseline``. In
    ``PRIORITY_BASED`` order, without the memory arena (which keeps the peak once reached), the
    same runs take +182 MB and give the same values; the graph is the same, so are the ranges
    (``benchmarks/int8_calibration_session.py``). ONNX Runtime's ``create_calibrator`` has already
    built a default session by then; building this one costs about as much again, once per export.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as ONNX Runtime's own
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.enable_cpu_mem_arena = False
    calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, options,
                                                    providers=calibrator.execution_providers)


def _calibrated_ops() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def require_images(reader) -> None:
    if reader.images == 0:
        why = getattr(reader, "first_error", None)
        raise EdgeIQAError("no calibration image gave the model's views; check the --calib dataset"
                           + (f" (first: {why})" if why else ""))


class _OneBatch:
    """A ``CalibrationDataReader`` that gives one batch, then None."""

    def __init__(self, batch: dict[str, np.ndarray]):
        self.batch = batch

    def get_next(self):
        batch, self.batch = self.batch, None
        return batch


def minmax_ranges(calibrator, reader, images_per_run: int | None):
    """ONNX Runtime's MinMax ranges, one run at a time (it merges each run into its running range)."""
    reader.rewind()
    for batch in reader:
        for run in split_batch(batch, images_per_run):
            calibrator.collect_data(_OneBatch(run))
    require_images(reader)
    return calibrator.compute_data()


class TensorStream:
    """Every calibrated tensor of the histogram calibrator's augmented graph, one run at a time.

    :meth:`fold` re-reads the reader from the start and hands each tensor of each run (graph
    inputs included) to a function. It drops a run's outputs before the next run starts: a
    generator that yielded them would keep the previous run's outputs, all of one image's
    activations, alive through the next ``session.run`` and double the peak (+327 MB against
    +165 MB of outputs per image for ``aim-baseline`` at 360×640).
    """

    def __init__(self, calibrator, reader, images_per_run: int | None):
        self.session, self.reader, self.images_per_run = calibrator.infer_session, reader, images_per_run
        self.names = set(calibrator.tensors_to_calibrate)
        inputs = {i.name for i in self.session.get_inputs()}  # visited from the run's feed, never fetched twice
        self.fetch = [o.name for o in self.session.get_outputs() if o.name in self.names and o.name not in inputs]

    def fold(self, visit: Callable[[str, np.ndarray], None]) -> None:
        self.reader.rewind()
        for batch in self.reader:
            for run in split_batch(batch, self.images_per_run):
                for name in self.names.intersection(run):
                    visit(name, run[name])
                outputs = self.session.run(self.fetch, run)
                for name in self.fetch:  # popped: each output is freed once visited
                    visit(name, outputs.pop(0))


def tensor_extremes(tensors: TensorStream) -> dict[str, dict[str, np.float32]]:
    """First pass: each tensor's min, max and min |x| over every run (float32, exact)."""
    found: dict[str, dict[str, Any]] = {}

    def visit(name: str, v: np.ndarray) -> None:
        v = v.ravel()
        now = {"min": np.nanmin(v), "max": np.nanmax(v), "absmin": np.nanmin(np.abs(v))} if v.size else \
            {"min": v.dtype.type(0), "max": v.dtype.type(0), "absmin": v.dtype.type(0)}
        seen = found.setdefault(name, now)
        if seen is not now:
            seen["min"], seen["max"] = min(seen["min"], now["min"]), max(seen["max"], now["max"])
            seen["absmin"] = min(seen["absmin"], now["absmin"])

    tensors.fold(visit)
    require_images(tensors.reader)
    return found


def candidate_ranges(tensors: TensorStream, candidates: Sequence[Candidate]) -> list:
    """Each candidate's ranges (ONNX Runtime ``TensorsData``) from two shared passes over the images.

    Pass one finds every tensor's extremes (minmax needs nothing more); pass two fills the
    histograms the histogram methods need, each kind once for all the candidates that use it.
    """
    extremes = tensor_extremes(tensors)
    kinds = {_HISTOGRAMS[c.method] for c in candidates if c.method != "minmax"}
    spans = {kind: _spans(kind[0], extremes) for kind in kinds}
    counts = {kind: {name: np.zeros(kind[1], np.int64) for name in extremes} for kind in kinds}

    def visit(name: str, v: np.ndarray) -> None:
        for kind in kinds:
            counts[kind][name] += np.histogram(np.abs(v) if kind[0] == "abs" else v, kind[1],
                                               range=spans[kind][name])[0]

    if kinds:
        tensors.fold(visit)
    out = []
    for c in candidates:
        kind = _HISTOGRAMS.get(c.method)
        if c.method == "minmax":
            out.append(_minmax(extremes))
        elif c.method == "quantile":
            out.append(_quantiles(counts[kind], spans[kind], c.percentile))
        else:
            out.append(_onnxruntime_thresholds(c, extremes, counts[kind], spans[kind]))
    return out


def _spans(kind: str, extremes: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    if kind == "abs":
        return {n: (e["absmin"], max(abs(e["min"]), abs(e["max"]))) for n, e in extremes.items()}
    if kind == "signed":
        return {n: (-t, t) for n, t in ((n, max(abs(e["min"]), abs(e["max"]))) for n, e in extremes.items())}
    # a constant tensor: a span numpy can cut into finite bins (its bin edges are in the data's float32:
    # 1e-12 / 4096 is below float32 resolution; a burst graph holds such constants, e.g. the spread of a 1x1 map)
    return {n: (float(e["min"]), max(float(e["max"]), float(e["min"]) + max(1e-12, 1e-2 * abs(float(e["min"])))))
            for n, e in extremes.items()}


def _minmax(extremes):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    return TensorsData(CalibrationMethod.MinMax, {n: TensorData(lowest=np.float32(e["min"]), highest=np.float32(e["max"]))
                                                  for n, e in extremes.items()})


def _quantiles(counts, spans, percentile: float):
    """[q(100 - p), q(p)] of each tensor (:func:`tail_range`), as MinMax ranges."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    data = {}
    for name, count in counts.items():
        lo, hi = tail_range(count, *spans[name], percentile)
        data[name] = TensorData(lowest=np.float32(lo), highest=np.float32(hi))
    return TensorsData(CalibrationMethod.MinMax, data)


def _onnxruntime_thresholds(candidate: Candidate, extremes, counts, spans):
    """ONNX Runtime's percentile or entropy thresholds, found by its ``HistogramCollector`` on our histograms.

    The spans and bins are those the collector makes when fed every value at once: percentile
    (symmetric, as ``create_calibrator`` makes it) bins |x| over [min |x|, max |x|]; entropy bins x
    over [-t, t] with t = max |x|.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, TensorsData

    symmetric = candidate.method == "percentile"
    bins = _HISTOGRAMS[candidate.method][1]
    collector = HistogramCollector(method=candidate.method, symmetric=symmetric, num_bins=bins,
                                   num_quantized_bins=ENTROPY_QUANTIZED_BINS, percentile=candidate.percentile,
                                   scenario="same")
    for name, count in counts.items():
        low, high = spans[name]
        edges = np.histogram(np.zeros(0, dtype=np.float32), bins, range=(low, high))[1].astype(np.float32)
        e = extremes[name]
        collector.histogram_dict[name] = ((count, edges, e["min"], e["max"]) if symmetric else
                                          (count, edges, e["min"], e["max"], np.array(high, dtype=high.dtype)))
    return TensorsData(CalibrationMethod.Percentile if symmetric else CalibrationMethod.Entropy,
                       collector.compute_collection_result())


def tail_range(count: np.ndarray, low: float, high: float, percentile: float) -> tuple[float, float]:
    """[q(100 - p), q(p)] of the values that histogram ``count`` over [low, high] describes, widened to hold 0.

    Bin-conservative: the low end is the left edge of the bin holding q(100 - p), the high end
    the right edge of the bin holding q(p).
    """
    bins = len(count)
    tail = 1.0 - percentile / 100.0
    edges = np.linspace(low, high, bins + 1)
    cdf = np.cumsum(count) / max(float(np.sum(count)), 1.0)
    lo = float(edges[int(np.searchsorted(cdf, tail, side="right"))])
    hi = float(edges[min(int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1, bins)])
    return min(lo, 0.0), max(hi, 0.0)
