"""Quantization-aware fine-tuning (:mod:`export.qat`) on the export fixture: fake quant on the target's
own grid, one tiny epoch, an INT8 artifact with the learned ranges, and its parity beside PTQ's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def export_fixture(tmp_path_factory):
    from golden_fixtures import fixture_module, fixture_student, rebuilt_data

    module = fixture_module("make_fixture")
    return fixture_student(module), rebuilt_data(module, tmp_path_factory.mktemp("qat") / "data")


@pytest.mark.parametrize("qmin,qmax,symmetric", [(0, 255, False), (-127, 127, True)])
def test_activation_fake_quant_is_onnxruntime_qdq(qmin, qmax, symmetric):
    """The fake quant rounds as ONNX Runtime's QuantizeLinear/DequantizeLinear with the scale and zero point
    its quantizer computes from the range the fake quant reports (what the export writes into the cache)."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    from export.qat import ActivationFakeQuant

    fq = ActivationFakeQuant(-0.7, 5.3, qmin, qmax, symmetric)
    with torch.no_grad():
        fq.scale.mul_(1.37)  # as if training had moved it
    low, high = fq.learned_range()
    dtype = np.uint8 if qmin == 0 else np.int8
    zero, scale = compute_scale_zp(np.array(low, np.float32), np.array(high, np.float32), np.array(qmin, dtype),
                                   np.array(qmax, dtype), symmetric=symmetric)
    x = torch.linspace(-3, 12, 2001)
    expected = (np.clip(np.round(x.numpy() / scale) + zero, qmin, qmax) - zero) * scale
    np.testing.assert_allclose(fq(x).detach().numpy(), expected, atol=1e-5 * float(scale) + 1e-7)


def test_weight_fake_quant_grid():
    from export.qat import WeightFakeQuant

    weight = torch.randn(8, 3, 3, 3)
    got = WeightFakeQuant(64)(weight)
    scale = weight.abs().flatten(1).amax(1).view(-1, 1, 1, 1) / 64
    levels = got / scale
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 64 + 1e-4


