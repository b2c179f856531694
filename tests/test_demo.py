"""``edge-iqa demo`` end to end at a tiny size: synth data → teacher → distilled student → scores."""

import json

from edge_iqa.checkpoint import read_checkpoint
from edge_iqa.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--max-side", "128", "--epochs", "1", "--teacher-epochs", "1",
            "--workers", "0", "--batch-size", "32", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["test"]["n"] > 0 and summary["teacher_test"]["n"] == summary["test"]["n"]
    assert len(summary["scored"]) == 5 and all(0.0 <= s["score"] <= 1.0 for s in summary["scored"])
    student = json.loads((out / "student" / "metrics.json").read_text())
    assert student["train_config"]["losses"] == [["mse", 1.0], ["plcc", 0.5], ["kd_mse", 1.0]]
    # the presets' views scale with the photos: 128 px is a quarter of the presets' 512 px
    assert [v.spec() for v in read_checkpoint(out / "student" / "best.pt")["config"].views] == ["fragments:8x8"]
    # a second run reuses the data and the finished teacher; the views follow the data's photo size
    assert main([*argv[:3], "--max-side", "256", *argv[5:]]) == 0
    err = capsys.readouterr().err
    assert "reusing the trained demo-teacher" in err and "built at 128 px, not 256" in err
    assert [v.spec() for v in read_checkpoint(out / "student" / "best.pt")["config"].views] == ["fragments:8x8"]
