"""The burst model, its presets and budget, its losses and its training/distillation on bursts.

Tiny models (the presets' architectures on 32 px views) and a tiny burst dataset of PNG frames
written here with the burst manifest's columns (``reference``, ``score_<task>``), so the
tests need no other part of the burst pipeline. MAC figures: ``../shared/REFERENCE.md``,
"Burst IQA" (MobileNetV3-Large on resize 720x1280 + fragments 15x32: 4.90 GMAC a frame, 39.2
for an 8-frame burst, FlopCounterMode ÷ 2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.burst_data import BurstDataset, burst_loss_inputs, collate_bursts, load_burst_train_data
from distill.losses import LossInputs, get_loss
from edge_iqa.burst_model import AllTaskScores, BurstIQAModel
from edge_iqa.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edge_iqa.cli import main
from edge_iqa.config import BurstConfig, ModelConfig, ViewConfig
from edge_iqa.data.manifest import BurstFrame, DatasetInfo, write_burst_dataset
from edge_iqa.errors import DatasetError, EdgeIQAError
from edge_iqa.model import IQAModel, build_model, example_inputs
from edge_iqa.presets import get_preset
from profiling.budget import ensure_within_budget
from profiling.report import profile_config

UHD = (2160, 3840)
TINY_VIEWS = (ViewConfig("resize", size=(32, 32)), ViewConfig("fragments", grid=2, patch=16))
FIXTURE_CHECKPOINT = Path(__file__).parent / "fixtures" / "student.pt"  # written by config version 1

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(name: str = "demo-burst-student", **changes) -> ModelConfig:
    return get_preset(name).replace(views=TINY_VIEWS, source_size=(32, 32), **changes)


@pytest.fixture(scope="module")
def model() -> BurstIQAModel:
    torch.manual_seed(0)
    return build_model(tiny()).eval()


# ---------------------------------------------------------------- the model


def test_shapes_per_task_and_all_tasks(model):
    views = example_inputs(model.config, batch=2, frames=5)
    assert [tuple(v.shape) for v in views] == [(2, 5, 3, 32, 32)] * 2
    with torch.no_grad():
        chosen, every = model(*views), model.forward_all_tasks(*views)
    assert chosen.shape == (2, 5) and every.shape == (2, 2, 5)
    assert torch.isfinite(every).all()
    assert torch.equal(chosen, every[:, 0])  # the default task is the first


def test_backbone_runs_once_on_all_frames_of_the_batch(model):
    seen = []
    handles = [b.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0])) for b in model.branches]
    try:
        with torch.no_grad():
            model.forward_all_tasks(*example_inputs(model.config, batch=3, frames=4))
    finally:
        for h in handles:
            h.remove()
    assert seen == [12, 12]  # each view's backbone once, on B·T = 12 frames: no extra pass for the reference


def test_a_frame_is_scored_against_its_own_burst_reference(model):
    views = example_inputs(model.config, batch=2, frames=4)
    with torch.no_grad():
        before = model.forward_all_tasks(*views)
        other = [v.clone() for v in views]
        for v in other:
            v[0, 2] = torch.rand_like(v[0, 2])  # a non-reference frame of burst 0
        after_frame = model.forward_all_tasks(*other)
        for v in other:
            v[1, 0] = torch.rand_like(v[1, 0])  # the reference of burst 1
        after_reference = model.forward_all_tasks(*other)
    changed = (after_frame - before).abs() > 1e-6
    assert changed[0, :, 2].all() and changed.sum() == changed[0, :, 2].numel()  # only that frame moved
    moved = (after_reference - after_frame).abs() > 1e-6
    assert moved[1, :, 1:].all() and not moved[0].any()  # every frame of burst 1, nothing of burst 0


def test_task_is_chosen_by_name(model):
    views = example_inputs(model.config, batch=1, frames=3)
    with torch.no_grad():
        every = model.forward_all_tasks(*views)
        assert torch.equal(model.select_task("sr2")(*views), every[:, 1])
        model.select_task("denoise")
    with pytest.raises(EdgeIQAError, match=r"^unknown burst task 'deblur'; this model scores denoise, sr2$"):
        model.select_task("deblur")


def test_traces_for_coreml_and_scores_as_the_eager_model(model):
    wrapper = AllTaskScores(model).eval()
    views = example_inputs(model.config, batch=2, frames=3)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, views)
        assert torch.allclose(traced(*views), wrapper(*views), atol=1e-6)


# ---------------------------------------------------------------- config and checkpoints


def test_version_1_configs_load_as_photo_models():
    old = read_checkpoint(FIXTURE_CHECKPOINT)["config"]
    assert old.version == 1 and old.burst is None
    stored = json.loads(old.to_json())
    del stored["burst"]  # exactly what a version-1 writer stored
    loaded = ModelConfig.from_dict(stored)
    assert loaded == old and isinstance(build_model(loaded), IQAModel)


def test_burst_config_round_trips_and_refuses_bad_values():
    config = get_preset("burst-student")
    assert ModelConfig.from_json(config.to_json()) == config
    assert config.version == 3 and config.burst == BurstConfig(("denoise", "sr2"), 8)
    with pytest.raises(EdgeIQAError, match="unknown fields"):
        ModelConfig.from_dict(dict(json.loads(config.to_json()), burst={"tasks": ["denoise"], "gamma": 1}))
    with pytest.raises(EdgeIQAError, match="frames >= 2"):
        BurstConfig(frames=1)
    with pytest.raises(EdgeIQAError, match="distinct names"):
        BurstConfig(tasks=("denoise", "denoise"))


def test_checkpoint_of_a_burst_model_loads_weights_only(model, tmp_path):
    path = save_checkpoint(tmp_path / "burst.pt", model)
    loaded, _ = load_checkpoint(path)
    views = example_inputs(model.config, batch=1, frames=3)
    with torch.no_grad():
        assert isinstance(loaded, BurstIQAModel) and loaded.config == model.config
        assert torch.equal(loaded.forward_all_tasks(*views), model.forward_all_tasks(*views))


# ---------------------------------------------------------------- presets and budget


def test_burst_student_fits_50_gmac_for_8_4k_frames_and_the_teacher_does_not():
    student = profile_config(get_preset("burst-student"), UHD, fvcore=False, details=False)
    assert student.frames == 8 and student.macs <= 50e9
    # REFERENCE.md: 4.90 GMAC a frame for the two views, 39.2 for 8; the relation head adds < 0.01 G
    assert student.macs == pytest.approx(39.2e9, rel=0.005)
    assert student.head_macs < 0.01e9
    teacher = profile_config(get_preset("burst-teacher"), UHD, fvcore=False, details=False)
    assert teacher.macs > 50e9


def test_a_burst_is_counted_per_frame_with_the_reference_once():
    config = tiny("burst-student")
    four, eight = (profile_config(config, fvcore=False, details=False, frames=t) for t in (4, 8))
    assert {v: 2 * m for v, m in four.per_view.items()} == eight.per_view  # each frame's views once


def test_training_refuses_an_over_budget_burst_student():
    with pytest.raises(EdgeIQAError, match=r"per burst of 8 frames, .* over the 50 GMAC budget.*--allow-over-budget"):
        ensure_within_budget(get_preset("burst-teacher").replace(role="student"))
    assert ensure_within_budget(get_preset("burst-student")).within


def test_profile_frames_exit_codes(capsys):
    argv = ["profile", "burst-student", "--source", "3840x2160", "--no-fvcore", "--depth", "0"]
    assert main([*argv, "--frames", "8", "--budget", "50"]) == 0
    assert "39.23 GMAC at 3840x2160 per burst of 8 frames, within" in capsys.readouterr().err
    assert main([*argv, "--frames", "12", "--budget", "50"]) == 1  # 12 frames: 58.8 GMAC
    assert "per burst of 12 frames" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 8  # the config's T by default
    assert main(["profile", "aim-baseline", "--frames", "8", "--no-fvcore"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line


def test_profile_counts_an_exported_burst_graph_as_pytorch_does(model, tmp_path, capsys):
    from profiling.macs import count_macs
    from profiling.onnx_macs import torch2onnx_for_counting

    views = example_inputs(model.config, batch=1, frames=3)
    path = torch2onnx_for_counting(AllTaskScores(model), views, tmp_path / "burst.onnx")
    assert main(["profile", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 3 and report["macs"] == count_macs(model, views).total
    assert main(["profile", str(path), "--frames", "4"]) == 2  # a static graph counts its own T


# ---------------------------------------------------------------- losses on bursts


def test_burst_rank_compares_frames_within_a_burst_only():
    # burst 0: frame 1 should beat frame 2 by 0.5 but is predicted 0.1 lower → hinge 0.6;
    # burst 1's frames would form far worse pairs with burst 0's, but no pair crosses bursts
    pred = torch.tensor([[[0.0, 0.4, 0.5]], [[0.0, 0.9, 0.9]]])
    target = torch.tensor([[[math.nan, 0.8, 0.3]], [[math.nan, 0.1, 0.1]]])
    x = burst_loss_inputs(pred, target)
    assert x.frame_mask.tolist() == [[False, True, True], [False, True, True]]
    assert float(get_loss("burst_rank")(x)) == pytest.approx(0.6)
    tie = burst_loss_inputs(pred[:1], torch.tensor([[[math.nan, 0.31, 0.3]]]))  # 0.01 apart: a tie
    assert float(get_loss("burst_rank")(tie)) == 0.0
    with pytest.raises(EdgeIQAError, match="train a burst model"):
        get_loss("burst_rank")(LossInputs(pred=pred.flatten(), target=pred.flatten()))


# ---------------------------------------------------------------- data and training


def _write_bursts(root: Path, bursts: dict[str, str], frames: int = 4, reference_at: int = 0) -> Path:
    """Bursts of ``frames`` 32 px PNG frames, one texture per burst, frames noisier or blurred
    at random; targets: score_denoise falls with the noise, score_sr2 with the blur."""
    rng = np.random.default_rng(0)
    rows = []
    for b, (name, split) in enumerate(bursts.items()):
        scene = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
        scene = np.asarray(Image.fromarray(scene).resize((32, 32), Image.BILINEAR), dtype=np.float64)
        for f in range(frames):
            reference = f == reference_at
            noise, blur = (0.0, 0) if reference else (rng.uniform(0, 40), int(rng.integers(0, 3)))
            pixels = np.clip(scene + rng.normal(0, noise + 1e-9, scene.shape), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            for _ in range(blur):
                image = image.resize((16, 16), Image.BILINEAR).resize((32, 32), Image.BILINEAR)
            path = root / "images" / f"{name}_{f}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            denoise, sr2 = (1.0, 1.0) if reference else (1 - noise / 40, 1 - blur / 2)
            extra = {"reference": "1" if reference else "0", "score_denoise": f"{denoise:.4f}",
                     "score_sr2": f"{sr2:.4f}", "delta_denoise_db": f"{5 * denoise - 1:.3f}"}
            rows.append(BurstFrame(name, f, path, denoise, split, extra))
    write_burst_dataset(root, rows, DatasetInfo("tiny-bursts", (0.0, 1.0), {"made_by": "tests/test_burst_model.py"}))
    return root


@pytest.fixture(scope="module")
def bursts(tmp_path_factory) -> Path:
    splits = {f"t{i}": "train" for i in range(4)} | {"v0": "val", "v1": "val", "x0": "test"}
    return _write_bursts(tmp_path_factory.mktemp("bursts"), splits)


def test_dataset_puts_the_reference_first_and_gives_it_no_target(tmp_path):
    root = _write_bursts(tmp_path, {"a": "train", "b": "val"}, frames=3, reference_at=2)
    data = load_burst_train_data(root, ("denoise", "sr2"))
    assert [Path(p).name for p in data.train.paths[0]] == ["a_2.png", "a_0.png", "a_1.png"]
    assert np.isnan(data.train.targets[0][:, 0]).all() and np.isfinite(data.train.targets[0][:, 1:]).all()
    long, short = BurstDataset(data.train, TINY_VIEWS)[0], BurstDataset(data.val, TINY_VIEWS)[0]
    short = (tuple(v[:2] for v in short[0]), short[1][:, :2], short[2])  # a 2-frame burst beside a 3-frame one
    views, targets, _ = collate_bursts([long, short])
    assert views[0].shape == (2, 3, 3, 32, 32) and torch.isnan(targets[1, :, 2]).all()  # padding has no target
    with pytest.raises(DatasetError, match=r"no score_deblur column .* \(tasks in the data: denoise, sr2\)"):
        load_burst_train_data(root, ("deblur",))


@pytest.fixture(scope="module")
def teacher_run(bursts, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    argv = ["train", "--data", str(bursts), "--model", "demo-burst-teacher", "--view", "resize:32x32",
            "--out", str(out), "--epochs", "2", "--batch-size", "2", "--workers", "0", "--quiet", "--json"]
    assert main(argv) == 0
    return out


def test_train_a_burst_teacher_through_the_cli(teacher_run, capsys):
    metrics = json.loads((teacher_run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert math.isfinite(metrics["best_val_r0"])
    assert metrics["best_val_r0"] == max(h["val"]["r0"] for h in metrics["history"])
    assert metrics["train_config"]["optimizer"] == "adam" and metrics["train_config"]["weight_decay"] == 0.0
    assert dict(metrics["train_config"]["losses"]) == {"burst_rank": 10.0, "mse": 1.0}
    assert set(metrics["test"]["tasks"]) == {"denoise", "sr2"}
    assert metrics["test"]["tasks"]["denoise"]["n_frames"] == 3  # the test burst's reference is left out
    best = read_checkpoint(teacher_run / "best.pt")
    assert best["config"].burst.tasks == ("denoise", "sr2") and best["info"]["best_val_r0"] == metrics["best_val_r0"]


def test_distill_a_burst_student_from_the_burst_teacher(bursts, teacher_run, tmp_path):
    out = tmp_path / "student"
    argv = ["distill", "--data", str(bursts), "--teacher", str(teacher_run / "best.pt"),
            "--student", "demo-burst-student", "--view", "resize:32x32", "--out", str(out),
            "--epochs", "2", "--batch-size", "2", "--workers", "0", "--quiet", "--json"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert dict(metrics["train_config"]["losses"]) == {"burst_rank": 10.0, "burst_relational": 1.0, "kd_mse": 1.0}
    terms = metrics["history"][0]["train_terms"]
    assert all(math.isfinite(v) for v in terms.values()) and terms["burst_relational"] > 0
    assert math.isfinite(read_checkpoint(out / "best.pt")["info"]["best_val_r0"])
    cache = torch.load(out / "teacher_cache.pt", weights_only=True)
    assert cache["scores"].shape == (16, 2)  # one row per training frame (4 bursts × 4), both tasks
    assert torch.isfinite(cache["scores"]).all()


def test_a_burst_student_needs_a_burst_teacher(bursts, tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    scores.write_text("path,score\nimages/t0_1.png,0.5\n")
    argv = ["distill", "--data", str(bursts), "--teacher", str(scores), "--student", "demo-burst-student",
            "--view", "resize:32x32", "--out", str(tmp_path / "run"), "--epochs", "1", "--workers", "0", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "a burst student learns from a burst teacher checkpoint" in err and err.count("\n") == 0
