"""The MAC profiler and the 50 GMAC budget gate (profiling/).

Pinned numbers come from /work/shared/REFERENCE.md ("MAC counting"): conv + linear MACs
measured with FlopCounterMode (÷ 2, under no_grad), next to the papers' figures
(MobileNetV3, Howard et al. ICCV 2019: 219 M; GhostNet, Han et al. CVPR 2020: 141 M;
GhostNetV2, Tang et al. NeurIPS 2022: 167 M; torchvision ResNet-50: 4.1 G). The AIM 2024
UHD-IQA baseline (Moskalenko et al., ECCVW 2024) is MobileNetV3 on a 1280×720 resize, 4.2 GMAC.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from edge_iqa.cli import main
from edge_iqa.config import ViewConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import build_model, example_inputs
from edge_iqa.presets import get_preset, list_presets
from preset_cases import one_preset_per_architecture
from profiling.budget import check_budget, ensure_within_budget, fit_to_budget, scale_view
from edge_iqa.commands.profile import parse_source
from profiling.fvcore_macs import count_fvcore_macs
from profiling.macs import count_macs
from profiling.memory import peak_activation_bytes
from profiling.onnx_macs import count_export_macs, count_onnx_macs, torch2onnx_for_counting
from profiling.other_ops import count_other_ops
from profiling.report import profile_config, profile_timm_classifier

UHD = (2160, 3840)
SQUARE_224 = (224, 224)


@pytest.mark.parametrize("name, source, pinned", [
    ("mobilenetv3_large_100", SQUARE_224, 216.6e6),
    ("mobilenetv3_small_100", SQUARE_224, 56.5e6),
    ("ghostnet_100", SQUARE_224, 141.2e6),
    ("ghostnetv2_100", SQUARE_224, 167.0e6),
    ("resnet50", SQUARE_224, 4.09e9),
    ("mobilenetv3_large_100", UHD, 35.20e9),
    ("ghostnetv2_100", UHD, 27.35e9),
])
def test_timm_classifier_macs_match_pinned_numbers(name, source, pinned):
    report = profile_timm_classifier(name, source, fvcore=False)
    assert report.macs == pytest.approx(pinned, rel=0.01)
    assert report.per_view == {"full": report.macs}


def test_meta_device_counts_equal_cpu_counts():
    import timm

    counts = {}
    for device in ("cpu", "meta"):
        with torch.device(device):
            model, inputs = timm.create_model("mobilenetv3_small_100").eval(), (torch.rand(1, 3, 96, 128),)
        counts[device] = (count_macs(model, inputs).total, count_other_ops(model, inputs).counts,
                          peak_activation_bytes(model, inputs))
    assert counts["cpu"] == counts["meta"]


def test_aim_baseline_preset_against_the_challenge_report():
    report = profile_config(get_preset("aim-baseline"), UHD)
    assert report.view_sizes == {"resize:720x1280": (720, 1280)}
    # conv + linear MACs of MobileNetV3-Large on 1280x720 (measured: 3.925 G); the issue's ≈4.1 G
    # and the report's 4.2 G count more than conv + linear (fvcore/timm style, BatchNorm included)
    assert report.macs == pytest.approx(3.925e9, rel=0.001)
    assert report.macs == pytest.approx(4.1e9, rel=0.05)
    assert report.fvcore_default_macs == pytest.approx(4.1e9, rel=0.01)
    assert report.params == pytest.approx(3.22e6, rel=0.05)  # report: 3.22 M with its own head


@pytest.mark.parametrize("preset", list_presets())
def test_views_add_up_to_the_total(preset):
    config = get_preset(preset)
    report = profile_config(config, fvcore=False)
    assert len(report.per_view) == len(config.views)
    assert sum(report.per_view.values()) + report.head_macs == report.macs
    assert report.head_macs == report.per_module["head"]
    assert all(macs > 0 for macs in report.per_view.values())
    assert report.peak_activation_bytes > 0 and report.other_ops["activation"] > 0


def test_fvcore_second_opinion_close_to_flop_counter():
    import timm
    from fvcore.nn import FlopCountAnalysis

    model, inputs = timm.create_model("mobilenetv3_small_100").eval(), (torch.rand(1, 3, 128, 128),)
    count = count_fvcore_macs(model, inputs)
    assert count.without_batch_norm == pytest.approx(count_macs(model, inputs).total, rel=0.01)
    assert count.total > count.without_batch_norm  # fvcore's default counts BatchNorm too
    zeroed = FlopCountAnalysis(model, inputs).set_op_handle("aten::batch_norm", lambda inputs, outputs: 0)
    zeroed.unsupported_ops_warnings(False)
    assert count.without_batch_norm == zeroed.total()  # REFERENCE.md: a handle returning 0 removes BN


class _TinyNet(nn.Module):
    """Every op kind the ONNX counter knows, with MACs easy to work out by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)               # 8*16*16 * 3*9   = 55296
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # 8*16*16 * 1*9 = 18432
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)          # 8*16*16 * 4*4   = 32768
        self.fc = nn.Linear(16, 5)                                # 4*32*2 * 16*5   = 20480
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = self.up(self.depthwise(y) + y)                        # (1, 4, 32, 32)
        z = self.fc(y.reshape(1, 4, 32, 2, 16))                   # (1, 4, 32, 2, 5)
        return z @ z.transpose(-1, -2)                            # 4*32 * 2*2 * 5 = 2560


TINY_MACS = 55296 + 18432 + 32768 + 20480 + 2560


