"""Initial weights (edge_iqa.pretrained), their record in checkpoints, the INT8-friendly presets
and the NIMA teacher (edge_iqa.nima).

Weights files are made here, in tmp_path, from timm models with seeded random weights, so
"loaded" means bit-equal to the file, and nothing needs ../shared or a network. The hub is
Hugging Face's as timm uses it: its cache is pointed at tmp_path, its offline switch and
endpoint are set per test. MAC figures are those ``edge-iqa profile PRESET --source
3840x2160 --budget 50`` printed (conv + linear MACs, FlopCounterMode, fvcore agreeing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from edge_iqa.checkpoint import load_checkpoint, read_checkpoint
from edge_iqa.cli import main
from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import build_model
from edge_iqa.presets import get_preset
from edge_iqa.pretrained import (
    RANDOM_INIT, WEIGHTS_ENV, WeightSource, available_weights, file_sha256, resolve_weights, weight_source_of,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = "mobilenetv3_small_050"  # a small timm model that has hub weights (timm/mobilenetv3_small_050.lamb_in1k)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights"


def small_config(backbone: str = SMALL) -> ModelConfig:
    return ModelConfig(name="tiny", backbone=backbone, views=(ViewConfig("resize", size=(32, 32)),),
                       source_size=(32, 32))


def save_timm_weights(name: str, path: Path, seed: int = 1) -> dict[str, torch.Tensor]:
    """A timm classifier's seeded random state dict, written to ``path``; the tensors written."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


