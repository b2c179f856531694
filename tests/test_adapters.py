"""Adapters on small files written in each public dataset's real layout."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from edge_iqa.cli import main
from edge_iqa.data.adapters import ADAPTERS, import_dataset, seeded_split
from edge_iqa.data.manifest import read_dataset_info, read_manifest
from edge_iqa.errors import DatasetError


def _images(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (8, 6), (i * 20 % 256, 80, 160)).save(folder / name)


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_registry_lists_every_kind():
    assert set(ADAPTERS) == {"uhd-iqa", "koniq10k", "spaq", "live-challenge", "csv"}


def test_seeded_split_is_deterministic_and_proportional():
    names = [f"{i}.jpg" for i in range(100)]
    a = seeded_split(names, (7, 1, 2), seed=3)
    assert a == seeded_split(list(reversed(names)), (7, 1, 2), seed=3)  # order of the file does not matter
    assert sorted(a.values()).count("train") == 70 and list(a.values()).count("test") == 20
    assert a != seeded_split(names, (7, 1, 2), seed=4)
    assert set(seeded_split(["a", "b", "c"], (8, 1, 1), 0).values()) == {"train", "val", "test"}


def test_uhd_iqa(tmp_path, caplog):
    src = tmp_path / "UHD-IQA"
    _images(src / "challenge" / "training", ["1.jpg", "2.jpg"])
    _images(src / "challenge" / "validation", ["3.jpg"])
    _images(src / "challenge" / "test", ["4.jpg"])
    (src / "uhd-iqa-metadata.csv").write_text(
        "image_name,quality_mos,set,width,height\n"
        "1.jpg,0.71,training,3840,2160\n"
        "2.jpg,0.52,training,3840,2160\n"
        "3.jpg,0.64,validation,3840,2160\n"
        "4.jpg,0.33,test,3840,2160\n"
        "5.jpg,0.40,test,3840,2160\n"      # line 6: image not downloaded
        "1.jpg,,training,3840,2160\n"      # line 7: no MOS
        "2.jpg,0.5,holdout,3840,2160\n"    # line 8: unknown set
    )
    out = tmp_path / "canon"
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        assert import_dataset("uhd-iqa", src, out) == out
    records = read_manifest(out)
    assert [(r.path.name, r.score, r.split) for r in records] == [
        ("1.jpg", 0.71, "train"), ("2.jpg", 0.52, "train"), ("3.jpg", 0.64, "val"), ("4.jpg", 0.33, "test"),
    ]
    assert records[0].extra == {"width": "3840", "height": "2160"}
    assert records[0].path == (src / "challenge" / "training" / "1.jpg").absolute()
    assert "../UHD-IQA/challenge/training/1.jpg" in (out / "manifest.csv").read_text()  # not copied
    messages = _messages(caplog)
    assert len(messages) == 3
    assert all("uhd-iqa-metadata.csv line" in m for m in messages)
    assert "line 6:" in messages[0] and "5.jpg" in messages[0]
    info = read_dataset_info(out)
    assert info.name == "uhd-iqa" and info.score_range == (0.0, 1.0)
    assert info.provenance["adapter"] == "uhd-iqa" and info.provenance["seed"] == 0
    assert info.provenance["source"] == str(src.absolute())


def _koniq(src: Path, n: int = 20) -> list[str]:
    names = [f"{1000 + i}.jpg" for i in range(n)]
    _images(src / "1024x768", names)
    rows = ['"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"']
    rows += [f'"{name}",0,1,2,3,4,10,{1 + 4 * i / n:.3f},0.5,{50 + i}' for i, name in enumerate(names)]
    (src / "koniq10k_scores_and_distributions.csv").write_text("\n".join(rows) + "\n")
    return names


def test_koniq10k_seeded_split(tmp_path):
    src = tmp_path / "koniq"
    names = _koniq(src)
    _images(src / "512x384", names[:3])  # both sizes present: the 1024x768 copy wins
    a = read_manifest(import_dataset("koniq10k", src, tmp_path / "a", seed=1))
    assert len(a) == 20 and all(r.path.parent.name == "1024x768" for r in a)
    assert [r.split for r in a].count("train") == 14
    assert [r.split for r in a].count("val") == 2 and [r.split for r in a].count("test") == 4
    assert a[0].score == 1.0 and a[0].extra["MOS_zscore"] == "50"  # MOS, not the z-score
    b = read_manifest(import_dataset("koniq10k", src, tmp_path / "b", seed=1))
    assert [r.split for r in a] == [r.split for r in b]
    info = read_dataset_info(tmp_path / "a")
    assert info.score_range == (1.0, 5.0) and "seed 1" in info.provenance["split"]


def test_koniq10k_official_sets_file_wins(tmp_path):
    src = tmp_path / "koniq"
    names = _koniq(src, 4)
    sets = ["training", "training", "validation", "test"]
    (src / "koniq10k_distributions_sets.csv").write_text(
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore,set\n"
        + "".join(f"{n},0,1,2,3,4,10,3.0,0.5,50,{s}\n" for n, s in zip(names, sets))
    )
    records = read_manifest(import_dataset("koniq10k", src, tmp_path / "out"))
    assert [r.split for r in records] == ["train", "train", "val", "test"]


def test_spaq(tmp_path, caplog):
    src = tmp_path / "SPAQ"
    names = [f"{i:05d}.jpg" for i in range(1, 11)]
    _images(src / "TestImage", names)
    (src / "Annotations").mkdir()
    header = "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n"
    body = "".join(f"{n},{10 * i},50,51,52,53,54\n" for i, n in enumerate(names))
    (src / "Annotations" / "MOS and Image attribute scores.csv").write_text(header + body + "99999.jpg,abc,1,1,1,1,1\n")
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        records = read_manifest(import_dataset("spaq", src, tmp_path / "out", seed=5))
    assert len(records) == 10 and records[3].score == 30.0
    assert records[0].extra["Sharpness"] == "54"
    assert sorted(r.split for r in records) == ["test"] + ["train"] * 8 + ["val"]
    assert any("line 12:" in m and "'abc'" in m for m in _messages(caplog))
    assert read_dataset_info(tmp_path / "out").score_range == (0.0, 100.0)


def test_spaq_excel_only_asks_for_csv(tmp_path):
    src = tmp_path / "SPAQ"
    (src / "Annotations").mkdir(parents=True)
    (src / "Annotations" / "MOS and Image attribute scores.xlsx").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="save it as CSV"):
        import_dataset("spaq", src, tmp_path / "out")


def _live(src: Path) -> list[str]:
    names = ["t1.bmp", "t2.bmp", "100.bmp", "101.bmp", "102.bmp", "103.bmp", "104.bmp", "105.bmp"]
    _images(src / "Images" / "trainingImages", names[:2])
    _images(src / "Images", names[2:])
    (src / "Data").mkdir(parents=True)
    cell = np.empty((len(names), 1), dtype=object)  # a MATLAB cell array of file names
    for i, n in enumerate(names):
        cell[i, 0] = n
    savemat(src / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    mos = np.array([[40.0 + 5 * i for i in range(len(names))]])  # 1×N, as released
    savemat(src / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    return names


def test_live_challenge(tmp_path):
    src = tmp_path / "ChallengeDB_release"
    names = _live(src)
    records = read_manifest(import_dataset("live-challenge", src, tmp_path / "out"))
    assert [r.path.name for r in records] == names
    assert records[0].path.parent.name == "trainingImages" and records[2].path.parent.name == "Images"
    assert [r.score for r in records] == [40.0 + 5 * i for i in range(len(names))]
    assert {r.split for r in records} == {"train", "val", "test"}
    info = read_dataset_info(tmp_path / "out")
    assert info.name == "live-challenge" and info.score_range == (0.0, 100.0)


def test_live_challenge_length_mismatch(tmp_path):
    src = tmp_path / "ChallengeDB_release"
    _live(src)
    savemat(src / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[1.0, 2.0]])})
    with pytest.raises(DatasetError, match="8 images but .* 2 scores"):
        import_dataset("live-challenge", src, tmp_path / "out")
    savemat(src / "Data" / "AllMOS_release.mat", {"wrong_key": np.array([[1.0]])})
    with pytest.raises(DatasetError, match="no variable 'AllMOS_release'"):
        import_dataset("live-challenge", src, tmp_path / "out")


def test_generic_csv(tmp_path, caplog):
    src = tmp_path / "mine"
    _images(src / "pics", ["a.png", "b.png", "c.png"])
    (src / "labels.csv").write_text("path,score,split,who\npics/a.png,3,train,me\npics/b.png,5,test,you\npics/c.png,4,,x\n")
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        records = read_manifest(import_dataset("csv", src / "labels.csv", tmp_path / "out"))
    assert [(r.path.name, r.split, r.extra["who"]) for r in records] == [("a.png", "train", "me"), ("b.png", "test", "you")]
    assert any("labels.csv line 4:" in m for m in _messages(caplog))
    info = read_dataset_info(tmp_path / "out")
    assert info.name == "labels" and info.score_range == (3.0, 5.0)


def test_csv_rows_leading_outside_the_csv_folder_are_refused(tmp_path, caplog):
    src = tmp_path / "mine"
    _images(src / "pics", ["a.png", "b.png"])
    _images(tmp_path / "private", ["secret.png"])
    (src / "pics" / "link.png").symlink_to(tmp_path / "private" / "secret.png")
    (src / "labels.csv").write_text(
        "path,score,split\n"
        "pics/a.png,3,train\n"
        "../private/secret.png,4,train\n"                      # line 3: climbs out
        f"{tmp_path / 'private' / 'secret.png'},4,test\n"      # line 4: absolute, outside
        "pics/link.png,4,test\n"                              # line 5: a link out of the folder
        "/etc/passwd,1,test\n"                                # line 6
        "pics/b.png,5,test\n"
        "pics/./a.png,5,test\n"                               # line 8: a.png again, other split
    )
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        records = read_manifest(import_dataset("csv", src / "labels.csv", out))
    assert [r.path.name for r in records] == ["a.png", "b.png"]
    text = (out / "manifest.csv").read_text()
    assert "secret" not in text and "link" not in text and "passwd" not in text
    messages = _messages(caplog)
    for line in (3, 4, 5, 6):
        [message] = [m for m in messages if f"labels.csv line {line}:" in m]
        assert "outside" in message and "\n" not in message
    [twice] = [m for m in messages if "labels.csv line 8:" in m]
    assert "first on line 2" in twice and "'train' there and 'test' here" in twice
    assert read_dataset_info(out).extra["image_roots"] == ["../mine"]


def test_metadata_names_cannot_leave_the_download(tmp_path, caplog):
    src = tmp_path / "koniq"
    _koniq(src, 4)
    _images(tmp_path, ["outside.jpg"])
    rows = (src / "koniq10k_scores_and_distributions.csv").read_text().splitlines()
    rows.append('"../../outside.jpg",0,1,2,3,4,10,3.0,0.5,50')
    (src / "koniq10k_scores_and_distributions.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        records = read_manifest(import_dataset("koniq10k", src, tmp_path / "out"))
    assert len(records) == 4 and all(src in r.path.parents for r in records)
    assert any("line 6:" in m and "outside" in m for m in _messages(caplog))


def test_generic_csv_without_split_is_seeded(tmp_path):
    src = tmp_path / "mine"
    _images(src, [f"{i}.png" for i in range(10)])
    (src / "labels.csv").write_text("path,score\n" + "".join(f"{i}.png,{i}\n" for i in range(10)))
    records = read_manifest(import_dataset("csv", src, tmp_path / "out", seed=2))  # a folder with one CSV
    assert sorted(r.split for r in records) == ["test"] + ["train"] * 8 + ["val"]


def test_user_errors(tmp_path):
    with pytest.raises(DatasetError, match="did you mean koniq10k"):
        import_dataset("koniq", tmp_path, tmp_path / "out")
    with pytest.raises(DatasetError, match="does not exist"):
        import_dataset("spaq", tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(DatasetError, match="no KonIQ-10k scores CSV"):
        import_dataset("koniq10k", tmp_path, tmp_path / "out")
    src = tmp_path / "koniq"
    _koniq(src, 3)
    for image in (src / "1024x768").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match="no usable rows"):
        import_dataset("koniq10k", src, tmp_path / "out")


def test_cli_import_and_info(tmp_path, capsys):
    src = tmp_path / "koniq"
    _koniq(src, 10)
    out = tmp_path / "out"
    assert main(["data", "import", "koniq10k", str(src), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 10 and summary["name"] == "koniq10k"
    assert main(["data", "info", str(out)]) == 0
    err = capsys.readouterr().err
    assert "train" in err and "koniq10k" in err
    assert main(["data", "import", "spaq", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err
