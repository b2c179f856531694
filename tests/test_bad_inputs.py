"""The bad-input corpus (issue 12): every kind of broken input a user may hand edge-iqa.

Each kind is made here, in tmp_path (nothing is downloaded), and run against the CLI and the
Python API. For each: the exit status (2 for a user error, 1 where some rows failed, 0 where
the input is only warned about), no traceback, one line that names the input, and nothing
already done lost (every other row is scored or kept). The kinds are counted in ``KINDS``; a
bug found later becomes a row here.

Most CLI cases run in-process through ``edge_iqa.cli.main`` (fast); ``test_as_a_user_runs_it``
runs a representative set as real ``python -m edge_iqa.cli`` processes, where stderr, exit
status and the imports of a fresh process are what a user sees.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

import edge_iqa
from edge_iqa.cli import main
from edge_iqa.data.manifest import read_manifest
from edge_iqa.errors import EdgeIQAError, ImageError
from edge_iqa.io import load_image, scan_images

REPO = Path(__file__).resolve().parents[1]
STUDENT = REPO / "tests" / "fixtures" / "student.pt"  # views: resize 48x64 + fragments 2x24 (photos >= 48 px)
H, W = 72, 96

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------
# Making the corpus


def _noise(mode: str = "RGB", seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def _save(path: Path, image: Image.Image, **args) -> Path:
    image.save(path, **args)
    return path


def _jpeg_bytes(folder: Path) -> bytes:
    return _save(folder / ".scratch.jpg", _noise(), quality=90).read_bytes()


def _spliced(folder: Path, name: str, splice: Callable[[bytes, int], bytes]) -> Path:
    """A JPEG whose middle is replaced by ``splice(data, middle)``."""
    data = _jpeg_bytes(folder)
    (folder / ".scratch.jpg").unlink()
    path = folder / name
    path.write_bytes(splice(data, len(data) // 2))
    return path


def _cut(folder: Path, name: str, image: Image.Image, **args) -> Path:
    path = _save(folder / name, image, **args)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _bomb(folder: Path) -> Path:
    """A BMP whose header claims 20000x12500 px (250 MP) around 1 px of data."""
    path = _save(folder / "bomb.bmp", Image.new("RGB", (1, 1)))
    data = bytearray(path.read_bytes())
    data[18:22], data[22:26] = (20000).to_bytes(4, "little"), (12500).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _rotated(folder: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(folder / "rotated.jpg", _noise(), exif=exif.tobytes())


def _animated_gif(folder: Path) -> Path:
    frames = [_noise(seed=s).convert("P") for s in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    return folder / "anim.gif"


def _folder_named_jpg(folder: Path) -> Path:
    (folder / "holiday.jpg").mkdir()
    return folder / "holiday.jpg"


def _broken_link(folder: Path) -> Path:
    (folder / "gone.jpg").symlink_to(folder / "nowhere" / "gone.jpg")
    return folder / "gone.jpg"


SCORED, WARNED, FAILED = "scored", "warned", "failed"

# name -> (maker(folder) -> path, outcome, what the row or warning line says)
IMAGE_KINDS: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "zero-byte-file": (lambda d: _save_bytes(d / "empty.jpg", b""), FAILED, "empty"),
    "truncated-jpeg": (lambda d: _cut(d, "cut.jpg", _noise(), quality=90), FAILED, "truncated"),
    "jpeg-zeros-mid-stream": (lambda d: _spliced(d, "zeros.jpg", lambda b, m: b[:m] + bytes(300) + b[m + 300:]),
                              WARNED, "JPEG data is damaged"),
    "jpeg-garbage-inserted": (lambda d: _spliced(d, "inserted.jpg", lambda b, m: b[:m] + b"garbage" * 40 + b[m:]),
                              WARNED, "JPEG data is damaged"),
    "jpeg-early-end-marker": (lambda d: _spliced(d, "early.jpg", lambda b, m: b[:m] + b"\xff\xd9" + b[m:]),
                              WARNED, "JPEG data is damaged"),
    "jpeg-bad-marker-mid-stream": (lambda d: _spliced(d, "marker.jpg", lambda b, m: b[:m] + b"\xff\x4f" * 60 + b[m + 120:]),
                                   FAILED, "corrupt"),
    "text-named-jpg": (lambda d: _save_bytes(d / "notes.jpg", b"not a photo\n" * 20), FAILED, "not an image"),
    "random-bytes-png": (lambda d: _save_bytes(d / "noise.png", np.random.default_rng(1).bytes(3000)), FAILED,
                         "not an image"),
    "truncated-png": (lambda d: _cut(d, "cut.png", _noise()), FAILED, "truncated"),
    "truncated-webp": (lambda d: _cut(d, "cut.webp", _noise()), FAILED, "re-download"),
    "truncated-heic": (lambda d: _cut(d, "cut.heic", _noise()), FAILED, "corrupt"),
    "folder-named-jpg": (_folder_named_jpg, FAILED, "is a directory"),
    "broken-symlink-jpg": (_broken_link, FAILED, "no such file"),
    "decompression-bomb-header": (_bomb, FAILED, "decompression-bomb limit"),
    "one-pixel": (lambda d: _save(d / "dot.png", Image.new("RGB", (1, 1))), FAILED, "smaller than"),
    "heic": (lambda d: _save(d / "iphone.heic", _noise()), SCORED, ""),
    "heif": (lambda d: _save(d / "camera.heif", _noise(), format="HEIF"), SCORED, ""),
    "avif": (lambda d: _save(d / "web.avif", _noise()), SCORED, ""),
    "animated-gif": (_animated_gif, SCORED, ""),
    "sixteen-bit-png": (lambda d: _save(d / "deep.png", Image.fromarray(
        np.random.default_rng(2).integers(0, 65535, (H, W), dtype=np.uint16))), SCORED, ""),
    "cmyk-jpeg": (lambda d: _save(d / "print.jpg", _noise("CMYK")), SCORED, ""),
    "grayscale-jpeg": (lambda d: _save(d / "gray.jpg", _noise("L")), SCORED, ""),
    "palette-transparency-png": (lambda d: _save(d / "logo.png", _noise("P"), transparency=0), SCORED, ""),
    "float-tiff": (lambda d: _save(d / "float.tif", Image.fromarray(
        np.random.default_rng(3).random((H, W)).astype(np.float32))), SCORED, ""),
    "exif-rotated-jpeg": (_rotated, SCORED, ""),
}


def _save_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# What a folder scan leaves out, and reports: name -> (maker(folder), the reason it gives)
SCAN_KINDS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "other-suffix-in-folder": (lambda d: _save_bytes(d / "readme.txt", b"hi"), "not an image suffix (.txt)"),
    "hidden-file": (lambda d: _save_bytes(d / ".DS_Store", b"\0\0"), "hidden file"),
    "hidden-folder": (lambda d: _hidden_folder(d), "hidden folder"),
    "link-to-folder": (lambda d: _folder_link(d), "not followed"),
}


def _hidden_folder(folder: Path) -> Path:
    (folder / ".thumbnails").mkdir()
    _save(folder / ".thumbnails" / "t.jpg", _noise())
    return folder / ".thumbnails"


def _folder_link(folder: Path) -> Path:
    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    _save(elsewhere / "far.jpg", _noise())
    (folder / "far").symlink_to(elsewhere)
    return folder / "far"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """``photos/``: one file per image kind and per scan kind, plus a clean photo."""
    folder = tmp_path_factory.mktemp("corpus") / "photos"
    folder.mkdir()
    paths = {kind: make(folder) for kind, (make, _, _) in IMAGE_KINDS.items()}
    paths |= {kind: make(folder) for kind, (make, _) in SCAN_KINDS.items()}
    paths["clean"] = _save(folder / "clean.jpg", _noise(), quality=90)
    return paths


@pytest.fixture(scope="module")
def scorer():
    return edge_iqa.load(STUDENT)


def _one_line(text: str, *needles: str) -> str:
    """The single line of ``text`` (stderr less progress bars), holding every needle."""
    assert "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if line.strip() and not _is_progress(line)]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _is_progress(line: str) -> bool:
    return "img/s]" in line or "it/s]" in line or "%|" in line


# ---------------------------------------------------------------------------------------------
# Bad images: the Python API, then `edge-iqa score` over the whole folder


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_load_image_of_each_bad_image(kind, corpus, caplog):
    _, outcome, says = IMAGE_KINDS[kind]
    path = corpus[kind]
    if outcome == FAILED and kind != "one-pixel":  # a 1 px photo decodes; its views refuse it
        with pytest.raises(ImageError) as excinfo:
            load_image(path)
        assert path.name in _one_line(str(excinfo.value), says)
        return
    with caplog.at_level(logging.WARNING, logger="edge_iqa.io"):
        image = load_image(path)
    assert image.mode == "RGB" and image.size in ((W, H), (H, W), (1, 1))
    warnings = [r.getMessage() for r in caplog.records if r.name == "edge_iqa.io"]
    if outcome == WARNED:
        assert path.name in _one_line("\n".join(warnings), says)
    else:
        assert not warnings


def test_scorer_api_gives_every_bad_image_its_row(corpus, scorer):
    files = list(scan_images(corpus["clean"].parent).files)
    results = scorer.score_paths(files, batch_size=4)
    assert [r.path for r in results] == [str(f) for f in files]  # one row each, in order, none lost
    by_name = {Path(r.path).name: r for r in results}
    for kind, (_, outcome, says) in IMAGE_KINDS.items():
        row = by_name[corpus[kind].name]
        if outcome == FAILED:
            assert row.score is None and corpus[kind].name in _one_line(row.error, says)
        else:
            assert row.error is None and np.isfinite(row.score), (kind, row)
    assert by_name["clean.jpg"].score is not None


@pytest.mark.parametrize("kind", SCAN_KINDS)
def test_a_folder_scan_reports_what_it_leaves_out(kind, corpus, caplog):
    _, reason = SCAN_KINDS[kind]
    scan = scan_images(corpus["clean"].parent)
    [left_out] = [s for s in scan.skipped if s.path == corpus[kind]]
    assert reason in left_out.reason
    assert corpus[kind] not in scan.files and not any(corpus[kind] in f.parents for f in scan.files)
    with caplog.at_level(logging.WARNING, logger="edge_iqa.io"):
        scan.warn_skipped()
    line = _one_line("\n".join(r.getMessage() for r in caplog.records), f"{len(SCAN_KINDS)} entries left out")
    assert str(corpus["clean"].parent) in line


# ---------------------------------------------------------------------------------------------
# Bad manifests and dataset folders


def _photos(folder: Path, n: int = 6) -> list[str]:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    return [_save(folder / "images" / f"{i}.png", _noise(seed=i)).relative_to(folder).as_posix() for i in range(n)]


GOOD_ROWS = "images/0.png,1,train\nimages/1.png,2,train\nimages/2.png,3,val\nimages/3.png,4,test\nimages/4.png,5,test\n"


def _dataset(root: Path, rows: str = GOOD_ROWS, header: str = "path,score,split") -> Path:
    _photos(root)
    (root / "manifest.csv").write_text(f"{header}\n{rows}")
    (root / "dataset.json").write_text(json.dumps({"name": "bad", "score_range": [0, 10], "provenance": {}}))
    return root


def _outside(root: Path) -> Path:
    """A real photo next to the dataset folder: if a reader followed a row to it, it would count."""
    return _save(root.parent / "private.png", _noise(seed=9))


def _with_link_out(root: Path) -> Path:
    _dataset(root, GOOD_ROWS + "peek/private.png,9,test\n")
    (root / "peek").symlink_to(_outside(root).parent)
    return root


# name -> (maker(root) -> dataset folder or file, outcome, the line says, rows kept by the reader)
MANIFEST_KINDS: dict[str, tuple[Callable[[Path], Path], str, str, int]] = {
    "manifest-missing-columns": (lambda r: _dataset(r, "a.png,3\n", header="path,mos"), FAILED,
                                 "lacks column(s) score, split", 0),
    "manifest-binary": (lambda r: _binary(r, bytes(range(256)) * 16), FAILED, "not UTF-8", 0),
    "manifest-utf16": (lambda r: _binary(r, ("path,score,split\n" + GOOD_ROWS).encode("utf-16")), FAILED,
                       "not UTF-8", 0),
    "manifest-zero-bytes": (lambda r: _binary(r, b""), FAILED, "lacks column(s)", 0),
    "manifest-header-only": (lambda r: _dataset(r, ""), FAILED, "no usable rows", 0),
    "manifest-nul-bytes": (lambda r: _dataset(r, GOOD_ROWS + "\0\0\0,1,train\n"), WARNED, "NUL byte", 5),
    "manifest-bad-score": (lambda r: _dataset(r, GOOD_ROWS + "images/5.png,good,test\n"), WARNED,
                           "not a number", 5),
    "manifest-nan-score": (lambda r: _dataset(r, GOOD_ROWS + "images/5.png,nan,test\n"), WARNED,
                           "not a finite number", 5),
    "manifest-bad-split": (lambda r: _dataset(r, GOOD_ROWS + "images/5.png,1,holdout\n"), WARNED,
                           "is not one of", 5),
    "manifest-missing-image": (lambda r: _dataset(r, GOOD_ROWS + "images/99.png,1,test\n"), WARNED, "not found", 5),
    "manifest-path-climbs-out": (lambda r: _dataset(r, GOOD_ROWS + f"../{_outside(r).name},9,test\n"), WARNED,
                                 "is outside the dataset folder", 5),
    "manifest-etc-passwd": (lambda r: _dataset(r, GOOD_ROWS + "../../../../../../../etc/passwd,9,test\n"), WARNED,
                            "is outside the dataset folder", 5),
    "manifest-absolute-outside": (lambda r: _dataset(r, GOOD_ROWS + f"{_outside(r)},9,test\n"), WARNED,
                                  "is outside the dataset folder", 5),
    "manifest-symlink-out": (_with_link_out, WARNED, "is outside the dataset folder", 5),
    "manifest-duplicate-row": (lambda r: _dataset(r, GOOD_ROWS + "images/4.png,5,test\n"), WARNED, "repeats line 6", 6),
    "manifest-train-test-leak": (lambda r: _dataset(r, GOOD_ROWS + "./images/0.png,1,test\n"), WARNED,
                                 "leaks training data", 6),
    "dataset-json-invalid": (lambda r: _bad_json(_dataset(r)), FAILED, "not valid JSON", 0),
    "dataset-json-bad-image-roots": (lambda r: _image_roots(_dataset(r), "../"), FAILED, "image_roots must be a list", 0),
    "data-folder-is-a-file": (lambda r: _save(r.parent / "photo.jpg", _noise()), FAILED,
                              "is a file, expected a dataset folder", 0),
    "data-folder-missing": (lambda r: r / "nowhere", FAILED, "does not exist", 0),
}


def _binary(root: Path, data: bytes) -> Path:
    _dataset(root)
    (root / "manifest.csv").write_bytes(data)
    return root


def _bad_json(root: Path) -> Path:
    (root / "dataset.json").write_text("{name: bad")
    return root


def _image_roots(root: Path, value) -> Path:
    (root / "dataset.json").write_text(json.dumps({"name": "x", "score_range": [0, 10], "image_roots": value}))
    return root


@pytest.mark.parametrize("kind", MANIFEST_KINDS)
def test_each_bad_manifest_in_data_info_and_read_manifest(kind, tmp_path, capsys, caplog):
    make, outcome, says, kept = MANIFEST_KINDS[kind]
    target = make(tmp_path / "ds")
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        status = main(["data", "info", str(target), "--json"])
    captured = capsys.readouterr()
    if outcome == FAILED:
        assert status == 2
        assert target.name in _one_line(captured.err, says)
        with pytest.raises(EdgeIQAError) as excinfo:
            read_manifest(target)
        _one_line(str(excinfo.value), says)
        return
    assert status == 0 and "Traceback" not in captured.err
    assert json.loads(captured.out)["rows"] == kept  # the good rows are all there
    warning = _one_line("\n".join(r.getMessage() for r in caplog.records if r.name == "edge_iqa.data"), says)
    assert "manifest.csv line " in warning
    records = read_manifest(target)
    assert len(records) == kept
    assert all(target.resolve() in r.path.resolve().parents for r in records)  # none read from outside


def test_data_import_csv_writes_no_escaping_row(tmp_path, caplog):
    src = tmp_path / "mine"
    _photos(src)
    outside = _outside(src)
    (src / "labels.csv").write_text("path,score,split\n" + GOOD_ROWS + f"../{outside.name},9,test\n"
                                    f"{outside},9,test\n/etc/passwd,1,test\n")
    with caplog.at_level(logging.WARNING, logger="edge_iqa.data"):
        assert main(["data", "import", "csv", str(src / "labels.csv"), "--out", str(tmp_path / "new"), "--json"]) == 0
    text = (tmp_path / "new" / "manifest.csv").read_text()
    assert "private" not in text and "passwd" not in text and len(text.splitlines()) == 6
    refusals = [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]
    assert [m.split(" line ")[1].split(":")[0] for m in refusals] == ["7", "8", "9"]


# ---------------------------------------------------------------------------------------------
# Bad checkpoints and model files


class _Plant:
    """Unpickling this creates ``marker``: the proof that a file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _torch_save(path: Path, obj) -> Path:
    import torch

    torch.save(obj, path)
    return path


