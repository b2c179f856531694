"""Model → artifact → checks: what ``edge-iqa export`` runs, one builder per format.

A builder (named in the format table, :data:`export.formats.FORMATS`) writes the artifact into
the output folder and returns an :class:`Artifact`: its files, the structural checks it ran
(MACs against PyTorch, TensorRT's rules, CoreML weights read back) and a batch function that
scores with it — in its own runtime (``ran``) or, where that runtime is missing here, with a
stand-in that is said to be one (``simulated``). :func:`check_parity` then scores a dataset
split with the artifact and with the FP32 PyTorch model (:mod:`export.parity`).

Burst models go through the same builders: the graph contract of :mod:`edge_iqa.burst_model`
((B, T, 3, H, W) views in, (B, n_tasks, T) scores out), calibration on whole bursts and parity
per burst (:mod:`export.burst`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import IQAModel, example_inputs
from edge_iqa.runtimes import BatchFn, load_artifact
from export.formats import ExportConfig, get_format
from export.metadata import EXPORT_KEY, artifact_metadata, file_size
from export.parity import RAN, SIMULATED, SKIPPED, THRESHOLDS, Check, Thresholds, accuracy_check, failed

@dataclass
class Artifact:
    """What a builder made. ``path`` is the deployable file (for TensorRT without ``tensorrt``:
    the engine that ``build_engine.sh`` will write, absent here); ``graph`` the ONNX behind it."""

    export: ExportConfig
    config: ModelConfig
    path: Path
    files: list[Path]
    runner: BatchFn | None
    runner_status: str
    runner_note: str
    graph: Path | None = None
    checks: list[Check] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.export.format, "precision": self.export.precision, "artifact": str(self.path),
            "artifact_exists": self.path.exists(), "graph": str(self.graph) if self.graph else None,
            "files": {p.name: file_size(p) for p in self.files if p.exists()},
            "export_config": self.export.to_dict(), "model": self.config.name,
            "scored_by": {"status": self.runner_status, "how": self.runner_note},
            "checks": [c.to_dict() for c in self.checks], "info": self.info,
        }


def export_model(model: IQAModel, export: ExportConfig, out: str | Path, *, calib: str | Path | None = None,
                 command: str = "") -> Artifact:
    """Write the artifact of ``export`` for ``model`` into the folder ``out``."""
    if export.needs_calib and calib is None:
        raise EdgeIQAError(f"--precision {export.precision} for --format {export.format} calibrates on real images; "
                           "pass --calib DATA (a dataset folder with manifest.csv)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    meta = {"export_config": export.to_dict(), "command": command}
    artifact = get_format(export.format).build_function()(model, export, out, calib, meta)
    artifact.checks.insert(0, mac_check(model, artifact))
    return artifact


# --------------------------------------------------------------------------- ONNX


def build_onnx(model: IQAModel, export: ExportConfig, out: Path, calib, meta: dict) -> Artifact:
    path = out / f"model_{export.precision}.onnx"
    info = _onnx_graph(model, export, path, calib, meta, flavour="cpu")
    return Artifact(export, model.config, path, [p for p in (path, info.pop("_cache", None)) if p], _ort_runner(path),
                    RAN, "ONNX Runtime (CPUExecutionProvider)", graph=path, info=info)


def _onnx_graph(model: IQAModel, export: ExportConfig, path: Path, calib, meta: dict, *, flavour: str) -> dict:
    """Write the ONNX graph of ``export.precision`` to ``path``; return facts about it."""
    from export.onnx import torch2onnx

    with tempfile.TemporaryDirectory(prefix="edge-iqa-export-") as tmp:
        if export.precision == "fp32":
            fp32 = torch2onnx(model, path, opset=export.opset, export=meta)
            info: dict[str, Any] = {"fp32_onnx_bytes": file_size(fp32)}
        else:  # the FP32 graph keeps PyTorch module scopes: --float-layer resolves module names on it
            fp32 = torch2onnx(model, Path(tmp) / "fp32.onnx", opset=export.opset, export=meta, node_scopes=True)
            info = {"fp32_onnx_bytes": deployable_bytes(fp32)}
        if export.precision == "fp16":
            to_fp16(fp32, path)
        elif export.precision == "int8":
            rounding = None
            if export.weight_rounding == "adaround":
                fp32, rounding = adarounded_graph(model, export, fp32, calib, Path(tmp) / "fp32_adaround.onnx", flavour)
            info.update(_quantize(model.config, export, fp32, path, calib, flavour))
            if rounding is not None:
                from export.quantize import carry_metadata

                info["adaround"] = rounding
                carry_metadata(path, path, {"adaround": rounding})
    return info


def adarounded_model(model: IQAModel, export: ExportConfig, calib, grid) -> tuple[IQAModel, dict]:
    """A BatchNorm-folded copy of ``model`` with AdaRound's weights (:mod:`export.adaround`, learned on
    ``calib``'s calibration images) on ``grid``, the target quantizer's own; and the rounding's record."""
    from export.adaround import AdaRoundConfig, adaround, summary
    from export.fold import fold_batchnorm

    if model.config.burst is not None:
        raise EdgeIQAError("--weight-rounding adaround is for photo models; a burst model exports with nearest rounding")
    cfg = AdaRoundConfig()
    folded = fold_batchnorm(model, example_inputs(model.config))
    rounded, records = adaround(folded, _calib_tensors(model.config, export, calib), grid, cfg)
    return rounded, summary(cfg, grid, records)


