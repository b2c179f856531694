"""Burst scoring: ``Scorer.score_burst``, ``edge-iqa burst score`` and ``edge-iqa evaluate`` on bursts.

A tiny burst model (demo-burst-student's architecture on 32 px views, random weights: these
tests check the plumbing — which frame gets which score, which task row, which rows and exit
codes — not accuracy) and PNG frames written here; ``evaluate`` runs on a tiny embedded burst
set (``build_burst_dataset``, 6 bursts of 4 frames of 48 px, as tests/test_burst_data.py
sizes it).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_burst_model import tiny

import edge_iqa
from edge_iqa.checkpoint import save_checkpoint
from edge_iqa.cli import main
from edge_iqa.config import ViewConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.io import load_image
from edge_iqa.model import build_model
from edge_iqa.views import apply_views

REPO = Path(__file__).resolve().parents[1]
PHOTO_MODEL = REPO / "tests" / "fixtures" / "student.pt"  # a photo model (views need >= 48 px)
SIDE = 48

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny()).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("model") / "burst.pt", model)


@pytest.fixture(scope="module")
def scorer(checkpoint):
    return edge_iqa.load(checkpoint)


def _frame(seed: int, size: tuple[int, int] = (SIDE, SIDE)) -> Image.Image:
    """A smooth random texture with seed-dependent noise: frames that differ, as a burst's do."""
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(np.random.default_rng(99).integers(0, 256, (8, 8, 3), dtype=np.uint8))
                      .resize(size, Image.BILINEAR), dtype=np.float64)
    return Image.fromarray(np.clip(base + rng.normal(0, 3 * seed, base.shape), 0, 255).astype(np.uint8))


