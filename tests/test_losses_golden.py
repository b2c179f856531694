"""Every registered loss against golden values, plus hand-checked cases and the registry's errors.

Golden values: ``tests/golden/losses.json``, made by ``tests/golden/make_losses.py`` from NumPy/
SciPy reference implementations of the papers' equations (independent of ``distill/losses.py``)
on fixed inputs stored in the same file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from distill.losses import (LOSSES, FeatureLoss, LossInputs, WeightedLoss, binary_kl, get_loss, hetero_relational_kd,
                            parse_loss_terms)
from edge_iqa.errors import EdgeIQAError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "losses.json").read_text())
T = {name: torch.tensor(value, dtype=torch.float64) for name, value in GOLDEN["inputs"].items()}
EXPECTED = GOLDEN["expected"]


def _inputs(**features) -> LossInputs:
    return LossInputs(pred=T["pred"], target=T["target"], teacher_pred=T["teacher_pred"],
                      student_features={"pair": features["s"]} if features else {},
                      teacher_features={"pair": features["t"]} if features else {})


def _set_projection(loss: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    loss.double()
    with torch.no_grad():
        loss.project.weight.copy_(weight.view(loss.project.weight.shape))
        loss.project.bias.copy_(bias)


def _feature_loss(name: str, s: torch.Tensor, t: torch.Tensor) -> FeatureLoss:
    return get_loss(name, key="pair", student_shape=tuple(s.shape[1:]), teacher_shape=tuple(t.shape[1:]))


def _burst_inputs(**features) -> LossInputs:
    mask = T["frame_mask"].bool()
    x = LossInputs.bursts(T["burst_pred"], T["burst_target"], mask)
    if features:
        x.student_features, x.teacher_features = {"pair": features["s"]}, {"pair": features["t"]}
    return x


def _golden_value(case: str) -> float:
    if case == "hint":
        s, t = T["student_map"], T["teacher_map"]
        loss = _feature_loss("hint", s, t)
        _set_projection(loss, T["w_map"], T["b_map"])
        return float(loss(_inputs(s=s, t=t)))
    if case == "head_mse":
        s, t = T["student_vec"], T["teacher_vec"]
        loss = _feature_loss("head_mse", s, t)
        _set_projection(loss, T["w_vec"], T["b_vec"])
        return float(loss(_inputs(s=s, t=t)))
    if case in ("relational", "relational_maps"):
        s, t = (T["student_vec"], T["teacher_vec"]) if case == "relational" else (T["student_map"], T["teacher_map"])
        return float(_feature_loss("relational", s, t)(_inputs(s=s, t=t)))
    if case == "hetero_relational":
        s, t = T["student_map"], T["teacher_map_1x1"]
        loss = _feature_loss("hetero_relational", s, t)
        _set_projection(loss, T["w_rel"], T["b_rel"])
        return float(loss(_inputs(s=s, t=t)))
    if case == "burst_rank":
        return float(get_loss("burst_rank")(_burst_inputs()))
    if case == "burst_relational":
        s, t = T["burst_student_map"], T["burst_teacher_map"]
        loss = get_loss("burst_relational", key="pair", student_shape=tuple(s.shape[2:]), teacher_shape=tuple(t.shape[2:]))
        _set_projection(loss, T["w_burst"], T["b_burst"])
        return float(loss(_burst_inputs(s=s, t=t)))
    return float(get_loss(case)(_inputs()))


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_loss_matches_golden_value(case):
    with torch.no_grad():
        value = _golden_value(case)
    assert value == pytest.approx(EXPECTED[case], rel=1e-9, abs=1e-12)


def test_every_registered_loss_has_a_golden_value():
    assert set(LOSSES) <= set(EXPECTED), "add the new loss to tests/golden/make_losses.py and regenerate"


@pytest.mark.parametrize("name, pred, target, value", [
    ("mse", [0.0, 1.0], [1.0, 1.0], 0.5),  # (1 + 0) / 2
    ("l1", [0.2, 0.6], [0.4, 0.2], 0.3),  # (0.2 + 0.4) / 2
    ("plcc", [0.1, 0.2, 0.3], [1.0, 2.0, 3.0], 0.0),  # perfectly linear
    ("rank", [0.1, 0.2, 0.3], [1.0, 2.0, 3.0], 0.0),  # every pair in order
    ("rank", [0.3, 0.2], [0.0, 1.0], 0.1),  # one pair, wrong way round by 0.1
])
def test_hand_checked_values(name, pred, target, value):
    x = LossInputs(pred=torch.tensor(pred, dtype=torch.float64), target=torch.tensor(target, dtype=torch.float64))
    assert float(get_loss(name)(x)) == pytest.approx(value, abs=1e-7)


def test_feature_losses_vanish_when_the_student_matches_the_teacher():
    torch.manual_seed(0)
    maps = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    for name in ("hint", "hetero_relational"):
        loss = _feature_loss(name, maps, maps)
        _set_projection(loss, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
        assert float(loss(_inputs(s=maps, t=maps)).detach()) == pytest.approx(0.0, abs=1e-10)
    assert float(_feature_loss("relational", maps, maps * 3)(_inputs(s=maps, t=maps * 3))) == pytest.approx(0.0, abs=1e-12)
    p = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(binary_kl(p, p), torch.zeros(3), atol=1e-7)


def test_hetero_relational_is_general_enough_for_burst_reference_frames():
    """The burst issue passes each frame's reference frame explicitly (no batch roll)."""
    torch.manual_seed(0)
    s_ref, s = torch.randn(4, 8, 3, 3), torch.randn(4, 8, 3, 3)
    t_ref, t = torch.randn(4, 16, 6, 6), torch.randn(4, 16, 6, 6)
    project = torch.nn.Conv2d(16, 8, 1)
    value = hetero_relational_kd(s_ref, s, t_ref, t, project)
    value.backward()
    assert math.isfinite(value.item()) and value.item() > 0
    assert project.weight.grad is not None and project.weight.grad.abs().sum() > 0


def test_feature_loss_gradients_reach_projection_and_student():
    s = T["student_map"].clone().requires_grad_(True)
    loss = _feature_loss("hint", s, T["teacher_map"]).double()
    loss(_inputs(s=s, t=T["teacher_map"])).backward()
    assert s.grad.abs().sum() > 0 and loss.project.weight.grad.abs().sum() > 0


def test_teacher_terms_need_a_teacher():
    x = LossInputs(pred=T["pred"], target=T["target"])
    with pytest.raises(EdgeIQAError, match="needs teacher scores"):
        get_loss("kd_mse")(x)
    with pytest.raises(EdgeIQAError, match="needs a teacher"):
        WeightedLoss((("mse", 1.0), ("kd_rank", 1.0)))
    with pytest.raises(EdgeIQAError, match="teacher"):
        WeightedLoss((("hint", 1.0),), teacher=True)  # feature losses are built per feature pair


def test_weighted_loss_sums_terms_with_their_weights():
    total, parts = WeightedLoss((("mse", 2.0), ("kd_l1", 0.5)), teacher=True)(_inputs())
    assert float(total) == pytest.approx(2 * EXPECTED["mse"] + 0.5 * EXPECTED["kd_l1"], rel=1e-9)
    assert set(parts) == {"mse", "kd_l1"}


@pytest.mark.parametrize("specs, needle", [
    (["msee=1"], "unknown loss 'msee'"),
    (["mse=heavy"], "cannot parse loss"),
    (["mse=1", "mse=2"], "given twice"),
])
def test_parse_loss_terms_errors(specs, needle):
    with pytest.raises(EdgeIQAError, match=needle):
        parse_loss_terms(specs)
