"""``edge-iqa bench`` (issue 15 §3) on a tiny random-init model with few runs: the JSON shape,
sane numbers (never a speed), rows that cannot run here skipped with their reason, the
Spearman floor's exit 1, the files in --out, and bad options as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_iqa.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = ["--runs", "3", "--min-seconds", "0.01", "--warmup", "1"]
ROW_KEYS = {"model", "backend", "precision", "threads", "batch", "status", "reason", "artifact", "size_bytes",
            "load_s", "first_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "runs", "throughput_per_s",
            "peak_rss_mb", "macs", "gmacs", "peak_fraction", "runtime_version", "device"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_student) -> Path:
    import torch

    from edge_iqa.checkpoint import save_checkpoint
    from edge_iqa.model import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench") / "tiny.pt"
    save_checkpoint(path, build_model(tiny_student).eval())
    return path


@pytest.fixture(scope="module")
def bench(checkpoint, tiny_synth, tmp_path_factory):
    """One run: ONNX Runtime, OpenVINO and TensorRT (and torch, skipped: it runs FP32) at int8, 1
    thread, batch 2: one export, as torch.onnx's tracing costs ~20 s whatever the model."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("bench_out")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["bench", str(checkpoint), "--backends", "torch,onnxruntime,openvino,tensorrt",
                     "--precision", "int8", "--batch", "2", "--check", str(tiny_synth), "--calib-images", "8",
                     "--e2e-images", "2", "--source", "96x64", "--out", str(out), "--json", *FAST])
    return code, json.loads(stdout.getvalue()), out


def _rows(result, **match):
    return [r for r in result["rows"] if all(r[k] == v for k, v in match.items())]


def test_every_ran_row_has_the_keys_and_sane_numbers(bench):
    code, result, _ = bench
    ran = _rows(result, status="ran")
    assert {(r["backend"], r["precision"]) for r in ran} == {("onnxruntime", "int8"), ("openvino", "int8")}
    for r in ran:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["min_ms"] <= r["p50_ms"]
        assert r["runs"] >= 3 and r["load_s"] > 0 and r["size_bytes"] > 0 and r["peak_rss_mb"] > 0
        assert r["throughput_per_s"] == pytest.approx(r["batch"] / (r["p50_ms"] / 1e3))
        assert r["macs"] > 0 and r["gmacs"] == pytest.approx(r["macs"] * r["batch"] / (r["p50_ms"] / 1e3) / 1e9)
        assert 0 < r["peak_fraction"] == pytest.approx(r["gmacs"] / r["peak_gmacs"])
        assert r["threads"] == 1
    int8 = _rows(result, backend="onnxruntime", precision="int8")[0]
    assert int8["artifact"].endswith("model_int8.onnx")
    same = _rows(result, backend="openvino", precision="int8")[0]
    assert same["artifact"] == int8["artifact"]  # OpenVINO runs the same QDQ file
    peak = result["gemm_peak"]["1"]
    assert peak["fp32_gmacs"] > 0 and peak["int8_gmacs"] > 0
    assert result["machine"]["cpu"] and isinstance(result["machine"]["vnni"], bool)
    assert code == (1 if result["failed_rows"] else 0)


def test_torch_eager_runs_the_checkpoint_with_its_own_scores_as_reference(checkpoint, tiny_synth, tmp_path, capsys):
    code = main(["bench", str(checkpoint), "--backends", "torch", "--check", str(tiny_synth), "--e2e-images", "1",
                 "--out", str(tmp_path), "--json", *FAST])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert code == 0 and [(r["backend"], r["precision"], r["status"]) for r in rows] == [("torch", "fp32", "ran")]
    assert ROW_KEYS <= set(rows[0]) and rows[0]["accuracy"]["spearman_vs_fp32"] == pytest.approx(1.0)
    assert rows[0]["p50_ms"] <= rows[0]["p90_ms"] <= rows[0]["p99_ms"] and rows[0]["e2e"]["images"] == 1


