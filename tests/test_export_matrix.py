"""Accuracy regression of every export (format × precision) of a small trained student.

The fixture (``tests/fixtures/student.pt``, made by ``tests/fixtures/make_fixture.py``) is the
demo-student architecture at tiny views, trained for real on the embedded synthetic dataset,
which is rebuilt here identically from ``build_synth_dataset``. Each artifact is exported,
scored on the check split (``make_fixture.CHECK_SPLIT``, with why) next to the FP32 PyTorch
model and must (1) meet issue 5's limits
(:data:`export.parity.THRESHOLDS`) and (2) be no worse than the golden metrics recorded in
``tests/fixtures/golden.json`` beyond a small tolerance, so a change that degrades an export
fails here. Where TensorRT or CoreML cannot run (no ``tensorrt``, not macOS) the accuracy
check is *simulated* and the engine/prediction checks are *skipped* with their reason.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from golden_fixtures import fixture_module, fixture_student, golden_of, rebuilt_data

make_fixture = fixture_module("make_fixture")

GOLDEN = golden_of(make_fixture)
# Allowed slack against golden: calibration and kernels are deterministic on one machine, but
# other CPUs (ISA-specific int8 kernels) move the numbers a little.
SRCC_DROP_SLACK = 0.005
SPEARMAN_SLACK = 0.005
DELTA_FACTOR = 2.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return rebuilt_data(make_fixture, tmp_path_factory.mktemp("export") / "data")


@pytest.fixture(scope="module")
def student():
    return fixture_student(make_fixture)


@pytest.fixture(scope="module")
def reference(student, data):
    from export.pipeline import reference_scores

    return reference_scores(student, data, make_fixture.CHECK_SPLIT)


def golden_options(fmt: str, precision: str) -> dict:
    """The stages ``--float-layer auto`` left in float when golden.json was made, passed explicitly."""
    layers = GOLDEN["matrix"][f"{fmt}/{precision}"].get("float_layers") or []
    return {"float_layers": tuple(layers)} if layers else {}


@pytest.fixture(scope="module")
def exports(student, data, tmp_path_factory):
    """Artifacts made once per module, keyed by (format, precision)."""
    from export.formats import ExportConfig
    from export.pipeline import export_model

    out = tmp_path_factory.mktemp("artifacts")
    made = {}

    def get(fmt: str, precision: str, **options):
        options = {**golden_options(fmt, precision), **options}
        key = (fmt, precision, tuple(sorted(options.items())))
        if key not in made:
            config = ExportConfig(format=fmt, precision=precision, **{**make_fixture.CALIB, **options})
            folder = out / "_".join([fmt, precision, *(f"{k}-{v}" for k, v in sorted(options.items()))])
            made[key] = export_model(student, config, folder, calib=data)
        return made[key]

    return get


def test_fixture_is_small_and_documented():
    assert make_fixture.STUDENT.stat().st_size < 5_000_000
    assert GOLDEN["command"].startswith("python tests/fixtures/make_fixture.py")
    assert set(GOLDEN["matrix"]) == {f"{f}/{p}" for f, p in make_fixture.MATRIX}


def test_matrix_covers_the_format_table():
    from export.formats import FORMATS

    covered = {(f, p) for f, p in make_fixture.MATRIX}
    for fmt in FORMATS.values():
        if fmt.name == "executorch":  # its own golden file and test (torch >= 2.15): tests/test_executorch_export.py
            continue
        assert {p for f, p in covered if f == fmt.name} | {"fp32"} >= set(fmt.precisions) - {"fp32"}


@pytest.mark.parametrize("fmt,precision", make_fixture.MATRIX, ids=[f"{f}-{p}" for f, p in make_fixture.MATRIX])
def test_export_accuracy(fmt, precision, exports, student, data, reference):
    from export.formats import get_format
    from export.parity import RAN, SIMULATED, SKIPPED
    from export.pipeline import check_parity

    artifact = exports(fmt, precision)
    report, checks = check_parity(artifact, student, data, split=make_fixture.CHECK_SPLIT, reference=reference)
    status = {c.name: c for c in checks}
    runtime = get_format(fmt).runtime_available()

    # How the accuracy was obtained, said honestly, and nothing skipped counted as passed.
    assert status["accuracy"].status == (RAN if runtime else SIMULATED)
    for check in checks:
        if check.status == SKIPPED:
            assert check.passed is None and check.reason
            print(f"{fmt}/{precision}: {check.name} skipped: {check.reason}")
    if fmt == "tensorrt":
        assert status["tensorrt_rules"].passed, status["tensorrt_rules"].detail["errors"]
        assert status["tensorrt_engine_build"].status == (RAN if runtime else SKIPPED)
    if fmt == "coreml":
        assert status["coreml_weights_readback"].passed, status["coreml_weights_readback"].detail
        assert status["coreml_predict"].status == (RAN if runtime else SKIPPED)
    assert status["macs"].status in (RAN, SIMULATED) and status["macs"].passed, status["macs"].detail  # item 6

    # Issue 5's limits, wherever golden met them. Rows that golden.json records beyond the limits
    # (INT8 of this tiny fixture, see make_fixture.py) must keep saying so, and not get worse.
    golden = GOLDEN["matrix"][f"{fmt}/{precision}"]
    if golden["passed"]:
        assert report["passed"], [(c.name, c.detail) for c in checks if c.passed is False]
    else:
        assert report["failed_checks"] == ["accuracy"], report["failed_checks"]
        print(f"{fmt}/{precision}: beyond issue 5's limits on the fixture, as recorded in golden.json "
              f"(Spearman vs FP32 {status['accuracy'].detail['spearman_vs_fp32']:.4f}, "
              f"SRCC drop {status['accuracy'].detail['srcc_drop']:+.4f})")

    # No worse than golden.
    got = status["accuracy"].detail
    assert got["n"] == golden["n"]
    assert got["srcc_drop"] <= golden["srcc_drop"] + SRCC_DROP_SLACK
    assert got["spearman_vs_fp32"] >= golden["spearman_vs_fp32"] - SPEARMAN_SLACK
    assert got["max_abs_delta"] <= DELTA_FACTOR * golden["max_abs_delta"] + 1e-6
    assert got["fp32"]["srcc"] == pytest.approx(golden["fp32_srcc"], abs=1e-6)  # same reference model


def test_int8_cpu_artifact_is_small_and_u8s8(exports, requantize):
    import onnx
    from onnx import numpy_helper

    artifact = exports("onnx", "int8")
    # The layout is a setting, never a timing: the artifact under test is the same on every machine.
    layout = artifact.info["int8_layout"]
    assert (layout["requested"], layout["chosen"]) == ("qoperator", "qoperator") and "latency_ms" not in layout
    # Every layer int8 (the artifact keeps some stages in float). Issue 5 asks ≤ 0.3× FP32: the
    # QOperator layout meets it; QDQ adds a DequantizeLinear node (name, scale, zero point) per
    # weight, which for this depthwise-heavy student (9 int8 bytes per depthwise channel) is ~0.32×.
    sizes = {layout: requantize(flavour="cpu", layout=layout).stat().st_size / artifact.info["fp32_onnx_bytes"]
             for layout in ("qdq", "qoperator")}
    assert sizes["qoperator"] <= 0.3 and sizes["qdq"] <= 0.33, sizes
    path = requantize(flavour="cpu", layout="qdq")
    proto = onnx.load(str(path))
    zero_points = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.name.endswith("zero_point")]
    assert any(z.dtype == np.uint8 for z in zero_points)  # U8 activations for ONNX Runtime on x86


@pytest.mark.parametrize("layout", ["qdq", "qoperator"])
def test_int8_cpu_weights_fit_every_x86_kernel(layout, exports, requantize):
    """7-bit weights: two u8×s8 products sum to at most 2·255·64 = 32640, so AVX2's saturating int16
    ``vpmaddubsw`` (no VNNI) and VNNI's int32 ``vpdpbusd`` compute the same integers and the golden
    metrics hold on both (see :mod:`export.quantize`; ``benchmarks/int8_kernel_families.py``)."""
    import onnx
    from onnx import numpy_helper

    artifact = exports("onnx", "int8")
    for path in (artifact.path, requantize(flavour="cpu", layout=layout)):
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8]
        assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def test_int8_cpu_8bit_weights_use_the_full_range_and_warn_where_sums_saturate(requantize, monkeypatch):
    """``--cpu-weight-bits 8``: full-range weights, recorded in the metadata; loading the graph on a core
    whose U8S8 kernel saturates (x86 without VNNI) warns once, in one line, and still scores."""
    import json
    import warnings

    import onnx
    from onnx import numpy_helper

    import edge_iqa.bench
    from edge_iqa.runtimes import load_artifact
    from export.metadata import EXPORT_KEY

    path = requantize(flavour="cpu", layout="qoperator", weight_bits=8)
    proto = onnx.load(str(path))
    weights = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) > 64
    settings = json.loads({p.key: p.value for p in proto.metadata_props}[EXPORT_KEY])
    assert settings["cpu_weight_bits"] == 8 and "8 bits" in settings["int8_types"]
    for saturates in (False, True):
        monkeypatch.setattr(edge_iqa.bench, "int8_sums_saturate", lambda: saturates)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = load_artifact(path, "onnxruntime")
        lines = [str(w.message) for w in caught if "cpu-weight-bits 7" in str(w.message)]
        assert len(lines) == (1 if saturates else 0) and all("\n" not in line for line in lines)
        assert loaded.config is not None


def test_cpu_weight_bits_is_checked():
    from edge_iqa.errors import EdgeIQAError
    from export.formats import ExportConfig

    assert ExportConfig(format="onnx", precision="int8", cpu_weight_bits=8).cpu_weight_bits == 8
    with pytest.raises(EdgeIQAError, match="choose 7 or 8"):
        ExportConfig(format="onnx", precision="int8", cpu_weight_bits=6)
    with pytest.raises(EdgeIQAError, match="applies to --format onnx --precision int8"):
        ExportConfig(format="tensorrt", precision="int8", cpu_weight_bits=8)


@pytest.fixture(scope="module")
def fp32_graph(student, tmp_path_factory):
    """The FP32 graph with the exporter's module scopes, as ``export_model`` quantizes it."""
    from export.onnx import torch2onnx

    return torch2onnx(student, tmp_path_factory.mktemp("graph") / "fp32.onnx", node_scopes=True)