# name -> (maker(folder) -> model path, the line says)
CHECKPOINT_KINDS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "checkpoint-empty": (lambda d: _save_bytes(d / "empty.pt", b""), "empty or truncated"),
    "checkpoint-truncated": (lambda d: _save_bytes(d / "cut.pt", STUDENT.read_bytes()[:100_000]), "not an edge-iqa"),
    "checkpoint-random-bytes": (lambda d: _save_bytes(d / "noise.pt", np.random.default_rng(4).bytes(5000)),
                                "not an edge-iqa checkpoint"),
    "checkpoint-pickle-with-code": (lambda d: _torch_save(d / "evil.pt", {"format": "edge-iqa-checkpoint/1",
                                                                         "x": _Plant(d / "PWNED")}), "never"),
    "checkpoint-raw-pickle-with-code": (lambda d: _save_bytes(d / "evil_raw.pt", pickle.dumps(_Plant(d / "PWNED"))),
                                        "not an edge-iqa checkpoint"),
    "checkpoint-foreign-torch-file": (lambda d: _torch_save(d / "weights.pt", {"conv.weight": np.zeros(1)}),
                                      "not an edge-iqa checkpoint"),
    "checkpoint-damaged-config": (lambda d: _with_config(d / "damaged.pt", lambda c: {**c, "views": 3}),
                                  "model config is damaged"),
    "checkpoint-config-not-json": (lambda d: _with_config(d / "notjson.pt", None), "model config is damaged"),
    "onnx-damaged-config": (lambda d: _onnx_with_config(d / "damaged.onnx"), "model config is damaged"),
    "model-unknown-file-type": (lambda d: _save_bytes(d / "model.txt", b"hello"), "unknown model file type"),
    "model-missing": (lambda d: d / "missing.pt", "not found"),
    "model-is-a-folder": (lambda d: _mkdir(d / "run.pt"), "is a folder"),
}