def test_hand_counted_macs_in_pytorch_and_onnx(tmp_path):
    model, inputs = _TinyNet().eval(), (torch.rand(1, 3, 16, 16),)
    assert count_macs(model, inputs).total == TINY_MACS
    path = torch2onnx_for_counting(model, inputs, tmp_path / "tiny.onnx")
    assert count_onnx_macs(path) == TINY_MACS
    assert main(["profile", str(path), "--json"]) == 0
    # the torch.export-based exporter (the deployable path) gives a graph that counts the same
    program = torch.onnx.export(model, inputs, dynamo=True, opset_version=18, verbose=False)
    assert count_onnx_macs(program.model_proto) == TINY_MACS


def test_other_ops_and_peak_memory_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    inputs = (torch.rand(1, 3, 16, 16),)
    counts = count_other_ops(model, inputs).counts
    assert counts["batch_norm"] == counts["activation"] == 8 * 16 * 16
    # conv output, BN output and ReLU output are 8*16*16 float32 each; two are alive at once
    assert peak_activation_bytes(model, inputs) == 2 * 8 * 16 * 16 * 4


def _small_views(config):
    """The preset with views scaled down (same kinds and aspects) so its export is quick."""
    return config.replace(views=tuple(scale_view(v, 0.15, config.source_size) for v in config.views))


@pytest.mark.parametrize("preset", one_preset_per_architecture())
def test_onnx_export_counts_what_pytorch_counts(preset):
    config = _small_views(get_preset(preset))
    torch.manual_seed(0)
    model, inputs = build_model(config).eval(), example_inputs(config)
    assert count_export_macs(model, inputs) == pytest.approx(count_macs(model, inputs).total, rel=0.01)


def test_over_budget_preset_exits_1(capsys):
    assert main(["profile", "uhd-teacher", "--budget", "50", "--no-fvcore"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "GMAC over the 50 GMAC budget" in last and "costliest view resize:1080x1920" in last


def test_json_output(capsys):
    assert main(["profile", "mobilenetv3-small-uhd", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("macs", "params", "budget", "within_budget", "per_view", "fvcore_macs", "other_ops",
                "peak_activation_bytes", "source"):
        assert key in data
    assert data["within_budget"] is True and data["budget"] == 50_000_000_000
    assert data["source"] == "3840x2160" and data["fvcore_macs"] == pytest.approx(data["macs"], rel=0.01)
    assert main(["profile", "mobilenetv3-small-uhd", "--budget", "0.5", "--json", "--no-fvcore"]) == 1
    assert json.loads(capsys.readouterr().out)["within_budget"] is False


def test_checkpoint_is_profiled_by_its_config(tmp_path, capsys):
    from edge_iqa.checkpoint import save_checkpoint

    config = get_preset("demo-student")
    path = save_checkpoint(tmp_path / "student.pt", build_model(config))
    assert main(["profile", str(path), "--json", "--no-fvcore"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == profile_config(config, fvcore=False).macs


def test_unknown_model_is_one_line_exit_2(capsys):
    assert main(["profile", "no-such-model-xyz"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_budget_gate_refuses_an_over_budget_student_only():
    teacher = get_preset("uhd-teacher")
    assert ensure_within_budget(teacher, allow_over_budget=False) is None  # teachers are exempt
    heavy_student = teacher.replace(name="heavy-student", role="student")
    with pytest.raises(EdgeIQAError, match=r"over the 50 GMAC budget; costliest view resize:1080x1920.*--allow-over-budget"):
        ensure_within_budget(heavy_student, allow_over_budget=False)
    with pytest.warns(UserWarning, match="--allow-over-budget"):
        assert not ensure_within_budget(heavy_student, allow_over_budget=True).within
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ensure_within_budget(get_preset("aim-baseline"), allow_over_budget=False).within


def test_fit_fills_the_budget_and_keeps_aspects():
    config = get_preset("demo-student").replace(  # about 0.09 GMAC at 512x384
        views=(ViewConfig("resize", size=(192, 256)), ViewConfig("fragments", grid=4, patch=48)))
    fitted = fit_to_budget(config, budget_gmac=0.05)
    verdict = check_budget(profile_config(fitted, fvcore=False, details=False), 0.05)
    assert verdict.within and verdict.macs > 0.9 * verdict.budget_macs
    resize, fragments = fitted.views
    assert resize.kind == "resize" and resize.size[0] * 4 == resize.size[1] * 3 and resize.size[0] < 192
    assert fragments.kind == "fragments" and fragments.patch == 48 and fragments.grid <= 4
    full = get_preset("demo-teacher").replace(views=(ViewConfig("full"),))
    teacher = fit_to_budget(full, budget_gmac=1.0)  # a full view becomes a resize
    assert [v.kind for v in teacher.views] == ["resize"] and teacher.views[0].size[0] * 4 == teacher.views[0].size[1] * 3


def test_fit_command_prints_a_loadable_config(capsys):
    from edge_iqa.config import ModelConfig

    assert main(["profile", "aim-baseline", "--fit", "--budget", "2"]) == 0
    fitted = ModelConfig.from_json(capsys.readouterr().out)
    assert fitted.views[0].size[0] < 720
    assert profile_config(fitted, fvcore=False).macs <= 2e9


def test_source_is_width_by_height():
    assert parse_source("3840x2160") == (2160, 3840)
    with pytest.raises(EdgeIQAError, match="center_crop:1080x1080"):
        profile_config(get_preset("uhd-teacher"), (720, 1280), fvcore=False)
    full = get_preset("demo-teacher").replace(views=(ViewConfig("full"),))
    assert math.isclose(profile_config(full, (480, 640), fvcore=False).macs,
                        profile_timm_classifier("resnet18", (480, 640), fvcore=False).macs, rel_tol=0.01)
