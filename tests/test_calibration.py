"""INT8 calibration ranges (:mod:`export.quantize`): what each method makes of a skewed tensor.

A tensor with a long positive tail and a short negative one with rare outliers (like a
residual sum) is where the methods differ: ONNX Runtime's ``percentile`` takes one threshold
from |x|, which leaves the negative outliers inside the range, while ``quantile`` clips each
tail at its own percentile.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper


class ArrayReader:
    """Batches of one graph input, with the ``rewind``/``images`` interface calibration expects."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self.name, self.batches, self.images = name, batches, 0

    def rewind(self) -> None:
        self.images = 0

    def __iter__(self):
        for batch in self.batches:
            self.images += len(batch)
            yield {self.name: batch}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """An ONNX graph ``y = x + 0`` and batches of x: mostly above -1 with a long positive tail,
    and one value in 4096 at -30."""
    width = 512
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "zero"], ["y"])], "skewed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("calib") / "skewed.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_exponential((8, width)) * 10 - 1).astype(np.float32) for _ in range(6)]
    for b in batches:
        b.ravel()[::4096] = -30.0
    return path, batches


def ranges(cache) -> dict[str, tuple[float, float]]:
    def value(v):  # a number, or {"data": number or [number]} as save_tensors_data writes numpy values
        (number,) = np.asarray(v["data"] if isinstance(v, dict) else v, dtype=np.float64).ravel()
        return float(number)

    data = json.loads(cache.read_text())["data"]
    return {name: (value(r["lowest"]), value(r["highest"])) for name, r in data.items()}


def test_quantile_clips_each_tail_at_its_own_percentile(skewed, tmp_path):
    from export.quantize import calibrate

    path, batches = skewed
    values = np.concatenate([b.ravel() for b in batches])
    got = ranges(calibrate(path, ArrayReader("x", batches), tmp_path / "q.json", method="quantile", percentile=99.0))
    bin_width = (values.max() - values.min()) / 4096
    for name in ("x", "y"):
        low, high = got[name]
        assert abs(low - np.quantile(values, 0.01)) <= 2 * bin_width
        assert abs(high - np.quantile(values, 0.99)) <= 2 * bin_width
    assert low > -1.0 and high > 30.0


def test_ort_percentile_keeps_the_rare_negative_outliers(skewed, tmp_path):
    from export.quantize import calibrate

    path, batches = skewed
    low, high = ranges(calibrate(path, ArrayReader("x", batches), tmp_path / "p.json", method="percentile",
                                 percentile=99.0))["y"]
    assert low == pytest.approx(-30.0, rel=1e-3)  # one |x| threshold (> 30): the -30 outliers stay in range
    assert high > 30.0


def test_quantile_percentile_100_is_min_max(skewed, tmp_path):
    from export.quantize import calibrate

    path, batches = skewed
    values = np.concatenate([b.ravel() for b in batches])
    low, high = ranges(calibrate(path, ArrayReader("x", batches), tmp_path / "m.json", method="quantile",
                                 percentile=100.0))["x"]
    assert low == pytest.approx(values.min(), rel=1e-5) and high == pytest.approx(values.max(), rel=1e-5)


def test_quantile_with_no_images_is_one_clear_error(skewed, tmp_path):
    from edge_iqa.errors import EdgeIQAError
    from export.quantize import calibrate

    path, _ = skewed
    with pytest.raises(EdgeIQAError, match="no calibration image"):
        calibrate(path, ArrayReader("x", []), tmp_path / "e.json", method="quantile")


def _activation_scales(net) -> np.ndarray:
    """The per-tensor activation scales of a finalized coremltools W8A8 model, in graph order."""
    return np.array([float(v) for k, v in net.state_dict().items()
                     if k.endswith(tuple(f"_scale_{i}" for i in range(10))) and v.numel() == 1])


def test_coreml_w8a8_quantile_narrows_activation_ranges():
    """CoreML W8A8: quantile at 100 keeps min/max exactly; at 99 every range is at most as wide."""
    import torch

    from edge_iqa.checkpoint import load_checkpoint
    from edge_iqa.model import example_inputs
    from export.coreml import calibrate_w8a8

    model, _ = load_checkpoint(Path(__file__).resolve().parent / "fixtures" / "student.pt")  # the export fixture
    generator = torch.Generator().manual_seed(0)
    batches = [tuple(torch.rand(v.repeat(4, 1, 1, 1).shape, generator=generator) for v in example_inputs(model.config))
               for _ in range(3)]
    scales = {name: _activation_scales(calibrate_w8a8(model, batches, method=method, percentile=p)[0])
              for name, method, p in (("minmax", "minmax", 99.999), ("q100", "quantile", 100.0),
                                      ("q99", "quantile", 99.0))}
    assert len(scales["minmax"]) > 10 and len(set(map(len, scales.values()))) == 1
    np.testing.assert_allclose(scales["q100"], scales["minmax"], rtol=1e-6)
    assert np.all(scales["q99"] <= scales["minmax"] * (1 + 1e-6))
    assert np.mean(scales["q99"] < scales["minmax"] * 0.99) > 0.5  # most ranges lose their 1 % tails