def assert_branches_hold(model, state: dict[str, torch.Tensor]) -> None:
    for branch in model.branches:
        own = {k: v for k, v in branch.state_dict().items() if not k.endswith("num_batches_tracked")}
        assert own and all(torch.equal(v, state[k]) for k, v in own.items())


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """huggingface_hub with its cache in tmp_path, offline unless a test says otherwise."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return constants


@pytest.mark.parametrize("file_name", [f"{SMALL}.safetensors", f"{SMALL}.pth", f"{SMALL}.imagenet.pth"])
def test_weights_folder_is_searched_by_timm_name_and_loads_bit_exact(tmp_path, hub, file_name):
    folder = tmp_path / "weights"
    state = save_timm_weights(SMALL, folder / file_name)
    save_timm_weights("mobilenetv3_small_075", folder / "mobilenetv3_small_075.pth")  # another model's file
    source = resolve_weights(SMALL, weights_dir=folder)
    assert source == WeightSource("file", path=str((folder / file_name).resolve()),
                                  sha256=file_sha256(folder / file_name), found_by="--weights-dir")
    model = build_model(small_config(), source)
    assert_branches_hold(model, state)
    assert weight_source_of(model.config) == source


def test_environment_variable_names_the_folder(tmp_path, hub, monkeypatch):
    state = save_timm_weights(SMALL, tmp_path / "w" / f"{SMALL}.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "w"))
    source = resolve_weights(SMALL, pretrained=True)
    assert source.kind == "file" and source.found_by == WEIGHTS_ENV
    assert_branches_hold(build_model(small_config(), source), state)
    assert resolve_weights(SMALL) == RANDOM_INIT  # the folder is used only when weights are asked for


def test_tf_efficientnet_lite0_weights_load_into_efficientnet_lite0(tmp_path, hub):
    """The twin's keys and shapes match tensor for tensor (the features_only backbone's 240)."""
    state = save_timm_weights("tf_efficientnet_lite0", tmp_path / "w" / "tf_efficientnet_lite0.imagenet.pth")
    source = resolve_weights("efficientnet_lite0", weights_dir=tmp_path / "w")
    assert source.made_for == "tf_efficientnet_lite0"
    model = build_model(get_preset("demo-student-efficientnet-lite0"), source)
    assert_branches_hold(model, state)
    # the TensorFlow port was trained on pixels in [-1, 1]: the model normalises as its weights need
    assert model.config.mean == (0.5, 0.5, 0.5) and model.config.std == (0.5, 0.5, 0.5)
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert build_model(get_preset("demo-student-efficientnet-lite0")).config.mean == (0.485, 0.456, 0.406)
    assert len([k for k in model.branches[0].state_dict() if not k.endswith("num_batches_tracked")]) == 240


def test_weights_of_another_model_or_two_candidates_are_refused(tmp_path, hub):
    save_timm_weights("mobilenetv3_small_075", tmp_path / "w" / f"{SMALL}.pth")  # misnamed
    with pytest.raises(EdgeIQAError, match=r"tensors of the mobilenetv3_small_050 backbone are missing or of "
                                           r"another shape.*weights for another model"):
        build_model(small_config(), resolve_weights(SMALL, weights_dir=tmp_path / "w"))
    for tag in ("a", "b"):
        save_timm_weights(SMALL, tmp_path / "two" / f"{SMALL}.{tag}.pth")
    with pytest.raises(EdgeIQAError, match=r"several weights files for mobilenetv3_small_050"):
        resolve_weights(SMALL, weights_dir=tmp_path / "two")
    with pytest.raises(EdgeIQAError, match="not a folder"):
        resolve_weights(SMALL, weights_dir=tmp_path / "nowhere")


def hub_cache_file(constants, hub_id: str, filename: str = "model.safetensors") -> Path:
    """Where huggingface_hub keeps ``filename`` of ``hub_id`` in its cache (refs/main -> snapshot)."""
    repo = Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return repo / "snapshots" / ("0" * 40) / filename


def test_pretrained_takes_timms_hub_cache_without_a_download(tmp_path, hub):
    hub_id = timm.models.get_pretrained_cfg(SMALL).hf_hub_id
    state = save_timm_weights(SMALL, hub_cache_file(hub, hub_id))
    source = resolve_weights(SMALL, pretrained=True)  # offline: the cache alone must do
    assert (source.kind, source.hub_id, source.found_by) == ("hub", hub_id, "hub cache")
    assert_branches_hold(build_model(small_config(), source), state)
    assert available_weights(SMALL) == source


@pytest.mark.parametrize("offline, endpoint, reason", [
    (True, None, "HF_HUB_OFFLINE is set"),
    (False, "http://127.0.0.1:9", "127.0.0.1:9"),  # nothing listens on the discard port: refused at once
])
def test_offline_hub_is_one_line_naming_the_alternatives(hub, monkeypatch, offline, endpoint, reason):
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", offline)
    if endpoint:
        monkeypatch.setattr(hub, "ENDPOINT", endpoint)
    started = time.monotonic()
    with pytest.raises(EdgeIQAError) as err:
        resolve_weights(SMALL, pretrained=True)
    message = str(err.value)
    assert time.monotonic() - started < 5  # one connection attempt, not huggingface_hub's 30 s of retries
    assert "\n" not in message and reason in message and "cannot be reached" in message
    assert "--weights FILE" in message and "--weights-dir DIR" in message and WEIGHTS_ENV in message
    assert available_weights(SMALL) == RANDOM_INIT  # the demo's lookup never downloads, never fails


def test_train_pretrained_offline_fails_before_training(tiny_synth, hub, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", SMALL, "--view", "resize:32x32", "--data", str(tiny_synth), "--out", str(out),
            "--epochs", "1", "--batch-size", "8", "--workers", "0", "--quiet", "--pretrained"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and "--weights FILE" in err
    assert not (out / "last.pt").exists() and not (out / "metrics.json").exists()
    assert main([*argv, "--weights", str(tmp_path / "w.pth")]) == 2  # checked while parsing: the file is missing
    assert "w.pth: backbone weights not found" in capsys.readouterr().err


def test_checkpoint_and_summary_record_the_initial_weights(tiny_synth, hub, tmp_path, capsys):
    save_timm_weights(SMALL, tmp_path / "w" / f"{SMALL}.safetensors")
    common = ["--model", SMALL, "--view", "resize:32x32", "--data", str(tiny_synth), "--epochs", "1",
              "--batch-size", "8", "--workers", "0", "--quiet"]
    assert main(["train", *common, "--out", str(tmp_path / "pre"), "--weights-dir", str(tmp_path / "w"),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    recorded = read_checkpoint(tmp_path / "pre" / "best.pt")["init_weights"]
    assert recorded.kind == "file" and recorded.sha256 == file_sha256(tmp_path / "w" / f"{SMALL}.safetensors")
    assert summary["init_weights"] == recorded.to_dict()
    assert json.loads((tmp_path / "pre" / "metrics.json").read_text())["init_weights"] == recorded.to_dict()
    model, _ = load_checkpoint(tmp_path / "pre" / "best.pt")
    assert weight_source_of(model.config) == recorded
    assert main(["train", *common, "--out", str(tmp_path / "scratch")]) == 0
    assert "initial weights: random init" in capsys.readouterr().err
    assert read_checkpoint(tmp_path / "scratch" / "last.pt")["init_weights"] == RANDOM_INIT


def test_a_checkpoint_from_before_the_record_says_so():
    fixture = Path(__file__).parent / "fixtures" / "student.pt"
    assert read_checkpoint(fixture)["init_weights"] is None


def test_the_default_head_keeps_config_dicts_unchanged():
    config = get_preset("aim-baseline")
    assert "head" not in config.to_dict() and ModelConfig.from_json(config.to_json()) == config
    nima = get_preset("nima")
    assert nima.to_dict()["head"] == "nima" and ModelConfig.from_json(nima.to_json()) == nima
    with pytest.raises(EdgeIQAError, match="unknown head"):
        config.replace(head="transformer")


@pytest.mark.parametrize("preset, source, gmac", [
    ("mobilenetv2-uhd", (2160, 3840), 6.439),
    ("efficientnet-lite0-uhd", (2160, 3840), 8.397),
    ("demo-student-mobilenetv2", (384, 512), 0.365),
    ("demo-student-efficientnet-lite0", (384, 512), 0.475),
])
def test_int8_friendly_students_fit_the_budget(preset, source, gmac):
    from profiling.budget import check_budget
    from profiling.report import profile_config

    config = get_preset(preset)
    assert config.role == "student" and config.source_size == source
    report = profile_config(config, fvcore=False, details=False)
    assert report.macs / 1e9 == pytest.approx(gmac, abs=0.001)
    assert check_budget(report, 50).within
    acts = {type(m).__name__ for m in build_model(config).modules()}
    assert "ReLU6" in acts and not acts & {"SqueezeExcite", "Hardswish", "SiLU"}  # what INT8 kernels fuse


# --- NIMA -------------------------------------------------------------------------------------


def save_nima_weights(path: Path, seed: int = 3) -> torch.nn.Module:
    """A random-init NIMA state dict under NIMA's key names; the timm model it came from.
    Batch-norm statistics are randomised too, so the BN epsilon and the head mapping matter."""
    torch.manual_seed(seed)
    reference = timm.create_model("mobilenetv1_100", num_classes=10, bn_eps=1e-3).eval()
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(1e-3, 2e-3)  # small variances: eps 1e-5 vs 1e-3 shows
    torch.save(reference.state_dict(), path)
    return reference


def nima_reference_scores(reference: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        probabilities = torch.softmax(reference(pixels / 0.5 - 1.0), dim=-1)  # x / 127.5 - 1 on 0..255
    return (probabilities * torch.arange(1, 11)).sum(dim=-1)


def test_nima_import_reproduces_the_reference_model(tmp_path):
    from edge_iqa.nima import NIMAModel, import_nima

    reference = save_nima_weights(tmp_path / "nima.pth")
    model = import_nima(tmp_path / "nima.pth")
    assert isinstance(model, NIMAModel) and model.config.head == "nima" and model.config.score_range == (1.0, 10.0)
    pixels = torch.rand(3, 3, 224, 224)
    pixels[0] = 0.0  # extreme inputs stay in range too
    pixels[1] = 1.0
    with torch.no_grad():
        scores = model(pixels)
        distribution = model.distribution(pixels)
    torch.testing.assert_close(scores, nima_reference_scores(reference, pixels), rtol=0, atol=1e-5)
    assert ((scores >= 1.0) & (scores <= 10.0)).all()
    torch.testing.assert_close(distribution.sum(-1), torch.ones(3))
    assert weight_source_of(model.config).sha256 == file_sha256(tmp_path / "nima.pth")


def test_nima_checkpoint_is_an_ordinary_teacher(tmp_path):
    from distill.features import feature_shapes
    from distill.teacher import load_teacher, run_teacher
    from edge_iqa.commands.import_teacher import import_teacher

    reference = save_nima_weights(tmp_path / "nima.pth")
    summary = import_teacher("nima", tmp_path / "nima.pth", tmp_path / "nima.pt")
    assert summary["score_range"] == [1.0, 10.0] and summary["backbone"] == "mobilenetv1_100"
    model, info = load_checkpoint(tmp_path / "nima.pt")
    assert info["sha256"] == file_sha256(tmp_path / "nima.pth")
    pixels = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), nima_reference_scores(reference, pixels), rtol=0, atol=1e-5)
    shapes = feature_shapes(model.config, [("head", 0), ("branches.0.level4", 2), ("branches.0.level2", 0)])
    assert shapes == {("head", 0): (1024,), ("branches.0.level4", 2): (1024, 2, 2), ("branches.0.level2", 0): (256,)}
    from PIL import Image

    photos = []
    for i, colour in enumerate(((200, 40, 40), (20, 120, 220))):
        photos.append(tmp_path / f"p{i}.png")
        Image.new("RGB", (300, 200), colour).save(photos[-1])
    teacher = load_teacher(tmp_path / "nima.pt", score_range=(1.0, 10.0))
    outputs = run_teacher(teacher.model, [str(p) for p in photos], [("branches.0.level4", 0)], "cpu", 2, 0, False)
    assert ((outputs.scores >= 0) & (outputs.scores <= 1)).all()  # normalised teacher units
    assert outputs.features["branches.0.level4@0"].shape == (2, 1024)


def test_nima_import_refuses_another_models_weights(tmp_path):
    from edge_iqa.nima import import_nima

    torch.save(timm.create_model("mobilenetv1_100").state_dict(), tmp_path / "imagenet.pth")  # 1000 classes
    with pytest.raises(EdgeIQAError, match=r"classifier.weight is \(1000, 1024\), NIMA's head needs \(10, 1024\)"):
        import_nima(tmp_path / "imagenet.pth")


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is not on this machine (development weights)")
def test_shared_development_weights_load_completely(hub):
    """../shared/weights, where present: every backbone tensor found by name and loaded."""
    from edge_iqa.nima import find_nima_file, import_nima

    for preset, file_name in (("mobilenetv2-uhd", "mobilenetv2_100.imagenet.pth"),
                              ("efficientnet-lite0-uhd", "tf_efficientnet_lite0.imagenet.pth")):
        source = resolve_weights(get_preset(preset).backbone, weights_dir=SHARED)
        assert Path(source.path).name == file_name
        state = torch.load(source.path, map_location="cpu", weights_only=True)
        assert_branches_hold(build_model(get_preset(preset).replace(views=(ViewConfig("resize", size=(32, 32)),)),
                                         source), state)
    model = import_nima(find_nima_file(SHARED))
    assert weight_source_of(model.config).sha256.startswith("bf92fa17f65b0345")  # the README's sha256


def test_distill_teacher_nima_from_the_weights_folder(tiny_synth, tiny_student, tmp_path, monkeypatch, capsys):
    (tmp_path / "w").mkdir()
    save_nima_weights(tmp_path / "w" / "nima.pth")
    argv = ["distill", "--teacher", "nima", "--student", "demo-student", "--view", "resize:32x32",
            "--data", str(tiny_synth), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "8",
            "--workers", "0", "--quiet", "--json"]
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert main(argv) == 2
    assert "--teacher nima: no NIMA weights" in capsys.readouterr().err
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "w"))
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["teacher"]["model"] == "nima" and summary["init_weights"] == RANDOM_INIT.to_dict()
    teacher = read_checkpoint(tmp_path / "run" / "teacher_nima.pt")
    assert teacher["init_weights"].sha256 == file_sha256(tmp_path / "w" / "nima.pth")