@pytest.fixture
def requantize(exports, fp32_graph, tmp_path):
    """Another int8 graph of the fixture from the FP32 graph and the int8 export's calibration."""
    from export.quantize import quantize_onnx

    def make(**options):
        cache = exports("onnx", "int8").path.with_name("calibration_minmax.json")
        return quantize_onnx(fp32_graph, tmp_path / "q.onnx", None, cache=cache, **options)

    return make


def test_tensorrt_checker_rejects_the_cpu_graphs(exports, requantize):
    from export.tensorrt import check_tensorrt_graph

    qdq = check_tensorrt_graph(requantize(flavour="cpu", layout="qdq"), expect_int8=True)
    assert not qdq.ok and any("zero point" in e for e in qdq.errors)
    qop = check_tensorrt_graph(requantize(flavour="cpu", layout="qoperator"), expect_int8=True)
    assert not qop.ok and any("QLinearConv" in e for e in qop.errors)
    trt = check_tensorrt_graph(exports("tensorrt", "int8").graph, expect_int8=True)
    assert trt.ok and trt.quantized_weights > 0


def test_tensorrt_graph_quantizes_only_weighted_layer_inputs(requantize):
    """NVIDIA's placement: Q/DQ on the inputs of Conv/Gemm, never on their outputs or pointwise ops."""
    import onnx

    from export.quantize import TENSORRT_QUANTIZED_OPS

    graph = onnx.load(str(requantize(flavour="tensorrt"))).graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dequantized = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    users = {u.op_type for dq in dequantized for u in consumers.get(dq.output[0], [])}
    assert dequantized and users <= set(TENSORRT_QUANTIZED_OPS), users
    weighted = [n for n in graph.node if n.op_type in TENSORRT_QUANTIZED_OPS]
    dq_outputs = {dq.output[0] for dq in dequantized}
    assert all(n.input[0] in dq_outputs for n in weighted)  # and every weighted layer reads int8 input


