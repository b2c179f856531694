"""Burst labels and burst datasets: alignment, the two merges, Δ labels, synthesis, importers."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from edge_iqa.cli import main
from edge_iqa.data.align import align
from edge_iqa.data.burst_adapters import bradley_terry, normalised_scores
from edge_iqa.data.burst_stats import label_statistics
from edge_iqa.data.burst_synth import BurstSynthConfig, build_burst_dataset, load_clip, noise_sigma
from edge_iqa.data.adapters import import_dataset
from edge_iqa.data.manifest import read_burst_manifest, read_dataset_info
from edge_iqa.data.merges import (
    TASKS,
    frame_labels,
    merge_denoise,
    merge_sr,
    psnr,
    reference_mask,
    score_from_delta,
    upsample_bicubic,
)
from edge_iqa.data.synth import package_photos, read_png_float
from edge_iqa.errors import DatasetError, EdgeIQAError


def _scene(size: int, seed: int = 0) -> np.ndarray:
    """A textured colour scene: smooth blobs, fine texture and sharp-edged boxes."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((size, size, 3)), (size / 16, size / 16, 0))
    img = (img - img.min()) / (img.max() - img.min())
    img = 0.7 * img + 0.3 * ndimage.gaussian_filter(rng.random((size, size, 3)), (1.2, 1.2, 0)) * 2 - 0.15
    for _ in range(6):
        y, x = rng.integers(0, size - size // 6, 2)
        img[y : y + size // 6, x : x + size // 8] = rng.random(3)
    return np.clip(img, 0, 1).astype(np.float32)


def _sample(img: np.ndarray, side: int, shift=(0.0, 0.0), rotation_deg: float = 0.0):
    """A side x side view of ``img`` around its centre, rotated and shifted; and its sample grid."""
    th = math.radians(rotation_deg)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64) - (side - 1) / 2
    c = (img.shape[0] - 1) / 2
    sy = math.cos(th) * yy - math.sin(th) * xx + c + shift[0]
    sx = math.sin(th) * yy + math.cos(th) * xx + c + shift[1]
    out = np.stack([ndimage.map_coordinates(img[..., k], [sy, sx], order=3, mode="reflect") for k in range(3)], -1)
    return np.clip(out, 0, 1).astype(np.float32)


def _burst(scene: np.ndarray, side: int, n: int, sigma: float, seed: int = 1, scale: int = 1):
    """n shaken, noisy views (the first unshaken) of ``scene``; area-downsampled by ``scale``."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        shift = (0.0, 0.0) if i == 0 else tuple(rng.uniform(-2.5, 2.5, 2) * scale)
        view = _sample(scene, side * scale, shift, 0.0 if i == 0 else rng.uniform(-1, 1))
        view = view.reshape(side, scale, side, scale, 3).mean(axis=(1, 3))
        frames.append(np.clip(view + rng.normal(0, sigma, view.shape), 0, 1).astype(np.float32))
    return np.stack(frames)


def test_alignment_recovers_translation_and_small_rotation():
    scene = _scene(96)
    side, shift, rotation = 64, (2.3, -1.7), 1.5
    fixed = _sample(scene, side)
    moving = _sample(scene, side, shift, rotation)
    flow = align(fixed, moving)
    # moving(q) shows scene point R q' + c + t (q' centred); fixed(p) shows p' + c. Solve for q.
    th = math.radians(rotation)
    p = np.mgrid[0:side, 0:side].astype(np.float64) - (side - 1) / 2
    d = np.stack([p[0] - shift[0], p[1] - shift[1]])
    q = np.stack([math.cos(th) * d[0] + math.sin(th) * d[1], -math.sin(th) * d[0] + math.cos(th) * d[1]])
    true = np.moveaxis(q - p, 0, -1)
    err = np.linalg.norm(flow - true, axis=-1)[8:-8, 8:-8]
    assert np.abs(true).max() > 2.5  # the rotation adds ~0.6 px across the frame to the shift
    assert err.mean() < 0.15 and err.max() < 0.5, (err.mean(), err.max())


def test_denoise_merge_beats_the_reference():
    scene = _scene(96, seed=2)
    burst = _burst(scene, 64, 5, sigma=0.04)
    clean = _sample(scene, 64)
    merged = merge_denoise(burst)
    assert merged.shape == clean.shape and merged.dtype == np.float32
    assert psnr(merged, clean, 4) > psnr(burst[0], clean, 4) + 2.0


def test_sr_merge_beats_bicubic_upsampling_of_the_reference():
    scene = _scene(128, seed=3)
    burst = _burst(scene, 48, 5, sigma=0.01, scale=2)
    clean = _sample(scene, 96)
    merged = merge_sr(burst, scale=2)
    assert merged.shape == (96, 96, 3)
    gain = psnr(merged, clean, 8) - psnr(upsample_bicubic(burst[0], 2), clean, 8)
    assert gain > 0.3, gain


@pytest.fixture(scope="module")
def labelled_burst():
    """A 5-frame burst at 48 px (clean scene at 96 px) with a duplicate and a pure-noise frame."""
    scene = _scene(128, seed=4)
    burst = _burst(scene, 48, 5, sigma=0.03, scale=2)
    burst[3] = burst[1]  # a repeated buffer
    burst[4] = np.random.default_rng(9).random(burst[4].shape, dtype=np.float32)  # pure noise
    clean = _sample(scene, 96)
    return burst, clean, {name: frame_labels(burst, clean, name, noise_sigma=0.03) for name in TASKS}


def test_duplicated_frame_is_redundant_and_an_ordinary_frame_is_not(labelled_burst):
    burst, clean, labels = labelled_burst
    delta = labels["denoise"]
    assert abs(delta[3]) < 0.02 and abs(delta[1]) < 0.02  # either copy: the other one stays
    assert delta[2] > 0.3  # a distinct frame is worth something
    assert abs(labels["sr2"][3]) < 0.02


def test_pure_noise_frame_does_not_help_the_robust_merge(labelled_burst):
    _, _, labels = labelled_burst
    for name in TASKS:
        assert labels[name][4] <= 0.05, (name, labels[name])


def test_reference_is_never_removed_and_flagged(labelled_burst):
    burst, clean, labels = labelled_burst
    for delta in labels.values():
        assert math.isnan(delta[0]) and np.isfinite(delta[1:]).all()
    other = frame_labels(burst, clean, "denoise", ref_index=2, noise_sigma=0.03)
    assert math.isnan(other[2]) and np.isfinite(np.delete(other, 2)).all()
    assert reference_mask(5, 2).tolist() == [False, False, True, False, False]
    with pytest.raises(EdgeIQAError, match="clean scene"):
        frame_labels(burst, clean[:48, :48], "sr2")
    assert score_from_delta([-2.0, -1.0, 0.0, 0.1, 4.0, 9.0]).tolist() == pytest.approx([0, 0, 0.2, 0.22, 1, 1])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("burst_photos")
    colour = {s.name: s for s in package_photos(grayscale=False)}
    for name in ("astronaut", "chelsea", "coffee"):
        shutil.copy(colour[name].path, folder / colour[name].path.name)
    return folder


CONFIG = BurstSynthConfig(frames=4, frame_side=32, bursts_per_scene=2, video_bursts=1)


@pytest.fixture(scope="module")
def built(photos, tmp_path_factory) -> Path:
    return build_burst_dataset(tmp_path_factory.mktemp("bursts") / "ds", photos=photos, seed=1, max_side=128,
                               config=CONFIG, video=False, workers=2)


def test_build_writes_a_burst_manifest_split_by_scene(built):
    sequences = read_burst_manifest(built)
    assert len(sequences) == 6 and all(len(frames) == 4 for frames in sequences.values())
    split_of_scene = {}
    for frames in sequences.values():
        scene = frames[0].extra["scene"]
        assert split_of_scene.setdefault(scene, frames[0].split) == frames[0].split
    assert sorted(split_of_scene.values()) == ["test", "train", "val"]
    info = read_dataset_info(built)
    assert info.extra["label_rule"].startswith("score = clip((delta_db + 1) / 5, 0, 1)")
    assert info.extra["tasks"].keys() == TASKS.keys() and info.extra["frames"] == 4
    assert info.extra["degradations"]["duplicate"]["probability"] == pytest.approx(0.1)
    assert info.extra["video"] == {"used": False, "skipped": "video bursts not requested"}
    assert info.extra["label_statistics"] == label_statistics(built)
    for frames in sequences.values():
        ref, rest = frames[0], frames[1:]
        assert ref.extra["reference"] == "1" and ref.extra["delta_denoise_db"] == "nan"
        for f in rest:
            assert f.extra["reference"] == "0"
            assert f.score == pytest.approx(float(f.extra["score_denoise"]), abs=1e-5)
            assert float(f.extra["score_sr2"]) == pytest.approx(
                float(score_from_delta(float(f.extra["delta_sr2_db"]))), abs=1e-5)
            for column in ("shift_x", "shift_y", "rotation_deg", "lambda_shot", "lambda_read", "blur", "defocus",
                           "exposure", "occlusion", "duplicate_of", "source"):
                assert column in f.extra


def test_build_is_deterministic(built, photos, tmp_path):
    again = build_burst_dataset(tmp_path / "again", photos=photos, seed=1, max_side=128, config=CONFIG,
                                video=False, workers=1)
    assert (again / "manifest.csv").read_text() == (built / "manifest.csv").read_text()


def test_stored_labels_are_recomputable_from_the_pngs(built):
    frames = next(iter(read_burst_manifest(built).values()))
    burst = np.stack([read_png_float(f.path) for f in frames]).astype(np.float32)
    clean = read_png_float(built / frames[0].extra["clean"]).astype(np.float32)
    sigma = noise_sigma(burst[0], float(frames[0].extra["lambda_shot"]), float(frames[0].extra["lambda_read"]))
    delta = frame_labels(burst, clean, "sr2", noise_sigma=sigma)
    stored = [float(f.extra["delta_sr2_db"]) for f in frames]
    assert np.allclose(delta[1:], stored[1:], atol=1e-4)


def test_label_statistics_shares_and_stability(built):
    stats = label_statistics(built)
    for name in TASKS:
        s = stats[name]
        assert s["frames"] == 18
        assert s["redundant"] + s["harmful_to_remove"] + s["helpful_to_remove"] == pytest.approx(1.0)
        assert set(s["stability"]) == {"2", "3"} and s["stability"]["3"]["frames"] == 12
        assert -1.0 <= s["stability"]["3"]["plcc"] <= 1.0


def test_missing_video_decoder_is_skipped_with_its_reason(monkeypatch, photos, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    clip, info = load_clip(CONFIG)
    assert clip is None and info["used"] is False
    assert "av cannot be imported" in info["skipped"] and "imageio_ffmpeg cannot be imported" in info["skipped"]
    config = BurstSynthConfig(frames=3, frame_side=32, bursts_per_scene=1)
    root = build_burst_dataset(tmp_path / "ds", photos=photos, max_side=128, config=config, workers=1)
    assert read_dataset_info(root).extra["video"] == info
    assert all(not seq.startswith("bikes") for seq in read_burst_manifest(root))


def test_real_motion_bursts_from_the_bikes_clip():
    config = BurstSynthConfig(frames=3, frame_side=32, video_bursts=2, video_stride=100)
    clip, info = load_clip(config)
    if clip is None:
        pytest.skip(f"the bikes clip cannot be read here: {info['skipped']}")
    assert info["used"] and info["bursts"] == 2 and sorted(clip) == [0, 1, 2, 100, 101, 102]
    assert clip[0].shape == (272, 640, 3) and not np.array_equal(clip[0], clip[1])


def test_bradley_terry_recovers_a_known_order():
    # 0 beats 1 and 2 clearly, 1 beats 2 narrowly, 3 loses to all.
    pairs = [(0, 1, 0.9), (0, 2, 0.8), (1, 2, 0.6), (3, 0, 0.1), (3, 1, 0.2), (2, 3, 0.7)]
    strengths = bradley_terry(4, pairs)
    assert np.argsort(-strengths).tolist() == [0, 1, 2, 3]
    scores = normalised_scores(strengths)
    assert scores[0] == 1.0 and scores[3] == 0.0 and 0 < scores[2] < scores[1] < 1
    assert normalised_scores(bradley_terry(2, [(0, 1, 0.5)])).tolist() == [0.5, 0.5]


def _jpeg(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), (shade, 80, 200 - shade)).save(path)


def test_phototriage_import_keeps_pairs_and_scores_series(tmp_path):
    src = tmp_path / "triage"
    for series, photos in ((1, 3), (2, 2), (3, 2)):
        for p in range(1, photos + 1):
            _jpeg(src / "train_val" / "train_val_imgs" / f"{series:06d}-{p:02d}.JPG", 40 * p)
    (src / "train_val").mkdir(exist_ok=True)
    (src / "train_val" / "train_pairlist.txt").write_text("1 1 2 0.9 1 2\n1 2 3 0.7 2 3\n1 1 3 0.95 1 3\nbad line\n")
    (src / "train_val" / "val_pairlist.txt").write_text("2 1 2 0.2 2 1\n3 1 2 0.6 1 2\n")
    root = import_dataset("phototriage", src, tmp_path / "out", seed=0)
    sequences = read_burst_manifest(root)
    scores = {seq: [f.score for f in frames] for seq, frames in sequences.items()}
    assert scores["000001"] == [1.0, pytest.approx(scores["000001"][1]), 0.0] and 0 < scores["000001"][1] < 1
    assert scores["000002"] == [0.0, 1.0]
    assert {sequences["000002"][0].split, sequences["000003"][0].split} == {"val", "test"}  # val halved
    assert all(f.extra["reference"] == "0" for frames in sequences.values() for f in frames)
    lines = (root / "pairs.csv").read_text().splitlines()
    assert lines[0] == "sequence,frame_a,frame_b,path_a,path_b,prefer_a,split" and len(lines) == 6
    assert lines[1].startswith("000001,0,1,") and lines[1].endswith(",0.9,train")


def test_burst_folders_import_and_refusal_without_scores(tmp_path):
    src = tmp_path / "bursts"
    rows = ["path,score"]
    for b in range(4):
        for i in range(3):
            _jpeg(src / f"burst{b}" / f"img_{i:03d}.png", 30 * i + b)
            rows.append(f"burst{b}/img_{i:03d}.png,{0.1 * i + b}")
    _jpeg(src / "lonely" / "only.png", 10)
    with pytest.raises(DatasetError, match="scores.csv not found"):
        import_dataset("burst-folders", src, tmp_path / "out0")
    (src / "scores.csv").write_text("\n".join(rows) + "\n")
    sequences = read_burst_manifest(import_dataset("burst-folders", src, tmp_path / "out"))
    assert sorted(sequences) == ["burst0", "burst1", "burst2", "burst3"]  # "lonely" has one frame
    frames = sequences["burst2"]
    assert [f.path.name for f in frames] == ["img_000.png", "img_001.png", "img_002.png"]
    assert [f.extra["reference"] for f in frames] == ["1", "0", "0"]
    assert [f.score for f in frames] == pytest.approx([2.0, 2.1, 2.2])


def test_cli_data_synth_kind_burst(photos, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["data", "synth", str(out), "--kind", "burst", "--photos", str(photos), "--frames", "3",
               "--frame-size", "32", "--bursts-per-scene", "1", "--max-side", "128", "--no-video", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 9 and set(summary["label_statistics"]) == set(TASKS)
    assert main(["data", "info", str(out)]) == 0
    assert "burst labels" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "x"), "--kind", "burst", "--frames", "2"]) == 2
