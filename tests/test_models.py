"""Presets, configs, the model and checkpoints."""

import json

import pytest
import torch

from edge_iqa.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import build_model, example_inputs
from edge_iqa.presets import PRESETS, get_preset

# Reference channels of timm features_only (shared/REFERENCE.md, "Small facts").
STUDENT_CHANNELS = {
    "mobilenetv3_large_100": [16, 24, 40, 112, 960],
    "mobilenetv3_small_100": [16, 16, 24, 48, 576],
    "ghostnet_100": [16, 24, 40, 80, 160],
    "ghostnetv2_100": [16, 24, 40, 80, 160],
}


def tiny(config: ModelConfig) -> ModelConfig:
    """The same architecture with views small enough for a fast CPU test."""
    small = {"resize": ViewConfig("resize", size=(32, 48)), "center_crop": ViewConfig("center_crop", size=(32, 32)),
             "fragments": ViewConfig("fragments", grid=2, patch=16), "full": ViewConfig("full")}
    return config.replace(views=tuple(small[v.kind] for v in config.views), source_size=(64, 96))


@pytest.mark.parametrize("backbone", sorted(STUDENT_CHANNELS))
def test_student_backbones_give_five_levels(backbone):
    import timm

    net = timm.create_model(backbone, pretrained=False, features_only=True)
    assert net.feature_info.channels() == STUDENT_CHANNELS[backbone]
    assert net.feature_info.reduction() == [2, 4, 8, 16, 32]
    outs = net(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == STUDENT_CHANNELS[backbone]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_scores(name):
    config = tiny(PRESETS[name])
    model = build_model(config).eval()
    inputs = example_inputs(config, batch=2)  # burst presets: (2, T, 3, H, W) per view
    with torch.no_grad():
        scores = model(*inputs)
    assert scores.shape == ((2,) if config.burst is None else (2, config.burst.frames))
    assert torch.isfinite(scores).all()
    assert len(model.branches) == len(config.views)


def test_required_presets_exist():
    assert get_preset("aim-baseline").backbone == "mobilenetv3_large_100"
    assert get_preset("aim-baseline").views == (ViewConfig("resize", size=(720, 1280)),)
    ghost = get_preset("ghostnetv2-uhd")
    assert ghost.backbone == "ghostnetv2_100" and {v.kind for v in ghost.views} == {"resize", "fragments"}
    assert any(c.role == "teacher" for c in PRESETS.values())


def test_unknown_preset_suggests_close_matches():
    with pytest.raises(EdgeIQAError, match="did you mean aim-baseline"):
        get_preset("aim-basline")


def test_any_timm_backbone_by_name():
    config = get_preset("timm:efficientnet_b0")
    assert config.backbone == "efficientnet_b0" and config.role == "student"
    assert get_preset("efficientnet_b0").backbone == "efficientnet_b0"


def test_config_round_trips_through_json():
    for config in PRESETS.values():
        assert ModelConfig.from_json(config.to_json()) == config


def test_config_refuses_unknown_fields_and_newer_versions():
    data = json.loads(get_preset("aim-baseline").to_json())
    with pytest.raises(EdgeIQAError, match="unknown fields"):
        ModelConfig.from_dict(dict(data, exec="rm -rf /"))
    with pytest.raises(EdgeIQAError, match="newer"):
        ModelConfig.from_dict(dict(data, version=99))


def test_configs_are_frozen():
    with pytest.raises(Exception):
        get_preset("aim-baseline").backbone = "resnet50"


def test_score_range_maps_head_output():
    config = tiny(get_preset("demo-student")).replace(score_range=(1.0, 5.0), score_bound="none")  # the linear map
    model = build_model(config).eval()
    features = torch.zeros(1, model.head.fc1.in_features)
    with torch.no_grad():
        torch.nn.init.zeros_(model.head.fc2.weight)
        torch.nn.init.constant_(model.head.fc2.bias, 0.25)
        assert float(model.forward_head(features)) == pytest.approx(2.0)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    config = tiny(get_preset("demo-student"))
    model = build_model(config).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, info={"epoch": 3})
    raw = torch.load(path, weights_only=True)  # the contract: no pickle needed
    assert raw["format"].startswith("edge-iqa-checkpoint")
    loaded, info = load_checkpoint(path)
    assert loaded.config == config and info == {"epoch": 3}
    inputs = tuple(torch.rand(1, 3, *v.output_size(config.source_size)) for v in config.views)
    with torch.no_grad():
        assert torch.equal(model(*inputs), loaded(*inputs))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_bad_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EdgeIQAError, match="bad.pt"):
        read_checkpoint(path)