def adarounded_graph(model: IQAModel, export: ExportConfig, fp32: Path, calib, out: Path, flavour: str
                     ) -> tuple[Path, dict]:
    """The FP32 graph ``fp32`` with AdaRound's weights on the grid the INT8 quantizer of ``flavour``
    computes (symmetric; 7-bit for the CPU flavour's default); and the rounding's record."""
    from export.adaround import check_on_grid, symmetric_grid
    from export.qat import check_same_scores, graph_weighted_inputs, match_layers, weighted_layers, write_weights

    grid = symmetric_grid(64 if flavour == "cpu" and export.cpu_weight_bits == 7 else 127)
    rounded, record = adarounded_model(model, export, calib, grid)
    pairs = match_layers(weighted_layers(rounded, example_inputs(model.config)), graph_weighted_inputs(fp32))
    graph = write_weights(fp32, pairs, out)
    check_same_scores(rounded, graph)
    check_on_grid(graph, grid)
    return graph, record


def deployable_bytes(path: Path) -> int:
    """Size the ONNX file would have as an artifact, without the exporter's per-node debug metadata."""
    import onnx

    from export.onnx import strip_node_scopes

    proto = onnx.load(str(path))
    strip_node_scopes(proto)
    return proto.ByteSize()


def to_fp16(fp32_path: Path, out_path: Path) -> Path:
    """FP16 weights and compute; inputs and output stay float32 so callers feed the same arrays."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from export.onnx import save_onnx, set_metadata

    proto = onnx.load(str(fp32_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    settings = json.loads(meta[EXPORT_KEY])
    settings.update(precision="fp16", fp16="onnxruntime.transformers.float16, float32 inputs/output kept")
    meta[EXPORT_KEY] = json.dumps(settings, sort_keys=True)
    half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    topological_sort(half.graph)  # the converter appends its input casts at the end of the node list
    set_metadata(half, meta)
    return save_onnx(half, out_path)


def topological_sort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (ONNX requires it)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise EdgeIQAError("the FP16 graph has a cycle or a dangling input; cannot order its nodes")
        for node in ready:
            available.update(node.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _quantize(config: ModelConfig, export: ExportConfig, fp32: Path, path: Path, calib, flavour: str) -> dict:
    from export.quantize import (
        AUTO, calibration_reader, quantize_for_cpu, quantize_onnx, resolve_float_layers, search_float_layers,
    )

    reader = calibration_reader(config, calib, export.calib_split, export.calib_images)
    cache = path.with_name(f"calibration_{export.calib_method}.json")
    if cache.exists():
        cache.unlink()  # ranges of an earlier run in this folder may come from other images
    common = dict(method=export.calib_method, percentile=export.percentile, cache=cache,
                  weight_bits=export.cpu_weight_bits)
    layout = "qdq" if flavour == "tensorrt" else export.cpu_layout
    explicit = [p for p in export.float_layers if p != AUTO]
    float_nodes = resolve_float_layers(fp32, explicit)
    search = auto_calib = None
    if export.calib_method == AUTO:  # the candidates' ranges and trial graphs go into a folder next to the artifact
        chosen, auto_calib = _choose_calibration(config, export, fp32, path, calib, reader, flavour, layout,
                                                 float_nodes, cache)
        common.update(method=chosen.method, percentile=chosen.percentile)
    if AUTO in export.float_layers:
        found, search = search_float_layers(fp32, reader, flavour=flavour, layout="qdq" if layout == "auto" else layout,
                                            burst=config.burst is not None, target=export.float_target, **common)
        float_nodes += [n for n in found if n not in float_nodes]
    if flavour == "tensorrt":
        quantize_onnx(fp32, path, reader, flavour="tensorrt", layout="qdq", float_nodes=float_nodes, **common)
        choice = {"chosen": "qdq", "reason": "TensorRT accepts QDQ only"}
    else:
        _, choice = quantize_for_cpu(fp32, path, reader, config, layout=layout, float_nodes=float_nodes, **common)
    info = {"int8_flavour": flavour, "int8_layout": choice, "float_layers": list(export.float_layers),
            "float_nodes": len(float_nodes), "float_search": search, "calib_images": reader.images, "_cache": cache}
    if auto_calib is not None:
        from export.quantize import carry_metadata

        info["calib_auto"] = auto_calib
        carry_metadata(path, path, {"calib_method_requested": "auto", "calib_auto_chosen": auto_calib["chosen"]})
    if config.burst is not None:
        info["calib_bursts"] = reader.n_bursts
    return info


def _choose_calibration(config, export: ExportConfig, fp32: Path, path: Path, calib, reader, flavour: str,
                        layout: str, float_nodes: list[str], cache: Path):
    """``--calib-method auto``: the chosen candidate (its ranges written to ``cache``) and the record of all."""
    import shutil

    from export.calibration import Candidate
    from export.quantize import SelectionSplit, choose_calibration

    folder = path.with_name("calibration_candidates")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        chosen, chosen_cache, record = choose_calibration(
            fp32, reader, SelectionSplit(config, calib, export.calib_select_split), folder, flavour=flavour,
            layout="qdq" if layout == "auto" else layout, float_nodes=float_nodes,
            candidates=[Candidate.parse(c) for c in export.calib_candidates], weight_bits=export.cpu_weight_bits)
        chosen_cache.replace(cache)
        return chosen, record
    finally:
        shutil.rmtree(folder, ignore_errors=True)




def _ort_runner(path: Path) -> BatchFn:
    return load_artifact(path, "onnxruntime").batch_fn


# --------------------------------------------------------------------------- TensorRT


def build_tensorrt(model: IQAModel, export: ExportConfig, out: Path, calib, meta: dict) -> Artifact:
    from export.tensorrt import (
        check_tensorrt_graph, onnx2trt, optimisation_profile, tensorrt_available, write_build_script, write_sidecar,
    )

    suffix = "int8_qdq" if export.precision == "int8" else export.precision
    graph = out / f"model_{suffix}.onnx"
    engine = out / f"model_{export.precision}.plan"
    info = _onnx_graph(model, export, graph, calib, meta, flavour="tensorrt")
    cache = info.pop("_cache", None)
    rules = check_tensorrt_graph(graph, expect_int8=export.precision == "int8")
    checks = [Check("tensorrt_rules", RAN, rules.ok, rules.to_dict(),
                    "QDQ rules and operator support checked on the ONNX graph")]
    settings = {**meta, "format": "tensorrt", "precision": export.precision, "onnx": graph.name,
                "strongly_typed": True, "optimisation_profile": optimisation_profile(model.config)}
    sidecar = write_sidecar(engine, artifact_metadata(model.config, settings))
    script = write_build_script(out / "build_engine.sh", graph.name, engine.name, model.config,
                                precision=export.precision, rules_ok=rules.ok)
    files = [p for p in (graph, sidecar, script, cache) if p]
    if tensorrt_available():
        onnx2trt(graph, engine, model.config)
        checks.append(Check("tensorrt_engine_build", RAN, True, {"engine_bytes": file_size(engine)}))
        return Artifact(export, model.config, engine, [engine, *files], load_artifact(engine, "tensorrt").batch_fn, RAN,
                        "TensorRT engine on this GPU", graph=graph, checks=checks, info=info)
    checks.append(Check("tensorrt_engine_build", SKIPPED, None, {"script": script.name},
                        "tensorrt does not import here; run build_engine.sh on the target"))
    return Artifact(export, model.config, engine, files, _ort_runner(graph), SIMULATED,
                    f"ONNX Runtime on {graph.name}, the same graph TensorRT builds from (TensorRT unavailable here)",
                    graph=graph, checks=checks, info=info)


# --------------------------------------------------------------------------- CoreML


COREML_MIN_WEIGHT_SQNR_DB = 30.0  # int8 per-channel weights of these models read back at ~40 dB


def build_coreml(model: IQAModel, export: ExportConfig, out: Path, calib, meta: dict,
                 calibrated: torch.nn.Module | None = None) -> Artifact:
    """``calibrated``: an int8 W8A8 net made already (``edge-iqa qat``), converted instead of calibrating."""
    from export.coreml import coreml_runtime_available, readback_model, round_activations_to_fp16, torch2coreml

    path = out / f"model_{export.precision}.mlpackage"
    info: dict[str, Any] = {}
    config = model.config
    source = None  # the net calibrated, when not the model: its AdaRound copy on coremltools' affine grid
    floats = _coreml_float_modules(model, export)  # an unknown --float-layer fails before any calibration
    if export.precision == "int8" and calibrated is None and export.weight_rounding == "adaround":
        from export.adaround import COREML_GRID

        source, info["adaround"] = adarounded_model(model, export, calib, COREML_GRID)
        meta = {**meta, "adaround": info["adaround"]}
    if config.burst is not None:  # the burst graph contract: every task's (B, n_tasks, T) scores
        from edge_iqa.burst_model import AllTaskScores

        model = AllTaskScores(model).eval()
    if export.precision == "int8" and calibrated is None:
        batches = list(_calib_tensors(config, export, calib))
        source = model if source is None else source
        calibrated = _calibrate_coreml(model, source, export, calib, batches, floats, info)
        meta = {**meta, **{k: info[k] for k in ("calib_auto_chosen", "float_modules") if k in info}}
        info["calib_images"] = sum(int(np.prod(b[0].shape[:-3])) for b in batches)  # frames for bursts
        meta = {**meta, "calib_images": info["calib_images"]}
    torch2coreml(model, path, precision=export.precision, calibrated=calibrated, export=meta)
    net, readback = readback_model(model, path, into=calibrated)
    checks = [Check("coreml_weights_readback", RAN,
                    readback["min_weight_sqnr_db"] is not None
                    and readback["min_weight_sqnr_db"] >= COREML_MIN_WEIGHT_SQNR_DB,
                    {**readback, "min_sqnr_limit_db": COREML_MIN_WEIGHT_SQNR_DB},
                    "package weights read back on Linux and matched layer by layer to PyTorch")]
    if coreml_runtime_available():
        runner = load_artifact(path, "coreml").batch_fn
        example = runner([v.numpy() for v in example_inputs(model.config, batch=1)])
        checks.append(Check("coreml_predict", RAN, bool(np.all(np.isfinite(example))), {"example_score": example.tolist()},
                            "CoreML predicted on this Mac"))
        return Artifact(export, config, path, [path], runner, RAN, "CoreML on macOS", checks=checks, info=info)
    checks.append(Check("coreml_predict", SKIPPED, None, {}, "CoreML prediction needs macOS"))
    if export.precision != "fp32":
        round_activations_to_fp16(net)
    how = ("PyTorch with the package's weights read back" + (" (fake-quant int8 activations as calibrated)"
                                                             if calibrated is not None else "")
           + (", every layer's output rounded to FP16" if export.precision != "fp32" else ", FP32"))
    from export.burst import module_batch_fn

    # net's own forward: (B,) scores, or (B, n_tasks, T) from the AllTaskScores wrapper of a burst model;
    # a W8A8 net is a torch.fx GraphModule, which carries no config to choose a forward by
    return Artifact(export, config, path, [path], module_batch_fn(net), SIMULATED, how, checks=checks, info=info)


def _coreml_float_modules(model, export: ExportConfig) -> list[str]:
    """The module names ``--float-layer`` names explicitly (``auto`` is searched later); photo models only."""
    from export.float_modules import resolve_float_modules
    from export.quantize import AUTO

    if export.float_layers and model.config.burst is not None:
        raise EdgeIQAError("--float-layer for CoreML is for photo models; a burst model keeps its backbone in int8")
    return resolve_float_modules(model, [p for p in export.float_layers if p != AUTO])


def _calibrate_coreml(model, source, export: ExportConfig, calib, batches, floats: list[str], info: dict
                      ) -> torch.nn.Module:
    """The W8A8 net of ``source`` for CoreML with ``floats`` in float: its calibration (``auto``:
    :func:`_choose_w8a8`) and, for ``--float-layer auto``, the stages
    :func:`export.float_modules.search_float_modules` adds; what was chosen goes into ``info``."""
    from export.calibration import Candidate
    from export.coreml import calibrate_w8a8
    from export.float_modules import search_float_modules
    from export.quantize import AUTO

    calibrated = None
    if export.calib_method == AUTO:
        calibrated, info["calib_auto"] = _choose_w8a8(model, source, model.config, export, calib, batches, floats)
        info["calib_auto_chosen"] = info["calib_auto"]["chosen"]
        chosen = Candidate.parse(info["calib_auto_chosen"])
    else:
        chosen = Candidate(export.calib_method, export.percentile)
    if AUTO in export.float_layers:
        found, info["float_search"] = search_float_modules(model, source, batches, method=chosen.method,
                                                           percentile=chosen.percentile, fixed=floats,
                                                           target=export.float_target)
        floats, calibrated = floats + found, None
    if floats:
        info["float_modules"] = floats
    if calibrated is None:
        calibrated, _ = calibrate_w8a8(source, batches, method=chosen.method, percentile=chosen.percentile,
                                       float_modules=floats)
    return calibrated


def _choose_w8a8(model, source, config: ModelConfig, export: ExportConfig, calib, batches,
                 float_modules: list[str]) -> tuple[torch.nn.Module, dict]:
    """``--calib-method auto`` for CoreML W8A8: each candidate's fake-quant net of ``source`` (what the CoreML
    check simulates, ``float_modules`` in float) scored against the FP32 ``model`` on ``calib_select_split``,
    the best kept; and the record."""
    from export.burst import module_batch_fn
    from export.calibration import COREML_AUTO_CANDIDATES, Candidate
    from export.coreml import calibrate_w8a8
    from export.quantize import SelectionSplit, rank_candidates

    candidates = [Candidate.parse(c) for c in export.calib_candidates] or list(COREML_AUTO_CANDIDATES)
    selection = SelectionSplit(config, calib, export.calib_select_split)
    nets = [calibrate_w8a8(source, batches, method=c.method, percentile=c.percentile, float_modules=float_modules)[0]
            for c in candidates]
    figures = selection.measure_batch_fns([module_batch_fn(net) for net in (model, *nets)])
    best, record = rank_candidates(candidates, selection, figures)
    return nets[best], {**record, "scored_as": "coremltools' fake-quant W8A8 net in PyTorch"}


def _calib_tensors(config: ModelConfig, export: ExportConfig, calib) -> Iterator[tuple[torch.Tensor, ...]]:
    from export.quantize import calibration_paths, view_batches

    if config.burst is not None:  # whole bursts, (B, T, 3, H, W) per view
        from export.burst import calibration_bursts

        items = calibration_bursts(calib, export.calib_split, export.calib_images)
    else:
        items = calibration_paths(calib, export.calib_split, export.calib_images)
    for views, _ in view_batches(items, config):
        yield tuple(torch.from_numpy(v) for v in views)


# --------------------------------------------------------------------------- ExecuTorch


def build_executorch(model: IQAModel, export: ExportConfig, out: Path, calib, meta: dict) -> Artifact:
    """A ``.pte`` with the XNNPACK delegate (:mod:`export.executorch`), scored in ExecuTorch's runtime here."""
    from export.executorch import refuse_burst, torch2pte

    refuse_burst(model.config)  # before calibration reads any image
    path = out / f"model_{export.precision}.pte"
    calibration = list(_calib_tensors(model.config, export, calib)) if export.precision == "int8" else None
    info = torch2pte(model, path, precision=export.precision, calibration=calibration, export=meta)
    delegation = info["delegation"]
    heavy = sorted(op for op in delegation["undelegated_ops"] if any(k in op for k in ("convolution", "linear", "mm")))
    checks = [Check("xnnpack_delegation", RAN, delegation["delegate_calls"] > 0 and not heavy,
                    {**delegation, "undelegated_conv_linear": heavy},
                    "every convolution and linear layer runs in an XNNPACK delegate")]
    runner = load_artifact(path, "executorch").batch_fn
    return Artifact(export, model.config, path, [path], runner, RAN, "ExecuTorch runtime, XNNPACK delegate (CPU)",
                    checks=checks, info=info)


