"""AdaRound (:mod:`export.adaround`): learned rounding reconstructs a layer's output better than
rounding to nearest, its integers survive ONNX Runtime's own weight quantizer, and
``edge-iqa export --weight-rounding adaround`` writes an INT8 artifact from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from onnx import TensorProto
from torch import nn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        x = torch.relu(self.dw(torch.relu(self.a(x))))
        return self.head(x.mean((2, 3))).squeeze(1)


def _inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(2, 3, 12, 12, generator=g),) for _ in range(n)]


GRIDS = {"onnx-7bit": (-64, 64, True), "8bit-symmetric": (-127, 127, True), "coreml-affine": (-128, 127, False)}


@pytest.mark.parametrize("grid_name", list(GRIDS))
def test_adaround_beats_nearest_and_stays_on_the_grid(grid_name):
    from export.adaround import AdaRoundConfig, Grid, adaround

    grid = Grid(*GRIDS[grid_name])
    torch.manual_seed(0)
    model = _TwoConvs().eval()
    batches = _inputs()
    rounded, records = adaround(model, batches, grid, AdaRoundConfig(iterations=150, images=8, batch_images=4))
    assert [r["layer"] for r in records] == ["a", "dw", "head"]
    first = records[0]  # same inputs as the FP32 model: a like-for-like comparison
    assert first["kept"] == "adaround" and first["mse_adaround"] < first["mse_nearest"] and first["flipped"] > 0
    for name in ("a", "dw", "head"):
        before, after = getattr(model, name).weight.detach(), getattr(rounded, name).weight.detach()
        for got, want in zip(grid.params(after), grid.params(before)):
            assert torch.equal(got, want)  # the quantizer computes the same scale and zero point from the result
        scale, zero = grid.params(after)
        levels = after / scale + zero
        free = ~grid.pinned(before)
        assert torch.allclose(levels[free], levels[free].round(), atol=1e-4)  # on the grid, bar the pinned
        assert levels.round().min() >= grid.qmin and levels.round().max() <= grid.qmax
        assert (levels.round() - grid.integers(before)).abs().max() <= 1  # floor or ceil only
        assert torch.equal(after[~free], before[~free])
    assert not torch.equal(model.a.weight, rounded.a.weight)  # a copy was rounded, not the model


def test_cache_holds_as_many_images_as_fit_and_at_least_one():
    from export.adaround import AdaRoundConfig, cached_images

    cfg = AdaRoundConfig(images=32, cache_mb=100)
    assert cached_images(1 << 20, cfg, available=64) == 32  # 1 MB an image: all 32 fit
    assert cached_images(10 << 20, cfg, available=64) == 10  # 10 MB an image: 10 of them
    assert cached_images(500 << 20, cfg, available=64) == 1  # one image is more than the cap: still one
    assert cached_images(1 << 20, cfg, available=5) == 5  # no more than the calibration set holds


class _Unreachable(nn.Module):
    def forward(self, x):
        raise AssertionError("the capturing forward ran past the layer it captures")


def test_capture_stops_at_the_layer_and_takes_the_first_images():
    from export.adaround import _capture_inputs

    conv = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(nn.Identity(), conv, _Unreachable()).eval()
    batches = _inputs(n=3)  # 3 batches of 2 images
    got = _capture_inputs(model, conv, batches, images=5, chunk=4)
    assert torch.equal(got, torch.cat([b[0] for b in batches])[:5])


def test_a_tight_cache_rounds_the_large_layer_on_fewer_images():
    """``cache_mb`` smaller than the first layer's 8 images: that layer caches fewer, the rest all 8, and
    AdaRound still reconstructs it better than nearest rounding."""
    from export.adaround import AdaRoundConfig, adaround, summary, symmetric_grid

    torch.manual_seed(0)
    model = _TwoConvs().eval()
    batches = [(torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(i)),) for i in range(4)]
    # layer "a": (3 + 8) x 96 x 96 floats, twice: 811 kB an image; "dw": 8 + 8 channels, 1.2 MB an image
    cfg = AdaRoundConfig(iterations=100, images=8, cache_mb=3)
    _, records = adaround(model, batches, symmetric_grid(127), cfg)
    images = {r["layer"]: r["images"] for r in records}
    assert images == {"a": 3, "dw": 2, "head": 8}
    assert records[0]["kept"] == "adaround" and records[0]["mse_adaround"] < records[0]["mse_nearest"]
    assert summary(cfg, symmetric_grid(127), records)["fewest_images"] == 2


@pytest.mark.parametrize("reduce_range,qmax", [(True, 64), (False, 127)])
def test_onnxruntime_quantizer_keeps_the_chosen_integers(reduce_range, qmax):
    """ONNX Runtime's own per-channel weight quantizer (``quantize_data``, what quantize_static calls for each
    output channel) gives back exactly AdaRound's integers: it would not round them again."""
    from onnxruntime.quantization.quant_utils import quantize_data

    from export.adaround import AdaRoundConfig, adaround, symmetric_grid

    torch.manual_seed(1)
    model = _TwoConvs().eval()
    grid = symmetric_grid(qmax)
    rounded, _ = adaround(model, _inputs(), grid, AdaRoundConfig(iterations=60, images=8))
    for name in ("a", "dw", "head"):
        weight = getattr(rounded, name).weight.detach()
        scale, _ = grid.params(weight)
        chosen = (weight / scale).round().numpy()
        np.testing.assert_array_equal(grid.integers(weight).numpy(), chosen)
        for c in range(weight.shape[0]):
            _, _, quantized = quantize_data(weight[c].numpy().ravel(), TensorProto.INT8, True, reduce_range)
            np.testing.assert_array_equal(np.asarray(quantized, np.float32), chosen[c].ravel())