def test_qat_cli_onnx_writes_the_artifact_and_parity_beside_ptq(export_fixture, tmp_path, capsys):
    import onnx

    from edge_iqa.cli import main

    student, data = export_fixture
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="only 16 images"):
        code = main(["qat", "tests/fixtures/student.pt", "--data", str(data), "--format", "onnx", "--out", str(out),
                     "--epochs", "1", "--max-images", "32", "--calib-images", "16", "--check", str(data),
                     "--check-split", "val", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code in (0, 1) and result["passed"] == (code == 0)  # the fixture's INT8 misses 0.98 (golden.json)
    record = json.loads((out / "qat.json").read_text())
    assert record["quantizers"] == 106 and record["epochs"][0]["batches"] == 2
    parity = json.loads((out / "parity.json").read_text())
    versus = parity["qat_vs_ptq"]
    accuracy = next(c for c in parity["checks"] if c["name"] == "accuracy")
    assert accuracy["status"] == "ran" and accuracy["detail"]["n"] == 184
    assert versus["qat_spearman_vs_fp32"] == accuracy["detail"]["spearman_vs_fp32"]
    # the PTQ start (epoch 0) and epoch 1 were each scored as INT8 graphs on val; the better one was exported
    pick = record["selection"]
    assert pick["split"] == "val" and [c["epoch"] for c in pick["candidates"]] == [0, 1]
    figures = {c["epoch"]: c["spearman_vs_fp32"] for c in pick["candidates"]}
    assert figures[pick["chosen_epoch"]] == max(figures.values())
    # the exported graph is the chosen one (the check's reference is PyTorch, the selection's the FP32 graph)
    assert accuracy["detail"]["spearman_vs_fp32"] == pytest.approx(figures[pick["chosen_epoch"]], abs=2e-3)
    assert versus["qat_spearman_vs_fp32"] >= versus["ptq_spearman_vs_fp32"] - 2e-3  # never below its own start
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64  # 7-bit: same scores on AVX2 and VNNI
    assert any(n.op_type == "QLinearConv" for n in graph.node)
    print(f"onnx int8 on the fixture (val, n=184): Spearman vs FP32 QAT {versus['qat_spearman_vs_fp32']:.4f} vs PTQ "
          f"{versus['ptq_spearman_vs_fp32']:.4f}; SRCC drop QAT {versus['qat_srcc_drop']:+.4f} vs PTQ "
          f"{versus['ptq_srcc_drop']:+.4f}; kd_mse {record['epochs'][0]['kd_mse']:.2e}")


def test_qat_tensorrt_graph_keeps_the_learned_ranges(export_fixture, tmp_path):
    from export.pipeline import check_parity
    from export.qat import QATConfig, as_artifact, qat_export, read_ranges

    student, data = export_fixture
    qat = QATConfig(format="tensorrt", epochs=1, max_images=32, batch_size=16, calib_images=16, select_split="none")
    with pytest.warns(UserWarning, match="only 16 images"):
        artifact, record = qat_export(student, data, tmp_path, qat)
    checks = {c.name: c for c in artifact.checks}
    assert checks["tensorrt_rules"].passed and artifact.runner_status == "simulated"
    learned, ptq = read_ranges(tmp_path / "calibration_qat.json"), read_ranges(tmp_path / "calibration_ptq.json")
    moved = [name for name in learned if name in ptq and learned[name] != ptq[name]]
    assert len(moved) >= 100 and record["ranges_moved"]["median_width_ratio"] > 0
    assert record["selection"] is None  # select_split none: the last epoch, unscored
    report, _ = check_parity(artifact, student, data, split="val")
    baseline, _ = check_parity(as_artifact(tmp_path / "ptq" / "model_int8_qdq.onnx", student.config, qat, [], {}),
                               student, data, split="val")
    got = [next(c for c in r["checks"] if c["name"] == "accuracy")["detail"] for r in (report, baseline)]
    print(f"tensorrt int8 on the fixture (val, n=184, simulated): Spearman vs FP32 QAT {got[0]['spearman_vs_fp32']:.4f} "
          f"vs PTQ {got[1]['spearman_vs_fp32']:.4f}; SRCC drop QAT {got[0]['srcc_drop']:+.4f} vs PTQ "
          f"{got[1]['srcc_drop']:+.4f}")


def test_qat_coreml_w8a8_package(export_fixture, tmp_path):
    """coremltools' LinearQuantizer in training mode: the package converts, its weights read back, parity runs."""
    from export.pipeline import check_parity
    from export.qat import QATConfig, qat_export

    student, data = export_fixture
    with pytest.warns(UserWarning, match="only 16 images"):
        artifact, record = qat_export(student, data, tmp_path, QATConfig(format="coreml", epochs=1, max_images=32,
                                                                         calib_images=16))
    checks = {c.name: c for c in artifact.checks}
    assert artifact.path.is_dir() and checks["coreml_weights_readback"].passed
    assert record["epochs"][0]["batches"] == 2 and artifact.ptq is not None
    pick = record["selection"]  # the fake-quant net of each state, scored on val as the CoreML check simulates it
    assert [c["epoch"] for c in pick["candidates"]] == [0, 1] and pick["chosen_epoch"] in (0, 1)
    got = [next(c for c in r["checks"] if c["name"] == "accuracy")["detail"]
           for r in (check_parity(a, student, data, split="val")[0] for a in (artifact, artifact.ptq))]
    print(f"coreml W8A8 on the fixture (val, n=184, simulated): Spearman vs FP32 QAT {got[0]['spearman_vs_fp32']:.4f} "
          f"vs PTQ {got[1]['spearman_vs_fp32']:.4f}; SRCC drop QAT {got[0]['srcc_drop']:+.4f} vs PTQ "
          f"{got[1]['srcc_drop']:+.4f}")


def test_qat_repairs_a_deliberately_bad_calibration(export_fixture, tmp_path):
    """Every Conv input range cut to 1/8 of its PTQ range clips most activations; one QAT epoch must bring the
    fake-quant model (ONNX Runtime's U8S8 rounding, as the first test checks) back towards FP32."""
    import copy

    from edge_iqa.metrics import srcc
    from edge_iqa.model import example_inputs
    from edge_iqa.scoring import iter_view_batches
    from export.calibration import calibrate
    from export.fold import fold_batchnorm
    from export.onnx import torch2onnx
    from export.qat import FakeQuantized, QATConfig, finetune, graph_weighted_inputs, read_ranges, write_learned_ranges
    from export.quantize import ViewCalibrationReader, calibration_paths
    from edge_iqa.data.manifest import read_manifest

    student, data = export_fixture
    folded = fold_batchnorm(copy.deepcopy(student).eval(), example_inputs(student.config))
    graph = torch2onnx(folded, tmp_path / "fp32.onnx", node_scopes=True)
    with pytest.warns(UserWarning, match="only 16 images"):
        reader = ViewCalibrationReader(student.config, calibration_paths(data, "train", 16))
    cache = calibrate(graph, reader, tmp_path / "c.json")
    ranges = read_ranges(cache)
    write_learned_ranges(cache, {t: (lo / 8, hi / 8) for t, *_ in graph_weighted_inputs(graph)
                                 for lo, hi in [ranges[t]]})
    fake = FakeQuantized(folded, graph, cache, "onnx")
    val = [r.path for r in read_manifest(data, split="val")]

    def agreement() -> float:
        got, ref = [], []
        with torch.no_grad():
            for views, done, _ in iter_view_batches(val, student.config, 32):
                tensors = [torch.from_numpy(v) for v in views]
                got.append(fake.model(*tensors)), ref.append(student(*tensors))
        return float(srcc(torch.cat(got).numpy(), torch.cat(ref).numpy()))

    before = agreement()
    history = finetune(fake, student.eval(), [r.path for r in read_manifest(data, split="train")],
                       QATConfig(epochs=1, max_images=96, lr=1e-3), None)
    after = agreement()
    print(f"bad calibration (ranges / 8): fake-quant Spearman vs FP32 on val {before:.4f} -> {after:.4f} after QAT "
          f"(kd_mse {history[0]['kd_mse']:.2e})")
    assert after > before + 0.02


def test_qat_refuses_what_it_cannot_do(export_fixture, tmp_path):
    from edge_iqa.errors import EdgeIQAError
    from export.qat import QATConfig

    with pytest.raises(EdgeIQAError, match="QAT exports onnx, tensorrt, coreml"):
        QATConfig(format="executorch")
    with pytest.raises(EdgeIQAError, match="leave --calib-method at minmax"):
        QATConfig(format="coreml", calib_method="quantile")
    with pytest.raises(EdgeIQAError, match="--epochs >= 1"):
        QATConfig(epochs=0)
    with pytest.raises(EdgeIQAError, match="--select-split test: one of val, train, none"):
        QATConfig(select_split="test")


def test_epoch_selection_prefers_the_start_on_ties():
    """The exported state is the best by Spearman vs FP32, then the smaller SRCC drop; the PTQ start wins ties."""
    from types import SimpleNamespace

    from export.qat import pick_epoch

    selection = SimpleNamespace(split="val", count=184, metric="Spearman")
    figures = [{"spearman_vs_fp32": 0.99, "srcc_drop": 0.01}, {"spearman_vs_fp32": 0.99, "srcc_drop": 0.01},
               {"spearman_vs_fp32": 0.98, "srcc_drop": 0.0}]
    best, record = pick_epoch(selection, [0, 1, 2], figures)
    assert best == 0 and record["chosen_epoch"] == 0 and len(record["candidates"]) == 3
    figures[1]["srcc_drop"] = 0.005
    assert pick_epoch(selection, [0, 1, 2], figures)[0] == 1
    figures[2]["spearman_vs_fp32"] = 0.995
    assert pick_epoch(selection, [0, 1, 2], figures)[1]["chosen_epoch"] == 2


def test_qat_without_its_selection_split_fails_before_any_work(export_fixture, tmp_path, capsys):
    """A dataset without the split that picks the epoch: one line naming the option, before calibrating."""
    import shutil

    from edge_iqa.cli import main

    _, data = export_fixture
    bare = tmp_path / "no_val"
    bare.mkdir()
    shutil.copytree(data / "images", bare / "images")  # a symlink would point outside the dataset folder
    lines = (data / "manifest.csv").read_text().splitlines()
    (bare / "manifest.csv").write_text("\n".join([lines[0]] + [l for l in lines[1:] if ",val," not in l]) + "\n")
    out = tmp_path / "run"
    code = main(["qat", "tests/fixtures/student.pt", "--data", str(bare), "--format", "onnx", "--out", str(out)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edge-iqa qat: error")]
    assert code != 0 and len(errors) == 1 and "qat --select-split" in errors[0] and "'val'" in errors[0]
    assert not (out / "calibration_ptq.json").exists()


def test_qat_of_a_burst_model(tmp_path):
    """The burst fixture: one fake quant per conv/linear module of every task's forward; the attention's
    activation × activation MatMuls (one per task) are no module's and keep their PTQ ranges; its INT8
    graph keeps the burst contract and parity runs with the burst metrics."""
    import onnx

    from export.onnx import torch2onnx
    from export.pipeline import check_parity
    from export.qat import QATConfig, qat_export, weighted_nodes
    from golden_fixtures import fixture_module, fixture_student, rebuilt_data

    module = fixture_module("make_burst_fixture")
    student, data = fixture_student(module), rebuilt_data(module, tmp_path / "data")
    graph = onnx.load(str(torch2onnx(student, tmp_path / "fp32.onnx"))).graph
    matmuls = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    with pytest.warns(UserWarning):
        artifact, record = qat_export(student, data, tmp_path / "onnx",
                                      QATConfig(format="onnx", epochs=1, max_images=8, batch_size=4, calib_images=64))
    weighted = weighted_nodes(graph)  # one per conv/linear module; two linears read one tensor: one fake quant
    assert len(weighted) == len(matmuls) - len(student.config.burst.tasks)
    assert record["quantizers"] == len({n.input[0] for n in weighted}) < len(weighted)
    assert record["epochs"][0]["batches"] == 2 and [c["epoch"] for c in record["selection"]["candidates"]] == [0, 1]
    assert [o.name for o in onnx.load(str(artifact.path)).graph.output] == ["scores"]
    report, _ = check_parity(artifact, student, data, split=module.CHECK_SPLIT)
    detail = next(c for c in report["checks"] if c["name"] == "accuracy")["detail"]
    assert detail["burst"] and -1.0 <= detail["mean_burst_spearman"] <= 1.0
    print(f"burst QAT on the fixture ({module.CHECK_SPLIT}): mean per-burst Spearman vs FP32 "
          f"{detail['mean_burst_spearman']:.4f}, chosen epoch {record['selection']['chosen_epoch']} of "
          + ", ".join(f"{c['epoch']}: {c['spearman_vs_fp32']:.4f}" for c in record["selection"]["candidates"]))


def test_coreml_qat_of_a_burst_model(tmp_path):
    """CoreML W8A8 QAT of the burst fixture: coremltools fake-quantizes the spread's ``variance + 1e-6`` before
    its root, which rounds to 0 and made every gradient NaN; with the root's gradient bounded, training stays
    finite, each state is scored per burst, and the package converts with a plain ``torch.sqrt``."""
    import math

    from export.pipeline import check_parity
    from export.qat import QATConfig, qat_export
    from golden_fixtures import fixture_module, fixture_student, rebuilt_data

    module = fixture_module("make_burst_fixture")
    student, data = fixture_student(module), rebuilt_data(module, tmp_path / "data")
    with pytest.warns(UserWarning):
        artifact, record = qat_export(student, data, tmp_path / "coreml", ptq_beside=False,
                                      qat=QATConfig(format="coreml", epochs=1, max_images=8, batch_size=4,
                                                    calib_images=64))
    assert math.isfinite(record["epochs"][0]["kd_mse"]) and record["epochs"][0]["batches"] == 2
    assert [c["epoch"] for c in record["selection"]["candidates"]] == [0, 1]
    assert all(c["spearman_vs_fp32"] > 0 for c in record["selection"]["candidates"])
    checks = {c.name: c for c in artifact.checks}
    assert artifact.path.is_dir() and checks["coreml_weights_readback"].passed and "relation head" in record["scheme"]
    report, _ = check_parity(artifact, student, data, split=module.CHECK_SPLIT)
    detail = next(c for c in report["checks"] if c["name"] == "accuracy")["detail"]
    assert detail["burst"] and 0.0 < detail["mean_burst_spearman"] <= 1.0 and math.isfinite(detail["max_abs_delta"])
    print(f"CoreML burst QAT on the fixture ({module.CHECK_SPLIT}, simulated): mean per-burst Spearman vs FP32 "
          f"{detail['mean_burst_spearman']:.4f}, chosen epoch {record['selection']['chosen_epoch']} of "
          + ", ".join(f"{c['epoch']}: {c['spearman_vs_fp32']:.4f}" for c in record["selection"]["candidates"]))


def test_bound_sqrt_gradients_keeps_the_forward_and_bounds_the_gradient_at_zero():
    """The fx rewrite: same values, gradient at 0 that of sqrt(v + 1e-6) at v = 0 (500), undone exactly."""
    import torch.fx

    from export.qat import bound_sqrt_gradients

    class Root(torch.nn.Module):
        def forward(self, x):
            return torch.sqrt(x)

    traced = torch.fx.symbolic_trace(Root())
    x = torch.tensor([0.0, 0.25, 4.0], requires_grad=True)
    undo = bound_sqrt_gradients(traced)
    y = traced(x)
    y.sum().backward()
    assert torch.equal(y.detach(), torch.sqrt(x.detach()))
    assert torch.allclose(x.grad, torch.tensor([500.0, 1.0, 0.25]))
    undo()
    assert [n.target for n in traced.graph.nodes if n.op == "call_function"] == [torch.sqrt]
