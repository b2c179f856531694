"""Every student architecture of the presets exports to ONNX (checked in ONNX Runtime) and converts to CoreML.

One preset per architecture (``tests/preset_cases.py``); the chosen ones cover every view kind.
Teachers are not deployed, so they are not exported here; burst students: ``test_burst_export``.

The models are the presets' own architectures (backbone, feature levels, branches, head) with
the views shrunk to tiny sizes of the same kind and aspect (``tiny_views``), so the test stays
fast on a 2-core CI box: the exported graph is the same, only the input is small.
CoreML prediction is macOS-only; elsewhere the test checks the package and its metadata.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.model import build_model
from edge_iqa.runtimes import CONFIG_KEY
from edge_iqa.presets import PRESETS
from export.metadata import EXPORT_KEY, PREPROCESSING_KEY
from preset_cases import architecture, one_preset_per_architecture

TINY_HEIGHT = 32  # resize / center_crop views get this height, width keeps the aspect (multiple of 8)
TINY_FRAGMENTS = ViewConfig("fragments", grid=2, patch=16)
FP32_ONNX_MAX_DELTA = 1e-4  # issue 5: FP32 ONNX max |Δscore| ≤ 1e-4


def tiny_views(config: ModelConfig) -> ModelConfig:
    """The preset with every view shrunk: same kinds, same aspect, ~32 px high; a 64×96 source."""
    views = []
    for view in config.views:
        if view.kind in ("resize", "center_crop"):
            h, w = view.size
            width = max(8, round(TINY_HEIGHT * w / h / 8) * 8)
            views.append(ViewConfig(view.kind, size=(TINY_HEIGHT, width)))
        elif view.kind == "fragments":
            views.append(TINY_FRAGMENTS)
        else:
            views.append(view)
    return config.replace(views=tuple(views), source_size=(64, 96))


def _inputs(config: ModelConfig, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 3, *v.output_size(config.source_size), generator=gen) for v in config.views)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


EXPORTED = one_preset_per_architecture(burst=False, role="student")  # teachers are not deployed; bursts: test_burst_export


@pytest.fixture(scope="module", params=EXPORTED)
def tiny_model(request):
    torch.manual_seed(0)
    return build_model(tiny_views(PRESETS[request.param])).eval()


def test_exported_presets_cover_every_student_architecture_and_view_kind():
    students = [c for c in PRESETS.values() if c.burst is None and c.role == "student"]
    assert {v.kind for n in EXPORTED for v in PRESETS[n].views} == {v.kind for c in students for v in c.views}
    assert {architecture(PRESETS[n]) for n in EXPORTED} == {architecture(c) for c in students}


def test_tiny_views_keep_kinds_and_aspect():
    for config in PRESETS.values():
        tiny = tiny_views(config)
        assert [v.kind for v in tiny.views] == [v.kind for v in config.views]
        for big, small in zip(config.views, tiny.views):
            if big.size:
                assert small.size[1] / small.size[0] == pytest.approx(big.size[1] / big.size[0], rel=0.15)


def test_onnx_export_matches_pytorch(tiny_model, tmp_path):
    import onnxruntime as ort

    from export.onnx import torch2onnx

    config = tiny_model.config
    path = torch2onnx(tiny_model, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # one file, no external data
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [f"view{i}" for i in range(len(config.views))]
    assert [o.name for o in session.get_outputs()] == ["score"]
    meta = session.get_modelmeta().custom_metadata_map
    assert ModelConfig.from_json(meta[CONFIG_KEY]) == config
    prep = json.loads(meta[PREPROCESSING_KEY])
    assert prep["color"] == "RGB" and prep["layout"] == "NCHW" and prep["range"] == [0.0, 1.0]
    assert [i["view"] for i in prep["inputs"]] == [v.spec() for v in config.views]
    assert json.loads(meta[EXPORT_KEY])["opset"] == 18
    for batch in (2, 1):  # batch 2 as exported, batch 1 through the dynamic axis
        views = _inputs(config, batch, seed=batch)
        with torch.no_grad():
            expected = tiny_model(*views).numpy()
        got = session.run(None, {f"view{i}": v.numpy() for i, v in enumerate(views)})[0]
        assert got.shape == (batch,)
        assert np.abs(got - expected).max() <= FP32_ONNX_MAX_DELTA


def test_coreml_conversion_carries_config(tiny_model, tmp_path):
    from export.coreml import coreml_runtime_available, read_coreml_metadata, torch2coreml

    config = tiny_model.config
    path = torch2coreml(tiny_model, tmp_path / "model.mlpackage", precision="fp16")
    assert (path / "Manifest.json").is_file()
    meta = read_coreml_metadata(path)
    assert ModelConfig.from_json(meta[CONFIG_KEY]) == config
    assert json.loads(meta[EXPORT_KEY])["precision"] == "fp16"
    if not coreml_runtime_available():
        print(f"CoreML prediction skipped for {config.name}: needs macOS (conversion and metadata checked)")
        return
    import coremltools as ct
    from PIL import Image

    views = _inputs(config, 1, seed=3)
    pixels = [np.round(v[0].numpy() * 255).astype(np.uint8) for v in views]
    feeds = {f"view{i}": Image.fromarray(p.transpose(1, 2, 0)) for i, p in enumerate(pixels)}
    got = ct.models.MLModel(str(path)).predict(feeds)["score"].reshape(-1)
    with torch.no_grad():
        expected = tiny_model(*(torch.from_numpy(p[None].astype(np.float32) / 255) for p in pixels)).numpy()
    assert np.abs(got - expected).max() <= 1e-2  # issue 5: FP16 max |Δscore| ≤ 1e-2


def test_a_traced_graph_is_reused_for_the_same_weights_only(tiny_student, tmp_path):
    """torch2onnx keeps recent traces keyed by class, weights, config and options (export.onnx):
    the same model gives the same file without a retrace; a changed weight is traced anew."""
    from export import onnx as onnx_export

    torch.manual_seed(0)
    model = build_model(tiny_student).eval()
    first = onnx_export.torch2onnx(model, tmp_path / "a.onnx")
    traced = len(onnx_export._TRACED)
    again = onnx_export.torch2onnx(model, tmp_path / "b.onnx")
    assert len(onnx_export._TRACED) == traced and first.read_bytes() == again.read_bytes()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    changed = onnx_export.torch2onnx(model, tmp_path / "c.onnx")
    assert changed.read_bytes() != first.read_bytes()
    inputs = _inputs(tiny_student, 2, seed=1)
    from edge_iqa.runtimes.onnxruntime import onnx_session

    session = onnx_session(changed)
    got = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(*inputs).numpy(), atol=FP32_ONNX_MAX_DELTA)