def test_coreml_weight_observer_keeps_the_chosen_integers():
    """torch.ao's per-channel affine min/max observer, the weight observer of coremltools' W8A8
    ``LinearQuantizer``, computes the same grid from AdaRound's weights and its fake quant leaves them as
    they are (the pinned min/max elements excepted, which it rounds to nearest as it would have)."""
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    from export.adaround import COREML_GRID, AdaRoundConfig, adaround

    torch.manual_seed(2)
    model = _TwoConvs().eval()
    rounded, _ = adaround(model, _inputs(), COREML_GRID, AdaRoundConfig(iterations=60, images=8))
    for name in ("a", "dw", "head"):
        weight = getattr(rounded, name).weight.detach()
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_affine)
        observer(weight)
        scale, zero = observer.calculate_qparams()
        ours = COREML_GRID.params(weight)
        assert torch.equal(scale, ours[0].flatten()) and torch.equal(zero.float(), ours[1].flatten())
        faked = torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -128, 127)
        free = ~COREML_GRID.pinned(weight)
        torch.testing.assert_close(faked[free], weight[free], rtol=0, atol=1e-6)


def test_check_on_grid_refuses_weights_off_the_grid(tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    from edge_iqa.errors import EdgeIQAError
    from export.adaround import check_on_grid, symmetric_grid

    w = np.array([[[[1.0, 0.5]]], [[[-2.0, 0.7]]]], np.float32)  # (2, 1, 1, 2); 0.7 is off 2/64's grid
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(EdgeIQAError, match="off their INT8 grid"):
        check_on_grid(path, symmetric_grid(64))
    w[1, 0, 0, 1] = -2.0 * 22 / 64
    onnx.save(helper.make_model(helper.make_graph(
        [node], "g", list(graph.input), list(graph.output), [numpy_helper.from_array(w, "w")])), str(path))
    check_on_grid(path, symmetric_grid(64))


@pytest.fixture(scope="module")
def export_fixture(tmp_path_factory):
    from golden_fixtures import fixture_module, fixture_student, rebuilt_data

    module = fixture_module("make_fixture")
    return fixture_student(module), rebuilt_data(module, tmp_path_factory.mktemp("adaround") / "data")


@pytest.mark.parametrize("target", ["onnx", "coreml"])
def test_export_cli_adaround_records_its_rounding(export_fixture, tmp_path, capsys, monkeypatch, target):
    import functools

    import export.adaround
    from edge_iqa.cli import main

    monkeypatch.setattr(export.adaround, "AdaRoundConfig",  # a few steps: the unit tests above judge the rounding
                        functools.partial(export.adaround.AdaRoundConfig, iterations=20, images=4))
    _, data = export_fixture
    out = tmp_path / "int8"
    layout = ["--cpu-layout", "qdq"] if target == "onnx" else []
    code = main(["export", "tests/fixtures/student.pt", "--format", target, "--precision", "int8", "--calib", str(data),
                 "--weight-rounding", "adaround", *layout, "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)["export"]
    assert code == 0 and report["export_config"]["weight_rounding"] == "adaround"
    rounding = report["info"]["adaround"]
    assert rounding["layers"] == 106 and rounding["config"]["iterations"] == 20
    assert rounding["grid"]["symmetric"] == (target == "onnx")
    assert rounding["sum_mse_adaround"] <= rounding["sum_mse_nearest"]
    if target == "onnx":
        import onnx

        from export.metadata import EXPORT_KEY

        metadata = {p.key: p.value for p in onnx.load(str(out / "model_int8.onnx")).metadata_props}
        assert json.loads(metadata[EXPORT_KEY])["adaround"]["layers"] == 106
    else:  # the package's int8 weights are AdaRound's own levels: they read back as the net's weights, not ~40 dB off
        readback = next(c for c in report["checks"] if c["name"] == "coreml_weights_readback")
        assert readback["passed"] and readback["detail"]["min_weight_sqnr_db"] > 55  # 68 dB here: the pinned elements


def test_adaround_is_refused_where_it_cannot_apply():
    from edge_iqa.errors import EdgeIQAError
    from export.formats import ExportConfig

    with pytest.raises(EdgeIQAError, match="applies to --precision int8"):
        ExportConfig(format="onnx", precision="fp32", weight_rounding="adaround")
    with pytest.raises(EdgeIQAError, match="choose one of"):
        ExportConfig(format="onnx", precision="int8", weight_rounding="up")
