"""INT8 post-training quantization of ONNX graphs with ONNX Runtime (``quantize_static``).

Calibration runs the FP32 graph on real images of a dataset split, decoded and cut into views
by exactly the code that scores at inference (:func:`edge_iqa.scoring.iter_view_batches`), and
estimates each activation's range with MinMax, Percentile or Entropy (KL) calibration
(Migacz, "8-bit Inference with TensorRT", GTC 2017; Wu et al., "Integer Quantization for Deep
Learning Inference", 2020), or Quantile. ONNX Runtime's percentile takes one threshold t from
|x| and keeps [max(min, -t), min(max, t)]: the lighter tail is cut at the heavier tail's
threshold, so its rare outliers still stretch the range. That suits symmetric int8, but the
asymmetric uint8 scheme (Jacob et al., CVPR 2018) can spend its levels better: ``quantile``
clips each tail at its own percentile of the values. Weights are quantized per output channel.

One graph cannot serve both targets, so there are two flavours:

- ``tensorrt``: symmetric S8S8 QDQ (int8 activations and weights, all zero points 0), the only
  form TensorRT's explicit quantization accepts (see :mod:`export.tensorrt`). Q/DQ pairs go
  where NVIDIA's placement recommendations for explicit quantization put them: on the inputs
  and weights of the weighted layers (Conv, Gemm, MatMul), not on their outputs nor on the
  pointwise ops between them (hard-swish, SE gates, residual sums), which TensorRT fuses into
  the neighbouring kernels and computes in float. Every extra Q/DQ pair is one more rounding,
  and with symmetric ranges a tensor that is mostly positive (after hard-swish) uses half
  the levels.
- ``cpu``: U8S8 (uint8 activations, int8 weights) for ONNX Runtime on x86, as QDQ or
  QOperator (QLinearConv …); :func:`quantize_for_cpu` can measure both and keep the faster.
  Its weights use 7 of the 8 bits (ONNX Runtime's ``reduce_range``) so that one artifact gives
  the same scores on every x86 CPU. Without VNNI, ONNX Runtime's U8S8 GEMM multiplies with
  AVX2 ``vpmaddubsw``, which adds two u8×s8 products into a *saturating* int16: with weights in
  [-128, 127] a pair can reach 2·255·128 > 32767 and is clipped, with VNNI (``vpdpbusd``,
  int32) it is not. With weights in [-64, 64] a pair stays ≤ 32640, so both kernel families
  compute the same integers. Measured on the export fixture, under ``qemu-x86_64 -cpu
  EPYC-Milan`` (Zen 3, AVX2 only) against the native AVX-512 VNNI core: full-range weights
  differ by up to 0.21 in score (Spearman vs FP32 0.970 VNNI, 0.953 AVX2), 7-bit weights by 0
  (``benchmarks/results/int8_kernel_families.md``). The TensorRT flavour keeps full-range
  weights: TensorRT accumulates in int32, and ONNX Runtime's S8S8 path gave identical scores
  on both families. The seventh bit is not free: on a distilled MobileNetV2 student 7-bit weights
  gave Spearman 0.879 against FP32 on its calibration images where 8-bit gave 0.994 (same
  ranges, same layout), so ``weight_bits=8`` (``export --cpu-weight-bits 8``) builds the
  full-range graph for the machines that accumulate in int32 (x86 with VNNI, ARM64);
  :mod:`edge_iqa.runtimes.onnxruntime` warns when such a graph is loaded on a core without VNNI,
  where that seed's 8-bit graph fell to Spearman 0.931 under AVX2 emulation
  (``benchmarks/results/int8_kernel_families_s2.md``; its TensorRT-flavour graph, which the fixture
  scored identically on both families, differed there by up to 0.012).
  S8S8 and U8U8 graphs, the other schemes ONNX Runtime offers, ran 10× and 26× slower than U8S8 in
  ONNX Runtime on the same student (``benchmarks/results/int8_weight_schemes_s2.md``).

Ranges are computed once per (graph, images, method) and cached in a JSON file, so every
flavour and layout of one export shares the same calibration. Calibration streams
(:mod:`export.calibration`): one image per ONNX Runtime run, statistics reduced as they come, so
its memory does not grow with the images or the batch.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from export.calibration import calibrate, tail_range  # noqa: F401  (tail_range: export.coreml's quantile)
from export.formats import FLOAT_TARGET
from export.metadata import EXPORT_KEY, input_names

MIN_CALIB_IMAGES = 100  # below this, activation ranges are noisy: warn
AUTO = "auto"  # --float-layer auto: search the stages to leave in float (search_float_layers)
FLAVOURS = ("tensorrt", "cpu")
MAX_FLOAT_MAC_SHARE = 0.25  # --float-layer auto leaves at most this share of the MACs in float
MAX_FLOAT_GROUPS = 8  # ... and at most this many stage groups
TENSORRT_QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # Q/DQ on their inputs only


class ViewCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over view batches of real images."""

    def __init__(self, config: ModelConfig, paths: Sequence[str | Path], batch_size: int = 8):
        self.config, self.paths, self.batch_size = config, list(paths), batch_size
        self.images = 0
        self.first_error: str | None = None  # the first image that gave no views, and why
        self._batches: Iterator | None = None

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        from edge_iqa.scoring import iter_view_batches

        names = input_names(self.config)
        self.images, self.first_error = 0, None
        for views, done, failed in iter_view_batches(self.paths, self.config, self.batch_size):
            if failed and self.first_error is None:
                index, error = next(iter(failed.items()))
                path = str(self.paths[index])
                self.first_error = error if path in error else f"{path}: {error}"
            if done:
                self.images += len(done)
                yield {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in zip(names, views)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = self._iterate()
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches, self.images = None, 0

    def __iter__(self):
        return self._iterate()


def view_batches(items: Sequence, config: ModelConfig, batch_size: int = 8) -> Iterator[tuple[list[np.ndarray], list[int]]]:
    """(view arrays, indices of the items batched) of photo paths, or of bursts for a burst model
    (``export.burst.burst_batches``); items that give no views are left out."""
    if config.burst is not None:
        from export.burst import burst_batches

        for done, views, _ in burst_batches(items, config, batch_size):
            if done:
                yield views, done
        return
    from edge_iqa.scoring import iter_view_batches

    for views, done, _ in iter_view_batches(items, config, batch_size):
        if done:
            yield views, done


def calibration_reader(config: ModelConfig, data: str | Path, split: str, limit: int):
    """The calibration reader ``edge-iqa export`` and ``edge-iqa qat`` calibrate with: at most ``limit``
    images of ``split``, or whole bursts holding at most ``limit`` frames for a burst model."""
    if config.burst is not None:
        from export.burst import BurstCalibrationReader, calibration_bursts

        return BurstCalibrationReader(config, calibration_bursts(data, split, limit))
    return ViewCalibrationReader(config, calibration_paths(data, split, limit))


def calibration_paths(data: str | Path, split: str, limit: int) -> list[Path]:
    """Up to ``limit`` image paths of ``split`` (``all`` = every split), evenly spread over the split."""
    from edge_iqa.data.manifest import read_manifest

    records = read_manifest(data, split=None if split == "all" else split)
    if not records:
        raise EdgeIQAError(f"{data}: split {split!r} has no images to calibrate on")
    if len(records) > limit:  # an even stride keeps every reference/distortion represented
        picks = np.linspace(0, len(records) - 1, limit).round().astype(int)
        records = [records[i] for i in sorted(set(picks.tolist()))]
    if len(records) < MIN_CALIB_IMAGES:
        warnings.warn(f"calibrating INT8 on only {len(records)} images of {data} [{split}]; "
                      f"use at least {MIN_CALIB_IMAGES} for stable activation ranges", stacklevel=2)
    return [r.path for r in records]


def module_scope(node) -> str:
    """The PyTorch module a node of a torch.onnx (dynamo) export came from, e.g. ``branches.0.blocks.1.0.se``."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [s for s in ast.literal_eval(prop.value) if s]
            return scopes[-2] if len(scopes) > 1 else ""
    return ""


def resolve_float_layers(onnx_path: str | Path, patterns: Sequence[str]) -> list[str]:
    """ONNX node names selected by ``patterns`` (globs); a pattern that selects nothing is an error.

    A pattern matches a node's name (``node_Conv_1012``), a stage group of :func:`layer_groups`
    (``branches.0.stem``, ``branches.1.blocks.4``, ``head``, ``input``) or the PyTorch module a node
    was exported from, its children included: ``*.se`` keeps every squeeze-excitation block in
    float, ``branches.1`` the whole second branch.
    """
    if not patterns:
        return []
    import onnx

    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    groups = layer_groups(onnx_path)
    chosen: list[str] = []
    for pattern in patterns:
        in_groups = {n for g, members in groups.items() if fnmatch.fnmatchcase(g, pattern) for n in members}
        hits = [n.name for n in nodes if n.name in in_groups or fnmatch.fnmatchcase(n.name, pattern)
                or fnmatch.fnmatchcase(module_scope(n), pattern) or fnmatch.fnmatchcase(module_scope(n), pattern + ".*")]
        if not hits:
            raise EdgeIQAError(f"--float-layer {pattern!r} matches no node or module of {Path(onnx_path).name}; "
                               f"give an ONNX node name or a PyTorch module path such as '*.se' or 'head'")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, reader: ViewCalibrationReader | None, *,
                  flavour: str, layout: str = "qdq", method: str = "minmax", percentile: float = 99.999,
                  float_nodes: Sequence[str] = (), cache: str | Path | None = None, weight_bits: int = 7) -> Path:
    """Quantize the FP32 ONNX file to INT8 ``out_path`` in one of the two flavours.

    ``weight_bits``: the CPU flavour's weights, 7 (``reduce_range``) or 8; TensorRT's are always 8.

    ``reader`` may be None when ``cache`` already holds the ranges of an earlier calibration.
    The metadata of the FP32 graph is copied over; ``edge_iqa.export`` records the settings.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if flavour not in FLAVOURS:
        raise EdgeIQAError(f"unknown int8 flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    if flavour == "tensorrt" and layout != "qdq":
        raise EdgeIQAError("TensorRT accepts only QDQ graphs; QOperator ops (QLinearConv …) are rejected")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy, "quantile": CalibrationMethod.MinMax}  # quantile: min/max ranges
    if method not in methods:
        raise EdgeIQAError(f"unknown calibration method {method!r}; choose one of {', '.join(methods)}")
    symmetric = flavour == "tensorrt"
    extra: dict[str, Any] = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    placement: dict[str, Any] = {}
    if flavour == "tensorrt":
        extra["QuantizeBias"] = False  # TensorRT dequantizes int8 only; biases stay float and it fuses them
        extra["OpTypesToExcludeOutputQuantization"] = list(TENSORRT_QUANTIZED_OPS)
        placement["op_types_to_quantize"] = list(TENSORRT_QUANTIZED_OPS)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache else out_path.with_suffix(".calib.json")
    if not cache.is_file():
        if reader is None:
            raise EdgeIQAError("int8 quantization needs calibration images or an existing calibration cache")
        calibrate(fp32_path, reader, cache, method=method, percentile=percentile)
    with _quiet_ort():
        quantize_static(
            str(fp32_path), str(out_path), None,
            quant_format=QuantFormat.QDQ if layout == "qdq" else QuantFormat.QOperator,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True, reduce_range=not symmetric and weight_bits == 7,
            nodes_to_exclude=list(float_nodes), calibrate_method=methods[method], extra_options=extra,
            calibration_cache_path=str(cache), **placement,
        )
    if flavour == "tensorrt":
        _float_for_pointwise_consumers(out_path)
    carry_metadata(fp32_path, out_path, {
        "precision": "int8", "int8_flavour": flavour, "int8_layout": layout,
        "int8_types": "S8S8 symmetric (activations int8, weights int8, zero points 0)" if symmetric
        else "U8S8 (activations uint8 asymmetric, weights int8 symmetric in 7 bits, [-64, 64]: same scores "
             "with and without VNNI)" if weight_bits == 7
        else "U8S8 (activations uint8 asymmetric, weights int8 symmetric in 8 bits: exact with VNNI or on ARM64, "
             "AVX2 without VNNI saturates some sums)",
        "cpu_weight_bits": None if symmetric else weight_bits,
        "weights": "per output channel", "calib_method": method, "float_nodes": list(float_nodes),
        "qdq_placement": "inputs of " + "/".join(TENSORRT_QUANTIZED_OPS) if symmetric else "every quantizable op",
        "calib_images": reader.images if reader is not None and reader.images else None,
    })
    return out_path


def _float_for_pointwise_consumers(path: Path) -> None:
    """Feed the float tensor, not its Q/DQ copy, to every consumer that is not a weighted layer.

    ONNX Runtime quantizes a tensor once and hands the dequantized copy to all its consumers, so
    a block output feeding both the next Conv and a residual Add (or an SE pool) would be
    rounded on the Add path too. TensorRT's placement keeps Q/DQ on the Conv path only.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    source = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    float_of = {n.output[0]: source[n.input[0]] for n in graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in source and source[n.input[0]] not in weights}
    for node in graph.node:
        if node.op_type in TENSORRT_QUANTIZED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in float_of:
                node.input[i] = float_of[name]
    from export.onnx import save_onnx

    save_onnx(model, path, node_scopes=True)  # atomic: a killed export leaves no half graph


def carry_metadata(src: str | Path, dst: Path, export_update: dict[str, Any]) -> None:
    """Copy ``src``'s metadata onto the graph at ``dst``, with ``export_update`` merged into its export settings."""
    import json

    import onnx

    from export.onnx import save_onnx, set_metadata

    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    settings = json.loads(meta.get(EXPORT_KEY, "{}"))
    settings.update(export_update)
    meta[EXPORT_KEY] = json.dumps(settings, sort_keys=True)
    proto = onnx.load(str(dst))
    set_metadata(proto, meta)
    save_onnx(proto, dst)


@contextlib.contextmanager
def _quiet_ort():
    """ONNX Runtime's quantizer logs hints at WARNING/INFO and its histogram calibrators print to
    stdout; keep stdout for ``--json`` (their prints go to stderr) and the log quiet."""
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger().setLevel(level)


def onnx_latency_ms(path: str | Path, config: ModelConfig, *, runs: int = 10, warmup: int = 2,
                    threads: int = 0) -> float:
    """Median ONNX Runtime CPU latency (ms) of one image at the config's input sizes."""
    from edge_iqa.model import example_inputs
    from edge_iqa.runtimes.onnxruntime import onnx_session

    session = onnx_session(path, threads)
    feeds = {name: t.numpy() for name, t in zip(input_names(config), example_inputs(config, batch=1))}
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def quantize_for_cpu(fp32_path: str | Path, out_path: str | Path, reader: ViewCalibrationReader | None,
                     config: ModelConfig, *, layout: str = "auto", method: str = "minmax",
                     percentile: float = 99.999, float_nodes: Sequence[str] = (),
                     cache: str | Path | None = None, runs: int = 10, weight_bits: int = 7,
                     ) -> tuple[Path, dict[str, Any]]:
    """U8S8 INT8 for ONNX Runtime on CPU in ``layout``; ``"auto"`` builds QDQ and QOperator, keeps the faster.

    Returns the path and a record of the choice (for ``auto``: the layouts' median latency in ms).
    A QOperator graph also gets the MACs of the same network in the QDQ layout (``qdq_layout_macs``):
    the profiler cannot count QLinearConv, whose output shapes ONNX shape inference loses after
    ONNX Runtime's contrib ops.
    """
    out_path = Path(out_path)
    layouts = ("qdq", "qoperator") if layout in ("auto", "qoperator") else (layout,)
    cache = Path(cache) if cache else out_path.with_suffix(".calib.json")
    built: dict[str, Path] = {}
    for name in layouts:  # the first layout calibrates into ``cache``; the others reuse its ranges
        target = out_path if len(layouts) == 1 else out_path.with_name(f"{out_path.stem}.{name}{out_path.suffix}")
        built[name] = quantize_onnx(fp32_path, target, reader, flavour="cpu", layout=name, method=method,
                                    percentile=percentile, float_nodes=float_nodes, cache=cache,
                                    weight_bits=weight_bits)
    choice: dict[str, Any] = {"requested": layout}
    if len(layouts) == 1:
        choice["chosen"] = layout
        return out_path, choice
    if layout == "auto":
        latency = {name: onnx_latency_ms(p, config, runs=runs) for name, p in built.items()}
        best = min(latency, key=latency.get)
        choice.update(chosen=best, latency_ms=latency,
                      reason=f"measured here: {', '.join(f'{k} {v:.2f} ms' for k, v in latency.items())}")
    else:
        best = choice["chosen"] = layout
    if best == "qoperator":
        choice["qdq_layout_macs"] = _count_macs_or_none(built["qdq"])
    built[best].replace(out_path)
    for name, p in built.items():
        if name != best and p.exists():
            p.unlink()
    carry_metadata(out_path, out_path, {"int8_layout": best, "int8_layout_choice": choice})
    return out_path, choice


def _count_macs_or_none(path: Path) -> int | None:
    """The graph's MACs at batch 1 (a burst graph's dynamic T at its config's ``burst.frames``), or None."""
    from profiling.onnx_macs import count_onnx_macs

    try:
        return count_onnx_macs(path, frames=_counted_frames(path))
    except EdgeIQAError:
        return None


def _counted_frames(path: Path) -> int | None:
    from edge_iqa.runtimes import CONFIG_KEY
    from export.onnx import read_metadata

    text = read_metadata(path).get(CONFIG_KEY)
    config = ModelConfig.stored_in(path, text) if text else None
    return config.burst.frames if config is not None and config.burst is not None else None


def layer_groups(onnx_path: str | Path) -> dict[str, list[str]]:
    """Node names grouped by the PyTorch stage they came from: ``branches.K.blocks.N``, the branch's
    stem (``branches.K.stem``), ``head`` and ``input`` (normalisation); other nodes by their scope."""
    import onnx

    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        parts = module_scope(node).split(".")
        if parts[0] == "branches" and len(parts) >= 4 and parts[2] == "blocks":
            key = ".".join(parts[:4])
        elif parts[0] == "branches" and len(parts) >= 2:
            key = f"branches.{parts[1]}.stem"
        elif parts[0] in ("", "head"):
            key = "input" if parts[0] == "" and node.op_type in ("Sub", "Div") else "head"  # pooling joins the head
        else:
            key = parts[0]
        groups.setdefault(key, []).append(node.name)
    return groups


def search_float_layers(fp32_path: str | Path, reader: ViewCalibrationReader, *, flavour: str, layout: str = "qdq",
                        method: str = "minmax", percentile: float = 99.999, cache: str | Path,
                        target: float = FLOAT_TARGET, max_groups: int = MAX_FLOAT_GROUPS,
                        max_float_mac_share: float = MAX_FLOAT_MAC_SHARE, burst: bool = False,
                        weight_bits: int = 7) -> tuple[list[str], dict[str, Any]]:
    """Greedily leave the stages that cost most accuracy in float until INT8 agrees with FP32.

    Agreement is Spearman(FP32 scores, INT8 scores) on the calibration images themselves: it
    needs no labels and never looks at the split the accuracy check uses. Each round tries every
    remaining stage group (:func:`layer_groups`) in float and keeps the best; the search stops at
    ``target``, after ``max_groups`` groups, or when no group fits in ``max_float_mac_share`` of
    the graph's MACs (an "INT8" model must keep most of its work in INT8; without this cap the
    search can end with every stage in float). Returns the node names and a record of the search,
    whose ``reached`` says whether the target was met.

    ``burst``: the graph is a burst model's ((B, n_tasks, T) scores of whole calibration bursts);
    agreement is then what its parity check measures, the mean per-burst Spearman against FP32
    with the reference frame left out (worst task; :func:`export.burst.burst_agreement`).
    """
    import tempfile

    from edge_iqa.metrics import srcc

    cache = Path(cache)
    if not cache.is_file():
        calibrate(fp32_path, reader, cache, method=method, percentile=percentile)
    batches = list(reader)

    if burst:
        from export.burst import outputs_agreement

        reference_outputs = graph_outputs(fp32_path, batches)
        measure = lambda path: outputs_agreement(reference_outputs, graph_outputs(path, batches))  # noqa: E731
    else:
        reference = graph_scores(fp32_path, batches)
        measure = lambda path: float(srcc(graph_scores(path, batches), reference))  # noqa: E731
    groups = layer_groups(fp32_path)
    macs = group_macs(fp32_path, groups)
    with tempfile.TemporaryDirectory(prefix="edge-iqa-search-") as tmp:
        def agreement(nodes: list[str]) -> float:
            path = quantize_onnx(fp32_path, Path(tmp) / "trial.onnx", None, flavour=flavour, layout=layout,
                                 method=method, percentile=percentile, float_nodes=nodes, cache=cache,
                                 weight_bits=weight_bits)
            return measure(path)

        record = greedy_float_search(groups, macs, lambda chosen: agreement([n for g in chosen for n in groups[g]]),
                                     target=target, max_groups=max_groups, max_float_mac_share=max_float_mac_share)
    nodes = [n for g in record["groups"] for n in groups[g]]
    return nodes, {**record, "images": sum(len(next(iter(b.values()))) for b in batches)}


def greedy_float_search(groups: Sequence[str], macs: Mapping[str, int], agreement: Callable[[list[str]], float], *,
                        target: float, max_groups: int, max_float_mac_share: float) -> dict[str, Any]:
    """The greedy loop of ``--float-layer auto``, for any artifact: ``agreement(groups)`` measures
    Spearman(FP32, INT8) with those stage groups in float. Each round tries every remaining group that
    keeps the float share of ``macs`` within ``max_float_mac_share`` and keeps the best; it stops at
    ``target``, after ``max_groups`` groups, or when no group helps. Returns the record of the search."""
    total = sum(macs.values()) or 1
    chosen: list[str] = []
    current = agreement([])
    history = [{"float": [], "spearman_vs_fp32": current}]
    while current < target and len(chosen) < max_groups:
        used = sum(macs[c] for c in chosen)
        fits = [g for g in groups if g not in chosen and (used + macs[g]) / total <= max_float_mac_share]
        trials = {g: agreement(chosen + [g]) for g in fits}
        if not trials:
            break
        best = max(trials, key=trials.get)
        if trials[best] <= current:
            break
        chosen.append(best)
        current = trials[best]
        history.append({"float": list(chosen), "spearman_vs_fp32": current})
    return {"groups": chosen, "spearman_vs_fp32_on_calib": current, "target": target, "reached": current >= target,
            "float_mac_share": sum(macs[c] for c in chosen) / total, "max_float_mac_share": max_float_mac_share,
            "history": history}


def graph_outputs(path: str | Path, batches: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The first output of an ONNX graph in ONNX Runtime for each input batch, as it comes."""
    from edge_iqa.runtimes.onnxruntime import onnx_session

    session = onnx_session(path)
    return [session.run(None, batch)[0] for batch in batches]


def graph_scores(path: str | Path, batches: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """Scores of an ONNX graph in ONNX Runtime for input batches (feeds by input name), in order."""
    from edge_iqa.runtimes.onnxruntime import onnx_session

    session = onnx_session(path)
    return np.concatenate([session.run(None, batch)[0].reshape(-1) for batch in batches])


def group_macs(onnx_path: str | Path, groups: dict[str, list[str]]) -> dict[str, int]:
    """MACs of each stage group of :func:`layer_groups` (0 where the graph's MACs cannot be counted)."""
    from profiling.onnx_macs import onnx_macs_by_node

    try:
        by_node = onnx_macs_by_node(onnx_path, frames=_counted_frames(Path(onnx_path)))  # burst graphs at burst.frames
    except EdgeIQAError:
        by_node = {}
    return {g: sum(by_node.get(n, 0) for n in nodes) for g, nodes in groups.items()}


def choose_calibration(fp32_path: str | Path, reader, selection: "SelectionSplit", folder: str | Path, *,
                       flavour: str, layout: str = "qdq", float_nodes: Sequence[str] = (),
                       candidates: Sequence = (), weight_bits: int = 7) -> tuple[Any, Path, dict[str, Any]]:
    """``--calib-method auto``: the calibration whose INT8 graph agrees best with FP32 on ``selection``.

    Every candidate (:data:`export.calibration.AUTO_CANDIDATES` unless given) gets its ranges from
    one streaming calibration over ``reader`` (two passes shared by all), its INT8 graph in
    ``flavour``/``layout`` with ``float_nodes`` in float, and the parity metric on the images of
    ``selection`` (a labelled split, not the calibration images): Spearman(FP32 scores, INT8
    scores), ties broken by the smaller SRCC drop; for burst models the mean per-burst Spearman
    (worst task). Returns the chosen candidate, its cache file and the record of every candidate.
    """
    from export.calibration import AUTO_CANDIDATES, calibrate_candidates

    candidates = list(candidates or AUTO_CANDIDATES)
    folder = Path(folder)
    caches = calibrate_candidates(fp32_path, reader, candidates, folder)
    graphs = [quantize_onnx(fp32_path, cache.with_suffix(".onnx"), None, flavour=flavour, layout=layout,
                            method=c.method, percentile=c.percentile, float_nodes=float_nodes, cache=cache,
                            weight_bits=weight_bits)
              for c, cache in zip(candidates, caches)]
    best, record = rank_candidates(candidates, selection, selection.measure(fp32_path, graphs))
    for graph in graphs:
        graph.unlink()
    return candidates[best], caches[best], {**record, "flavour": flavour, "layout": layout}


def best_figure(rows: Sequence[dict[str, float]]) -> int:
    """The index of the best parity figures: highest Spearman vs FP32, then smallest SRCC drop, then the first."""
    return max(range(len(rows)), key=lambda i: (rows[i]["spearman_vs_fp32"], -rows[i].get("srcc_drop", 0.0), -i))


def rank_candidates(candidates: Sequence, selection: "SelectionSplit", figures: Sequence[dict[str, float]]
                    ) -> tuple[int, dict[str, Any]]:
    """The best calibration candidate by :func:`best_figure` and the ``calib_auto`` record of all of them."""
    rows = [{"candidate": c.label, "method": c.method, "percentile": c.percentile
             if c.method in ("percentile", "quantile") else None, **f} for c, f in zip(candidates, figures)]
    best = best_figure(rows)
    return best, {"chosen": rows[best]["candidate"], "split": selection.split, "n": selection.count,
                  "metric": selection.metric, "candidates": rows}


class SelectionSplit:
    """The labelled images (bursts) that ``--calib-method auto`` scores its candidates on, decoded once per call."""

    def __init__(self, config: ModelConfig, data: str | Path, split: str, batch_size: int = 8):
        self.config, self.data, self.split, self.batch_size = config, data, split, batch_size
        self.burst = config.burst is not None
        self.metric = ("mean per-burst Spearman vs FP32 (reference frame left out, worst task)" if self.burst else
                       "Spearman(FP32, INT8 scores), then the smaller SRCC drop against the labels")
        if self.burst:
            from export.burst import read_bursts

            self.items = read_bursts(data, split)
        else:
            from edge_iqa.data.manifest import read_manifest

            try:
                self.items = read_manifest(data, split=None if split == "all" else split)
            except EdgeIQAError:  # no usable row in that split
                self.items = []
        if len(self.items) < 2:
            raise EdgeIQAError(f"split {split!r} of {data}, which ranks the INT8 candidates, has {len(self.items)} "
                               f"{'bursts' if self.burst else 'images'}; choose another (export "
                               "--calib-select-split, qat --select-split)")
        self.count = len(self.items)

    def measure(self, fp32_path: str | Path, graphs: Sequence[Path]) -> list[dict[str, float]]:
        """The parity figures of each INT8 graph against the FP32 graph on this split (one decode pass)."""
        from edge_iqa.runtimes.onnxruntime import onnx_session

        names = input_names(self.config)
        sessions = [onnx_session(p) for p in (fp32_path, *graphs)]
        return self.measure_batch_fns([lambda views, s=s: s.run(None, dict(zip(names, views)))[0] for s in sessions])

    def measure_batch_fns(self, batch_fns: Sequence) -> list[dict[str, float]]:
        """:meth:`measure` for any batch functions (the views in input order → the first output, as
        :func:`export.burst.module_batch_fn` gives); ``batch_fns[0]`` is the FP32 reference, the figures
        are those of each later one against it."""
        names = input_names(self.config)
        outputs: list[list[np.ndarray]] = [[] for _ in batch_fns]
        truth: list[float] = []
        for feeds, done in self._batches():
            views = [feeds[n] for n in names]
            for out, run in zip(outputs, batch_fns):
                out.append(np.asarray(run(views)))
            truth += [self.items[i].score for i in done] if not self.burst else []
        if not outputs[0]:
            raise EdgeIQAError(f"no image of split {self.split!r} of {self.data} could be decoded for --calib-method auto")
        if self.burst:
            from export.burst import outputs_agreement

            return [{"spearman_vs_fp32": outputs_agreement(outputs[0], out)} for out in outputs[1:]]
        from export.parity import score_agreement, truth_metrics

        fp32 = np.concatenate([o.reshape(-1) for o in outputs[0]])
        fp32_srcc = truth_metrics(fp32, truth)["srcc"]
        figures = []
        for out in outputs[1:]:
            scores = np.concatenate([o.reshape(-1) for o in out])
            agree = score_agreement(fp32, scores)
            figures.append({"spearman_vs_fp32": agree["spearman_vs_fp32"],
                            "srcc_drop": float(fp32_srcc - truth_metrics(scores, truth)["srcc"]),
                            "max_abs_delta": agree["max_abs_delta"], "n": len(truth)})
        return figures

    def _batches(self) -> Iterator[tuple[dict[str, np.ndarray], list[int]]]:
        names = input_names(self.config)
        items = self.items if self.burst else [r.path for r in self.items]
        for views, done in view_batches(items, self.config, self.batch_size):
            yield {n: np.ascontiguousarray(v, dtype=np.float32) for n, v in zip(names, views)}, done
