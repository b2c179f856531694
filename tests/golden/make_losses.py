"""Regenerate ``losses.json``: golden values of every registered loss on fixed inputs.

    .venv/bin/python tests/golden/make_losses.py

The values come from the NumPy/SciPy reference implementations below, written from the
papers' equations and independent of ``distill/losses.py`` (no torch here), on inputs drawn
once from ``numpy.random.default_rng(20240611)`` and stored in the JSON. Projections of the
feature losses get the fixed weights stored alongside. ``tests/test_losses_golden.py`` loads
the torch losses with those weights and checks they give these numbers.

Sources of the formulas: MSE/L1; PLCC loss 1 − Pearson (Li et al., ACM MM 2020); margin rank
loss (mean hinge over ordered pairs); fidelity loss over Thurstone pair probabilities (Tsai et
al., SIGIR 2007; Zhang et al., TIP 2021); FitNets hint, MSE after a learned regressor (Romero
et al., ICLR 2015, Eq. 3 up to the constant ½ and a mean); similarity-preserving KD (Tung &
Mori, ICCV 2019, Eq. 2–4); heterogeneous relational KD of the burst paper (Liang et al.,
"Burst Image Quality Assessment", 2025, Eq. 4–8: similarity and difference maps, teacher
projected into the student space, softmax, element-wise binary KL); and its burst terms: the
ranking loss within each burst (Eq. 13–14: frames grouped by target with ties closer than
0.02, ReLU((S_i − S_j) − (Ŝ_i − Ŝ_j)) over pairs of different groups with S_i > S_j) and the
relational loss against each burst's own reference frame (frame 0), on bursts of shape
(bursts, tasks, frames) with a mask that leaves out the reference and a padded frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.special import ndtr

HERE = Path(__file__).resolve().parent
SEED = 20240611
B = 6


def pearson(a, b, eps=1e-8):
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + eps)


def margin_rank(pred, target, margin=0.0):
    losses = [max(0.0, margin - np.sign(target[i] - target[j]) * (pred[i] - pred[j]))
              for i in range(len(pred)) for j in range(i + 1, len(pred)) if target[i] != target[j]]
    return float(np.mean(losses))


def fidelity(pred, target, eps=1e-8):
    scale = np.sqrt(2.0) * max(np.std(pred, ddof=1), 1e-3)
    values = []
    for i in range(len(pred)):
        for j in range(i + 1, len(pred)):
            p = ndtr((pred[i] - pred[j]) / scale)
            q = (np.sign(target[i] - target[j]) + 1) / 2
            values.append(1 - np.sqrt(p * q + eps) - np.sqrt((1 - p) * (1 - q) + eps))
    return float(np.mean(values))


def conv1x1(x, weight, bias):
    """(B, Cin, H, W) or (B, Cin) through out = W·x + b per position."""
    if x.ndim == 2:
        return x @ weight.T + bias
    return np.einsum("oc,bchw->bohw", weight, x) + bias[None, :, None, None]


def similarity_preserving(s, t):
    def gram(x):
        x = x.reshape(len(x), -1)
        g = x @ x.T
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)

    return float(((gram(s) - gram(t)) ** 2).sum() / len(s) ** 2)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def binary_kl(p, q, eps=1e-8):
    p, q = np.clip(p, eps, 1 - eps), np.clip(q, eps, 1 - eps)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def hetero_relational(s, t, weight, bias):
    """Reference of each sample = the previous sample of the batch (np.roll by one)."""
    s_ref, t_ref = np.roll(s, 1, axis=0), np.roll(t, 1, axis=0)
    total = 0.0
    for s_map, t_map in ((s_ref * s, t_ref * t), (s_ref - s, t_ref - t)):
        t_map = conv1x1(t_map, weight, bias)
        # bilinear resize of a 1×1 map (align_corners=False) replicates its value
        t_map = np.broadcast_to(t_map, t_map.shape[:2] + s_map.shape[2:])
        p_t = softmax(t_map.reshape(len(t_map), -1))
        p_s = softmax(s_map.reshape(len(s_map), -1))
        total += binary_kl(p_t, p_s).sum(axis=1).mean()
    return float(total)


def burst_groups(values, threshold):
    """Sorted ascending; a group starts at its first value and takes later values within threshold."""
    groups, group, first = np.zeros(len(values), dtype=int), -1, None
    for i in np.argsort(values, kind="stable"):
        if first is None or values[i] - first > threshold * (1 + 1e-9):
            group, first = group + 1, values[i]
        groups[i] = group
    return groups


def burst_rank(pred, target, mask, threshold=0.02):
    """pred, target (bursts, tasks, T); mask (bursts, T) of the frames that count."""
    hinges = []
    for b in range(pred.shape[0]):
        frames = np.flatnonzero(mask[b])
        for m in range(pred.shape[1]):
            p, t = pred[b, m, frames], target[b, m, frames]
            g = burst_groups(t, threshold)
            for i in range(len(t)):
                for j in range(len(t)):
                    if g[i] != g[j] and t[i] > t[j]:
                        hinges.append(max(0.0, (t[i] - t[j]) - (p[i] - p[j])))
    return float(np.mean(hinges))


def burst_relational(s, t, mask, weight, bias):
    """s (bursts, T, C, H, W), t (bursts, T, C', 1, 1): each frame against its burst's frame 0."""
    values = []
    for b, f in zip(*np.nonzero(mask)):
        total = 0.0
        for s_map, t_map in ((s[b, 0] * s[b, f], t[b, 0] * t[b, f]), (s[b, 0] - s[b, f], t[b, 0] - t[b, f])):
            t_map = conv1x1(t_map[None], weight, bias)[0]
            t_map = np.broadcast_to(t_map, t_map.shape[:1] + s_map.shape[1:])
            p_t, p_s = softmax(t_map.reshape(1, -1)), softmax(s_map.reshape(1, -1))
            total += binary_kl(p_t, p_s).sum()
        values.append(total)
    return float(np.mean(values))


def main() -> None:
    rng = np.random.default_rng(SEED)
    pred = rng.uniform(0, 1, B)
    target = rng.uniform(0, 1, B)
    teacher = np.clip(target + rng.normal(0, 0.1, B), 0, 1)
    s_vec, t_vec = rng.normal(size=(B, 5)), rng.normal(size=(B, 3))
    s_map, t_map = rng.normal(size=(B, 4, 2, 2)), rng.normal(size=(B, 3, 2, 2))
    t_map1 = rng.normal(size=(B, 3, 1, 1))  # a coarser teacher map for the resize path
    w_vec, b_vec = rng.normal(size=(3, 5)) * 0.5, rng.normal(size=3) * 0.1  # student 5 -> teacher 3
    w_map, b_map = rng.normal(size=(3, 4)) * 0.5, rng.normal(size=3) * 0.1  # student 4 -> teacher 3
    w_rel, b_rel = rng.normal(size=(4, 3)) * 0.5, rng.normal(size=4) * 0.1  # teacher 3 -> student 4
    # bursts: 2 bursts x 2 tasks x 5 frames; frame 0 is the reference, burst 1 has a padded last frame
    burst_target = rng.uniform(0, 1, (2, 2, 5))
    burst_target[0, 0, 2] = burst_target[0, 0, 1] + 0.015  # a tie (closer than 0.02)
    burst_target[1, 1, 3] = burst_target[1, 1, 2] - 0.01  # another
    burst_pred = rng.uniform(0, 1, (2, 2, 5))
    frame_mask = np.array([[False, True, True, True, True], [False, True, True, True, False]])
    burst_s_map, burst_t_map = rng.normal(size=(2, 5, 4, 2, 2)), rng.normal(size=(2, 5, 3, 1, 1))
    w_burst, b_burst = rng.normal(size=(4, 3)) * 0.5, rng.normal(size=4) * 0.1  # teacher 3 -> student 4

    expected = {
        "mse": float(np.mean((pred - target) ** 2)),
        "l1": float(np.mean(np.abs(pred - target))),
        "plcc": float(1 - pearson(pred, target)),
        "rank": margin_rank(pred, target),
        "fidelity": fidelity(pred, target),
        "kd_mse": float(np.mean((pred - teacher) ** 2)),
        "kd_l1": float(np.mean(np.abs(pred - teacher))),
        "kd_rank": margin_rank(pred, teacher),
        "kd_fidelity": fidelity(pred, teacher),
        "hint": float(np.mean((conv1x1(s_map, w_map, b_map) - t_map) ** 2)),
        "head_mse": float(np.mean((conv1x1(s_vec, w_vec, b_vec) - t_vec) ** 2)),
        "relational": similarity_preserving(s_vec, t_vec),
        "relational_maps": similarity_preserving(s_map, t_map),
        "hetero_relational": hetero_relational(s_map, t_map1, w_rel, b_rel),
        "burst_rank": burst_rank(burst_pred, burst_target, frame_mask),
        "burst_relational": burst_relational(burst_s_map, burst_t_map, frame_mask, w_burst, b_burst),
    }
    inputs = {name: value.tolist() for name, value in {
        "pred": pred, "target": target, "teacher_pred": teacher, "student_vec": s_vec, "teacher_vec": t_vec,
        "student_map": s_map, "teacher_map": t_map, "teacher_map_1x1": t_map1,
        "w_vec": w_vec, "b_vec": b_vec, "w_map": w_map, "b_map": b_map, "w_rel": w_rel, "b_rel": b_rel,
        "burst_target": burst_target, "burst_pred": burst_pred, "frame_mask": frame_mask,
        "burst_student_map": burst_s_map, "burst_teacher_map": burst_t_map, "w_burst": w_burst,
        "b_burst": b_burst}.items()}
    golden = {"source": "tests/golden/make_losses.py (NumPy/SciPy references; see its docstring)", "seed": SEED,
              "inputs": inputs, "expected": expected}
    (HERE / "losses.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
