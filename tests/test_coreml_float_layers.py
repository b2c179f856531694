"""``--float-layer`` for CoreML W8A8 (:mod:`export.float_modules`): stage names on the PyTorch model,
coremltools leaving them unquantized, the greedy search, and the CLI record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "student.pt"


@pytest.fixture(scope="module")
def student():
    from edge_iqa.checkpoint import load_checkpoint

    return load_checkpoint(FIXTURE)[0].eval()


@pytest.fixture(scope="module")
def batches(student):
    from edge_iqa.model import example_inputs

    generator = torch.Generator().manual_seed(0)
    return [tuple(torch.rand(v.repeat(4, 1, 1, 1).shape, generator=generator) for v in example_inputs(student.config))
            for _ in range(2)]


def test_stage_groups_and_patterns(student):
    from edge_iqa.errors import EdgeIQAError
    from export.float_modules import module_groups, resolve_float_modules

    groups = module_groups(student)
    assert {"head", "branches.0.stem", "branches.1.blocks.4"} <= set(groups)
    assert groups["branches.0.stem"][:2] == ["branches.0.conv_stem", "branches.0.bn1"]
    assert resolve_float_modules(student, ["head", "head.*"]) == ["head"]  # children go with their parent
    assert resolve_float_modules(student, ["branches.*.blocks.4"]) == ["branches.0.blocks.4", "branches.1.blocks.4"]
    with pytest.raises(EdgeIQAError, match="matches no stage or module"):
        resolve_float_modules(student, ["branches.7.nothing"])


def _quantize_ops(net) -> int:
    return net.code.count("quantize_per_tensor")


def test_float_modules_are_left_unquantized(student, batches):
    """coremltools quantizes fewer tensors with a stage in float, and with every stage in float the
    net's scores come closer to FP32 than with none."""
    from export.coreml import calibrate_w8a8
    from export.float_modules import module_groups

    every = [m for members in module_groups(student).values() for m in members]
    nets = {name: calibrate_w8a8(student, batches, float_modules=floats)[0]
            for name, floats in (("none", []), ("block", ["branches.0.blocks.4"]), ("every", every))}
    counts = {name: _quantize_ops(net) for name, net in nets.items()}
    assert counts["none"] > counts["block"] > counts["every"]
    with torch.no_grad():
        reference = torch.cat([student(*views) for views in batches])
        error = {name: (torch.cat([net(*views).reshape(-1) for views in batches]) - reference).abs().max().item()
                 for name, net in nets.items()}
    assert error["every"] < error["none"] / 10


def test_search_adds_stages_within_the_mac_cap(student, batches):
    from export.float_modules import group_macs, module_groups, search_float_modules

    groups = module_groups(student)
    macs = group_macs(student, groups)
    share = 0.012  # two small stage groups fit: few trial calibrations
    assert 1 <= sum(m / sum(macs.values()) <= share for m in macs.values()) <= 3
    found, record = search_float_modules(student, student, batches, method="minmax", percentile=99.999,
                                         target=1.0, max_groups=2, max_float_mac_share=share)
    first, last = record["history"][0]["spearman_vs_fp32"], record["history"][-1]["spearman_vs_fp32"]
    assert last >= first and record["float_mac_share"] <= share and record["reached"] == (last >= 1.0)
    assert found == [m for g in record["groups"] for m in groups[g]]


def test_export_cli_coreml_float_layer(student, tmp_path, capsys, tiny_synth):
    from edge_iqa.cli import main

    out = tmp_path / "int8"
    code = main(["export", str(FIXTURE), "--format", "coreml", "--precision", "int8", "--calib", str(tiny_synth),
                 "--calib-images", "8", "--float-layer", "head", "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)["export"]
    assert code == 0 and report["info"]["float_modules"] == ["head"]
    readback = next(c for c in report["checks"] if c["name"] == "coreml_weights_readback")["detail"]
    head_layers = sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in student.head.modules())
    assert head_layers >= 1 and readback["int8_layers"] == readback["layers"] - head_layers


def test_float_layer_config_takes_coreml_int8_only_and_a_target_for_auto():
    from edge_iqa.errors import EdgeIQAError
    from export.formats import ExportConfig

    assert ExportConfig(format="coreml", precision="int8", float_layers=("auto",)).float_layers == ("auto",)
    with pytest.raises(EdgeIQAError, match="--float-layer applies to int8 ONNX, TensorRT and CoreML"):
        ExportConfig(format="coreml", precision="w8", float_layers=("head",))
    assert ExportConfig(format="onnx", precision="int8", float_layers=("auto",), float_target=0.999).float_target == 0.999
    with pytest.raises(EdgeIQAError, match="--float-target is the target of --float-layer auto"):
        ExportConfig(format="onnx", precision="int8", float_layers=("head",), float_target=0.999)
    with pytest.raises(EdgeIQAError, match=r"--float-target must be in \(0, 1\]"):
        ExportConfig(format="onnx", precision="int8", float_layers=("auto",), float_target=1.5)