# --------------------------------------------------------------------------- checks


def mac_check(model: IQAModel, artifact: Artifact) -> Check:
    """The artifact's graph MACs (profiler) against the PyTorch count, batch 1 at the config's input."""
    from profiling.macs import count_macs

    torch_macs = count_macs(model, example_inputs(model.config, batch=1)).total
    try:
        if artifact.export.format == "executorch":  # the torch.export program that was lowered, at batch 1
            graph_macs, what = artifact.info["exported_program_macs"], "torch.export program lowered to the .pte"
        elif artifact.export.format == "coreml":
            from export.coreml import coreml_macs

            graph_macs = coreml_macs(artifact.path)
            what = "CoreML program conv/linear MACs"
            if graph_macs is None:
                return Check("macs", SKIPPED, None, {"pytorch_macs": torch_macs},
                             "the package has flexible input shapes; MACs need static shapes")
        else:
            from profiling.onnx_macs import count_onnx_macs

            frames = model.config.burst.frames if model.config.burst is not None else None
            graph_macs = count_onnx_macs(static_for_counting(artifact.graph, model.config), frames=frames)
            what = f"ONNX graph {artifact.graph.name} (profiling.onnx_macs)"
    except EdgeIQAError as err:
        sibling = (artifact.info.get("int8_layout") or {}).get("qdq_layout_macs")
        if sibling is not None:
            return Check("macs", SIMULATED, sibling == torch_macs, {"graph_macs": sibling, "pytorch_macs": torch_macs},
                         "the QOperator graph holds QLinearConv, which the profiler does not count; counted the "
                         "QDQ layout of the same quantized network, built from the same calibration")
        return Check("macs", SKIPPED, None, {"pytorch_macs": torch_macs}, f"graph not countable: {err}")
    return Check("macs", RAN, graph_macs == torch_macs,
                 {"graph_macs": graph_macs, "pytorch_macs": torch_macs, "counted": what})


