"""Distillation end to end on a small slice of the embedded data: CLI, teacher cache, resume of
a killed run, pseudo-labels, feature pairs, and a 2-process ``torchrun`` run on CPU."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import distill.teacher as teacher_module
from distill.distiller import distill, unlabeled_images
from distill.features import FeatureCapture, FeaturePair, compact, default_pairs
from distill.trainer import TrainConfig, load_train_data
from edge_iqa.checkpoint import read_checkpoint, save_checkpoint
from edge_iqa.cli import main
from edge_iqa.config import ViewConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import build_model, example_inputs
from edge_iqa.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
STUDENT_VIEWS = ["--student", "demo-student", "--view", "resize:32x48", "--view", "fragments:2x16"]
FAST = ["--batch-size", "16", "--workers", "0", "--device", "cpu", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def small_synth(tiny_synth, tmp_path_factory):
    """48 train / 16 val / 16 test rows of the tiny dataset (paths absolute)."""
    rows = list(csv.DictReader((tiny_synth / "manifest.csv").open()))
    keep = []
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        of_split = [r for r in rows if r["split"] == split]
        keep += of_split[:: max(1, len(of_split) // n)][:n]
    out = tmp_path_factory.mktemp("small") / "data"
    out.mkdir()
    with (out / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(keep[0]))
        writer.writeheader()
        writer.writerows({**r, "path": str(tiny_synth / r["path"])} for r in keep)
    info = json.loads((tiny_synth / "dataset.json").read_text())
    (out / "dataset.json").write_text(json.dumps({**info, "image_roots": [str(tiny_synth)]}))  # images stay there
    return out


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A heterogeneous teacher (ResNet-18, one resize view; other channels, other resolution),
    untrained: the tests check the plumbing, the benchmark checks that distillation helps."""
    config = get_preset("demo-teacher").replace(name="tiny-teacher", backbone="resnet18",
                                                views=(ViewConfig("resize", size=(48, 64)),), source_size=(48, 64))
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt", build_model(config))


def _distill_argv(data, teacher, out, *extra):
    return ["distill", "--data", str(data), "--teacher", str(teacher), "--out", str(out), *STUDENT_VIEWS, *FAST, *extra]


def test_distill_cli_with_every_loss_family(small_synth, teacher_ckpt, tmp_path, capsys):
    losses = ["mse=1", "plcc=0.5", "kd_mse=1", "kd_rank=0.5", "hint=0.1", "head_mse=0.1", "relational=1",
              "hetero_relational=0.1"]
    argv = _distill_argv(small_synth, teacher_ckpt, tmp_path, "--epochs", "1", "--json",
                         *[a for loss in losses for a in ("--loss", loss)])
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["teacher"]["kind"] == "checkpoint" and summary["teacher"]["backbone"] == "resnet18"
    assert "hint:branches.1.level4:branches.0.level4:0.5:2" in summary["feature_pairs"]  # fragments grid 2
    assert set(summary["test"]) >= {"srcc", "plcc", "n"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    terms = metrics["history"][0]["train_terms"]
    assert set(terms) == {loss.split("=")[0] for loss in losses}
    assert all(value == value and abs(value) < 1e6 for value in terms.values())
    assert {p.name for p in tmp_path.iterdir()} == {"best.pt", "last.pt", "metrics.json", "teacher_cache.pt"}
    assert read_checkpoint(tmp_path / "best.pt")["config"].views == (ViewConfig("resize", size=(32, 48)),
                                                                    ViewConfig("fragments", grid=2, patch=16))


def test_teacher_runs_once_per_image_and_resume_reuses_its_cache(small_synth, teacher_ckpt, tmp_path, monkeypatch):
    calls = []
    real = teacher_module.run_teacher

    def counting(model, paths, *args, **kwargs):
        calls.append(len(paths))
        return real(model, paths, *args, **kwargs)

    monkeypatch.setattr(teacher_module, "run_teacher", counting)
    student = get_preset("demo-student").replace(
        views=(ViewConfig("resize", size=(32, 48)), ViewConfig("fragments", grid=2, patch=16)))
    cfg = dict(batch_size=16, num_workers=0, device="cpu", losses=(("mse", 1.0), ("kd_mse", 1.0), ("head_mse", 0.1)))
    distill(student, small_synth, tmp_path, TrainConfig(epochs=2, **cfg), teacher_ckpt, progress=False)
    assert calls == [48]  # one pass over the 48 training images for 2 epochs
    summary = distill(student, small_synth, tmp_path, TrainConfig(epochs=3, **cfg), teacher_ckpt, resume=True,
                      progress=False)
    assert calls == [48]  # the resumed run read teacher_cache.pt
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]


