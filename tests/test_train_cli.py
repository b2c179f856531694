"""End to end on the tiny embedded dataset: train, resume, evaluate, score, Python API, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edge_iqa
from distill.trainer import TrainConfig, train
from edge_iqa.checkpoint import read_checkpoint
from edge_iqa.cli import main
from edge_iqa.data.manifest import read_manifest


@pytest.fixture(scope="module")
def trained_run(tiny_synth, tiny_student, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=2, batch_size=32, lr=2e-3, num_workers=0, seed=0)
    summary = train(tiny_student, tiny_synth, out, cfg, progress=False)
    return out, summary


def test_train_writes_checkpoints_and_metrics(trained_run):
    out, summary = trained_run
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert set(metrics["test"]) >= {"srcc", "plcc", "krcc", "mae", "rmse", "n"}
    best = read_checkpoint(out / "best.pt")
    assert best["info"]["best_epoch"] == summary["best_epoch"]
    assert best["config"].score_range == (0.0, 1.0)


def test_resume_continues_a_stopped_run(tiny_synth, tiny_student, trained_run, tmp_path):
    out, _ = trained_run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("last.pt", "best.pt"):  # what a run killed after epoch 2 leaves behind
        (resumed / name).write_bytes((out / name).read_bytes())
    cfg = TrainConfig(epochs=3, batch_size=32, lr=2e-3, num_workers=0, seed=0)
    summary = train(tiny_student, tiny_synth, resumed, cfg, resume=True, progress=False)
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]  # epochs 1-2 from the stopped run


def test_train_is_reproducible_with_a_seed(tiny_synth, tiny_student, trained_run, tmp_path):
    _, first = trained_run
    cfg = TrainConfig(epochs=2, batch_size=32, lr=2e-3, num_workers=0, seed=0)
    again = train(tiny_student, tiny_synth, tmp_path, cfg, progress=False)
    assert again["history"][-1]["train_loss"] == pytest.approx(first["history"][-1]["train_loss"], rel=1e-4)


def test_evaluate_json(trained_run, tiny_synth, capsys):
    out, _ = trained_run
    assert main(["evaluate", str(out / "best.pt"), "--data", str(tiny_synth), "--json", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"srcc", "plcc", "krcc", "mae", "rmse", "n"}
    assert result["n"] == len(read_manifest(tiny_synth, split="test"))


def test_score_folder_with_a_corrupt_file(trained_run, tiny_synth, tmp_path, capsys):
    out, _ = trained_run
    photos = tmp_path / "photos"
    photos.mkdir()
    for record in read_manifest(tiny_synth, split="test")[:3]:
        (photos / record.path.name).write_bytes(record.path.read_bytes())
    (photos / "broken.jpg").write_text("this is not a jpeg")
    (photos / "empty.png").write_bytes(b"")
    table = tmp_path / "scores.csv"
    code = main(["score", str(out / "best.pt"), str(photos), "--out", str(table), "--json"])
    assert code == 1  # some files failed
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 5 and result["failed"] == 2
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 5
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"broken.jpg", "empty.png"}
    assert all("\n" not in e for e in errors.values())
    assert all(r["score"] for r in rows if not r["error"])


def test_python_api_scores_paths_images_and_arrays(trained_run, tiny_synth):
    out, _ = trained_run
    scorer = edge_iqa.load(out / "best.pt")
    path = read_manifest(tiny_synth, split="test")[0].path
    image = Image.open(path).convert("RGB")
    from_path, from_image = scorer.score(path), scorer.score(image)
    from_array = scorer.score(np.asarray(image))
    assert from_path == pytest.approx(from_image, abs=1e-6) == pytest.approx(from_array, abs=1e-6)
    batch = scorer.score_paths([path])
    assert batch[0].score == pytest.approx(from_path, abs=1e-5)


@pytest.mark.parametrize("argv, needle", [
    (["score", "aim-basline.pt", "x.jpg"], "aim-basline.pt"),
    (["train", "--data", "/nonexistent", "--model", "aim-basline", "--out", "/tmp/x"], "did you mean aim-baseline"),
    (["evaluate", "missing.pt", "--data", "/nonexistent"], "missing.pt"),
    (["train", "--data", "/nonexistent", "--model", "demo-student", "--out", "/tmp/x", "--view", "resize:abc"],
     "cannot parse view"),
])
def test_user_errors_are_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_manifest_with_bad_rows_trains_on_the_good_ones(tiny_synth, tiny_student, tmp_path):
    data = tmp_path / "data"
    rows = list(csv.DictReader((tiny_synth / "manifest.csv").open()))
    for row in rows:
        row["path"] = str(tiny_synth / row["path"])
    rows[0]["score"] = "nan"
    rows[1]["score"] = ""
    rows[2]["path"] = str(tiny_synth / "images" / "gone.png")
    data.mkdir()
    with (data / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    info = json.loads((tiny_synth / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**info, "image_roots": [str(tiny_synth)]}))  # images stay there
    records = read_manifest(data)
    assert len(records) == len(rows) - 3
    cfg = TrainConfig(epochs=1, batch_size=64, num_workers=0)
    assert train(tiny_student, data, tmp_path / "run", cfg, progress=False)["history"]