def test_tensorrt_export_writes_script_and_sidecar(exports):
    from edge_iqa.config import ModelConfig
    from edge_iqa.runtimes import CONFIG_KEY
    from export.tensorrt import read_sidecar

    artifact = exports("tensorrt", "int8")
    script = (artifact.path.parent / "build_engine.sh").read_text()
    assert f"--onnx={artifact.graph.name}" in script and "--stronglyTyped" in script
    assert "--useDLACore=0" in script and "--allowGPUFallback" in script
    assert "--minShapes=view0:1x3x48x64,view1:1x3x48x48" in script
    sidecar = read_sidecar(artifact.path)
    assert ModelConfig.from_dict(sidecar[CONFIG_KEY]) == artifact.config


def test_tensorrt_engine_runs(exports, student, data, reference):
    from export.tensorrt import tensorrt_available

    if not tensorrt_available():
        pytest.skip("tensorrt does not import here: the engine build and run need a GPU with TensorRT "
                    "(the accuracy check ran the same QDQ graph in ONNX Runtime)")
    from export.pipeline import check_parity

    report, _ = check_parity(exports("tensorrt", "int8"), student, data, split=make_fixture.CHECK_SPLIT,
                             reference=reference)
    assert report["scored_by"]["status"] == "ran" and report["passed"]


