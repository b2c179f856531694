"""Training losses: small classes in one registry, combined as a weighted sum.

Every loss takes a :class:`LossInputs` and returns a scalar. Scores are in normalised units
([0, 1] over the dataset's score range) so weights transfer between datasets.

Ground-truth terms: MSE, L1; PLCC loss (1 − Pearson, as in Li et al., "Norm-in-Norm Loss with
Faster Convergence and Better Performance for Image Quality Assessment", ACM MM 2020); pairwise
margin ranking; and the fidelity loss of pairwise preference probabilities (Tsai et al.,
"FRank", SIGIR 2007; used for IQA by Zhang et al., "UNIQUE", TIP 2021).

Score distillation (``kd_*``): the same terms against the teacher's score instead of the label
(Hinton et al., "Distilling the Knowledge in a Neural Network", 2015, for regression).

Feature distillation (:class:`FeatureLoss`, one instance per teacher/student feature pair, see
``distill.features``): FitNets hints through a learned projection (Romero et al., "FitNets:
Hints for Thin Deep Nets", ICLR 2015), MSE of the pooled head features (MobileIQA, Chen et
al., 2024), similarity-preserving relational distillation of the batch's similarity structure
(Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019), and the burst
paper's heterogeneous relational loss (Liang et al., "Burst Image Quality Assessment", 2025,
Eq. 4–8): similarity map F_ref ⊙ F_i and difference map F_ref − F_i of teacher and student,
the teacher's maps projected into the student's space, softmax-normalised, compared by
element-wise binary KL (:func:`hetero_relational_kd`, reusable with burst reference frames).

Burst terms (the same paper): ``burst_rank``, its ranking loss within each burst (Eq. 13–14),
and ``burst_relational``, its relational distillation with each burst's own reference frame
(Eq. 4–8). For a burst model, ``LossInputs.bursts`` flattens the (B, tasks, T) scores to the
frames that count — the reference frame (frame 0) and padding are left out of every loss —
and records which burst and task each score belongs to (``sequence``); feature tensors of
burst models are per frame, (B, T, ...), with ``frame_mask`` saying which frames count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from edge_iqa.errors import EdgeIQAError

LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        LOSSES[name] = cls
        cls.registry_name = name
        return cls

    return add


def get_loss(name: str, **kwargs) -> nn.Module:
    if name not in LOSSES:
        raise EdgeIQAError(f"unknown loss {name!r}; choose from {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**kwargs)


@dataclass
class LossInputs:
    """What one training step gives the losses; distillation fills the teacher fields."""

    pred: torch.Tensor  # (B,) student scores, normalised units
    target: torch.Tensor  # (B,) ground truth (or pseudo-label), normalised units
    teacher_pred: torch.Tensor | None = None  # (B,) teacher scores, normalised units
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    sequence: torch.Tensor | None = None  # (B,) like pred, bursts: the burst and task each score belongs to
    frame_mask: torch.Tensor | None = None  # (bursts, T) bursts: frames that count (not reference, not padding)

    @classmethod
    def bursts(cls, pred: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> "LossInputs":
        """Inputs for bursts: ``pred`` and ``target`` (bursts, tasks, T), ``frame_mask`` (bursts, T).

        Scores are kept for the frames of ``frame_mask`` only, in (burst, task, frame) order
        (:func:`burst_frames`); ``sequence`` numbers each (burst, task) so that ranking terms
        compare frames of one burst for one task only.
        """
        bursts, tasks = pred.shape[:2]
        sequence = torch.arange(bursts * tasks, device=pred.device).view(bursts, tasks, 1).expand_as(pred)
        return cls(pred=burst_frames(pred, frame_mask), target=burst_frames(target, frame_mask),
                   sequence=burst_frames(sequence, frame_mask), frame_mask=frame_mask)


def burst_frames(values: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """(bursts, tasks, T) per-frame values → the 1-D values of the frames ``frame_mask`` keeps."""
    return values[frame_mask[:, None, :].expand_as(values)]


def _pairwise_sign(values: torch.Tensor) -> torch.Tensor:
    """sign(v_i − v_j) for every pair, (B, B)."""
    return torch.sign(values[:, None] - values[None, :])


def _upper_pairs(batch: int, device: torch.device) -> torch.Tensor:
    return torch.triu(torch.ones(batch, batch, dtype=torch.bool, device=device), diagonal=1)


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + eps)


def margin_rank(pred: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge over ordered pairs: pred must order every pair as target does, by ``margin``."""
    sign = _pairwise_sign(target)
    mask = _upper_pairs(len(pred), pred.device) & (sign != 0)
    if not mask.any():
        return pred.sum() * 0.0
    diff = pred[:, None] - pred[None, :]
    return torch.relu(margin - sign * diff)[mask].mean()