def test_resume_continues_a_killed_distill_run(small_synth, teacher_ckpt, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "edge_iqa.cli", *_distill_argv(small_synth, teacher_ckpt, out, "--epochs", "3",
                                                                  "--loss", "mse=1", "--loss", "hint=0.1")]
    process = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "last.pt").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert (out / "last.pt").is_file(), process.stderr.read().decode()[-2000:] if process.poll() is not None else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = read_checkpoint(out / "last.pt")["info"]["history"]
    assert not (out / "metrics.json").exists() and 1 <= len(killed) < 3
    assert main(_distill_argv(small_synth, teacher_ckpt, out, "--epochs", "3", "--loss", "mse=1", "--loss", "hint=0.1",
                              "--resume")) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[: len(killed)] == killed  # the killed run's epochs are kept, not redone


def test_pseudo_labels_then_labeled_plus_pseudo_labeled_training(small_synth, tiny_synth, teacher_ckpt, tmp_path,
                                                                  capsys):
    used = {Path(r["path"]).name for r in csv.DictReader((small_synth / "manifest.csv").open())}
    spare = [r for r in csv.DictReader((tiny_synth / "manifest.csv").open())
             if r["split"] == "train" and Path(r["path"]).name not in used][:16]
    folder = tmp_path / "unlabeled"
    folder.mkdir()
    for row in spare:
        (folder / Path(row["path"]).name).write_bytes((tiny_synth / row["path"]).read_bytes())
    table = tmp_path / "pseudo.csv"
    assert main(["pseudo-label", str(teacher_ckpt), str(folder), "--out", str(table), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labeled"] == 16
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 16 and all(Path(r["path"]).is_absolute() and r["score"] for r in rows)

    run = tmp_path / "run"
    assert main(_distill_argv(small_synth, teacher_ckpt, run, "--epochs", "1", "--unlabeled", str(folder),
                              "--loss", "mse=1", "--loss", "kd_mse=1")) == 0
    assert json.loads((run / "metrics.json").read_text())["unlabeled"]["images"] == 16

    run_csv = tmp_path / "run-csv"  # a teacher that ran elsewhere: its CSV is teacher and pseudo-label list
    assert main(_distill_argv(small_synth, table, run_csv, "--epochs", "1", "--unlabeled", str(table),
                              "--loss", "mse=1")) == 0
    metrics = json.loads((run_csv / "metrics.json").read_text())
    assert metrics["teacher"]["kind"] == "scores-csv" and metrics["unlabeled"]["images"] == 16


@pytest.mark.parametrize("extra, needle", [
    (["--loss", "mse=1", "--loss", "kd_mse=1"], "no score for 48 training image"),
    (["--loss", "mse=1", "--loss", "hint=1"], "teacher checkpoint"),
])
def test_a_scores_csv_teacher_refuses_what_it_cannot_give(small_synth, teacher_ckpt, tmp_path, capsys, extra, needle):
    table = tmp_path / "scores.csv"
    table.write_text("path,score\nelsewhere.png,0.5\n")  # scores no training image
    assert main(_distill_argv(small_synth, table, tmp_path / "run", "--epochs", "1", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


@pytest.mark.parametrize("argv, needle", [
    (["train", "--data", "{data}", "--model", "demo-student", "--out", "{tmp}/x", "--loss", "kd_mse=1"], "needs a teacher"),
    (["distill", "--data", "{data}", "--teacher", "{tmp}/none.pt", "--student", "demo-student", "--out", "{tmp}/x"],
     "teacher not found"),
    (["distill", "--data", "{data}", "--teacher", "{teacher}", "--student", "resnet50", "--view", "resize:2160x3840",
      "--out", "{tmp}/x"], "over the 50 GMAC budget"),
    (["distill", "--data", "{data}", "--teacher", "{teacher}", "--student", "demo-student", "--out", "{tmp}/x",
      "--loss", "mse=1", "--pair", "hint:head:head"], "--loss hint=1"),
    (["distill", "--data", "{data}", "--teacher", "{teacher}", "--student", "demo-student", "--out", "{tmp}/x",
      "--loss", "hint=1", "--pair", "hint:branches.7.level4:head"], "has no feature 'branches.7.level4'"),
    (["distill", "--data", "{data}", "--teacher", "{teacher}", "--student", "demo-student", "--out", "{tmp}/x",
      "--pair", "hint:head"], "cannot parse feature pair"),
])
def test_distill_user_errors_are_one_line(small_synth, teacher_ckpt, tmp_path, capsys, argv, needle):
    argv = [a.format(data=small_synth, tmp=tmp_path, teacher=teacher_ckpt) for a in argv]
    assert main(argv + ["--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_unlabeled_images_of_held_out_splits_are_left_out(small_synth, tmp_path):
    data = load_train_data(small_synth)
    outside = tmp_path / "new.png"
    outside.write_bytes(Path(data.train.paths[0]).read_bytes())
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "\n".join([data.val.paths[0], data.test.paths[0], data.train.paths[1], "new.png"]))
    assert unlabeled_images([listing], data) == [str(outside)]


def test_feature_pairs_capture_and_compact(tiny_student):
    pair = FeaturePair.parse("hint:branches.1.level4:branches.0.level3:0.5:2")
    assert (pair.weight, pair.grid, pair.key) == (0.5, 2, "hint:branches.1.level4->branches.0.level3@2")
    with pytest.raises(EdgeIQAError, match="not a feature loss"):
        FeaturePair("mse", "head", "head")
    model = build_model(tiny_student).train()
    capture = FeatureCapture(model, ["head", "branches.1.level4", "head.fc1"], only_training=True)
    model(*example_inputs(tiny_student, batch=3))
    assert capture.features["head"].shape == (3, model.head.fc1.in_features)
    assert capture.features["branches.1.level4"].dim() == 4
    assert capture.features["head.fc1"].shape == (3, model.head.fc1.out_features)
    capture.clear()
    with torch.no_grad():
        model.eval()(*example_inputs(tiny_student, batch=3))
    assert capture.features == {}  # evaluation passes keep nothing
    capture.remove()
    maps = torch.randn(2, 3, 5, 7)
    assert torch.allclose(compact(maps, 2), compact(maps.flip(-1), 2), atol=1e-6)  # a mirrored view changes nothing
    assert compact(maps, 0).shape == (2, 3) and compact(maps, 2).shape == (2, 3, 2, 2)
    teacher = get_preset("demo-teacher").replace(views=(ViewConfig("full"), ViewConfig("fragments", grid=3, patch=8)))
    pairs = default_pairs("hint", tiny_student, teacher)
    assert [(p.student, p.teacher, p.grid) for p in pairs] == [
        ("branches.0.level4", "branches.0.level4", 4), ("branches.1.level4", "branches.1.level4", 2)]


def test_torchrun_two_cpu_processes_train_one_model(small_synth, teacher_ckpt, tmp_path):
    out = tmp_path / "ddp"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "edge_iqa.cli", *_distill_argv(small_synth, teacher_ckpt, out, "--epochs", "2", "--json",
                                                 "--loss", "mse=1", "--loss", "kd_mse=1", "--loss", "hint=0.1")]
    result = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    first, second = metrics["rank_weights_sha256"]
    assert first == second  # both ranks hold the same student and projections
    assert {p.name for p in out.iterdir()} == {"best.pt", "last.pt", "metrics.json", "teacher_cache.pt"}
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert json.loads(result.stdout)["world_size"] == 2  # one summary, printed by rank 0 only
