"""The head's score bound (``ModelConfig.score_bound``, config version 3): new photo models cannot
score outside their ``score_range``; models of older configs keep their unbounded head and scores.

Decision (issue 14): an unbounded linear head extrapolates on inputs unlike its training data (a
distilled student scored -1.28 on a [0, 1] range), so the ``mlp`` head of a version-3 photo config
ends in a sigmoid scaled to the range. The sigmoid is monotonic (ranks, hence SRCC, are those of
its input), has no weights (old state dicts load into either head) and starts mid-range.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.errors import EdgeIQAError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "student.pt"  # written before config version 3


def tiny(config: ModelConfig) -> ModelConfig:
    return config.replace(views=(ViewConfig("resize", size=(32, 48)),), source_size=(48, 64))


def push_head_out_of_range(model) -> None:
    """A head whose linear output is far outside [0, 1] for any feature vector."""
    with torch.no_grad():
        torch.nn.init.zeros_(model.head.fc2.weight)
        torch.nn.init.constant_(model.head.fc2.bias, -3.0)


def test_new_photo_configs_bound_the_score_to_its_range():
    from edge_iqa.model import build_model
    from edge_iqa.presets import get_preset

    config = tiny(get_preset("demo-student")).replace(score_range=(1.0, 5.0))
    assert config.version == 3 and config.score_bound == "sigmoid"
    model = build_model(config).eval()
    views = torch.rand(4, 3, 32, 48)
    with torch.no_grad():
        start = model(views)
        push_head_out_of_range(model)
        low = model(views)
        torch.nn.init.constant_(model.head.fc2.bias, 30.0)
        high = model(views)
    assert torch.all((start > 1.0) & (start < 5.0))
    assert torch.all(low >= 1.0) and torch.all(low < 1.5) and torch.all(high <= 5.0) and torch.all(high > 4.5)
    assert float(model.forward_head(torch.zeros(1, model.head.fc1.in_features))) == pytest.approx(
        1.0 + 4.0 * float(torch.sigmoid(torch.tensor(30.0))))


def test_old_checkpoints_keep_their_unbounded_head_and_their_dicts():
    from edge_iqa.checkpoint import load_checkpoint, read_checkpoint
    from edge_iqa.model import example_inputs

    model, _ = load_checkpoint(FIXTURE)
    config = model.config
    assert config.version < 3 and config.score_bound == "none"
    assert isinstance(model.head.bound, torch.nn.Identity)
    assert "score_bound" not in config.to_dict()  # the dict an older edge-iqa wrote, unchanged
    assert ModelConfig.from_json(config.to_json()) == read_checkpoint(FIXTURE)["config"] == config
    push_head_out_of_range(model)
    with torch.no_grad():
        views = [torch.rand(2, *v.shape[1:]) for v in example_inputs(config)]
        assert torch.all(model.eval()(*views) < 0.0)  # unbounded, as it was trained


def test_score_bound_round_trips_and_refuses_what_it_cannot_bound():
    from edge_iqa.presets import get_preset

    config = get_preset("demo-student")
    stored = json.loads(config.to_json())
    assert stored["score_bound"] == "sigmoid" and ModelConfig.from_dict(stored) == config
    unbounded = config.replace(score_bound="none")
    assert ModelConfig.from_json(unbounded.to_json()).score_bound == "none"
    assert get_preset("burst-student").score_bound == "none"  # burst heads score frames against the reference
    with pytest.raises(EdgeIQAError, match="bounds the mlp head of a photo model"):
        get_preset("burst-student").replace(score_bound="sigmoid")
    with pytest.raises(EdgeIQAError, match="version 2"):
        config.replace(version=2, score_bound="sigmoid")
    with pytest.raises(EdgeIQAError, match="unknown score_bound 'clip'"):
        config.replace(score_bound="clip")


def test_bounded_head_exports_to_onnx_with_the_same_scores(tmp_path):
    import numpy as np

    from edge_iqa.model import build_model
    from edge_iqa.presets import get_preset
    from edge_iqa.runtimes.onnxruntime import onnx_session
    from export.onnx import torch2onnx

    model = build_model(tiny(get_preset("demo-student"))).eval()
    push_head_out_of_range(model)
    path = torch2onnx(model, tmp_path / "m.onnx")
    views = torch.rand(2, 3, 32, 48)
    session = onnx_session(path)
    got = session.run(None, {session.get_inputs()[0].name: views.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(views).numpy(), atol=1e-5)
    assert np.all((got >= 0.0) & (got <= 1.0))