def test_coreml_w8a8_rejects_histogram_methods_it_lacks():
    from edge_iqa.errors import EdgeIQAError
    from export.coreml import calibrate_w8a8

    with pytest.raises(EdgeIQAError, match="minmax or quantile"):
        calibrate_w8a8(None, [], method="entropy")


# --------------------------------------------------------------------------- streaming (issue 14 item 4)


class FeedReader:
    """Batches of feeds (input name -> array): the calibration reader interface, and ONNX Runtime's ``get_next``."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self.batches, self.images, self._next = batches, 0, iter(batches)

    def rewind(self) -> None:
        self.images, self._next = 0, iter(self.batches)

    def __iter__(self):
        for batch in self.batches:
            self.images += len(next(iter(batch.values())))
            yield batch

    def get_next(self):
        return next(self._next, None)


@pytest.fixture(scope="module")
def student_graph(tmp_path_factory):
    """The export fixture's FP32 graph and 3 batches of 4 random views (values in [0, 1])."""
    import torch

    from edge_iqa.checkpoint import load_checkpoint
    from edge_iqa.model import example_inputs
    from export.metadata import input_names
    from export.onnx import torch2onnx

    model, _ = load_checkpoint(Path(__file__).resolve().parent / "fixtures" / "student.pt")
    path = torch2onnx(model.eval(), tmp_path_factory.mktemp("graph") / "fp32.onnx")
    rng = np.random.default_rng(0)
    shapes = [tuple(v.shape[1:]) for v in example_inputs(model.config)]
    batches = [{name: rng.random((4, *shape), dtype=np.float32) for name, shape in zip(input_names(model.config), shapes)}
               for _ in range(3)]
    torch.manual_seed(0)
    return path, batches


