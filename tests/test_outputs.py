"""Nothing lost on the output side (issue 12): killed batch runs resume to exactly the rows of
an uninterrupted run, artifacts are replaced atomically, an unwritable ``--out`` is refused
before any work, and bad checkpoints or foreign ONNX files give one line, never a traceback."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import edge_iqa
from edge_iqa.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edge_iqa.cli import main
from edge_iqa.errors import EdgeIQAError
from edge_iqa.outputs import atomic_path, atomic_write, ensure_writable_dir, ensure_writable_file, partial_path

REPO = Path(__file__).resolve().parents[1]
STUDENT = REPO / "tests" / "fixtures" / "student.pt"  # views resize 48x64 and fragments 2x24: photos >= 48 px
N_IMAGES = 200  # at --batch-size 2 the run scores for ~1 s, so a kill after the first row lands mid-run
SIDE = 48

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_images(folder: Path, n: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _write_images(tmp_path_factory.mktemp("photos") / "photos", N_IMAGES)


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "edge_iqa.cli", *map(str, argv)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _complete_rows(partial: Path) -> int:
    """Data rows whose line is complete (a kill may cut the last one)."""
    text = partial.read_bytes() if partial.exists() else b""
    return max(text.count(b"\n") - 1, 0)


def _kill_after_first_rows(argv: list[str], partial: Path) -> int:
    """Start ``argv``, SIGKILL it as soon as ``partial`` holds a data row; the rows left on disk."""
    process = subprocess.Popen(argv, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if _complete_rows(partial) >= 1:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"not killed mid-run (exit {process.returncode}): {err[-2000:]!r}"
    return _complete_rows(partial)


@pytest.fixture(scope="module")
def uninterrupted(photos, tmp_path_factory) -> dict[str, float]:
    """path -> score of one run that was never killed (absolute paths, as pseudo-label writes them)."""
    out = tmp_path_factory.mktemp("reference") / "scores.csv"
    done = _run(_cli("score", STUDENT, photos, "--out", out, "--batch-size", "2", "--json"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(out)
    assert len(rows) == N_IMAGES and all(r["score"] and not r["error"] for r in rows)
    return {r["path"]: float(r["score"]) for r in rows}


def _assert_same_rows(out: Path, reference: dict[str, float]) -> None:
    rows = _rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a path appears twice"
    assert set(paths) == set(reference)
    for row in rows:
        assert not row["error"] and abs(float(row["score"]) - reference[row["path"]]) <= 1e-6 + 1e-12, row
    assert paths == list(reference)  # and in the order of an uninterrupted run


@pytest.mark.parametrize("command", ["score", "pseudo-label"])
def test_a_killed_run_resumes_to_the_rows_of_an_uninterrupted_one(command, photos, uninterrupted, tmp_path,
                                                                   capsys):
    out = tmp_path / f"{command}.csv"
    partial = partial_path(out)
    argv = _cli(command, STUDENT, photos, "--out", out, "--batch-size", "2", "--json")
    killed = _kill_after_first_rows(argv, partial)
    assert not out.exists() and 1 <= killed < N_IMAGES  # the rows so far are on disk, the file is not finished
    before = _rows(partial)[:killed]
    if command == "pseudo-label":  # a kill in the middle of a write leaves half a line: it must be dropped
        nxt = sorted(uninterrupted)[killed]
        with open(partial, "a", encoding="utf-8") as handle:
            handle.write(f"{nxt},0.12")

    # neither --resume nor --overwrite: the unfinished run is not thrown away
    assert main([str(a) for a in argv[3:]]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume" in err and str(partial) in err and "\n" not in err
    assert _complete_rows(partial) >= killed

    resumed = _run([*argv, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["resumed"] == killed  # the killed run's rows were kept, not rescored
    assert not partial.exists()
    _assert_same_rows(out, uninterrupted)
    kept = {r["path"]: r["score"] for r in _rows(out)}
    assert all(kept[r["path"]] == r["score"] for r in before)


def test_resume_of_a_finished_file_scores_only_new_photos(photos, uninterrupted, tmp_path):
    folder = tmp_path / "some"
    folder.mkdir()
    for name in ("000.png", "001.png", "002.png"):
        shutil.copy(photos / name, folder / name)
    out = tmp_path / "s.csv"
    assert main(["score", str(STUDENT), str(folder / "000.png"), str(folder / "001.png"), "--out", str(out),
                 "--json"]) == 0
    assert main(["score", str(STUDENT), str(folder), "--out", str(out), "--resume", "--json"]) == 0
    rows = _rows(out)
    assert [Path(r["path"]).name for r in rows] == ["000.png", "001.png", "002.png"]
    for row in rows:
        assert abs(float(row["score"]) - uninterrupted[str(photos / Path(row["path"]).name)]) <= 1e-6 + 1e-12


def test_an_existing_out_is_kept_unless_resume_or_overwrite(photos, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    out.write_text("my,own\nprecious,file\n")
    one = str(photos / "000.png")
    assert main(["score", str(STUDENT), one, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume" in err and "--overwrite" in err and str(out) in err and "\n" not in err
    assert out.read_text() == "my,own\nprecious,file\n"
    assert main(["score", str(STUDENT), one, "--out", str(out), "--resume"]) == 2  # not our CSV: not resumed into
    assert "header" in capsys.readouterr().err
    assert main(["score", str(STUDENT), one, "--out", str(out), "--resume", "--overwrite"]) == 2
    assert main(["score", str(STUDENT), one, "--out", str(out), "--overwrite"]) == 0
    assert [r["path"] for r in _rows(out)] == [one]


def test_a_missing_path_is_a_row_and_the_valid_files_are_scored(photos, tmp_path, capsys):
    missing = tmp_path / "not-here.jpg"
    out = tmp_path / "scores.csv"
    valid = photos / "000.png"
    assert main(["score", str(STUDENT), str(valid), str(missing), "--out", str(out), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["failed"] == 1
    rows = {r["path"]: r for r in _rows(out)}
    assert rows[str(valid)]["score"] and not rows[str(valid)]["error"]
    assert not rows[str(missing)]["score"] and "no such file" in rows[str(missing)]["error"]

    labels = tmp_path / "labels.csv"
    assert main(["pseudo-label", str(STUDENT), str(valid), str(missing), "--out", str(labels), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["failed"] == 1
    assert {Path(r["path"]).name: bool(r["score"]) for r in _rows(labels)} == {"000.png": True, "not-here.jpg": False}


def test_score_paths_takes_one_path_or_many(photos):
    scorer = edge_iqa.load(STUDENT)
    one = scorer.score_paths(str(photos / "001.png"))
    assert len(one) == 1 and one[0].path == str(photos / "001.png") and one[0].score is not None
    assert scorer.score_paths(photos / "001.png") == one
    many = [photos / "000.png", photos / "missing.png", photos / "001.png"]
    streamed = list(scorer.iter_score_paths(many, batch_size=2))
    assert streamed == scorer.score_paths(many, batch_size=2)
    assert [r.path for r in streamed] == [str(p) for p in many] and streamed[1].error and streamed[1].score is None
    assert streamed[2].score == pytest.approx(one[0].score, abs=1e-6)


# ------------------------------------------------------------------ writable outputs before work


def _dataset(root: Path, photos: Path) -> Path:
    from edge_iqa.data.manifest import DatasetInfo, Record, write_dataset

    splits = ["train"] * 4 + ["val", "test"]
    records = [Record(photos / f"{i:03d}.png", i / 6, split) for i, split in enumerate(splits)]
    return write_dataset(root, records, DatasetInfo("tiny", (0.0, 1.0)))


COMMANDS = {
    "score": lambda out, data, photos: ["score", STUDENT, photos / "000.png", "--out", out / "s.csv"],
    "pseudo-label": lambda out, data, photos: ["pseudo-label", STUDENT, photos / "000.png", "--out", out / "p.csv"],
    "export": lambda out, data, photos: ["export", STUDENT, "--format", "onnx", "--precision", "fp32", "--out", out],
    "train": lambda out, data, photos: ["train", "--model", "demo-student", "--data", data, "--out", out,
                                        "--epochs", "1", "--workers", "0", "--quiet"],
    "distill": lambda out, data, photos: ["distill", "--teacher", STUDENT, "--student", "demo-student", "--data",
                                          data, "--out", out, "--epochs", "1", "--workers", "0", "--quiet"],
    "data synth": lambda out, data, photos: ["data", "synth", out, "--max-side", "64"],
    "data import": lambda out, data, photos: ["data", "import", "csv", data / "manifest.csv", "--out", out],
}


def _blocked(kind: str, tmp_path: Path) -> Path:
    """An output path that cannot be written, even by root (the tests may run as root)."""
    if kind == "under-a-file":
        (tmp_path / "file.txt").write_text("a file, not a folder\n")
        return tmp_path / "file.txt" / "out"
    if not Path("/proc").is_dir():
        pytest.skip("no /proc on this platform")
    return Path("/proc/edge-iqa-out")  # procfs takes no new files, whoever asks


@pytest.mark.parametrize("kind", ["under-a-file", "proc"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unwritable_out_is_refused_in_one_line_before_any_work(command, kind, photos, tmp_path, capsys):
    data = _dataset(tmp_path / "data", photos)
    out = _blocked(kind, tmp_path)
    argv = [str(a) for a in COMMANDS[command](out, data, photos)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write here" in err and str(out) in err and "choose another" in err and "\n" not in err
    assert not Path("/proc/edge-iqa-out").exists()


@pytest.mark.parametrize("command", ["score", "pseudo-label"])
def test_the_out_check_comes_before_the_model_is_loaded(command, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"")  # loading it would fail: the out check must speak first
    out = _blocked("under-a-file", tmp_path) / "s.csv"
    assert main([command, str(broken), str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot write here" in err and "not an edge-iqa checkpoint" not in err


def test_an_immutable_folder_is_refused(tmp_path):
    folder = tmp_path / "frozen"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        with pytest.raises(EdgeIQAError, match="cannot write here"):
            ensure_writable_file(folder / "scores.csv")
        with pytest.raises(EdgeIQAError, match="cannot write here"):
            ensure_writable_dir(folder / "run")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_writable_checks_create_nothing(tmp_path):
    ensure_writable_dir(tmp_path / "a" / "b")
    ensure_writable_file(tmp_path / "c" / "s.csv")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EdgeIQAError, match="is a folder"):
        ensure_writable_file(tmp_path)


# ------------------------------------------------------------------ atomic artifacts


class _HalfWayFailure(Exception):
    pass


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path):
    target = tmp_path / "parity.json"
    atomic_write(target, lambda handle: handle.write('{"old": true}\n'))

    def half(handle):
        handle.write('{"new": ')
        raise _HalfWayFailure

    with pytest.raises(_HalfWayFailure):
        atomic_write(target, half)
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["parity.json"]  # no temporary left behind


def test_a_folder_artifact_is_replaced_whole_or_not_at_all(tmp_path):
    package = tmp_path / "model.mlpackage"
    with atomic_path(package) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("old")
    with pytest.raises(_HalfWayFailure):
        with atomic_path(package) as tmp:
            tmp.mkdir()
            (tmp / "weights.bin").write_text("new, half")
            raise _HalfWayFailure
    assert (package / "weights.bin").read_text() == "old"
    with atomic_path(package) as tmp:
        tmp.mkdir()
        (tmp / "manifest.json").write_text("new")
    assert sorted(p.name for p in package.iterdir()) == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.mlpackage"]


def test_a_checkpoint_save_that_fails_half_way_keeps_the_old_checkpoint(tmp_path):
    model, _ = load_checkpoint(STUDENT)
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, info={"epoch": 1})
    with pytest.raises(Exception):  # a lambda cannot be pickled: torch.save fails part-way through the file
        save_checkpoint(path, model, info={"epoch": 2}, state={"weights": torch.zeros(1000), "bad": lambda: 0})
    assert read_checkpoint(path)["info"] == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ------------------------------------------------------------------ bad checkpoints and foreign ONNX files


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling would create the marker file


def _bad_checkpoint(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(STUDENT.read_bytes()[: STUDENT.stat().st_size // 2])
    elif kind == "runs-code":
        torch.save({"state_dict": _RunsCode(tmp_path / "pwned")}, path)
    else:
        path.write_bytes(pickle.dumps({"format": "something else"}))
    return path


@pytest.mark.parametrize("kind", ["empty", "truncated", "runs-code", "plain-pickle"])
def test_a_bad_checkpoint_is_one_line_that_never_advises_weights_only_false(kind, tmp_path, capsys):
    path = _bad_checkpoint(kind, tmp_path)
    with pytest.raises(EdgeIQAError) as caught:
        edge_iqa.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not an edge-iqa checkpoint") and "\n" not in message
    assert "weights_only" not in message and "EOFError" not in message and "re-run train/distill" in message
    if kind in ("empty", "truncated"):
        assert "(empty or truncated file)" in message
    assert not (tmp_path / "pwned").exists()  # the pickle's code never ran
    assert main(["score", str(path), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(message) and "\n" not in err and "Traceback" not in err


def _onnx_with_config(path: Path, inputs: list[tuple[str, list]]) -> Path:
    """A tiny ONNX graph (score = sum of per-input means) carrying the student's edge-iqa metadata."""
    import onnx
    from onnx import TensorProto, helper

    config = read_checkpoint(STUDENT)["config"]
    axes = helper.make_tensor("axes", TensorProto.INT64, [len(inputs[0][1]) - 1],
                              list(range(1, len(inputs[0][1]))))
    nodes, means = [], []
    for name, _ in inputs:
        nodes.append(helper.make_node("ReduceMean", [name, "axes"], [f"{name}_mean"], keepdims=0))
        means.append(f"{name}_mean")
    nodes.append(helper.make_node("Sum", means, ["score"]))
    graph = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                 for n, s in inputs],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "edge_iqa.config", config.to_json()
    onnx.save_model(model, str(path))
    return path


