"""The embedded synthetic dataset: variants, exact SSIM labels, splits by photo, determinism."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from edge_iqa.cli import main
from edge_iqa.data.manifest import read_dataset_info, read_manifest
from edge_iqa.data.synth import (
    DISTORTIONS,
    LEVELS,
    build_synth_dataset,
    package_photos,
    split_references,
    variants,
    write_crop_variants,
)
from edge_iqa.errors import DatasetError


def _photo(path: Path, seed: int, size=(96, 72)) -> None:
    """A smooth random scene with edges: enough structure for SSIM to mean something."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = gaussian_filter(rng.random((h, w, 3)), sigma=(4, 4, 0))
    img = (img - img.min()) / (img.max() - img.min())
    img[h // 4 : h // 2, w // 3 : 2 * w // 3] = rng.random(3)  # a flat box with sharp edges
    Image.fromarray((img * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(["beach.png", "city street.jpg", "dog.png", "tree.png"]):
        _photo(folder / name, i, size=(96, 72) if i % 2 else (72, 96))
    return folder


@pytest.fixture(scope="module")
def built(photos, tmp_path_factory) -> Path:
    return build_synth_dataset(tmp_path_factory.mktemp("synth") / "ds", photos=photos, seed=3, max_side=64)


def _read_float(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8) / 255.0


def test_at_least_40_variants_per_reference(built):
    records = read_manifest(built)
    per_ref = Counter(r.extra["ref"] for r in records)
    assert set(per_ref) == {"beach", "city_street", "dog", "tree"}
    assert all(n >= 40 for n in per_ref.values()) and len(set(per_ref.values())) == 1
    combos = {r.extra["distortion"] for r in records if "+" in r.extra["distortion"]}
    assert len(combos) >= 5
    assert (built / "manifest.csv").read_text().splitlines()[0] == "path,score,split,ref,distortion,level"
    assert all(r.path.parent == built.absolute() / "images" and r.path.suffix == ".png" for r in records)


def test_references_are_stored_downscaled_and_even(built):
    for ref in (built / "refs").glob("*.png"):
        w, h = Image.open(ref).size
        assert max(w, h) <= 64 and w % 2 == 0 and h % 2 == 0
    assert len(list((built / "refs").glob("*.png"))) == 4


def test_labels_are_the_exact_ssim_of_the_stored_pngs(built):
    for r in read_manifest(built):
        ref = _read_float(built / "refs" / f"{r.extra['ref']}.png")
        dist = _read_float(r.path)
        expected = structural_similarity(
            ref, dist, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
        )
        assert r.score == float(np.clip(expected, 0.0, 1.0)), r.path.name


def test_stronger_levels_score_lower(built):
    by = defaultdict(list)
    for r in read_manifest(built):
        by[(r.extra["distortion"], r.extra["level"])].append(r.score)
    for name in DISTORTIONS:
        assert np.mean(by[(name, "5")]) < np.mean(by[(name, "1")]), name


def test_splits_are_disjoint_by_reference(built):
    refs_of = defaultdict(set)
    for r in read_manifest(built):
        refs_of[r.split].add(r.extra["ref"])
    assert set(refs_of) == {"train", "val", "test"}
    assert not (refs_of["train"] & refs_of["val"] or refs_of["train"] & refs_of["test"] or refs_of["val"] & refs_of["test"])


def test_dataset_json(built):
    info = read_dataset_info(built)
    assert info.name == "edge-iqa-synth" and info.score_range == (0.0, 1.0)
    assert "structural_similarity" in info.extra["label"] and "gaussian_weights=True" in info.extra["label"]
    assert info.extra["seed"] == 3 and info.extra["max_side"] == 64
    assert len(info.extra["sources"]) == 4 and all(s["package"] is None for s in info.extra["sources"])
    assert {d["name"] for d in info.extra["distortions"]} >= set(DISTORTIONS)


def test_same_seed_same_manifest(built, photos, tmp_path):
    again = build_synth_dataset(tmp_path / "again", photos=photos, seed=3, max_side=64, workers=1)
    assert (again / "manifest.csv").read_bytes() == (built / "manifest.csv").read_bytes()
    for name in ("dog__noise_3.png", "tree__motion_5.png"):  # the random distortions too
        assert (again / "images" / name).read_bytes() == (built / "images" / name).read_bytes()


def test_rebuild_and_foreign_folders(photos, tmp_path):
    out = tmp_path / "ds"
    build_synth_dataset(out, photos=photos, seed=0, max_side=32)
    build_synth_dataset(out, photos=photos, seed=1, max_side=32)  # over its own earlier build: fine
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        build_synth_dataset(tmp_path / "other", photos=photos, max_side=32)


def test_too_few_photos(tmp_path):
    (tmp_path / "two").mkdir()
    for i in range(2):
        _photo(tmp_path / "two" / f"{i}.png", i)
    with pytest.raises(DatasetError, match="at least 3"):
        build_synth_dataset(tmp_path / "out", photos=tmp_path / "two", max_side=32)


def test_split_references_keeps_scenes_together():
    scenes = {f"p{i}": f"p{i}" for i in range(16)} | {"left": "pair", "right": "pair"}
    for seed in range(5):
        split = split_references(scenes, seed)
        assert split["left"] == split["right"]
        counts = Counter(split.values())
        assert min(counts.values()) >= 2 and counts["train"] >= 10
    plain = {f"p{i}": f"p{i}" for i in range(18)}
    assert Counter(split_references(plain, 0).values()) == {"train": 10, "val": 4, "test": 4}


def test_variant_list():
    singles = [v for v in variants() if "+" not in v[0]]
    assert len(singles) == len(DISTORTIONS) * len(LEVELS) and len(variants()) >= 40


def test_package_photos(tmp_path):
    colour = package_photos(grayscale=False)
    assert len(colour) == 12, [s.name for s in colour]
    assert {s.package for s in colour} == {"scikit-image", "scikit-learn", "matplotlib"}
    assert len(package_photos(grayscale=True)) == 18
    out = build_synth_dataset(tmp_path / "ds", seed=0, max_side=96, grayscale=False)
    refs_of = defaultdict(set)
    for r in read_manifest(out):
        refs_of[r.split].add(r.extra["ref"])
    assert sum(len(v) for v in refs_of.values()) == 12
    assert all(len(v) >= 2 for v in refs_of.values())
    # The stereo pair shows one scene: both views land in the same split.
    assert any({"motorcycle_left", "motorcycle_right"} <= v for v in refs_of.values())
    assert {s["name"] for s in read_dataset_info(out).extra["sources"]} >= {"astronaut", "china", "grace_hopper"}


def test_cli(photos, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "synth", str(out), "--kind", "iqa", "--photos", str(photos), "--max-side", "32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "edge-iqa-synth" and summary["rows"] == 4 * len(variants())
    assert sum(s["refs"] for s in summary["splits"].values()) == 4

    assert main(["data", "synth", str(tmp_path / "x"), "--photos", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err

    assert main(["data", "synth", str(tmp_path / "y"), "--kind", "video"]) == 2  # --kind burst: test_burst_data
    assert "unknown --kind 'video'; use one of iqa, burst" in capsys.readouterr().err


def test_a_failed_build_can_be_rerun(photos, tmp_path):
    # Only 2 of these 3 photos are big enough: the build stops after creating its folders.
    small = tmp_path / "small"
    small.mkdir()
    for i in range(3):
        _photo(small / f"{i}.png", i, size=(96, 72) if i < 2 else (96, 8))
    out = tmp_path / "ds"
    with pytest.raises(DatasetError, match="found 2 usable"):
        build_synth_dataset(out, photos=small, max_side=32)
    build_synth_dataset(out, photos=photos, max_side=32)
    assert len(read_manifest(out)) == 4 * len(variants())


def test_crop_variants_are_smaller_views_of_the_photo_and_deterministic(photos, tmp_path):
    sources = {"dog": photos / "dog.png", "tree": photos / "tree.png"}
    paths = write_crop_variants(sources, tmp_path / "a", per_photo=6, max_side=40)
    assert [p.name for p in paths] == [f"{n}_crop{k:02d}.png" for n in ("dog", "tree") for k in range(6)]
    sizes = {Image.open(p).size for p in paths}
    full = Image.open(sources["dog"]).size
    assert all(max(s) <= 40 and s[0] % 2 == 0 and s[1] % 2 == 0 for s in sizes)
    assert len(sizes) > 1 and all(s != full for s in sizes)  # random crops, not the photo resized
    again = write_crop_variants(sources, tmp_path / "b", per_photo=6, max_side=40)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    other = write_crop_variants(sources, tmp_path / "c", per_photo=6, max_side=40, seed=1)
    assert [p.read_bytes() for p in other] != [p.read_bytes() for p in paths]
    gone = {name: tmp_path / "moved" / path.name for name, path in sources.items()}
    assert write_crop_variants(gone, tmp_path / "a", per_photo=6, max_side=40) == paths  # a rerun decodes nothing
    kept = paths[7].read_bytes()
    paths[7].unlink()
    write_crop_variants(sources, tmp_path / "a", per_photo=6, max_side=40)
    assert paths[7].read_bytes() == kept  # a missing crop is made again, the same


def test_data_crops_cli_takes_only_training_photos(built, photos, tmp_path, capsys):
    train = {r.extra["ref"] for r in read_manifest(built) if r.split == "train"}
    out = tmp_path / "crops"
    assert main(["data", "crops", str(out), "--photos", str(photos), "--per-photo", "3", "--max-side", "32",
                 "--train-of", str(built), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3 * len(train) == len(list(out.glob("*.png")))
    assert {p.name.rsplit("_crop", 1)[0] for p in out.glob("*.png")} == train


def test_data_crops_bad_input_is_one_line(built, photos, tmp_path, capsys):
    (tmp_path / "a file").write_text("mine")
    assert main(["data", "crops", str(tmp_path / "a file"), "--photos", str(photos)]) != 0
    assert (tmp_path / "a file").read_text() == "mine"
    assert main(["data", "crops", str(tmp_path / "out"), "--photos", str(photos), "--train-of", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("error" in line for line in err)


def test_data_crops_train_of_a_dataset_without_refs_matches_photos_by_name(photos, tmp_path, capsys):
    from edge_iqa.data.manifest import DatasetInfo, Record, write_dataset

    data = tmp_path / "data"
    records = [Record(photos / "city street.jpg", 0.5, "train", {}), Record(photos / "dog.png", 0.5, "test", {})]
    write_dataset(data, records, DatasetInfo("mine", (0.0, 1.0), {}, {}))
    assert main(["data", "crops", str(tmp_path / "out"), "--photos", str(photos), "--per-photo", "2",
                 "--max-side", "32", "--train-of", str(data), "--json"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["city_street_crop00.png", "city_street_crop01.png"]
