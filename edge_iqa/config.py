"""Model configs: frozen, versioned dataclasses that fully describe a model.

A ``ModelConfig`` is stored inside every checkpoint and in the metadata of every exported
artifact, so any artifact can be scored without the code that trained it. Configs serialise
to plain dicts (``to_dict``) and load back only through ``from_dict``, which accepts the known
fields and nothing else (no pickled objects, no code).

Views follow the AIM 2024 UHD-IQA challenge entries (Moskalenko et al., "AIM 2024 Challenge on
UHD Blind Photo Quality Assessment", ECCVW 2024): a global resize branch, a native-pixel
center-crop branch and a fragments branch (Wu et al., "FAST-VQA", ECCV 2022).

A burst model (``ModelConfig.burst``, a :class:`BurstConfig`) scores every frame of a burst
against its reference frame for named downstream tasks (Liang et al., "Burst Image Quality
Assessment", 2025). Version history: 1 = photo models only; 2 adds ``burst`` (version-1 dicts
load unchanged, as photo models). ``head`` (``mlp``, or ``nima``: the score-distribution head of
NIMA, Talebi & Milanfar, IEEE TIP 2018, see ``edge_iqa.nima``) is written only when it is not
``mlp``, so the dicts of every other model are those of version 2. Version 3 adds ``score_bound``:
a version-3 ``mlp`` photo head ends in a sigmoid scaled to ``score_range`` (``sigmoid``), so no score
leaves the range (a distilled student with an unbounded head scored -1.28 on [0, 1]); configs of
versions 1 and 2 keep their unbounded head (``none``) and write no ``score_bound``, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from edge_iqa.errors import EdgeIQAError

CONFIG_VERSION = 3
SCORE_BOUNDS = ("none", "sigmoid")  # how the mlp head's output reaches score_range (ModelConfig.score_bound)
VIEW_KINDS = ("resize", "center_crop", "fragments", "full")
HEAD_KINDS = ("mlp", "nima")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UHD_SOURCE = (2160, 3840)  # (height, width) of a 4K UHD-1 photo
_TASK_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class ViewConfig:
    """How one branch of the model sees the photo.

    kind: ``resize`` (center-crop to the target aspect, then resize to ``size``),
    ``center_crop`` (native pixels, ``size``), ``fragments`` (a ``grid``×``grid`` mosaic of
    ``patch``×``patch`` native-pixel patches, one per cell) or ``full`` (native resolution).
    size: (height, width) of the view's output, for ``resize`` and ``center_crop``.
    """

    kind: str
    size: tuple[int, int] | None = None
    grid: int = 0
    patch: int = 0

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise EdgeIQAError(f"unknown view kind {self.kind!r}; choose one of {', '.join(VIEW_KINDS)}")
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if self.kind in ("resize", "center_crop"):
            if self.size is None or len(self.size) != 2 or min(self.size) < 8:
                raise EdgeIQAError(f"view {self.kind} needs size=(height, width) of at least 8 px, got {self.size}")
        if self.kind == "fragments" and (self.grid < 1 or self.patch < 8):
            raise EdgeIQAError(f"view fragments needs grid >= 1 and patch >= 8, got grid={self.grid} patch={self.patch}")

    def output_size(self, source: tuple[int, int]) -> tuple[int, int]:
        """(height, width) of the tensor this view gives for a source of (height, width)."""
        if self.kind in ("resize", "center_crop"):
            return self.size  # type: ignore[return-value]
        if self.kind == "fragments":
            side = self.grid * self.patch
            return (side, side)
        return (int(source[0]), int(source[1]))

    def scaled(self, factor: float) -> "ViewConfig":
        """The same view for photos ``factor`` times the size: sizes and fragment patches scaled
        (patches not below 8 px), the fragment grid kept; ``full`` unchanged."""
        if self.kind in ("resize", "center_crop"):
            return ViewConfig(self.kind, size=(round(self.size[0] * factor), round(self.size[1] * factor)))
        if self.kind == "fragments":
            return ViewConfig("fragments", grid=self.grid, patch=max(8, round(self.patch * factor)))
        return self

    def spec(self) -> str:
        """The short form used on the command line, e.g. ``resize:720x1280`` (height×width)."""
        if self.kind in ("resize", "center_crop"):
            return f"{self.kind}:{self.size[0]}x{self.size[1]}"
        if self.kind == "fragments":
            return f"fragments:{self.grid}x{self.patch}"
        return "full"

    @classmethod
    def parse(cls, text: str) -> "ViewConfig":
        """Parse ``resize:HxW``, ``center_crop:HxW``, ``fragments:GRIDxPATCH`` or ``full``."""
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "full" and not arg:
                return cls("full")
            a, b = (int(v) for v in arg.lower().split("x"))
        except ValueError:
            raise EdgeIQAError(
                f"cannot parse view {text!r}; use resize:HxW, center_crop:HxW, fragments:GRIDxPATCH or full"
            ) from None
        if kind == "fragments":
            return cls("fragments", grid=a, patch=b)
        return cls(kind, size=(a, b))


@dataclass(frozen=True)
class BurstConfig:
    """What makes a model a burst model (``edge_iqa.burst_model.BurstIQAModel``).

    tasks: the downstream tasks it scores frames for, one head each, chosen by name at scoring
    time (their targets are the manifest columns ``score_<task>``). frames: the burst length T
    the profiler and the budget gate count (a model takes any T at run time). relation_dim:
    width of each scale's frame and prompt embedding. attention_hidden: hidden width of the
    prompt encoder E that gives the multi-scale attention weights.
    """

    tasks: tuple[str, ...] = ("denoise", "sr2")
    frames: int = 8
    relation_dim: int = 64
    attention_hidden: int = 64

    def __post_init__(self) -> None:
        tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(str(t) for t in self.tasks)
        object.__setattr__(self, "tasks", tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(_TASK_NAME.fullmatch(t) for t in tasks):
            raise EdgeIQAError(f"burst tasks must be distinct names of letters, digits and '_', got {list(tasks)}")
        if self.frames < 2:
            raise EdgeIQAError(f"a burst has a reference and at least one more frame: frames >= 2, got {self.frames}")
        if self.relation_dim < 1 or self.attention_hidden < 1:
            raise EdgeIQAError(f"burst relation_dim and attention_hidden must be >= 1, got "
                               f"{self.relation_dim} and {self.attention_hidden}")

    def task_index(self, task: str) -> int:
        """Position of ``task`` among ``tasks`` (the row of ``forward_all_tasks``)."""
        if task not in self.tasks:
            raise EdgeIQAError(f"unknown burst task {task!r}; this model scores {', '.join(self.tasks)}")
        return self.tasks.index(task)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BurstConfig":
        reject_unknown_fields(cls, data, "burst config")
        with damaged_config("burst config"):
            return cls(**data)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: backbone, feature levels, head, views, I/O.

    Each view is one branch with its own backbone (``timm.create_model(backbone,
    features_only=True, out_indices=feature_levels)``); the pooled features of every level of
    every branch are concatenated and a small MLP maps them to one score in ``score_range``.
    Inputs are RGB in [0, 1]; ``mean``/``std`` normalisation happens inside the model so that
    exported artifacts take plain pixels.
    """

    name: str
    backbone: str
    views: tuple[ViewConfig, ...]
    feature_levels: tuple[int, ...] = (1, 2, 3, 4)
    head_hidden: int = 128
    head_dropout: float = 0.1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    score_range: tuple[float, float] = (0.0, 1.0)
    source_size: tuple[int, int] = UHD_SOURCE
    role: str = "student"
    description: str = ""
    version: int = CONFIG_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    burst: BurstConfig | None = None
    head: str = "mlp"
    score_bound: str | None = None  # None: sigmoid for a version-3 mlp photo head, else none (see the module doc)

    def __post_init__(self) -> None:
        views = tuple(v if isinstance(v, ViewConfig) else ViewConfig(**v) for v in self.views)
        object.__setattr__(self, "views", views)
        if isinstance(self.burst, dict):
            object.__setattr__(self, "burst", BurstConfig.from_dict(self.burst))
        for name in ("feature_levels", "mean", "std", "score_range", "source_size"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not views:
            raise EdgeIQAError(f"model {self.name!r} has no views")
        if self.role not in ("student", "teacher"):
            raise EdgeIQAError(f"model role must be 'student' or 'teacher', got {self.role!r}")
        if self.head not in HEAD_KINDS:
            raise EdgeIQAError(f"unknown head {self.head!r}; choose one of {', '.join(HEAD_KINDS)}")
        if self.head == "nima" and self.burst is not None:
            raise EdgeIQAError("the nima head scores single photos; a burst model has its own heads")
        bounded_head = self.head == "mlp" and self.burst is None
        if self.score_bound is None:
            object.__setattr__(self, "score_bound", "sigmoid" if bounded_head and self.version >= 3 else "none")
        if self.score_bound not in SCORE_BOUNDS:
            raise EdgeIQAError(f"unknown score_bound {self.score_bound!r}; choose one of {', '.join(SCORE_BOUNDS)}")
        if self.score_bound == "sigmoid" and not (bounded_head and self.version >= 3):
            raise EdgeIQAError("score_bound 'sigmoid' bounds the mlp head of a photo model (config version 3); "
                               f"model {self.name!r} has head {self.head!r}"
                               + (", a burst head" if self.burst is not None else "") + f", version {self.version}")
        lo, hi = self.score_range
        if not hi > lo:
            raise EdgeIQAError(f"score_range must be (low, high) with high > low, got {self.score_range}")
        if self.version > CONFIG_VERSION:
            raise EdgeIQAError(
                f"model config version {self.version} is newer than this edge-iqa ({CONFIG_VERSION}); upgrade edge-iqa"
            )

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["head"] == "mlp":  # the default: dicts as version 2 wrote them
            del data["head"]
        if self.version < 3:  # always "none" there: dicts as versions 1 and 2 wrote them
            del data["score_bound"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        reject_unknown_fields(cls, data, "model config")
        with damaged_config("model config"):
            data = dict(data)
            data["views"] = tuple(ViewConfig(**v) for v in data.get("views", ()))
            if data.get("burst") is not None:
                data["burst"] = BurstConfig.from_dict(data["burst"])
            return cls(**data)

    @classmethod
    def stored_in(cls, source: object, stored: str | dict[str, Any]) -> "ModelConfig":
        """The config stored in the file ``source`` (JSON text or a dict); a damaged one is one line naming it."""
        try:
            return cls.from_json(stored) if isinstance(stored, str) else cls.from_dict(stored)
        except EdgeIQAError as err:
            raise EdgeIQAError(f"{source}: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        with damaged_config("model config"):
            data = json.loads(text)
        return cls.from_dict(data)


@contextlib.contextmanager
def damaged_config(what: str) -> Iterator[None]:
    """Turn the TypeError / ValueError of a stored config with wrong types or missing fields into one line."""
    try:
        yield
    except EdgeIQAError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as err:
        raise EdgeIQAError(f"{what} is damaged ({err}); re-export or re-save the model") from None


def reject_unknown_fields(cls: type, data: dict[str, Any], what: str) -> None:
    """Refuse a stored config dict with fields the dataclass ``cls`` does not know (a newer writer)."""
    if not isinstance(data, dict):
        raise EdgeIQAError(f"{what} is damaged (a {type(data).__name__}, not an object); re-export or re-save the model")
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise EdgeIQAError(f"{what} has unknown fields {sorted(unknown)}; was it written by a newer edge-iqa?")