def static_for_counting(path: Path, config: ModelConfig):
    """The ONNX model with ``full`` views' dynamic height/width set to the config's source size."""
    import onnx

    proto = onnx.load(str(path))
    lead = 1 if config.burst is None else 2  # (B, T, 3, H, W) burst inputs
    for graph_input, view in zip(proto.graph.input, config.views):
        if view.kind != "full":
            continue
        dims = graph_input.type.tensor_type.shape.dim
        for axis, size in ((lead + 1, config.source_size[0]), (lead + 2, config.source_size[1])):
            dims[axis].Clear()
            dims[axis].dim_value = int(size)
    return proto


def reference_scores(model: IQAModel, data: str | Path, split: str = "test", batch_size: int = 8):
    """The FP32 PyTorch model's ``ScoreResult`` rows for ``split`` (reusable across artifacts);
    for a burst model ``{burst: (n_tasks, T) scores}`` (:func:`export.burst.burst_reference_scores`)."""
    if model.config.burst is not None:
        from export.burst import burst_reference_scores

        return burst_reference_scores(model, data, split, batch_size)
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.runtimes.torch_eager import torch_batch_fn
    from edge_iqa.scoring import Scorer

    records = read_manifest(data, split=None if split == "all" else split)
    return Scorer(model.config, torch_batch_fn(model)).score_paths([str(r.path) for r in records], batch_size)