def _all_at_once(batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [{name: np.concatenate([b[name] for b in batches]) for name in batches[0]}]


@pytest.mark.parametrize("method", ["minmax", "quantile"])
def test_streaming_ranges_equal_one_run_of_every_image(method, student_graph, tmp_path):
    """One image per run gives the ranges of one run over all 12 images: same min/max, same histograms."""
    from export.calibration import calibrate

    path, batches = student_graph
    streamed = ranges(calibrate(path, FeedReader(batches), tmp_path / "s.json", method=method, percentile=99.0))
    whole = ranges(calibrate(path, FeedReader(_all_at_once(batches)), tmp_path / "w.json", method=method,
                             percentile=99.0, images_per_run=None))
    assert len(streamed) > 50 and streamed == whole


@pytest.mark.parametrize("graph,method,options", [
    ("student", "percentile", {"num_bins": 2048, "percentile": 99.9}),
    ("skewed", "entropy", {"num_bins": 512, "num_quantized_bins": 128}),  # its KL search: 0.2 s a tensor
])
def test_streaming_histograms_equal_onnxruntime_given_every_image(graph, method, options, request, tmp_path):
    """ONNX Runtime's own calibrator fed all images in one collect_data call (it then holds every activation)
    finds the same thresholds as the two streaming passes."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from export.calibration import calibrate

    if graph == "student":
        path, batches = request.getfixturevalue("student_graph")
    else:
        path, arrays = request.getfixturevalue("skewed")
        batches = [{"x": a} for a in arrays]
    streamed = ranges(calibrate(path, FeedReader(batches), tmp_path / "s.json", method=method,
                                percentile=options.get("percentile", 99.999)))
    calibrator = create_calibrator(path, sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                   augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method={"percentile": CalibrationMethod.Percentile,
                                                     "entropy": CalibrationMethod.Entropy}[method],
                                   extra_options=options)
    calibrator.collect_data(FeedReader(batches))
    save_tensors_data(calibrator.compute_data(), tmp_path / "ort.json")
    reference = ranges(tmp_path / "ort.json")
    assert len(streamed) >= (50 if graph == "student" else 2) and set(streamed) == set(reference)
    for name, (low, high) in reference.items():
        assert streamed[name] == pytest.approx((low, high), rel=1e-6, abs=1e-7), name


def test_streaming_rejects_a_zero_run_size(student_graph, tmp_path):
    from edge_iqa.errors import EdgeIQAError
    from export.calibration import calibrate

    path, batches = student_graph
    with pytest.raises(EdgeIQAError, match="at least 1"):
        calibrate(path, FeedReader(batches), tmp_path / "z.json", images_per_run=0)


# --------------------------------------------------------------------------- --calib-method auto


@pytest.fixture(scope="module")
def export_fixture(tmp_path_factory):
    """The export fixture's student and its synthetic data (tests/fixtures/make_fixture.py)."""
    from golden_fixtures import fixture_module, fixture_student, rebuilt_data

    module = fixture_module("make_fixture")
    return fixture_student(module), rebuilt_data(module, tmp_path_factory.mktemp("export") / "data")


AUTO_TRIAL = ("minmax", "percentile:99.99", "quantile:99.99")  # not entropy: its KL search takes 20 s here


def test_auto_calibration_keeps_the_best_candidate_and_records_all(export_fixture, tmp_path):
    import onnx

    from export.formats import ExportConfig
    from export.metadata import EXPORT_KEY
    from export.pipeline import check_parity, export_model

    student, data = export_fixture
    config = ExportConfig(format="onnx", precision="int8", calib_method="auto", calib_images=16,
                          calib_candidates=AUTO_TRIAL)
    with pytest.warns(UserWarning, match="only 16 images"):
        artifact = export_model(student, config, tmp_path, calib=data)
    report, _ = check_parity(artifact, student, data, split="val")
    record = report["calib_auto"]
    rows = record["candidates"]
    assert [r["candidate"] for r in rows] == list(AUTO_TRIAL) and record["split"] == "val" and record["n"] == 184
    best = max((r["spearman_vs_fp32"], -r["srcc_drop"]) for r in rows)
    chosen = next(r for r in rows if r["candidate"] == record["chosen"])
    assert (chosen["spearman_vs_fp32"], -chosen["srcc_drop"]) == best
    assert all(-1.0 <= r["spearman_vs_fp32"] <= 1.0 and r["n"] == 184 for r in rows)
    settings = json.loads({p.key: p.value for p in onnx.load(str(artifact.path)).metadata_props}[EXPORT_KEY])
    assert settings["calib_method"] == chosen["method"] and settings["calib_method_requested"] == "auto"
    assert (tmp_path / "calibration_auto.json").is_file() and not (tmp_path / "calibration_candidates").exists()
    print("auto calibration on the fixture:", {r["candidate"]: round(r["spearman_vs_fp32"], 4) for r in rows},
          "chosen", record["chosen"])


def test_auto_calibration_of_coreml_w8a8_scores_each_fake_quant_net(export_fixture, tmp_path):
    """CoreML W8A8 ``auto``: each candidate calibrated by coremltools' observers, scored against FP32 on val as
    the CoreML check simulates it; the package is built from the best, and parity.json records all."""
    from export.formats import ExportConfig
    from export.pipeline import check_parity, export_model

    student, data = export_fixture
    config = ExportConfig(format="coreml", precision="int8", calib_method="auto", calib_images=16,
                          calib_candidates=("minmax", "quantile:99.9"))
    with pytest.warns(UserWarning, match="only 16 images"):
        artifact = export_model(student, config, tmp_path, calib=data)
    report, _ = check_parity(artifact, student, data, split="val")
    record = report["calib_auto"]
    rows = {r["candidate"]: r for r in record["candidates"]}
    assert list(rows) == ["minmax", "quantile:99.9"] and record["n"] == 184
    assert record["chosen"] == max(rows, key=lambda c: (rows[c]["spearman_vs_fp32"], -rows[c]["srcc_drop"]))
    accuracy = next(c for c in report["checks"] if c["name"] == "accuracy")["detail"]
    # the check scores the package's weights read back into that net: close to the candidate's own figure
    assert accuracy["spearman_vs_fp32"] == pytest.approx(rows[record["chosen"]]["spearman_vs_fp32"], abs=0.02)
    print("coreml auto calibration on the fixture:", {c: round(r["spearman_vs_fp32"], 4) for c, r in rows.items()},
          "chosen", record["chosen"], "check", round(accuracy["spearman_vs_fp32"], 4))


@pytest.mark.parametrize("options,message", [
    ({"calib_candidates": ("quantile:99.9",)}, "--calib-method minmax would ignore it"),
    ({"calib_method": "auto", "calib_candidates": ("mse",)}, "--calib-candidate 'mse' is not a calibration"),
    ({"calib_method": "auto", "calib_candidates": ("quantile:40",)}, "must be a number in (50, 100]"),
    ({"calib_method": "auto", "calib_select_split": "holdout"}, "unknown --calib-select-split 'holdout'"),
    ({"format": "coreml", "calib_method": "auto", "calib_candidates": ("entropy",)},
     "--format coreml calibrates with minmax, quantile"),
])
def test_auto_calibration_options_are_checked(options, message):
    from edge_iqa.errors import EdgeIQAError
    from export.formats import ExportConfig

    with pytest.raises(EdgeIQAError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExportConfig(**{"format": "onnx", "precision": "int8", **options})