def fidelity(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Fidelity between Thurstone preference probabilities of pred and of target pairs."""
    mask = _upper_pairs(len(pred), pred.device)
    if not mask.any():
        return pred.sum() * 0.0
    normal = torch.distributions.Normal(0.0, 1.0)
    scale = 2.0 ** 0.5 * max(float(pred.detach().std()), 1e-3)
    p = normal.cdf((pred[:, None] - pred[None, :]) / scale)[mask]
    q = (_pairwise_sign(target)[mask] + 1) / 2
    return (1 - torch.sqrt(p * q + eps) - torch.sqrt((1 - p) * (1 - q) + eps)).mean()


@register_loss("mse")
class MSELoss(nn.Module):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return torch.mean((x.pred - x.target) ** 2)


@register_loss("l1")
class L1Loss(nn.Module):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return torch.mean(torch.abs(x.pred - x.target))


@register_loss("plcc")
class PLCCLoss(nn.Module):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return 1.0 - pearson(x.pred, x.target)


@register_loss("rank")
class RankLoss(nn.Module):
    def __init__(self, margin: float = 0.0):
        super().__init__()
        self.margin = margin

    def forward(self, x: LossInputs) -> torch.Tensor:
        return margin_rank(x.pred, x.target, self.margin)


@register_loss("fidelity")
class FidelityLoss(nn.Module):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return fidelity(x.pred, x.target)


BURST_TIE = 0.02  # score units: 0.1 dB under the burst datasets' label rule s = clip((Δ + 1 dB) / 5 dB, 0, 1)


def score_groups(target: torch.Tensor, threshold: float) -> torch.Tensor:
    """Group number of each value, numbered upwards: sorted ascending, a group starts at its
    first value and takes every later value within ``threshold`` of that first value (the tie
    rule of ``edge_iqa.metrics.relaxed_srcc``, the burst metrics' R_threshold)."""
    values = target.detach().tolist()
    groups = [0] * len(values)
    group, first = -1, None
    for i in sorted(range(len(values)), key=values.__getitem__):
        if first is None or values[i] - first > threshold * (1.0 + 1e-9):
            group, first = group + 1, values[i]
        groups[i] = group
    return torch.tensor(groups, device=target.device)


@register_loss("burst_rank")
class BurstRankLoss(nn.Module):
    """The burst paper's ranking loss (Liang et al. 2025, Eq. 13–14), within one burst only.

    The frames of each burst (for each task) are grouped by target score, frames closer than
    ``threshold`` counting as ties (:func:`score_groups`; default :data:`BURST_TIE` = 0.02 in
    score units, 0.1 dB of downstream PSNR under the label rule s = clip((Δ + 1 dB) / 5 dB,
    0, 1), the paper's "redundant frame" level). For every pair i, j of different groups
    with S_i > S_j the loss is ReLU((S_i − S_j) − (Ŝ_i − Ŝ_j)): the predicted gap must be at
    least the true one. The mean over all such pairs of the batch; reference frames never
    take part (``LossInputs.bursts`` leaves them out).
    """

    def __init__(self, threshold: float = BURST_TIE):
        super().__init__()
        self.threshold = threshold

    def forward(self, x: LossInputs) -> torch.Tensor:
        if x.sequence is None:
            raise EdgeIQAError("loss 'burst_rank' ranks frames within a burst; train a burst model on a burst dataset")
        hinges = []
        for burst in torch.unique(x.sequence):
            members = x.sequence == burst
            pred, target = x.pred[members], x.target[members]
            groups = score_groups(target, self.threshold)
            apart = groups[:, None] > groups[None, :]  # i in a higher group than j: S_i > S_j
            gap = (target[:, None] - target[None, :]) - (pred[:, None] - pred[None, :])
            hinges.append(torch.relu(gap)[apart])
        hinges = torch.cat(hinges) if hinges else x.pred.new_zeros(0)
        return hinges.mean() if hinges.numel() else x.pred.sum() * 0.0


# ---------------------------------------------------------------- score distillation


class TeacherScoreLoss(nn.Module):
    """Base of the ``kd_*`` terms: they compare the student's score with the teacher's."""

    needs_teacher = True

    def teacher(self, x: LossInputs) -> torch.Tensor:
        if x.teacher_pred is None:
            raise EdgeIQAError(f"loss {self.registry_name!r} needs teacher scores; train with `edge-iqa distill`")
        return x.teacher_pred


@register_loss("kd_mse")
class KDMSELoss(TeacherScoreLoss):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return torch.mean((x.pred - self.teacher(x)) ** 2)


@register_loss("kd_l1")
class KDL1Loss(TeacherScoreLoss):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return torch.mean(torch.abs(x.pred - self.teacher(x)))


@register_loss("kd_rank")
class KDRankLoss(TeacherScoreLoss):
    """Pairwise rank agreement: every pair ordered as the teacher orders it, by ``margin``."""

    def __init__(self, margin: float = 0.0):
        super().__init__()
        self.margin = margin

    def forward(self, x: LossInputs) -> torch.Tensor:
        return margin_rank(x.pred, self.teacher(x), self.margin)


@register_loss("kd_fidelity")
class KDFidelityLoss(TeacherScoreLoss):
    def forward(self, x: LossInputs) -> torch.Tensor:
        return fidelity(x.pred, self.teacher(x))


# ---------------------------------------------------------------- feature distillation


def projection(in_channels: int, out_channels: int, spatial: bool) -> nn.Module:
    """A learned linear map between channel counts: 1×1 conv for maps, Linear for vectors."""
    return nn.Conv2d(in_channels, out_channels, 1) if spatial else nn.Linear(in_channels, out_channels)


def similarity_preserving(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """‖norm(S Sᵀ) − norm(T Tᵀ)‖²_F / B² over the batch (Tung & Mori 2019, Eq. 2–4).

    Features of any shape are flattened per sample; ``norm`` L2-normalises each row, so the two
    sides may have different widths.
    """
    batch = student.shape[0]
    gram_s = F.normalize(student.flatten(1) @ student.flatten(1).T, dim=1)
    gram_t = F.normalize(teacher.flatten(1) @ teacher.flatten(1).T, dim=1)
    return ((gram_s - gram_t) ** 2).sum() / batch ** 2


def relation_maps(reference: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The burst paper's similarity map F_ref ⊙ F_i and difference map F_ref − F_i."""
    return reference * features, reference - features


def binary_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Element-wise KL between Bernoulli(p) and Bernoulli(q): p log(p/q) + (1−p) log((1−p)/(1−q))."""
    p = p.clamp(eps, 1 - eps)
    q = q.clamp(eps, 1 - eps)
    return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))


def hetero_relational_kd(student_ref: torch.Tensor, student: torch.Tensor, teacher_ref: torch.Tensor,
                         teacher: torch.Tensor, project: nn.Module | None = None,
                         temperature: float = 1.0) -> torch.Tensor:
    """Heterogeneous relational distillation of the burst paper (Eq. 4–8).

    ``*_ref`` are the features of each sample's reference (a burst's reference frame), the others
    of the samples themselves: (B, C) vectors or (B, C, H, W) maps, the teacher's with its own
    C, H, W. For each of the similarity and the difference map, the teacher's map is projected
    into the student's space (``project``: channels; bilinear resize: resolution), each map is
    softmax-normalised over all its elements per sample (at ``temperature``), and the element-
    wise binary KL(teacher ‖ student) is summed per sample. Returns the batch mean of
    KL_similarity + KL_difference.
    """
    total = student.new_zeros(())
    for s_map, t_map in zip(relation_maps(student_ref, student), relation_maps(teacher_ref, teacher)):
        if project is not None:
            t_map = project(t_map)
        if t_map.dim() == 4 and t_map.shape[2:] != s_map.shape[2:]:
            t_map = F.interpolate(t_map, size=s_map.shape[2:], mode="bilinear", align_corners=False)
        p_teacher = torch.softmax(t_map.flatten(1) / temperature, dim=1)
        p_student = torch.softmax(s_map.flatten(1) / temperature, dim=1)
        total = total + binary_kl(p_teacher, p_student).sum(dim=1).mean()
    return total


class FeatureLoss(nn.Module):
    """A loss over one named (student, teacher) feature pair, read from ``LossInputs``.

    ``key`` names the pair in ``student_features`` / ``teacher_features``; the shapes are those
    of one sample's features as the loss receives them — ``(C,)`` vectors or ``(C, H, W)`` maps
    — so a subclass can build its learned projection between the two. ``default_pairs`` says
    which features the loss pairs when the user names none: ``"head"`` (the pooled head
    features) or ``"maps"`` (the deepest feature map of every branch).
    """

    needs_teacher = True
    default_pairs = "maps"

    def __init__(self, key: str, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]):
        super().__init__()
        self.key = key
        self.student_shape = tuple(student_shape)
        self.teacher_shape = tuple(teacher_shape)

    per_burst = False  # True: compares frames with their burst's reference, takes (B, T, ...) features

    def pair(self, x: LossInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair's (student, teacher) features; of a burst model's, the frames that count
        (frame-major rows), unless the loss works ``per_burst``."""
        try:
            student, teacher = x.student_features[self.key], x.teacher_features[self.key]
        except KeyError:
            raise EdgeIQAError(f"loss {self.registry_name!r} needs the feature pair {self.key!r}; "
                               "train with `edge-iqa distill` and a teacher checkpoint") from None
        if x.frame_mask is not None and not self.per_burst:
            return student[x.frame_mask], teacher[x.frame_mask]
        return student, teacher

    def forward(self, x: LossInputs) -> torch.Tensor:
        return self.compare(*self.pair(x))

    def compare(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_loss("hint")
class HintLoss(FeatureLoss):
    """FitNets hint: MSE between the teacher's features and the student's, projected (learned)
    to the teacher's channels; maps arrive at one common grid, so resolutions may differ."""

    def __init__(self, key: str, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]):
        super().__init__(key, student_shape, teacher_shape)
        if len(self.student_shape) != len(self.teacher_shape):
            raise EdgeIQAError(f"feature pair {key!r}: cannot compare a {len(self.student_shape) - 1}-D student "
                               f"feature with a {len(self.teacher_shape) - 1}-D teacher feature; pool both alike")
        self.project = projection(self.student_shape[0], self.teacher_shape[0], len(self.student_shape) == 3)

    def compare(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return torch.mean((self.project(student) - teacher) ** 2)


@register_loss("head_mse")
class HeadMSELoss(HintLoss):
    """MobileIQA-style MSE of the pooled head features (the vector the quality head regresses)."""

    default_pairs = "head"


@register_loss("relational")
class RelationalLoss(FeatureLoss):
    """Similarity-preserving distillation: the batch's pairwise similarity structure."""

    default_pairs = "head"

    def compare(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return similarity_preserving(student, teacher)


@register_loss("hetero_relational")
class HeteroRelationalLoss(FeatureLoss):
    """:func:`hetero_relational_kd` on single images: each photo's reference is the previous
    photo of the batch (``roll`` by one), so the relation maps compare photos with each other;
    the teacher is projected into the student's channels by a learned 1×1 conv / Linear."""

    def __init__(self, key: str, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...],
                 temperature: float = 1.0):
        super().__init__(key, student_shape, teacher_shape)
        self.project = projection(self.teacher_shape[0], self.student_shape[0], len(self.teacher_shape) == 3)
        self.temperature = temperature

    def compare(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return hetero_relational_kd(student.roll(1, 0), student, teacher.roll(1, 0), teacher, self.project,
                                    self.temperature)


@register_loss("burst_relational")
class BurstRelationalLoss(FeatureLoss):
    """:func:`hetero_relational_kd` with each burst's own reference frame (Eq. 4–8): for every
    frame that counts, the similarity map F_ref ⊙ F_i and difference map F_ref − F_i of the
    student and of the teacher (teacher projected into the student's channels by a learned
    1×1 conv / Linear), softmax-normalised, compared by element-wise binary KL; the mean over
    frames. Features are (B, T, ...) with the reference at frame 0."""

    per_burst = True

    def __init__(self, key: str, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...],
                 temperature: float = 1.0):
        super().__init__(key, student_shape, teacher_shape)
        self.project = projection(self.teacher_shape[0], self.student_shape[0], len(self.teacher_shape) == 3)
        self.temperature = temperature

    def forward(self, x: LossInputs) -> torch.Tensor:
        if x.frame_mask is None:
            raise EdgeIQAError("loss 'burst_relational' relates frames to their burst's reference; "
                               "distill a burst model on a burst dataset")
        student, teacher = self.pair(x)
        burst, frame = x.frame_mask.nonzero(as_tuple=True)
        return hetero_relational_kd(student[burst, 0], student[burst, frame], teacher[burst, 0],
                                    teacher[burst, frame], self.project, self.temperature)


# ---------------------------------------------------------------- the weighted sum


class WeightedLoss(nn.Module):
    """Σ weight · loss over named terms; returns the total and each term for logging.

    ``modules`` gives ready-built terms by name (distillation builds the feature losses, with
    their projections, per feature pair); other names are built from the registry. Terms that
    need a teacher are refused unless ``teacher`` is true.
    """

    def __init__(self, terms: tuple[tuple[str, float], ...], modules: Mapping[str, nn.Module] | None = None,
                 teacher: bool = False):
        super().__init__()
        if not terms:
            raise EdgeIQAError("no loss terms given; use e.g. --loss mse=1")
        modules = dict(modules or {})
        self.weights = dict(terms)
        for name, _ in terms:
            if name in modules:
                continue
            cls = LOSSES.get(name)
            if cls is not None and getattr(cls, "needs_teacher", False) and not teacher:
                raise EdgeIQAError(f"loss {name!r} needs a teacher; train with `edge-iqa distill --teacher ...`")
            if cls is not None and issubclass(cls, FeatureLoss):
                raise EdgeIQAError(f"loss {name!r} needs teacher features; give `edge-iqa distill` a teacher checkpoint")
        self.terms = nn.ModuleDict({name: modules[name] if name in modules else get_loss(name) for name, _ in terms})

    def forward(self, x: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {name: loss(x) for name, loss in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}


def parse_loss_terms(specs: list[str] | tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """``["mse=1", "plcc=0.5"]`` → ``(("mse", 1.0), ("plcc", 0.5))``, checked against the registry."""
    terms = []
    for spec in specs:
        name, _, weight = spec.partition("=")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise EdgeIQAError(f"cannot parse loss {spec!r}; use NAME=WEIGHT, e.g. mse=1") from None
        if name not in LOSSES:
            raise EdgeIQAError(f"unknown loss {name!r}; choose from {', '.join(sorted(LOSSES))}")
        if any(name == seen for seen, _ in terms):
            raise EdgeIQAError(f"loss {name!r} given twice; give each loss once with its weight")
        terms.append((name, value))
    return tuple(terms)


def is_feature_loss(name: str) -> bool:
    return name in LOSSES and issubclass(LOSSES[name], FeatureLoss)


def needs_teacher(name: str) -> bool:
    return bool(getattr(LOSSES.get(name), "needs_teacher", False))
