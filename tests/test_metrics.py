import math
import warnings

import numpy as np
import pytest
from scipy import stats

from edge_iqa import metrics as M
from edge_iqa.errors import EdgeIQAError


def _data(seed, n=60, ties=False):
    rng = np.random.default_rng(seed)
    target = rng.uniform(0, 1, n)
    pred = target + rng.normal(0, 0.3, n)
    if ties:
        target = np.round(target, 1)
        pred = np.round(pred, 1)
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_scipy(seed, ties):
    pred, target = _data(seed, ties=ties)
    assert M.srcc(pred, target) == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-12)
    assert M.plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target).statistic, abs=1e-12)
    assert M.krcc(pred, target) == pytest.approx(stats.kendalltau(pred, target).statistic, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_matches_scipy_rankdata(seed):
    a = np.random.default_rng(seed).integers(0, 6, 50).astype(float)
    assert M._rank(a) == pytest.approx(stats.rankdata(a))
    assert M._rank(np.array([3.0])) == pytest.approx([1.0])


def test_inputs_are_array_like_and_results_python_types():
    out = M.iqa_metrics([1, 2, 3, 4, 5], (2.0, 1.0, 4.0, 3.0, 5.0))
    assert set(out) == {"srcc", "plcc", "plcc_fitted", "krcc", "mae", "rmse", "n"}
    assert type(out["n"]) is int and out["n"] == 5
    for key in ("srcc", "plcc", "plcc_fitted", "krcc", "mae", "rmse"):
        assert type(out[key]) is float
    # column vectors are flattened
    assert M.srcc(np.arange(5.0)[:, None], np.arange(5.0)) == pytest.approx(1.0)


def test_mae_rmse_by_hand():
    pred = [1.0, 2.0, 4.0, 0.0]
    target = [2.0, 2.0, 1.0, 0.0]
    # |errors| = 1, 0, 3, 0
    assert M.mae(pred, target) == pytest.approx(4 / 4)
    assert M.rmse(pred, target) == pytest.approx(math.sqrt((1 + 0 + 9 + 0) / 4))


def test_logistic4_shape():
    x = np.array([-1e6, 0.5, 1e6])
    y = M.logistic4(x, 5.0, 1.0, 0.5, -0.8)  # |b4| is used
    assert y == pytest.approx([1.0, 3.0, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.all(np.isfinite(M.logistic4(np.array([-1e308, 1e308]), 1, 0, 0, 1e-300)))


def test_fit_logistic4_recovers_parameters():
    rng = np.random.default_rng(0)
    x = np.linspace(-3, 3, 300)
    true = (5.0, 1.0, 0.5, 0.8)
    y = M.logistic4(x, *true) + rng.normal(0, 0.01, x.size)
    b1, b2, b3, b4 = M.fit_logistic4(x, y)
    assert b1 == pytest.approx(5.0, abs=0.05)
    assert b2 == pytest.approx(1.0, abs=0.05)
    assert b3 == pytest.approx(0.5, abs=0.05)
    assert abs(b4) == pytest.approx(0.8, abs=0.05)


def test_fit_logistic4_decreasing_relation():
    x = np.linspace(0, 10, 100)
    y = M.logistic4(x, 0.0, 4.0, 5.0, 1.0)  # decreasing: 4 -> 0
    mapped = M.logistic4(x, *M.fit_logistic4(x, y))
    assert np.max(np.abs(mapped - y)) < 1e-3


def test_plcc_fitted_beats_plcc_on_monotone_nonlinear():
    rng = np.random.default_rng(1)
    pred = rng.uniform(-4, 4, 200)
    target = 1.0 / (1.0 + np.exp(-2.0 * pred)) + rng.normal(0, 0.02, pred.size)
    raw = M.plcc(pred, target)
    fitted = M.plcc_fitted(pred, target)
    assert fitted >= raw
    assert fitted > 0.99 > raw


def test_fit_logistic4_falls_back_to_line_without_raising():
    # fewer samples than parameters: no curve_fit, the least-squares line instead
    x = np.array([0.0, 1.0, 2.0])
    y = np.array([1.0, 3.0, 5.0])
    params = M.fit_logistic4(x, y)
    assert M.logistic4(x, *params) == pytest.approx(y, abs=1e-5)
    # constant target: a constant map
    params = M.fit_logistic4([1, 2, 3, 4, 5], [2, 2, 2, 2, 2])
    assert M.logistic4(np.arange(5.0), *params) == pytest.approx(np.full(5, 2.0))
    # pure noise still returns finite parameters
    rng = np.random.default_rng(3)
    assert np.all(np.isfinite(M.fit_logistic4(rng.normal(size=30), rng.normal(size=30))))


def test_constant_predictions_and_tiny_inputs_give_zero_without_warnings():
    target = [1.0, 2.0, 3.0, 4.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = M.iqa_metrics([0.3] * 4, target)
        for key in ("srcc", "plcc", "plcc_fitted", "krcc"):
            assert out[key] == 0.0
        assert out["mae"] == pytest.approx(np.mean(np.abs(0.3 - np.array(target))))
        out = M.iqa_metrics([0.1, 0.2, 0.3, 0.4], [5.0] * 4)  # constant target
        assert out["srcc"] == out["plcc"] == out["krcc"] == out["plcc_fitted"] == 0.0
        one = M.iqa_metrics([0.5], [0.7])
        assert one["n"] == 1 and one["srcc"] == 0.0 and one["plcc"] == 0.0
        assert one["mae"] == pytest.approx(0.2)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_raise(bad):
    with pytest.raises(EdgeIQAError, match="non-finite"):
        M.iqa_metrics([0.1, bad, 0.3], [1.0, 2.0, 3.0])
    with pytest.raises(EdgeIQAError, match="target"):
        M.srcc([0.1, 0.2, 0.3], [1.0, 2.0, bad])


def test_invalid_inputs_raise_one_line_errors():
    for call in (
        lambda: M.plcc([1, 2, 3], [1, 2]),
        lambda: M.mae([], []),
        lambda: M.rmse(["a", "b"], [1, 2]),
        lambda: M.relaxed_srcc([1, 2], [1, 2], -0.1),
        lambda: M.sequence_srcc([1, 2], [1, 2], [0]),
    ):
        with pytest.raises(EdgeIQAError) as info:
            call()
        assert "\n" not in str(info.value)


def test_aim_rank_score_hand_worked():
    results = {
        "A": {"mae": 0.10, "rmse": 0.15, "plcc": 0.90, "srcc": 0.88, "krcc": 0.70},
        "B": {"mae": 0.12, "rmse": 0.15, "plcc": 0.92, "srcc": 0.85, "krcc": 0.70},
        "C": {"mae": 0.20, "rmse": 0.25, "plcc": 0.80, "srcc": 0.80, "krcc": 0.60},
    }
    # ranks (1 = best):  mae   rmse  plcc  srcc  krcc
    #   A                1     1.5   2     1     1.5   -> 7 / 5
    #   B                2     1.5   1     2     1.5   -> 8 / 5
    #   C                3     3     3     3     3     -> 15 / 5
    scores = M.aim_rank_score(results)
    assert scores == pytest.approx({"A": 1.4, "B": 1.6, "C": 3.0})
    assert all(type(v) is float for v in scores.values())


def test_aim_rank_score_nan_ranks_last_and_missing_metric_raises():
    results = {
        "A": {"mae": 0.1, "rmse": 0.1, "plcc": math.nan, "srcc": 0.9, "krcc": 0.8},
        "B": {"mae": 0.2, "rmse": 0.2, "plcc": 0.5, "srcc": 0.8, "krcc": 0.7},
    }
    # A: 1, 1, 2 (NaN last), 1, 1 -> 6 / 5; B: 2, 2, 1, 2, 2 -> 9 / 5
    assert M.aim_rank_score(results) == pytest.approx({"A": 1.2, "B": 1.8})
    assert M.aim_rank_score({}) == {}
    with pytest.raises(EdgeIQAError, match="krcc"):
        M.aim_rank_score({"A": {"mae": 0.1, "rmse": 0.1, "plcc": 0.5, "srcc": 0.5}})


def test_aim_rank_score_accepts_iqa_metrics_output():
    pred, target = _data(0)
    good = M.iqa_metrics(target + 0.01, target)
    bad = M.iqa_metrics(pred, target)
    assert M.aim_rank_score({"good": good, "bad": bad}) == {"good": 1.0, "bad": 2.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relaxed_srcc_threshold_zero_is_spearman(seed):
    pred, target = _data(seed, n=40, ties=True)  # ties in the target as well
    assert M.relaxed_srcc(pred, target, 0.0) == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-12)


def test_relaxed_srcc_hand_computed():
    target = [0.10, 0.12, 0.50, 0.55, 0.90]
    pred = [2.0, 1.0, 3.0, 4.0, 5.0]
    # threshold 0.05 groups {0.10, 0.12} and {0.50, 0.55} (0.55 - 0.50 is 0.05 up to rounding)
    # relaxed target ranks: 1.5, 1.5, 3.5, 3.5, 5; pred ranks: 2, 1, 3, 4, 5
    # deviations: (-1.5, -1.5, .5, .5, 2) and (-1, -2, 0, 1, 2): cov 9, vars 9 and 10
    assert M.relaxed_srcc(pred, target, 0.05) == pytest.approx(9 / math.sqrt(90))
    assert M.relaxed_srcc(pred, target, 0.0) == pytest.approx(0.9)  # 1 - 6*2/(5*24)
    # everything in one group: the relaxed target is constant -> 0.0
    assert M.relaxed_srcc(pred, target, 1.0) == 0.0


def test_relaxed_grouping_is_anchored_at_first_member():
    # 0.00, 0.04, 0.08 at threshold 0.05: groups {0, 0.04} and {0.08}, no chaining
    relaxed = M._relax(np.array([0.08, 0.0, 0.04]), 0.05)
    assert relaxed == pytest.approx([0.08, 0.02, 0.02])
    # relaxed_srcc is Spearman against that relaxed target
    assert M.relaxed_srcc([3.0, 2.0, 1.0], [0.08, 0.0, 0.04], 0.05) == pytest.approx(
        stats.spearmanr([3, 2, 1], [2, 1, 1]).statistic
    )


def test_sequence_srcc_averages_valid_sequences():
    pred = [1, 2, 3, 3, 2, 1, 1, 3, 2, 7, 1, 2]
    target = [1, 2, 3, 1, 2, 3, 1, 2, 3, 5, 4, 4]
    ids = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d", "e", "e"]
    # a: +1, b: -1, c: 1 - 6*2/(3*8) = 0.5, d: one frame (skipped), e: constant target (skipped)
    assert M.sequence_srcc(pred, target, ids) == pytest.approx((1 - 1 + 0.5) / 3)
    # a threshold of 1 merges 1 and 2 within each sequence: c becomes (1, 3, 2) vs (1.5, 1.5, 3)
    expected_c = stats.spearmanr([1, 3, 2], [1.5, 1.5, 3]).statistic
    expected = (stats.spearmanr([1, 2, 3], [1.5, 1.5, 3]).statistic
                + stats.spearmanr([3, 2, 1], [1.5, 1.5, 3]).statistic + expected_c) / 3
    assert M.sequence_srcc(pred, target, ids, threshold=1.0) == pytest.approx(expected)
    # no valid sequence -> NaN
    assert math.isnan(M.sequence_srcc([1, 2], [1, 1], [0, 0]))
    assert math.isnan(M.sequence_srcc(pred, target, ids, threshold=10.0))


def test_burst_metrics_keys():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(10), 5)
    target = rng.uniform(0, 1, ids.size)
    out = M.burst_metrics(target, target, ids)
    assert set(out) == {"srcc_r0", "srcc_r0.02", "srcc_r0.05", "srcc_r0.1", "n_sequences", "n_frames"}
    assert out["n_sequences"] == 10 and out["n_frames"] == 50
    assert out["srcc_r0"] == pytest.approx(1.0)
    for t in (0.0, 0.02, 0.05, 0.1):
        assert out[f"srcc_r{t:g}"] == pytest.approx(M.sequence_srcc(target, target, ids, t))
    pred = target + rng.normal(0, 0.05, ids.size)
    out = M.burst_metrics(pred, target, ids)
    assert all(-1.0 <= out[k] <= 1.0 for k in ("srcc_r0", "srcc_r0.02", "srcc_r0.05", "srcc_r0.1"))


def test_pairwise_accuracy_hand_cases():
    a = [1.0, 2.0, 3.0, 4.0]
    b = [0.0, 3.0, 3.0, 1.0]
    # a>b & prefer a: right; a<b & prefer a: wrong; tie: half; a>b & prefer b: wrong
    assert M.pairwise_accuracy(a, b, [True, True, False, False]) == pytest.approx(1.5 / 4)
    # probabilities: 0.9 -> a, 0.2 -> b (right), 0.5 -> not a (tie still half), 0.1 -> b (wrong)
    assert M.pairwise_accuracy(a, b, [0.9, 0.2, 0.5, 0.1]) == pytest.approx(2.5 / 4)
    assert M.pairwise_accuracy([1.0], [0.0], np.array([True])) == 1.0
    with pytest.raises(EdgeIQAError):
        M.pairwise_accuracy(a, b, [1.5, 0, 0, 0])
    with pytest.raises(EdgeIQAError):
        M.pairwise_accuracy(a, b, [True, False])


def test_pairwise_accuracy_from_scores():
    pred = [1.0, 2.0, 3.0, 2.0, 1.0]
    target = [1.0, 2.0, 2.0, 1.0, 2.0]
    ids = [0, 0, 0, 1, 1]
    # seq 0: (0,1) right, (0,2) right, (1,2) equal targets skipped; seq 1: (3,4) wrong -> 2/3
    assert M.pairwise_accuracy_from_scores(pred, target, ids) == pytest.approx(2 / 3)
    assert M.pairwise_accuracy_from_scores([1, 1], [1, 2], [0, 0]) == 0.5  # prediction tie
    assert math.isnan(M.pairwise_accuracy_from_scores([1, 2, 3], [1, 1, 5], [0, 0, 1]))
