"""The one table of export formats, and the export settings stored with every artifact.

``FORMATS`` drives option validation (:meth:`ExportConfig.__post_init__`), the CLI help
(``edge-iqa export --help``), the test matrix and the benchmark: adding a format means adding
a row here and its conversion function. ``ExportConfig`` is a frozen, versioned dataclass
serialised into the artifact's metadata (and a JSON sidecar for TensorRT engines) and loaded
back only through :meth:`ExportConfig.from_dict` (known fields only).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass
from typing import Any

from edge_iqa.config import reject_unknown_fields
from edge_iqa.errors import EdgeIQAError

EXPORT_CONFIG_VERSION = 4  # 2: CPU int8 weights in 7 bits (same scores on every x86 CPU), layout qoperator by default;
# 3: --calib-method auto (calib_select_split, calib_candidates); 4: cpu_weight_bits (8: full-range CPU weights)
# weight_rounding (adaround) came without a version bump: configs without it read as "nearest", as before;
# so did float_target (configs without it read as FLOAT_TARGET, the search's target before it)
PRECISIONS = ("fp32", "fp16", "int8", "w8")
CALIB_METHODS = ("minmax", "percentile", "entropy", "quantile", "auto")  # auto: export.quantize.choose_calibration
SPLITS = ("train", "val", "test", "all")
CPU_LAYOUTS = ("auto", "qdq", "qoperator")
WEIGHT_ROUNDINGS = ("nearest", "adaround")  # int8 ONNX/TensorRT/CoreML weights: round to nearest, or export.adaround
CPU_WEIGHT_BITS = (7, 8)  # U8S8 weights for ONNX Runtime on CPU (export.quantize: 7 = same scores on every x86 CPU)
FLOAT_TARGET = 0.995  # --float-layer auto's default: Spearman(FP32, INT8) on the calibration images
QAT_FORMATS = ("onnx", "tensorrt", "coreml")  # formats `edge-iqa qat` fine-tunes for (export.qat)
QAT_SELECT_SPLITS = ("val", "train", "none")  # what picks the epoch edge-iqa qat exports; none: the last


@dataclass(frozen=True)
class Format:
    """One export target.

    precisions: what ``--precision`` may be. calib_precisions: those that need ``--calib``;
    calib_methods: the ``--calib-method`` values they accept.
    runtime: the module whose import means artifacts of this format can run here.
    simulated_by: what the accuracy check runs instead where that runtime is missing.
    builder: ``module:function`` that writes the artifact (see :mod:`export.pipeline`).
    """

    name: str
    suffix: str
    precisions: tuple[str, ...]
    default_precision: str
    calib_precisions: tuple[str, ...]
    calib_methods: tuple[str, ...]
    runtime: str
    device: str
    simulated_by: str
    builder: str
    description: str

    def runtime_available(self) -> bool:
        if self.name == "coreml":
            from export.coreml import coreml_runtime_available

            return coreml_runtime_available()
        return importlib.util.find_spec(self.runtime) is not None

    def needs_calib(self, precision: str) -> bool:
        return precision in self.calib_precisions

    def help_line(self) -> str:
        calib = (f"; {'/'.join(self.calib_precisions)} needs --calib (--calib-method {'|'.join(self.calib_methods)})"
                 if self.calib_precisions else "")
        return (f"{self.name} (--precision {'|'.join(self.precisions)}, default {self.default_precision}{calib}): "
                f"{self.description}")

    def build_function(self):
        import importlib

        module, _, name = self.builder.partition(":")
        return getattr(importlib.import_module(module), name)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", ("fp32", "fp16", "int8"), "fp32", ("int8",), CALIB_METHODS, "onnxruntime", "CPU",
           "ONNX Runtime", "export.pipeline:build_onnx",
           "one-file ONNX; int8 = U8S8 for ONNX Runtime on CPU (7-bit weights: same scores on every x86 CPU), QOperator or QDQ"),
    Format("tensorrt", ".plan", ("fp32", "fp16", "int8"), "int8", ("int8",), CALIB_METHODS, "tensorrt", "GPU/DLA",
           "ONNX Runtime on the same (QDQ) ONNX graph", "export.pipeline:build_tensorrt",
           "TensorRT engine from ONNX; int8 = symmetric S8S8 QDQ (explicit quantization); without "
           "tensorrt: the ONNX, a TensorRT rule check and build_engine.sh for trtexec"),
    Format("coreml", ".mlpackage", ("fp32", "fp16", "w8", "int8"), "fp16", ("int8",),
           ("minmax", "quantile", "auto"), "coremltools", "ANE/GPU/CPU",
           "PyTorch with the package's weights read back (activations rounded to FP16)",
           "export.pipeline:build_coreml",
           "ML Program package with image inputs; w8 = int8 weights, int8 = W8A8 (weights and activations)"),
    Format("executorch", ".pte", ("fp32", "int8"), "fp32", ("int8",), ("minmax",), "executorch", "phone CPU (XNNPACK)",
           "nothing: the exporter needs executorch too", "export.pipeline:build_executorch",
           "ExecuTorch program for Android/iOS, XNNPACK delegate; int8 = PT2E with the XNNPACK quantizer "
           "(int8 per-channel weights, int8 activations); runs here in ExecuTorch's Python runtime"),
)}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise EdgeIQAError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


@dataclass(frozen=True)
class ExportConfig:
    """How one artifact was made; stored in its metadata.

    calib_method: activation range estimation for int8 (``minmax``, ``percentile``, ``entropy``,
    ``quantile``; see :mod:`export.quantize`), or ``auto``: each of ``calib_candidates`` (empty: the
    default list, :data:`export.calibration.AUTO_CANDIDATES`; ``quantile:99.99`` …) is tried and the one
    whose INT8 graph agrees best with FP32 on the labelled ``calib_select_split`` is kept
    (:func:`export.quantize.choose_calibration`; every candidate's figures go into ``parity.json``).
    calib_images: at most this many images of ``calib_split`` are used for calibration.
    cpu_layout: int8 ONNX for CPU: ``qoperator`` (the default: the smaller file, and no slower than
    QDQ at the UHD presets' inputs in ``benchmarks/results/int8_layouts.md``), ``qdq``, or ``auto``
    (time both here and keep the faster: the artifact then depends on this machine and its load,
    so tests and golden metrics never use it). float_layers: what int8 ONNX/TensorRT graphs and CoreML W8A8 packages leave in float (node names
    (ONNX only), module globs, stage groups or ``auto``; see :func:`export.quantize.resolve_float_layers` and
    :func:`export.float_modules.resolve_float_modules`). float_target: the Spearman(FP32, INT8) on the
    calibration images at which ``--float-layer auto`` stops leaving stages in float.
    cpu_weight_bits: the U8S8 graph's weights for ONNX Runtime, 7 (|w| <= 64: the same scores on
    every x86-64 CPU, the default) or 8 (full range: exact where the integer kernels accumulate in
    int32, i.e. x86 with VNNI and ARM64; an AVX2 core without VNNI saturates some sums; see
    :mod:`export.quantize`).
    weight_rounding: how int8 ONNX/TensorRT/CoreML weights meet their grid: ``nearest`` (ONNX Runtime's own
    rounding) or ``adaround`` (each layer's rounding learned on the calibration images so that it
    reproduces its FP32 output; :mod:`export.adaround`).
    """

    format: str
    precision: str = ""  # empty: the format's default precision
    calib_method: str = "minmax"
    calib_split: str = "train"
    calib_images: int = 256
    percentile: float = 99.999
    cpu_layout: str = "qoperator"
    float_layers: tuple[str, ...] = ()
    opset: int = 18
    calib_select_split: str = "val"
    calib_candidates: tuple[str, ...] = ()
    cpu_weight_bits: int = 7
    weight_rounding: str = "nearest"
    float_target: float = FLOAT_TARGET
    version: int = EXPORT_CONFIG_VERSION

    def __post_init__(self) -> None:
        fmt = get_format(self.format)
        if not self.precision:
            object.__setattr__(self, "precision", fmt.default_precision)
        if self.precision not in fmt.precisions:
            raise EdgeIQAError(f"--precision {self.precision} is not available for --format {self.format}; "
                               f"choose one of {', '.join(fmt.precisions)}")
        if self.calib_method not in CALIB_METHODS:
            raise EdgeIQAError(f"unknown calibration method {self.calib_method!r}; choose one of {', '.join(CALIB_METHODS)}")
        if self.needs_calib and self.calib_method not in fmt.calib_methods:
            raise EdgeIQAError(f"--calib-method {self.calib_method} is not available for --format {self.format} "
                               f"--precision {self.precision}; choose one of {', '.join(fmt.calib_methods)}")
        object.__setattr__(self, "calib_candidates", tuple(self.calib_candidates))
        if self.calib_select_split not in SPLITS:
            raise EdgeIQAError(f"unknown --calib-select-split {self.calib_select_split!r}; choose one of {', '.join(SPLITS)}")
        if self.calib_candidates and self.calib_method != "auto":
            raise EdgeIQAError("--calib-candidate lists what --calib-method auto tries; "
                               f"--calib-method {self.calib_method} would ignore it")
        if self.calib_candidates:
            from export.calibration import Candidate

            for text in self.calib_candidates:
                if Candidate.parse(text).method not in fmt.calib_methods:
                    raise EdgeIQAError(f"--calib-candidate {text}: --format {self.format} calibrates with "
                                       f"{', '.join(m for m in fmt.calib_methods if m != 'auto')}")
        if self.cpu_layout not in CPU_LAYOUTS:
            raise EdgeIQAError(f"unknown int8 CPU layout {self.cpu_layout!r}; choose one of {', '.join(CPU_LAYOUTS)}")
        if self.cpu_weight_bits not in CPU_WEIGHT_BITS:
            raise EdgeIQAError(f"--cpu-weight-bits {self.cpu_weight_bits}: choose 7 or 8")
        if self.cpu_weight_bits != 7 and not (self.format == "onnx" and self.precision == "int8"):
            raise EdgeIQAError("--cpu-weight-bits applies to --format onnx --precision int8 (TensorRT and CoreML "
                               "weights are always 8-bit)")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise EdgeIQAError(f"--weight-rounding {self.weight_rounding}: choose one of {', '.join(WEIGHT_ROUNDINGS)}")
        if self.weight_rounding != "nearest" and not (self.precision == "int8"
                                                      and self.format in ("onnx", "tensorrt", "coreml")):
            raise EdgeIQAError("--weight-rounding adaround applies to --precision int8 for ONNX, TensorRT and CoreML")
        if self.calib_images < 1:
            raise EdgeIQAError(f"--calib-images must be at least 1, got {self.calib_images}")
        if not 50.0 < self.percentile <= 100.0:
            raise EdgeIQAError(f"--percentile must be in (50, 100], got {self.percentile}")
        if self.opset < 13:
            raise EdgeIQAError(f"--opset {self.opset} is too old: per-channel int8 needs opset 13 or newer")
        if self.version > EXPORT_CONFIG_VERSION:
            raise EdgeIQAError(f"export config version {self.version} is newer than this edge-iqa; upgrade edge-iqa")
        object.__setattr__(self, "float_layers", tuple(self.float_layers))
        if self.float_layers and not (self.precision == "int8" and self.format in ("onnx", "tensorrt", "coreml")):
            raise EdgeIQAError("--float-layer applies to int8 ONNX, TensorRT and CoreML only; "
                               f"--format {self.format} --precision {self.precision} would ignore it")
        if not 0.0 < self.float_target <= 1.0:
            raise EdgeIQAError(f"--float-target must be in (0, 1], got {self.float_target}")
        if self.float_target != FLOAT_TARGET and "auto" not in self.float_layers:
            raise EdgeIQAError("--float-target is the target of --float-layer auto; without it the target is ignored")

    @property
    def needs_calib(self) -> bool:
        return get_format(self.format).needs_calib(self.precision)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExportConfig":
        reject_unknown_fields(cls, data, "export config")
        return cls(**data)