def test_coreml_predicts(exports):
    from export.coreml import coreml_runtime_available

    if not coreml_runtime_available():
        pytest.skip("CoreML prediction needs macOS; on Linux the package's weights were read back instead")
    artifact = exports("coreml", "fp16")
    assert artifact.runner_status == "ran"


def test_score_takes_a_coreml_package_where_coreml_runs(exports, data, capsys):
    """``edge-iqa score`` accepts a CoreML package: it scores on macOS and says why not elsewhere."""
    from edge_iqa.cli import main
    from edge_iqa.data.manifest import read_manifest
    from export.coreml import coreml_runtime_available

    package = exports("coreml", "fp16").path
    image = read_manifest(data, split="test")[0].path
    code = main(["score", str(package), str(image), "--json"])
    captured = capsys.readouterr()
    if coreml_runtime_available():
        assert code == 0 and math.isfinite(json.loads(captured.out)["results"][0]["score"])
    else:
        assert code == 2 and "predict only on macOS" in captured.err
        assert len(captured.err.strip().splitlines()) == 1


def test_scoring_api_and_cli_take_the_int8_onnx(exports, data, student, capsys):
    from edge_iqa.cli import main
    from edge_iqa.data.manifest import read_manifest
    from edge_iqa.scoring import load

    artifact = exports("onnx", "int8")
    record = read_manifest(data, split="test")[0]
    score = load(artifact.path).score(record.path)
    with torch.no_grad():
        from edge_iqa.runtimes.torch_eager import torch_batch_fn
        from edge_iqa.scoring import Scorer

        fp32 = Scorer(student.config, torch_batch_fn(student)).score(record.path)
    expected = Scorer(student.config, artifact.runner).score(record.path)  # what the parity check ran
    assert math.isfinite(score) and score == pytest.approx(expected, abs=1e-6)
    assert abs(score - fp32) <= GOLDEN["matrix"]["onnx/int8"]["max_abs_delta"] * DELTA_FACTOR
    assert main(["evaluate", str(artifact.path), "--data", str(data), "--split", make_fixture.CHECK_SPLIT,
                 "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == GOLDEN["matrix"]["onnx/int8"]["n"]


def test_cli_export_with_check(data, tmp_path, capsys):
    from edge_iqa.cli import main

    out = tmp_path / "cli"
    code = main(["export", str(make_fixture.STUDENT), "--format", "onnx", "--precision", "fp32",
                 "--check", str(data), "--check-split", "test", "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["passed"]
    parity = json.loads((out / "parity.json").read_text())
    accuracy = next(c for c in parity["checks"] if c["name"] == "accuracy")
    assert accuracy["status"] == "ran" and accuracy["detail"]["max_abs_delta"] <= 1e-4
    for key in ("srcc", "plcc", "mae"):
        assert key in accuracy["detail"]["fp32"] and key in accuracy["detail"]["artifact"]
    for key in ("srcc_drop", "max_abs_delta", "mean_abs_delta", "sqnr_db", "spearman_vs_fp32"):
        assert key in accuracy["detail"]
    assert (out / "export.json").is_file() and (out / "model_fp32.onnx").is_file()


def test_cli_int8_json_stays_one_object(data, tmp_path, capsys):
    """Histogram calibrators (percentile, entropy) print progress; ``--json`` stdout must stay one object."""
    method = "percentile"
    from edge_iqa.cli import main

    code = main(["export", str(make_fixture.STUDENT), "--format", "onnx", "--precision", "int8", "--calib", str(data),
                 "--calib-images", "8", "--calib-method", method, "--cpu-layout", "qdq", "--out", str(tmp_path),
                 "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["export"]["export_config"]["calib_method"] == method


@pytest.mark.parametrize("argv,message", [
    (["--format", "tflite"], "unknown export format 'tflite'"),
    (["--format", "onnx", "--precision", "w8"], "--precision w8 is not available for --format onnx"),
    (["--format", "onnx", "--precision", "int8"], "pass --calib DATA"),
    (["--format", "coreml", "--precision", "int8"], "pass --calib DATA"),
    (["--format", "onnx", "--calib-method", "mse"], "unknown calibration method 'mse'"),
    (["--format", "coreml", "--precision", "int8", "--calib-method", "entropy"],
     "--calib-method entropy is not available for --format coreml"),
    (["--format", "coreml", "--precision", "fp16", "--float-layer", "head"], "--float-layer applies to int8"),
])
def test_bad_options_give_one_line(argv, message, tmp_path, capsys):
    from edge_iqa.cli import main

    code = main(["export", str(make_fixture.STUDENT), *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_checkpoint_gives_one_line(tmp_path, capsys):
    from edge_iqa.cli import main

    code = main(["export", str(tmp_path / "nope.pt"), "--format", "onnx", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "checkpoint not found" in err and len(err.splitlines()) == 1


def test_export_config_round_trips_and_refuses_unknown_fields():
    from edge_iqa.errors import EdgeIQAError
    from export.formats import ExportConfig

    config = ExportConfig(format="tensorrt", calib_method="entropy", float_layers=("node_*",))
    assert config.precision == "int8"  # the format's default
    assert ExportConfig.from_dict(json.loads(config.to_json())) == config
    with pytest.raises(EdgeIQAError, match="unknown fields"):
        ExportConfig.from_dict({**config.to_dict(), "secret": 1})


def test_skipped_check_is_never_passed():
    from export.parity import SKIPPED, Check, failed

    check = Check("tensorrt_engine_build", SKIPPED, True, reason="no tensorrt")
    assert check.passed is None and not failed([check]) and check.line().startswith("----")


def test_float_layer_patterns_and_unknown_names(fp32_graph):
    from edge_iqa.errors import EdgeIQAError
    from export.quantize import layer_groups, resolve_float_layers

    graph = fp32_graph
    groups = layer_groups(graph)
    assert {"input", "head", "branches.0.stem", "branches.1.blocks.4"} <= set(groups)
    se = resolve_float_layers(graph, ["*.se"])
    assert se and all(n in {m for g in groups.values() for m in g} for n in se)
    assert resolve_float_layers(graph, ["head"]) == groups["head"]
    with pytest.raises(EdgeIQAError, match="matches no node or module"):
        resolve_float_layers(graph, ["branches.7.nothing"])


def test_float_layers_stay_float(fp32_graph, requantize):
    import onnx

    from export.quantize import resolve_float_layers

    path = requantize(flavour="cpu", layout="qdq", float_nodes=resolve_float_layers(fp32_graph, ["head"]))
    graph = onnx.load(str(path)).graph
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert gemms and all(producers.get(n.input[1]) != "DequantizeLinear" for n in gemms)  # float weights


@pytest.mark.parametrize("method", ["percentile", "entropy", "quantile"])
def test_histogram_calibrations_run(method, student, data, tmp_path):
    from export.formats import ExportConfig
    from export.pipeline import export_model

    config = ExportConfig(format="tensorrt", precision="int8", calib_method=method, calib_images=8)
    with pytest.warns(UserWarning, match="only 8 images"):
        artifact = export_model(student, config, tmp_path, calib=data)
    assert artifact.checks[1].name == "tensorrt_rules" and artifact.checks[1].passed
    assert (tmp_path / f"calibration_{method}.json").is_file()


def test_float_layer_search_improves_agreement(fp32_graph, student, data, tmp_path):
    from export.quantize import ViewCalibrationReader, calibration_paths, search_float_layers

    fp32 = fp32_graph
    with pytest.warns(UserWarning):
        reader = ViewCalibrationReader(student.config, calibration_paths(data, "train", 16))
    nodes, record = search_float_layers(fp32, reader, flavour="tensorrt", cache=tmp_path / "c.json",
                                        target=1.0, max_groups=2, max_float_mac_share=0.05)
    # a tight MAC cap: fewer stage groups fit, so fewer trial quantizations (each one re-quantizes every
    # weight in ONNX Runtime's per-channel loop), and the search still takes two rounds on this fixture
    first, last = record["history"][0]["spearman_vs_fp32"], record["history"][-1]["spearman_vs_fp32"]
    assert len(record["groups"]) <= 2 and last >= first and (nodes or last == first)
    assert record["float_mac_share"] <= 0.05 and record["reached"] == (last >= 1.0)