def _burst(folder: Path, n: int = 5, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _frame(seed + i).save(folder / f"frame_{i:02d}.png")
    return folder


def _frames(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def _forward(model, frames: list[Image.Image]) -> np.ndarray:
    """(n_tasks, T) straight from the model: the views of each frame, stacked into one burst."""
    views = [apply_views(f, model.config.views) for f in frames]
    batch = [torch.from_numpy(np.stack([v[k] for v in views]))[None] for k in range(len(model.config.views))]
    with torch.no_grad():
        return model.forward_all_tasks(*batch)[0].numpy()


def _one_line(err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ---------------------------------------------------------------- the Python API


def test_score_burst_gives_the_models_scores_for_paths_pil_images_and_arrays(model, scorer, tmp_path):
    paths = _frames(_burst(tmp_path / "b"))
    images = [load_image(p) for p in paths]
    expected = _forward(model, images)
    by_path = scorer.score_burst(paths)
    assert by_path.shape == (5,) and np.allclose(by_path, expected[0], atol=1e-6)
    assert np.allclose(scorer.score_burst([str(p) for p in paths]), expected[0], atol=1e-6)
    assert np.allclose(scorer.score_burst(images), expected[0], atol=1e-6)
    assert np.allclose(scorer.score_burst([np.asarray(i) for i in images]), expected[0], atol=1e-6)
    mixed = [paths[0], images[1], np.asarray(images[2]) / 255.0, *paths[3:]]  # float array in [0, 1]
    assert np.allclose(scorer.score_burst(mixed), expected[0], atol=1e-6)


def test_the_task_is_chosen_by_name(model, scorer, tmp_path):
    paths = _frames(_burst(tmp_path / "b"))
    expected = _forward(model, [load_image(p) for p in paths])
    sr2 = scorer.score_burst(paths, task="sr2")
    assert np.allclose(sr2, expected[1], atol=1e-6) and np.allclose(scorer.score_burst(paths, "denoise"), expected[0])
    assert not np.allclose(sr2, expected[0], atol=1e-3)  # a different row, not the first one again
    with pytest.raises(EdgeIQAError, match=r"^unknown burst task 'deblur'; this model scores denoise, sr2$"):
        scorer.score_burst(paths, task="deblur")


def test_a_reference_change_moves_every_score_and_the_order_of_frames_matters(scorer, tmp_path):
    paths = _frames(_burst(tmp_path / "b"))
    scores = scorer.score_burst(paths)
    swapped = scorer.score_burst([paths[1], paths[0], *paths[2:]])  # frame 1 is now the reference
    assert not np.allclose(scores[2:], swapped[2:], atol=1e-6)


def test_photo_and_burst_models_refuse_each_others_inputs(scorer, tmp_path):
    paths = _frames(_burst(tmp_path / "b", n=2))
    with pytest.raises(EdgeIQAError, match="is a burst model .* use score_burst"):
        scorer.score(paths[0])
    with pytest.raises(EdgeIQAError, match="is a burst model"):
        scorer.score_paths(paths)
    photo = edge_iqa.load(PHOTO_MODEL)
    with pytest.raises(EdgeIQAError, match="student.pt is a photo model: it scores single photos"):
        photo.score_burst(paths)
    with pytest.raises(EdgeIQAError, match="a burst needs a reference and at least one more frame, got 1 frame$"):
        scorer.score_burst(paths[:1])
    with pytest.raises(EdgeIQAError, match="takes a list of frames"):
        scorer.score_burst(str(tmp_path / "b"))


def test_a_frame_that_cannot_be_used_is_left_out_and_the_rest_scored(scorer, tmp_path, caplog):
    paths = _frames(_burst(tmp_path / "b"))
    full = scorer.score_burst(paths)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(paths[2].read_bytes()[:60])
    small = tmp_path / "small.png"
    _frame(7, (SIDE, SIDE - 8)).save(small)
    frames = [paths[0], paths[1], corrupt, small, paths[1], paths[3]]
    result = scorer.score_burst_frames(frames)
    assert result.error is None
    errors = [f.error for f in result.frames]
    assert errors[:2] == [None, None] and errors[5] is None
    assert "corrupt.png" in errors[2] and "truncated" in errors[2]
    assert errors[3] == (f"{small}: 48x40 px, but the reference {paths[0]} is 48x48 px; a burst's frames share "
                         "one size: leave it out or resize it")
    assert errors[4] == f"{paths[1]}: the same file as frame 1; a burst lists each frame once"
    scores = scorer.score_burst(frames)
    assert np.isnan(scores[2:5]).all()
    # each frame is scored against the reference alone, so leaving frames out changes no other score
    assert np.allclose(scores[[0, 1, 5]], full[[0, 1, 3]], atol=1e-6)
    assert sum("left out of the burst" in r.message for r in caplog.records) == 3


def test_a_burst_without_its_reference_or_without_another_frame_fails_whole(scorer, tmp_path):
    paths = _frames(_burst(tmp_path / "b", n=3))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    result = scorer.score_burst_frames([broken, *paths])
    assert result.error.startswith("the burst's reference cannot be used (") and "broken.png" in result.error
    assert all(f.score is None for f in result.frames) and np.isnan(result.scores).all()
    assert result.frames[1].error == result.error  # the others say why they have no score
    with pytest.raises(EdgeIQAError, match="reference cannot be used"):
        scorer.score_burst([broken, *paths])
    with pytest.raises(EdgeIQAError, match="no frame of the burst besides the reference .* nothing to score"):
        scorer.score_burst([paths[0], broken])


# ---------------------------------------------------------------- edge-iqa burst score


@pytest.fixture()
def bursts(tmp_path) -> Path:
    """A folder of two burst folders (5 and 4 frames)."""
    _burst(tmp_path / "bursts" / "a", n=5, seed=0)
    _burst(tmp_path / "bursts" / "b", n=4, seed=10)
    return tmp_path / "bursts"


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_burst_score_keeps_the_reference_and_the_best_others(checkpoint, scorer, bursts, capsys):
    code, out, err = _run(capsys, "burst", "score", checkpoint, bursts, "--keep", "3", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["task"] == "denoise" and report["keep"] == 3 and report["n_bursts"] == 2
    assert report["n_frames"] == 9 and report["failed"] == 0
    for burst in report["bursts"]:
        frames = _frames(Path(burst["burst"]))
        expected = scorer.score_burst(frames)
        assert [f["path"] for f in burst["frames"]] == [str(p) for p in frames]
        assert [f["index"] for f in burst["frames"]] == list(range(len(frames)))
        assert np.allclose([f["score"] for f in burst["frames"]], expected, atol=1e-5)
        best_two = 1 + np.argsort(-expected[1:])[:2]
        assert burst["kept"] == [str(frames[i]) for i in sorted([0, *best_two])]
    code, out, err = _run(capsys, "burst", "score", checkpoint, bursts / "a", "--keep", "2", "--task", "sr2")
    assert code == 0 and out == ""
    assert "1 bursts, 5 frames scored, 0 failed; task sr2, keep 2" in err
    assert sum(".png" in line and line.rstrip().endswith("kept") for line in err.splitlines()) == 2


def test_burst_score_reference_option_makes_that_frame_first(checkpoint, scorer, bursts, capsys):
    frames = _frames(bursts / "a")
    code, out, _ = _run(capsys, "burst", "score", checkpoint, bursts / "a", "--reference", frames[3].name, "--json")
    assert code == 0
    rows = json.loads(out)["bursts"][0]["frames"]
    assert [r["path"] for r in rows] == [str(p) for p in [frames[3], *frames[:3], frames[4]]]
    assert rows[0]["kept"] and np.allclose([r["score"] for r in rows],
                                           scorer.score_burst([frames[3], *frames[:3], frames[4]]), atol=1e-5)
    code, _, err = _run(capsys, "burst", "score", checkpoint, bursts / "a", "--reference", "nope.png")
    assert code == 2
    _one_line(err, "--reference nope.png: not a frame of the burst")
    code, _, err = _run(capsys, "burst", "score", checkpoint, bursts, "--reference", frames[3].name)
    assert code == 2
    _one_line(err, "2 bursts were given")


def test_burst_score_out_csv_and_resume(checkpoint, bursts, tmp_path, capsys):
    out = tmp_path / "frames.csv"
    code, report, _ = _run(capsys, "burst", "score", checkpoint, bursts, "--out", out, "--json")
    assert code == 0
    rows = _csv(out)
    assert list(rows[0]) == ["burst", "path", "index", "score", "kept", "error"] and len(rows) == 9
    assert [r["path"] for r in rows] == [f["path"] for b in json.loads(report)["bursts"] for f in b["frames"]]
    assert not (tmp_path / "frames.csv.partial").exists()
    code, _, err = _run(capsys, "burst", "score", checkpoint, bursts, "--out", out)
    assert code == 2
    _one_line(err, "already exists; pass --resume")
    # a run killed after burst a (and half a row of burst b): --resume keeps a, scores b again, whole
    text = out.read_text().splitlines(keepends=True)
    partial = tmp_path / "frames.csv.partial"
    partial.write_text("".join(text[:6]) + text[6][:20])
    out.unlink()
    code, report, _ = _run(capsys, "burst", "score", checkpoint, bursts, "--out", out, "--resume", "--json")
    assert code == 0 and json.loads(report)["resumed_bursts"] == 1
    assert _csv(out) == rows and not partial.exists()


# Bad input (issue 13, section 6): one line each, rows kept, exit 2 where nothing could be done.


def test_burst_score_corrupt_frame_is_a_row_and_the_rest_are_scored(checkpoint, bursts, tmp_path, capsys):
    frames = _frames(bursts / "a")
    frames[2].write_bytes(b"\x89PNG broken")
    _frame(3, (SIDE + 16, SIDE)).save(frames[3])  # a frame of another size
    out = tmp_path / "rows.csv"
    code, report, err = _run(capsys, "burst", "score", checkpoint, bursts, "--keep", "3", "--out", out, "--json")
    assert code == 1 and "Traceback" not in err
    rows = json.loads(report)["bursts"][0]["frames"]
    assert [r["score"] is None for r in rows] == [False, False, True, True, False]
    assert "not an image" in rows[2]["error"] and "64x48 px, but the reference" in rows[3]["error"]
    assert [r["kept"] for r in rows] == [True, True, False, False, True]  # the reference + the 2 usable others
    assert len(_csv(out)) == 9 and json.loads(report)["bursts"][1]["error"] is None  # burst b scored


def test_burst_score_failed_reference_fails_its_burst_only(checkpoint, bursts, capsys):
    _frames(bursts / "a")[0].write_bytes(b"")
    code, report, err = _run(capsys, "burst", "score", checkpoint, bursts, "--json")
    assert code == 1
    a, b = json.loads(report)["bursts"]
    assert a["error"].startswith("the burst's reference cannot be used") and "empty" in a["error"]
    assert all(f["error"] for f in a["frames"]) and a["kept"] == []
    assert b["error"] is None and len(b["kept"]) == 3
    assert sum("reference cannot be used" in line for line in err.splitlines()) == 1


def test_burst_score_one_frame_no_images_and_repeated_names(checkpoint, bursts, tmp_path, capsys):
    single = _burst(tmp_path / "single", n=1)
    code, _, err = _run(capsys, "burst", "score", checkpoint, single)
    assert code == 2
    _one_line(err, "single: a burst needs a reference and at least one more frame, found 1 image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no frames")
    code, _, err = _run(capsys, "burst", "score", checkpoint, tmp_path / "empty")
    assert code == 2
    _one_line(err, "empty: no images", "folder of burst folders")
    code, _, err = _run(capsys, "burst", "score", checkpoint, tmp_path / "nowhere")
    assert code == 2
    _one_line(err, "nowhere: not found")
    # next to good bursts: the one-frame burst is a row with its error, the empty folder one line, exit 1
    shutil.copytree(single, bursts / "c")
    code, report, err = _run(capsys, "burst", "score", checkpoint, bursts, tmp_path / "empty", bursts / "a", "--json")
    assert code == 1
    report = json.loads(report)
    assert [b["burst"] for b in report["bursts"]] == [str(bursts / n) for n in "abc"]  # a named twice: once
    assert "found 1 image" in report["bursts"][2]["frames"][0]["error"] and report["failed"] == 1
    assert any("empty: no images" in line for line in err.splitlines())
    assert any(line == f"{bursts / 'a'}: named twice; scored once" for line in err.splitlines())
    # frame_01.jpg beside frame_01.png: one frame stored twice; the second by name is a row with its error
    _frame(5).save(bursts / "b" / "frame_01.jpg")
    code, report, _ = _run(capsys, "burst", "score", checkpoint, bursts / "b", "--json")
    assert code == 1
    rows = json.loads(report)["bursts"][0]["frames"]
    assert len(rows) == 5 and [r["score"] is None for r in rows] == [False] * 4 + [True]
    assert rows[1]["path"].endswith("frame_01.jpg") and rows[4]["path"].endswith("frame_01.png")
    assert "the same frame name as frame_01.jpg (frame 1, a second copy?)" in rows[4]["error"]


def test_burst_score_keep_larger_than_the_burst_keeps_all_and_says_so(checkpoint, bursts, capsys):
    code, report, err = _run(capsys, "burst", "score", checkpoint, bursts / "b", "--keep", "9", "--json")
    assert code == 0
    assert len(json.loads(report)["bursts"][0]["kept"]) == 4
    _one_line(err, "b: --keep 9 but the burst has 4 usable frames (4 in all); all 4 kept")


def test_burst_score_refuses_a_photo_model_and_an_unknown_task(checkpoint, bursts, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    code, _, err = _run(capsys, "burst", "score", PHOTO_MODEL, bursts, "--out", out)
    assert code == 2 and not out.exists()
    _one_line(err, "student.pt is a photo model")
    code, _, err = _run(capsys, "burst", "score", checkpoint, bursts, "--task", "deblur", "--out", out)
    assert code == 2 and not out.exists()
    _one_line(err, "unknown burst task 'deblur'; this model scores denoise, sr2")
    code, _, err = _run(capsys, "burst", "score", checkpoint, bursts, "--keep", "0")
    assert code == 2
    _one_line(err, "--keep")
    code, _, err = _run(capsys, "score", checkpoint, bursts / "a")
    assert code == 2
    _one_line(err, "is a burst model", "edge-iqa burst score")


# ---------------------------------------------------------------- edge-iqa evaluate on bursts


@pytest.fixture(scope="module")
def burst_data(tmp_path_factory) -> Path:
    from edge_iqa.data.burst_synth import BurstSynthConfig, build_burst_dataset
    from edge_iqa.data.synth import package_photos

    photos = tmp_path_factory.mktemp("photos")
    colour = {s.name: s for s in package_photos(grayscale=False)}
    for name in ("astronaut", "chelsea", "coffee"):
        shutil.copy(colour[name].path, photos / colour[name].path.name)
    config = BurstSynthConfig(frames=4, frame_side=SIDE, bursts_per_scene=2)
    return build_burst_dataset(tmp_path_factory.mktemp("bursts") / "ds", photos=photos, seed=1, max_side=200,
                               config=config, video=False, workers=1)


def test_burst_score_takes_a_burst_dataset_one_burst_per_sequence(checkpoint, scorer, burst_data, capsys):
    from edge_iqa.burst_eval import BurstEvalSet

    code, out, err = _run(capsys, "burst", "score", checkpoint, burst_data, "--keep", "2", "--json")
    assert code == 0, err
    report = json.loads(out)
    sequences = BurstEvalSet(burst_data).bursts  # every split, each reference first
    assert [b["burst"] for b in report["bursts"]] == [f"{burst_data}:{s.name}" for s in sequences]
    for burst, sequence in zip(report["bursts"], sequences):
        paths = [f.path for f in sequence.frames]
        assert [f["path"] for f in burst["frames"]] == [str(p) for p in paths]
        assert np.allclose([f["score"] for f in burst["frames"]], scorer.score_burst(paths), atol=1e-5)
        assert len(burst["kept"]) == 2 and burst["kept"][0] == str(paths[0])


def test_evaluate_prints_the_burst_protocol_for_every_task(checkpoint, burst_data, capsys):
    code, out, err = _run(capsys, "evaluate", checkpoint, "--data", burst_data)
    assert code == 0 and out == ""
    for header in ("R0", "R0.02", "R0.05", "R0.1", "pairwise acc", "top-M downstream PSNR", "random dB",
                   "first dB", "all dB", "oracle dB", "oracle share"):
        assert header in err, header
    assert "burst task denoise, split test" in err and "burst task sr2, split test" in err
    assert [line.split()[:2] for line in err.splitlines() if line[:2] in ("3 ", "5 ")] == [["3", "2"], ["5", "0"]] * 2


def test_evaluate_json_matches_burst_evaluation_of_the_scorer(checkpoint, scorer, burst_data, capsys):
    from edge_iqa.burst_eval import BurstEvalSet, burst_evaluation

    code, out, _ = _run(capsys, "evaluate", checkpoint, "--data", burst_data, "--task", "sr2", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["kind"] == "burst" and list(report["tasks"]) == ["sr2"] and report["leakage_warning"] is None
    result = report["tasks"]["sr2"]
    for key in ("srcc_r0", "srcc_r0.02", "srcc_r0.05", "srcc_r0.1", "pairwise_accuracy_mean",
                "pairwise_accuracy_std", "n_bursts", "n_frames", "downstream"):
        assert key in result, key
    assert result["n_bursts"] == 2 and result["n_frames"] == 6 and result["model_task"] == "sr2"
    eval_set = BurstEvalSet(burst_data, "test")
    predictions = {b.name: scorer.score_burst([f.path for f in b.frames], "sr2") for b in eval_set.bursts}
    expected = burst_evaluation(eval_set, "test", "sr2", predictions)
    assert result["srcc_r0"] == pytest.approx(expected["srcc_r0"])
    top3 = result["downstream"]["top3"]
    assert top3["n_bursts"] == 2 and top3["psnr_db"] == pytest.approx(expected["downstream"]["top3"]["psnr_db"])
    assert set(top3["psnr_db"]) == {"model", "random", "first", "all", "oracle"}
    top5 = result["downstream"]["top5"]  # 4-frame bursts: no top-5 row, null (strict JSON), not NaN
    assert top5["n_bursts"] == 0 and top5["gain_vs_random_db"] is None and "NaN" not in out


def test_evaluate_a_photo_model_scores_each_frame_alone(burst_data, capsys):
    code, out, _ = _run(capsys, "evaluate", PHOTO_MODEL, "--data", burst_data, "--workers", "0", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["scorer"] == "photo model, each frame alone" and list(report["tasks"]) == ["denoise", "sr2"]
    assert all(math.isfinite(t["srcc_r0"]) for t in report["tasks"].values())


def _copy_with(burst_data: Path, tmp_path: Path, edit) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(burst_data, root)
    with open(root / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows = edit(rows)
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_evaluate_bad_burst_data(checkpoint, burst_data, tmp_path, capsys, caplog):
    code, _, err = _run(capsys, "evaluate", checkpoint, "--data", burst_data, "--task", "deblur")
    assert code == 2
    _one_line(err, "unknown burst task 'deblur'")

    def split_one_burst(rows):  # one frame of a test burst moved to train: the burst is in two splits
        next(r for r in rows if r["split"] == "test" and r["frame"] == "2")["split"] = "train"
        return rows

    code, _, err = _run(capsys, "evaluate", checkpoint, "--data", _copy_with(burst_data, tmp_path / "a", split_one_burst))
    assert code == 2
    _one_line(err, "is in split 'train' here but 'test' on line", "put every frame of a burst in one split")

    def scene_in_two_splits(rows):  # a whole train burst moved to test: its scene is now in both
        name = next(r["sequence"] for r in rows if r["split"] == "train")
        for r in rows:
            if r["sequence"] == name:
                r["split"] = "test"
        return rows

    code, out, err = _run(capsys, "evaluate", checkpoint, "--data",
                          _copy_with(burst_data, tmp_path / "b", scene_in_two_splits), "--json")
    assert code == 0 and "astronaut" in json.loads(out)["leakage_warning"]
    assert any("has bursts in splits test, train; test scores of a model trained on them are optimistic" in line
               for line in err.splitlines())

    def repeat_a_frame(rows):  # frame 1 of a test burst listed twice
        i = next(i for i, r in enumerate(rows) if r["split"] == "test" and r["frame"] == "1")
        return rows[: i + 1] + [dict(rows[i])] + rows[i + 1:]

    code, out, err = _run(capsys, "evaluate", checkpoint, "--data", _copy_with(burst_data, tmp_path / "c", repeat_a_frame),
                          "--json")
    assert code == 0 and json.loads(out)["tasks"]["denoise"]["n_frames"] == 6  # counted once
    assert sum("frame 1 of sequence 'coffee_b0' appears twice" in r.message for r in caplog.records) == 1

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        _frame(i).save(photos / f"p{i}.png")
    (photos / "manifest.csv").write_text("path,score,split\n" + "".join(f"p{i}.png,{i},test\n" for i in range(3)))
    code, _, err = _run(capsys, "evaluate", checkpoint, "--data", photos)
    assert code == 2
    _one_line(err, "is a burst model and", "a photo dataset")


# ---------------------------------------------------------------- exported burst models


def test_an_onnx_export_scores_bursts_as_the_checkpoint(burst_data, tmp_path, capsys):
    """The exporter's own conversion (``export.onnx.torch2onnx``, what ``edge-iqa export --format
    onnx`` writes; parity at every precision is tests/test_export_matrix.py's) through ``load``.
    One view (one backbone) halves the export's time."""
    from export.onnx import torch2onnx

    torch.manual_seed(1)
    model = build_model(tiny().replace(views=(ViewConfig("resize", size=(32, 32)),))).eval()
    scorer = edge_iqa.load(save_checkpoint(tmp_path / "one_view.pt", model))
    onnx = torch2onnx(model, tmp_path / "burst.onnx")
    exported = edge_iqa.load(onnx)
    assert exported.config.burst == model.config.burst
    frames = _frames(_burst(tmp_path / "b"))
    for task in ("denoise", "sr2"):
        assert np.allclose(exported.score_burst(frames, task), scorer.score_burst(frames, task), atol=1e-4)
    longer = [*frames, *_frames(_burst(tmp_path / "c", n=3, seed=20))]  # T is free at run time
    assert np.allclose(exported.score_burst(longer), scorer.score_burst(longer), atol=1e-4)
    code, report, err = _run(capsys, "evaluate", onnx, "--data", burst_data, "--json")
    assert code == 0, err
    checkpoint_report = json.loads(_run(capsys, "evaluate", scorer.source, "--data", burst_data, "--json")[1])
    for task in ("denoise", "sr2"):
        assert json.loads(report)["tasks"][task]["srcc_r0"] == pytest.approx(
            checkpoint_report["tasks"][task]["srcc_r0"], abs=1e-6)
    code, _, err = _run(capsys, "burst", "score", onnx, tmp_path / "b", "--keep", "2")
    assert code == 0, err
