"""The canonical dataset format: round trips, forgiving rows, strict files."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from PIL import Image

from edge_iqa.data.manifest import (
    BurstFrame,
    DatasetInfo,
    Record,
    read_burst_manifest,
    read_dataset_info,
    read_manifest,
    write_burst_dataset,
    write_dataset,
)
from edge_iqa.errors import DatasetError


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (100, 150, 200)).save(path)
    return path


def _info() -> DatasetInfo:
    return DatasetInfo("toy", (0.0, 10.0), {"source": "test"}, {"note": "kept"})


def test_round_trip(tmp_path):
    root = tmp_path / "ds"
    records = [
        Record(_image(root / "images" / "a.png").absolute(), 7.25, "train", {"camera": "x"}),
        Record(_image(root / "images" / "b.png").absolute(), 1 / 3, "val", {"camera": "y"}),
        Record(_image(root / "c.png").absolute(), 0.0, "test", {}),
    ]
    assert write_dataset(root, records, _info()) == root
    back = read_manifest(root)
    assert [r.path for r in back] == [r.path for r in records]
    assert [r.score for r in back] == [r.score for r in records]  # repr round-trips floats
    assert [r.split for r in back] == ["train", "val", "test"]
    assert back[0].extra == {"camera": "x"} and back[2].extra == {"camera": ""}
    assert all(r.path.is_absolute() for r in back)
    text = (root / "manifest.csv").read_text()
    assert text.splitlines()[0] == "path,score,split,camera"
    assert "images/a.png" in text and str(root) not in text  # relative paths
    info = read_dataset_info(root)
    assert info == _info() and info.extra == {"note": "kept"}
    assert [r.path.name for r in read_manifest(root, split="val")] == ["b.png"]


def test_paths_outside_the_folder_are_relative(tmp_path):
    image = _image(tmp_path / "photos" / "p.jpg")
    write_dataset(tmp_path / "ds", [Record(image, 1.0, "train")], _info())
    assert "../photos/p.jpg" in (tmp_path / "ds" / "manifest.csv").read_text()
    assert read_manifest(tmp_path / "ds")[0].path == image.absolute()


def test_bad_rows_are_skipped_with_a_warning(tmp_path, caplog):
    root = tmp_path / "ds"
    for name in "abcdefg":
        _image(root / f"{name}.png")
    (root / "manifest.csv").write_text(
        "path,score,split\n"
        "a.png,1.5,train\n"       # line 2: good
        "b.png,nan,train\n"       # line 3: NaN
        "c.png,,val\n"            # line 4: empty score
        "d.png,good,val\n"        # line 5: not a number
        "missing.png,2,test\n"    # line 6: no such file
        "e.png,3,dev\n"           # line 7: unknown split
        "f.png,4, TEST\n"         # line 8: good (split is case/space tolerant)
    )
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        records = read_manifest(root)
    assert [(r.path.name, r.score, r.split) for r in records] == [("a.png", 1.5, "train"), ("f.png", 4.0, "test")]
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 5
    for line_no, message in zip((3, 4, 5, 6, 7), lines):
        assert "manifest.csv" in message and f"line {line_no}:" in message and "\n" not in message
    assert "missing.png" in lines[3] and "'dev'" in lines[4]
    # Without the file check, the missing image is kept.
    assert len(read_manifest(root, check_files=False)) == 3


def test_zero_usable_rows_is_an_error(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "manifest.csv").write_text("path,score,split\nx.png,nan,train\ny.png,1,nowhere\n")
    with pytest.raises(DatasetError, match="no usable rows"):
        read_manifest(root, check_files=False)


def test_empty_split_is_an_error(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, [Record(_image(root / "a.png"), 1.0, "train")], _info())
    with pytest.raises(DatasetError, match="split 'test'"):
        read_manifest(root, split="test")
    with pytest.raises(DatasetError, match="unknown split"):
        read_manifest(root, split="training")


def test_missing_columns_and_files_are_errors(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    with pytest.raises(DatasetError, match="manifest.csv not found"):
        read_manifest(root)
    with pytest.raises(DatasetError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")
    (root / "manifest.csv").write_text("path,mos\na.png,3\n")
    with pytest.raises(DatasetError, match="lacks column.*score.*split"):
        read_manifest(root)


def test_missing_dataset_json_gives_defaults(tmp_path, caplog):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "manifest.csv").write_text("path,score,split\na.png,2,train\nb.png,4.5,val\nc.png,x,val\n")
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        info = read_dataset_info(root)
    assert info.name == "ds" and info.score_range == (2.0, 4.5)
    assert any("dataset.json not found" in r.getMessage() for r in caplog.records)


def test_bad_dataset_json_is_an_error(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "x", "score_range": [5, 1], "provenance": {}}))
    with pytest.raises(DatasetError, match="high > low"):
        read_dataset_info(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_dataset_info(root)


def test_writer_refuses_unreadable_records(tmp_path):
    with pytest.raises(DatasetError, match="split"):
        write_dataset(tmp_path / "ds", [Record(tmp_path / "a.png", 1.0, "training")], _info())
    with pytest.raises(DatasetError, match="finite"):
        write_dataset(tmp_path / "ds", [Record(tmp_path / "a.png", math.inf, "train")], _info())


def test_burst_round_trip(tmp_path):
    root = tmp_path / "bursts"
    frames = [
        BurstFrame("s1", 2, _image(root / "s1" / "2.png"), 0.5, "train"),
        BurstFrame("s1", 0, _image(root / "s1" / "0.png"), 0.9, "train", {"iso": "100"}),
        BurstFrame("s1", 1, _image(root / "s1" / "1.png"), 0.7, "train"),
        BurstFrame("s2", 0, _image(root / "s2" / "0.png"), 0.2, "test"),
    ]
    write_burst_dataset(root, frames, _info())
    assert (root / "manifest.csv").read_text().splitlines()[0] == "sequence,frame,path,score,split,iso"
    seqs = read_burst_manifest(root)
    assert list(seqs) == ["s1", "s2"]
    assert [f.frame for f in seqs["s1"]] == [0, 1, 2]
    assert [f.score for f in seqs["s1"]] == [0.9, 0.7, 0.5]
    assert seqs["s1"][0].extra == {"iso": "100"} and seqs["s1"][0].path == frames[1].path.absolute()
    assert list(read_burst_manifest(root, split="test")) == ["s2"]
    # Written grouped by sequence gives the same file.
    write_burst_dataset(tmp_path / "again", seqs, _info())
    assert read_burst_manifest(tmp_path / "again", check_files=False)["s1"][2].path == frames[0].path.absolute()


def test_burst_sequence_in_two_splits_is_an_error(tmp_path):
    root = tmp_path / "bursts"
    root.mkdir()
    (root / "manifest.csv").write_text(
        "sequence,frame,path,score,split\ns1,0,a.png,1,train\ns1,1,b.png,1,test\n"
    )
    with pytest.raises(DatasetError, match="line 3.*one split"):
        read_burst_manifest(root, check_files=False)


def test_burst_bad_frames_are_skipped(tmp_path, caplog):
    root = tmp_path / "bursts"
    root.mkdir()
    (root / "manifest.csv").write_text(
        "sequence,frame,path,score,split\n"
        "s1,0,a.png,1,train\n"
        "s1,zero,b.png,1,train\n"   # line 3: frame not an integer
        "s1,0,c.png,2,train\n"      # line 4: repeated frame
        ",1,d.png,2,train\n"        # line 5: no sequence
    )
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        seqs = read_burst_manifest(root, check_files=False)
    assert [f.path.name for f in seqs["s1"]] == ["a.png"]
    assert [m for m in (r.getMessage() for r in caplog.records) if "line 3:" in m or "line 4:" in m or "line 5:" in m]
    assert len(caplog.records) == 3


# ------------------------------------------------------------------ containment and leakage


def _manifest(root: Path, rows: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("path,score,split\n" + rows)
    return root


def test_paths_leading_outside_the_dataset_are_never_read(tmp_path, caplog):
    root = tmp_path / "ds"
    _image(root / "a.png")
    secret = _image(tmp_path / "private" / "secret.png")
    (root / "out").symlink_to(tmp_path / "private")
    _manifest(root, "a.png,1,train\n"
                    "../private/secret.png,2,test\n"   # line 3
                    f"{secret},2,test\n"               # line 4: absolute
                    "out/secret.png,2,test\n"          # line 5: through a link inside the folder
                    "../../../../../../etc/passwd,2,test\n")  # line 6
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        records = read_manifest(root, check_files=False)
    assert [r.path.name for r in records] == ["a.png"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    for line_no, message in zip((3, 4, 5, 6), messages):
        assert f"manifest.csv line {line_no}:" in message and "outside the dataset folder" in message
        assert "image_roots" in message and "\n" not in message
    with pytest.raises(DatasetError, match="no usable rows in split 'test'"):
        read_manifest(root, split="test")


def test_image_roots_in_dataset_json_allow_a_folder_elsewhere(tmp_path):
    root = tmp_path / "ds"
    photo = _image(tmp_path / "photos" / "p.png")
    _image(tmp_path / "other" / "q.png")
    _manifest(root, "../photos/p.png,1,train\n../other/q.png,2,train\n")
    (root / "dataset.json").write_text(json.dumps({"name": "x", "score_range": [0, 10], "image_roots": ["../photos"]}))
    assert [r.path for r in read_manifest(root)] == [photo]
    (root / "dataset.json").write_text(json.dumps({"name": "x", "score_range": [0, 10], "image_roots": "../photos"}))
    with pytest.raises(DatasetError, match="image_roots must be a list"):
        read_manifest(root)


def test_writer_lists_outside_folders_and_refuses_others(tmp_path):
    image = _image(tmp_path / "photos" / "deep" / "p.jpg")
    other = _image(tmp_path / "photos" / "q.jpg")
    write_dataset(tmp_path / "ds", [Record(image, 1.0, "train"), Record(other, 2.0, "test")], _info())
    assert read_dataset_info(tmp_path / "ds").extra["image_roots"] == ["../photos"]
    declared = DatasetInfo("toy", (0.0, 10.0), {}, {"image_roots": ["../photos/deep"]})
    with pytest.raises(DatasetError, match="q.jpg is outside"):
        write_dataset(tmp_path / "ds2", [Record(image, 1.0, "train"), Record(other, 2.0, "test")], declared)


def test_repeated_images_and_split_leakage_are_warned_with_both_lines(tmp_path, caplog):
    root = tmp_path / "ds"
    for name in "abc":
        _image(root / f"{name}.png")
    _manifest(root, "a.png,1,train\n"
                    "b.png,2,train\n"
                    "./a.png,1,test\n"   # line 4: a.png again, in another split
                    "b.png,2,train\n"    # line 5: b.png again, same split
                    "c.png,3,val\n")
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        records = read_manifest(root, split="test")
    assert [r.path.name for r in records] == ["a.png"]  # warned, not dropped
    leak, repeat = [r.getMessage() for r in caplog.records]
    assert "line 4:" in leak and "line 2" in leak and "'test' here" in leak and "'train'" in leak and "leaks" in leak
    assert "line 5:" in repeat and "repeats line 3" in repeat


def test_a_file_where_the_dataset_folder_is_expected(tmp_path):
    photo = _image(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="a.png is a file, expected a dataset folder"):
        read_manifest(photo)
    root = _manifest(tmp_path / "ds", "a.png,1,train\n")
    _image(root / "a.png")
    assert len(read_manifest(root / "manifest.csv")) == 1  # naming the manifest itself is fine


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"path,score,split\n\0\0\0,1,train\n",
                                     "path,score,split\nä.png,1,train\n".encode("utf-16")],
                         ids=["binary", "nul-bytes", "utf-16"])
def test_binary_manifest_is_one_line(tmp_path, content):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "manifest.csv").write_bytes(content)
    with pytest.raises(DatasetError) as excinfo:
        read_manifest(root)
    assert "manifest.csv" in str(excinfo.value) and "\n" not in str(excinfo.value)