def _with_config(path: Path, damage) -> Path:
    """The fixture student with its stored config damaged (``damage(dict)``, or cut JSON where None)."""
    import torch

    payload = torch.load(STUDENT, weights_only=True)
    text = payload["config"]
    payload["config"] = text[: len(text) // 2] if damage is None else json.dumps(damage(json.loads(text)))
    return _torch_save(path, payload)


def _onnx_with_config(path: Path) -> Path:
    """A valid ONNX graph whose edge-iqa config metadata has a field of the wrong type."""
    import onnx
    from onnx import TensorProto, helper

    from edge_iqa.runtimes import CONFIG_KEY

    config = json.loads(edge_iqa.load(STUDENT).config.to_json())
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    onnx.helper.set_model_props(model, {CONFIG_KEY: json.dumps({**config, "score_range": 7})})
    onnx.save(model, str(path))
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
def test_each_bad_checkpoint_is_one_line_and_runs_no_code(kind, corpus, tmp_path, capsys):
    make, says = CHECKPOINT_KINDS[kind]
    model = make(tmp_path)
    out = tmp_path / "rows.csv"
    assert main(["score", str(model), str(corpus["clean"]), "--out", str(out), "--json"]) == 2
    line = _one_line(capsys.readouterr().err, model.name, says)
    assert "weights_only=False" not in line  # torch's advice for an untrusted file: the one thing not to do
    if kind != "model-is-a-folder" and kind != "model-missing":
        with pytest.raises(EdgeIQAError) as excinfo:
            edge_iqa.load(model)
        _one_line(str(excinfo.value), model.name)
    assert not (tmp_path / "PWNED").exists()
    assert not out.exists()  # nothing was scored, nothing half-written


# ---------------------------------------------------------------------------------------------
# Bad options: refused while parsing, before any work (and before torch, see the subprocesses)


def _options(tmp: Path, photo: Path, data: Path) -> dict[str, tuple[list[str], str]]:
    out = str(tmp / "run")
    train = ["train", "--model", "demo-student", "--data", str(data), "--out", out]
    return {
        "batch-size-zero": (["score", str(STUDENT), str(photo), "--batch-size", "0"], "--batch-size"),
        "batch-size-not-a-number": (["score", str(STUDENT), str(photo), "--batch-size", "eight"], "whole number"),
        "workers-negative": (["evaluate", str(STUDENT), "--data", str(data), "--workers", "-1"], "--workers"),
        "max-pixels-negative": (["score", str(STUDENT), str(photo), "--max-pixels", "-5"], "--max-pixels"),
        "epochs-zero": ([*train, "--epochs", "0"], "--epochs"),
        "train-batch-size-one": ([*train, "--batch-size", "1"], "must be 2 or more"),
        "lr-negative": ([*train, "--lr", "-0.1"], "--lr"),
        "lr-not-finite": ([*train, "--lr", "nan"], "finite"),
        "weight-decay-negative": ([*train, "--weight-decay", "-1"], "--weight-decay"),
        "seed-negative": (["data", "synth", out, "--seed", "-1"], "--seed"),
        "max-side-tiny": (["data", "synth", out, "--max-side", "2"], "--max-side"),
        "unknown-preset": (["train", "--model", "demo-studnet", "--data", str(data), "--out", out], "did you mean"),
        "unknown-view-kind": ([*train, "--view", "zoom:64x64"], "unknown view kind 'zoom'"),
        "bad-view-spec": ([*train, "--view", "resize:big"], "cannot parse view"),
        "teacher-missing": (["distill", "--teacher", str(tmp / "none.pt"), "--student", "demo-student",
                             "--data", str(data), "--out", out], "none.pt: teacher not found"),
        "backbone-weights-missing": ([*train, "--weights", str(tmp / "w.pth")], "w.pth: backbone weights not found"),
        "profile-depth-negative": (["profile", "demo-student", "--depth", "-1"], "--depth"),
        "export-batch-size-zero": (["export", str(STUDENT), "--format", "onnx", "--out", out, "--batch-size", "0"],
                                   "--batch-size"),
        "unknown-dataset-kind": (["data", "import", "koniq", str(tmp), "--out", out], "did you mean koniq10k"),
        "missing-required-option": (["train", "--model", "demo-student", "--out", out], "--data"),
        "data-for-train-is-a-file": (["train", "--model", "demo-student", "--data", str(photo), "--out", out],
                                     "is a file, expected a dataset folder"),
        "burst-keep-zero": (["burst", "score", str(STUDENT), str(tmp), "--keep", "0"], "--keep"),
        "burst-dir-is-a-file": (["burst", "score", str(STUDENT), str(photo)], "is a file, not a folder"),
    }


OPTION_KINDS = tuple(_options(Path("t"), Path("p.jpg"), Path("d")))


@pytest.mark.parametrize("kind", OPTION_KINDS)
def test_each_bad_option_is_one_line_and_starts_nothing(kind, corpus, tmp_path, capsys):
    argv, says = _options(tmp_path, corpus["clean"], _dataset(tmp_path / "ds"))[kind]
    assert main(argv) == 2
    _one_line(capsys.readouterr().err, says)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# As a user runs it: fresh processes


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _edge_iqa(*argv, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_iqa.cli", *map(str, argv)], env=_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_score_over_the_bad_folder_as_a_process(corpus, tmp_path):
    """One ``edge-iqa score`` over the whole corpus: a row per file, scored or with its error;
    damaged JPEGs and the folder scan warned on stderr; exit 1 because some rows failed."""
    folder = corpus["clean"].parent
    missing = tmp_path / "not-there.jpg"
    out = tmp_path / "rows.csv"
    run = _edge_iqa("score", STUDENT, folder, missing, "--out", out, "--json", cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    expected = [str(f) for f in scan_images([folder, missing]).files]
    results = json.loads(run.stdout)["results"]
    assert [r["path"] for r in results] == expected
    assert [r["path"] for r in _csv_rows(out)] == expected  # every row reached the file: none lost
    by_name = {Path(r["path"]).name: r for r in results}
    for kind, (_, outcome, says) in IMAGE_KINDS.items():
        row = by_name[corpus[kind].name]
        if outcome == FAILED:
            assert row["score"] is None and says in row["error"], (kind, row)
        else:
            assert row["error"] is None and row["score"] is not None, (kind, row)
        if outcome == WARNED:
            [line] = [line for line in run.stderr.splitlines() if corpus[kind].name in line]
            assert says in line
    assert "no such file" in by_name["not-there.jpg"]["error"]
    [scan_line] = [line for line in run.stderr.splitlines() if "left out of the image scan" in line]
    assert scan_line.startswith(f"{folder}: {len(SCAN_KINDS)} entries")


def test_evaluate_never_reads_a_row_from_outside_the_dataset(tmp_path):
    """Rows leading to a real photo outside the dataset (../, absolute, a link): if evaluate read
    them, n would count them."""
    root = tmp_path / "ds"
    outside = _outside(root)
    _dataset(root, GOOD_ROWS + f"../{outside.name},9,test\n{outside},9,test\npeek/{outside.name},9,test\n"
                               "../../../../../../../etc/passwd,9,test\n")
    (root / "peek").symlink_to(tmp_path)
    run = _edge_iqa("evaluate", STUDENT, "--data", root, "--split", "test", "--workers", "0", "--json", cwd=tmp_path)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert json.loads(run.stdout)["n"] == 2 and json.loads(run.stdout)["failed"] == 0
    refused = [line for line in run.stderr.splitlines() if "outside the dataset folder" in line]
    assert [line.split(" line ")[1].split(":")[0] for line in refused] == ["7", "8", "9", "10"]


# Kinds only a fresh process shows; the rest of test_as_a_user_runs_it re-runs kinds counted above.
PROCESS_KINDS = {
    "unknown-preset-without-torch": "the preset name is checked before torch is imported",
    "damaged-coreml-package": "coremltools' import chatter filtered, then one line",
}


def test_as_a_user_runs_it(corpus, tmp_path):
    photo = corpus["clean"]
    # A mistyped preset: refused before torch (10-35 s on a loaded machine) is even imported.
    check = ("import sys; from edge_iqa.cli import main; code = main(sys.argv[1:]); "
             "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    run = subprocess.run([sys.executable, "-c", check, "train", "--model", "demo-studnet", "--data", str(tmp_path),
                          "--out", str(tmp_path / "run")], env=_env(), cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    _one_line(run.stderr, "unknown model 'demo-studnet'", "did you mean demo-student")

    run = _edge_iqa("score", STUDENT, photo, "--batch-size", "0", cwd=tmp_path)
    assert run.returncode == 2 and "--batch-size" in _one_line(run.stderr)

    run = _edge_iqa("evaluate", STUDENT, "--data", photo, cwd=tmp_path)
    assert run.returncode == 2
    _one_line(run.stderr, photo.name, "is a file, expected a dataset folder")

    run = _edge_iqa("score", tmp_path / "nope.pt", photo, cwd=tmp_path)
    assert run.returncode == 2
    _one_line(run.stderr, "nope.pt", "not found")

    evil = _torch_save(tmp_path / "evil.pt", {"format": "edge-iqa-checkpoint/1", "x": _Plant(tmp_path / "PWNED")})
    run = _edge_iqa("score", evil, photo, cwd=tmp_path)
    assert run.returncode == 2 and not (tmp_path / "PWNED").exists()
    assert "weights_only=False" not in _one_line(run.stderr, "evil.pt")

    package = _mkdir(tmp_path / "model.mlpackage")
    run = _edge_iqa("score", package, photo, cwd=tmp_path)
    assert run.returncode == 2 and "Failed to load" not in run.stderr and "has not been tested" not in run.stderr
    _one_line(run.stderr, "model.mlpackage", "not a readable CoreML package")

    binary = _binary(tmp_path / "bin", bytes(range(256)) * 16)
    run = _edge_iqa("data", "info", binary, cwd=tmp_path)
    assert run.returncode == 2
    _one_line(run.stderr, "manifest.csv", "not UTF-8")

    src = tmp_path / "src"
    _photos(src)
    (src / "labels.csv").write_text("path,score,split\n" + GOOD_ROWS + "../../../../../../etc/passwd,1,test\n")
    run = _edge_iqa("data", "import", "csv", src / "labels.csv", "--out", tmp_path / "new", "--json", cwd=tmp_path)
    assert run.returncode == 0 and json.loads(run.stdout)["rows"] == 5
    assert "passwd" not in (tmp_path / "new" / "manifest.csv").read_text()
    _one_line(run.stderr, "labels.csv line 7", "outside")


# ---------------------------------------------------------------------------------------------
# What the corpus counts, and the torch-free name check it relies on


KINDS = {
    **{f"image:{k}": "edge_iqa.io.load_image, Scorer.score_paths, edge-iqa score" for k in IMAGE_KINDS},
    **{f"scan:{k}": "edge_iqa.io.scan_images, edge-iqa score" for k in SCAN_KINDS},
    **{f"manifest:{k}": "edge-iqa data info, read_manifest" for k in MANIFEST_KINDS},
    "manifest:data-import-csv-escaping": "edge-iqa data import csv",
    "manifest:evaluate-escaping-rows": "edge-iqa evaluate (a process)",
    **{f"checkpoint:{k}": "edge-iqa score, edge_iqa.load" for k in CHECKPOINT_KINDS},
    **{f"option:{k}": "edge-iqa (argument parsing)" for k in OPTION_KINDS},
    "path:missing-next-to-valid-files": "edge-iqa score (a process)",
    **{f"process:{k}": v for k, v in PROCESS_KINDS.items()},
}


def test_the_corpus_covers_at_least_40_kinds():
    assert len(KINDS) >= 40, len(KINDS)


def test_timm_names_read_without_torch_match_timm():
    import timm

    from edge_iqa.presets import timm_model_names

    assert set(timm_model_names()) == set(timm.list_models())