def test_rows_that_cannot_run_here_are_skipped_with_their_reason(bench):
    from edge_iqa.runtimes import get_runtime

    _, result, _ = bench
    torch_int8 = _rows(result, backend="torch", precision="int8")
    assert torch_int8 and all(r["status"] == "skipped" and "FP32 checkpoint" in r["reason"] for r in torch_int8)
    reason = get_runtime("tensorrt").unavailable()
    trt = _rows(result, backend="tensorrt")
    if reason:
        assert trt and all(r["status"] == "skipped" and r["reason"] == reason and "p50_ms" not in r for r in trt)


def test_accuracy_beside_speed(bench):
    code, result, _ = bench
    for r in _rows(result, status="ran"):
        acc = r["accuracy"]
        assert acc["n"] > 1 and -1 <= acc["srcc"] <= 1 and acc["reference"].startswith("PyTorch FP32")
        assert acc["passed"] == (acc["spearman_vs_fp32"] >= 0.98)
    assert result["failed_rows"] == sum(r.get("accuracy", {}).get("passed") is False for r in result["rows"])


def test_end_to_end_rows_and_the_files_in_out(bench):
    _, result, out = bench
    e2e = [r["e2e"] for r in _rows(result, status="ran", batch=2)]
    assert e2e and all(e["images"] == 2 and e["failed"] == 0 and e["decode_views_ms"] > 0
                       and e["score_ms_per_image"] > 0 and e["batch_throughput_per_s"] > 0 for e in e2e)
    assert sorted(p.name for p in out.glob("photos_96x64/*.jpg")) == ["photo_00.jpg", "photo_01.jpg"]
    assert json.loads((out / "bench.json").read_text())["rows"] == result["rows"]
    markdown = (out / "bench.md").read_text()
    assert "| tiny | openvino | int8 |" in markdown and "skipped" in markdown and result["machine"]["cpu"] in markdown
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_into_the_same_out_reuses_the_export(bench, checkpoint, tiny_synth, capsys):
    _, result, out = bench
    int8 = Path(_rows(result, backend="onnxruntime", precision="int8")[0]["artifact"])
    made = int8.stat().st_mtime_ns
    assert main(["bench", str(checkpoint), "--backends", "onnxruntime", "--precision", "int8", "--calib",
                 str(tiny_synth), "--calib-images", "8", "--e2e-images", "0", "--out", str(out), "--json", *FAST]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["artifact"] for r in rows] == [str(int8)] and int8.stat().st_mtime_ns == made


def test_a_given_export_alone_and_the_spearman_floor_exit_1(bench, checkpoint, tiny_synth, tmp_path, capsys):
    _, result, _ = bench
    int8 = _rows(result, backend="onnxruntime", precision="int8")[0]
    code = main(["bench", int8["artifact"], "--backends", "onnxruntime,openvino,torch", "--check", str(tiny_synth),
                 "--reference", str(checkpoint), "--min-spearman", "1", "--e2e-images", "0", "--out",
                 str(tmp_path), "--json", *FAST])
    again = json.loads(capsys.readouterr().out)
    assert {r["backend"] for r in again["rows"]} == {"onnxruntime", "openvino"}  # a .onnx is no torch checkpoint
    spearman = [r["accuracy"]["spearman_vs_fp32"] for r in again["rows"]]
    assert all(s is not None for s in spearman)
    assert code == (1 if min(spearman) < 1 else 0) and again["failed_rows"] == sum(s < 1 for s in spearman)
    assert code == 1  # INT8 of a random-init model does not keep every rank of the test split


@pytest.mark.parametrize("argv, says", [
    (["--backends", "onnxruntime,tflite"], "unknown backend 'tflite'; choose from torch, onnxruntime"),
    (["--threads", "1,x"], "thread counts must be whole numbers of 1 or more, got 'x'"),
    (["--threads", "0"], "thread counts must be whole numbers of 1 or more, got '0'"),
    (["--batch", ","], "expected a comma-separated list of batch sizes"),
    (["--min-spearman", "1.5"], "a Spearman floor lies in (0, 1]"),
    (["--precision", "int4"], "unknown precision 'int4'"),
])
def test_bad_options_are_one_line_and_exit_2(checkpoint, tmp_path, capsys, argv, says):
    assert main(["bench", str(checkpoint), *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_model_is_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.onnx: file not found" in err and len(err.splitlines()) == 1