def test_a_foreign_onnx_with_copied_metadata_is_refused_when_loaded(photos, tmp_path, capsys):
    foreign = _onnx_with_config(tmp_path / "foreign.onnx", [("x", [1, 10])])
    with pytest.raises(EdgeIQAError) as caught:
        edge_iqa.load(foreign)
    message = str(caught.value)
    assert message.startswith(f"{foreign}: not an edge-iqa export") and "\n" not in message
    assert "1 input(s)" in message and "2 view(s)" in message
    out = tmp_path / "scores.csv"
    assert main(["score", str(foreign), str(photos / "000.png"), "--out", str(out)]) == 2
    assert "not an edge-iqa export" in capsys.readouterr().err and not out.exists()

    wrong_size = _onnx_with_config(tmp_path / "wrong.onnx", [("view0", ["N", 3, 224, 224]), ("view1", ["N", 3, 48, 48])])
    with pytest.raises(EdgeIQAError, match=r"input 'view0' has shape Nx3x224x224, the view resize:48x64 gives Nx3x48x64"):
        edge_iqa.load(wrong_size)


def test_an_onnx_whose_inputs_fit_its_views_scores(photos, tmp_path):
    fitting = _onnx_with_config(tmp_path / "fits.onnx", [("view0", ["N", 3, 48, 64]), ("view1", ["batch", 3, 48, 48])])
    scorer = edge_iqa.load(fitting)
    views = scorer.views_of(photos / "000.png")
    assert scorer.score(photos / "000.png") == pytest.approx(sum(float(v.mean()) for v in views), rel=1e-5)