def check_parity(artifact: Artifact, model: IQAModel, data: str | Path, *, split: str = "test",
                 thresholds: Thresholds = THRESHOLDS, batch_size: int = 8,
                 reference: list | None = None) -> tuple[dict[str, Any], list[Check]]:
    """Score ``split`` of ``data`` with the artifact and the FP32 PyTorch model.

    ``reference``: the model's rows from :func:`reference_scores`, when already computed.
    Returns the parity report (what ``parity.json`` holds) and all checks, structural ones included.
    """
    if model.config.burst is not None:
        return check_burst_parity(artifact, model, data, split=split, thresholds=thresholds, batch_size=batch_size,
                                  reference=reference)
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.scoring import Scorer

    records = read_manifest(data, split=None if split == "all" else split)
    paths = [str(r.path) for r in records]
    if reference is None:
        reference = reference_scores(model, data, split, batch_size)
    if [r.path for r in reference] != paths:
        raise EdgeIQAError("reference scores were computed on other images than the check split")
    checks = list(artifact.checks)
    if artifact.runner is None:
        checks.append(Check("accuracy", SKIPPED, None, {}, artifact.runner_note))
        return _report(artifact, data, split, checks, thresholds), checks
    got = Scorer(model.config, artifact.runner).score_paths(paths, batch_size)
    rows = [(a.score, b.score, r.score) for a, b, r in zip(reference, got, records)
            if a.score is not None and b.score is not None]
    if len(rows) < 2:
        raise EdgeIQAError(f"{data}: only {len(rows)} images of split {split!r} could be scored by both models")
    fp32, scores, truth = (np.asarray(c, dtype=np.float64) for c in zip(*rows))
    status = artifact.runner_status
    checks.append(accuracy_check(artifact.export.precision, fp32, scores, truth, status=status,
                                 reason=artifact.runner_note, thresholds=thresholds))
    report = _report(artifact, data, split, checks, thresholds)
    report["failed_images"] = len(records) - len(rows)
    return report, checks


