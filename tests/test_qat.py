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


@pytest.mark.parametrize("fmt", ["onnx", "tensorrt"])
def test_qat_artifact_runs_and_its_parity_is_recorded(fmt, export_fixture, tmp_path):
    import onnx

    from export.formats import ExportConfig
    from export.pipeline import check_parity, export_model
    from export.qat import QATConfig, qat_export, read_ranges

    student, data = export_fixture
    qat = QATConfig(format=fmt, epochs=1, max_images=64, batch_size=16, calib_images=16)
    with pytest.warns(UserWarning, match="only 16 images"):
        artifact, record = qat_export(student, data, tmp_path / "qat", qat)
    assert artifact.path.is_file() and record["quantizers"] == 106 and len(record["epochs"]) == 1
    assert record["epochs"][0]["batches"] == 4 and np.isfinite(record["epochs"][0]["kd_mse"])
    cache = read_ranges(tmp_path / "qat" / "calibration_qat.json")
    report, checks = check_parity(artifact, student, data, split="val")
    accuracy = next(c for c in checks if c.name == "accuracy")
    assert accuracy.status == ("ran" if fmt == "onnx" else "simulated") and accuracy.detail["n"] == 184
    graph = onnx.load(str(artifact.path)).graph
    weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    widest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert widest <= (64 if fmt == "onnx" else 127)  # ONNX Runtime's 7-bit weights kept (same scores on AVX2/VNNI)
    if fmt == "tensorrt":
        assert next(c for c in checks if c.name == "tensorrt_rules").passed
    assert len(cache) >= 106
    with pytest.warns(UserWarning, match="only 16 images"):
        ptq = export_model(student, ExportConfig(format=fmt, precision="int8", calib_images=16), tmp_path / "ptq",
                           calib=data)
    ptq_report, _ = check_parity(ptq, student, data, split="val")
    ptq_accuracy = next(c for c in ptq_report["checks"] if c["name"] == "accuracy")["detail"]
    print(f"{fmt} int8 on the fixture (val, n=184): Spearman vs FP32 QAT {accuracy.detail['spearman_vs_fp32']:.4f} "
          f"vs PTQ {ptq_accuracy['spearman_vs_fp32']:.4f}; SRCC drop QAT {accuracy.detail['srcc_drop']:+.4f} "
          f"vs PTQ {ptq_accuracy['srcc_drop']:+.4f}; kd_mse {record['epochs'][0]['kd_mse']:.2e}")


def test_qat_refuses_what_it_cannot_do(export_fixture, tmp_path):
    from edge_iqa.errors import EdgeIQAError
    from export.qat import QATConfig

    with pytest.raises(EdgeIQAError, match="CoreML W8A8 QAT is not built yet"):
        QATConfig(format="coreml")
    with pytest.raises(EdgeIQAError, match="--epochs >= 1"):
        QATConfig(epochs=0)