def check_burst_parity(artifact: Artifact, model: IQAModel, data: str | Path, *, split: str = "test",
                       thresholds: Thresholds = THRESHOLDS, batch_size: int = 8,
                       reference: dict | None = None) -> tuple[dict[str, Any], list[Check]]:
    """:func:`check_parity` of a burst artifact on the bursts of ``split`` (see :mod:`export.burst`)."""
    from export.burst import burst_accuracy_check, read_bursts, score_bursts, truth_r0

    bursts = read_bursts(data, split)
    if reference is None:
        reference = reference_scores(model, data, split, batch_size)
    if set(reference) - {b.name for b in bursts}:
        raise EdgeIQAError("reference scores were computed on other bursts than the check split")
    checks = list(artifact.checks)
    if artifact.runner is None:
        checks.append(Check("accuracy", SKIPPED, None, {}, artifact.runner_note))
        return _report(artifact, data, split, checks, thresholds), checks
    got = score_bursts(artifact.runner, model.config, bursts, batch_size)
    both = [b.name for b in bursts if b.name in reference and b.name in got]
    if not both:
        raise EdgeIQAError(f"{data}: no burst of split {split!r} could be scored by both models")
    truth = (truth_r0(reference, data, split, model.config), truth_r0(got, data, split, model.config))
    checks.append(burst_accuracy_check(artifact.export.precision, reference, got, model.config,
                                       status=artifact.runner_status, reason=artifact.runner_note,
                                       thresholds=thresholds, truth=truth))
    report = _report(artifact, data, split, checks, thresholds)
    report["failed_bursts"] = len(bursts) - len(both)
    return report, checks


def _report(artifact: Artifact, data, split: str, checks: list[Check], thresholds: Thresholds) -> dict[str, Any]:
    from dataclasses import asdict

    bad = failed(checks)
    return {
        "artifact": str(artifact.path), "format": artifact.export.format, "precision": artifact.export.precision,
        "model": artifact.config.name, "data": str(data), "split": split,
        "scored_by": {"status": artifact.runner_status, "how": artifact.runner_note},
        "thresholds": asdict(thresholds),
        "checks": [c.to_dict() for c in checks],
        "passed": not bad, "failed_checks": [c.name for c in bad],
        "skipped_checks": [c.name for c in checks if c.status == SKIPPED],
        **({"calib_auto": artifact.info["calib_auto"]} if artifact.info.get("calib_auto") else {}),
    }
