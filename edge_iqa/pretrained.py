"""Where a model's initial weights come from: timm's hub, a local file or folder, or random init.

Every IQA model of the literature starts from ImageNet weights (the AIM 2024 UHD-IQA baseline
and winners, MobileIQA, the burst IQA paper). ``--pretrained`` gets them the way timm users
know: the model's ``pretrained_cfg.hf_hub_id`` fetched with ``huggingface_hub`` into its usual
cache (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` apply), which is
what ``timm.create_model(name, pretrained=True)`` does. A machine without the hub uses a local
weights folder instead (``--weights-dir DIR`` or the ``EDGE_IQA_WEIGHTS`` environment
variable) where files are named by timm model name: ``<name>.safetensors``, ``<name>.pth``
(``.pt``, ``.bin``) or with a tag, ``<name>.<tag>.pth`` (``mobilenetv2_100.imagenet.pth``).
Weights made for a twin architecture with the same keys are found too
(:data:`TWIN_WEIGHTS`: ``tf_efficientnet_lite0`` weights load into ``efficientnet_lite0``).
``--weights FILE`` names one file. With hub or folder weights the model normalises its inputs
as timm's ``pretrained_cfg`` of the weights says (0.5/0.5 for a TensorFlow port, where the
presets default to ImageNet statistics); the config records it.

Where the weights came from is a :class:`WeightSource`, stored in the model config's
``extra["init_weights"]`` and so in every checkpoint and exported artifact. Offline, the hub
is not retried for half a minute: one connection attempt to the endpoint decides, and the
error names the two local alternatives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_iqa.errors import EdgeIQAError

WEIGHTS_ENV = "EDGE_IQA_WEIGHTS"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
EXTRA_KEY = "init_weights"  # where a ModelConfig keeps its WeightSource (``ModelConfig.extra``)
SOURCE_KINDS = ("random", "hub", "file")
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order (timm.models._hub.load_state_dict_from_hf)
# model -> models whose weights have the same keys and shapes (tests/test_pretrained.py checks each pair)
TWIN_WEIGHTS: dict[str, tuple[str, ...]] = {"efficientnet_lite0": ("tf_efficientnet_lite0",)}
ALTERNATIVES = (f"pass --weights FILE, or --weights-dir DIR (or {WEIGHTS_ENV}=DIR) with a file named by the "
                "timm model, e.g. mobilenetv2_100.safetensors or mobilenetv2_100.pth")


@dataclass(frozen=True)
class WeightSource:
    """Where a model's initial backbone weights came from.

    kind: ``random``, ``hub`` (timm's Hugging Face hub; ``path`` is the cached file) or
    ``file`` (a local file). made_for: the timm model the weights were trained for (a twin
    of the backbone, or the backbone itself). found_by: ``--weights``, ``--weights-dir``,
    ``EDGE_IQA_WEIGHTS``, ``hub cache`` or ``hub download``.
    """

    kind: str
    made_for: str = ""
    hub_id: str = ""
    path: str = ""
    sha256: str = ""
    found_by: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise EdgeIQAError(f"unknown weight source kind {self.kind!r}; one of {', '.join(SOURCE_KINDS)}")

    def describe(self) -> str:
        """One line for people, e.g. ``timm hub timm/mobilenetv2_100.ra_in1k (hub cache)``."""
        if self.kind == "random":
            return "random init"
        twin = f", made for {self.made_for}" if self.made_for else ""
        if self.kind == "hub":
            return f"timm hub {self.hub_id} ({self.found_by}{twin})"
        return f"{self.path} (sha256 {self.sha256[:16]}, {self.found_by}{twin})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WeightSource":
        from edge_iqa.config import reject_unknown_fields

        reject_unknown_fields(cls, data, "weight source")
        return cls(**data)


RANDOM_INIT = WeightSource("random")


def weight_source_of(config) -> WeightSource | None:
    """The recorded initial weights of a model config (None: not recorded, e.g. an older checkpoint)."""
    data = config.extra.get(EXTRA_KEY)
    return WeightSource.from_dict(data) if data else None


def with_weight_source(config, source: WeightSource):
    """``config`` recording ``source`` as its initial weights, and normalising its inputs as
    those weights were trained (:func:`expected_normalisation`)."""
    config = config.replace(extra={**config.extra, EXTRA_KEY: source.to_dict()})
    expected = expected_normalisation(source, config.backbone)
    return config.replace(mean=expected[0], std=expected[1]) if expected else config


def expected_normalisation(source: WeightSource, backbone: str) -> tuple[tuple, tuple] | None:
    """(mean, std) the weights were trained with, from timm's ``pretrained_cfg`` of the model
    they were made for: ImageNet statistics for most, 0.5/0.5 for the TensorFlow ports
    (``tf_efficientnet_lite0``). None where unknown (random init, a file named by ``--weights``)."""
    if source.kind == "random" or (source.kind == "file" and source.found_by in ("--weights", "nima import")):
        return None
    import timm.models

    cfg = timm.models.get_pretrained_cfg(source.made_for or backbone)
    if cfg is None or cfg.mean is None or cfg.std is None:
        return None
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_source(path: str | Path, found_by: str, made_for: str = "") -> WeightSource:
    path = Path(path)
    if not path.is_file():
        raise EdgeIQAError(f"{path}: backbone weights file not found")
    return WeightSource("file", made_for=made_for, path=str(path.resolve()), sha256=file_sha256(path), found_by=found_by)


def weights_folder(option: str | Path | None) -> tuple[Path, str] | None:
    """The local weights folder and how it was named (``--weights-dir`` over ``EDGE_IQA_WEIGHTS``)."""
    if option:
        folder, named = Path(option), "--weights-dir"
    elif os.environ.get(WEIGHTS_ENV):
        folder, named = Path(os.environ[WEIGHTS_ENV]), WEIGHTS_ENV
    else:
        return None
    if not folder.is_dir():
        raise EdgeIQAError(f"{named} {folder}: not a folder; give the folder that holds <timm name>.safetensors/.pth files")
    return folder, named


def find_in_folder(backbone: str, folder: Path) -> tuple[Path, str] | None:
    """(file, the model it was made for) of ``backbone``'s weights in ``folder``, looking for the
    backbone's own name first, then its twins; None when there is none."""
    for name in (backbone, *TWIN_WEIGHTS.get(backbone, ())):
        exact = [folder / f"{name}{suffix}" for suffix in WEIGHT_SUFFIXES if (folder / f"{name}{suffix}").is_file()]
        tagged = sorted(p for p in folder.glob(f"{name}.*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                        and p not in exact)
        found = exact[:1] or tagged
        if len(found) > 1:
            raise EdgeIQAError(f"{folder}: several weights files for {name} ({', '.join(p.name for p in found)}); "
                               "keep one or pass --weights FILE")
        if found:
            return found[0], name
    return None


def hub_weights(backbone: str, download: bool = True) -> WeightSource | None:
    """``backbone``'s default pretrained weights from timm's hub: the cached file, else (with
    ``download``) a download into the cache. None when not cached and ``download`` is off;
    EdgeIQAError when timm has no hub weights for it or the hub cannot be reached."""
    import timm.models
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None or not cfg.hf_hub_id:
        raise EdgeIQAError(f"--pretrained: timm has no hub weights for {backbone}; {ALTERNATIVES}")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES
    for name in names:
        cached = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(cached, str):
            return _hub_source(cfg.hf_hub_id, cached, "hub cache")
    if not download:
        return None
    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _unreachable(constants.ENDPOINT)
    if offline:
        raise EdgeIQAError(f"--pretrained: {cfg.hf_hub_id} is not in the hub cache and the timm hub cannot be "
                           f"reached ({offline}); {ALTERNATIVES}")
    for name in names:
        try:
            return _hub_source(cfg.hf_hub_id, hf_hub_download(repo, name, revision=revision or None), "hub download")
        except LocalEntryNotFoundError as err:
            raise EdgeIQAError(f"--pretrained: downloading {cfg.hf_hub_id} failed ({type(err).__name__}); "
                               f"{ALTERNATIVES}") from None
        except EntryNotFoundError:
            continue
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise EdgeIQAError(f"--pretrained: downloading {cfg.hf_hub_id} failed ({first}); {ALTERNATIVES}") from None
    raise EdgeIQAError(f"--pretrained: {cfg.hf_hub_id} has none of {', '.join(names)}; {ALTERNATIVES}")


def _hub_source(hub_id: str, path: str, found_by: str) -> WeightSource:
    return WeightSource("hub", hub_id=hub_id, path=path, sha256=file_sha256(path), found_by=found_by)


def _unreachable(endpoint: str, timeout: float = 3.0) -> str:
    """Why ``endpoint`` cannot be reached ('' when one TCP connection succeeds): one attempt,
    where huggingface_hub would retry for half a minute."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as err:
        return f"{url.hostname}:{port}: {err.strerror or type(err).__name__}"
    return ""


def resolve_weights(backbone: str, *, weights: str | Path | None = None, pretrained: bool = False,
                    weights_dir: str | Path | None = None, download: bool = True) -> WeightSource:
    """The initial weights the options ask for: ``--weights FILE``; ``--pretrained`` (or a
    ``--weights-dir``): the local folder first, then timm's hub; otherwise random init."""
    if weights is not None:
        if pretrained or weights_dir:
            raise EdgeIQAError("--weights FILE names the weights; drop --pretrained/--weights-dir, or drop --weights")
        return file_source(weights, "--weights")
    if not (pretrained or weights_dir):
        return RANDOM_INIT
    folder = weights_folder(weights_dir)
    if folder is not None:
        found = find_in_folder(backbone, folder[0])
        if found is not None:
            return file_source(found[0], folder[1], "" if found[1] == backbone else found[1])
    try:
        source = hub_weights(backbone, download)
    except EdgeIQAError as err:
        if folder is None:
            raise
        raise EdgeIQAError(f"{err} (no {backbone} weights in {folder[1]} {folder[0]} either)") from None
    return source or RANDOM_INIT


def available_weights(backbone: str, weights_dir: str | Path | None = None) -> WeightSource:
    """ImageNet weights for ``backbone`` where they can be had without a download (the local
    folder, then timm's hub cache), else random init: for the demo, which must run offline."""
    folder = weights_folder(weights_dir)
    found = find_in_folder(backbone, folder[0]) if folder else None
    if found is not None:
        return file_source(found[0], folder[1], "" if found[1] == backbone else found[1])
    try:
        return hub_weights(backbone, download=False) or RANDOM_INIT
    except EdgeIQAError:  # timm has no hub weights for it: random init, which the demo reports
        return RANDOM_INIT


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or a weights-only torch file (``state_dict``/``model``
    wrappers and DDP ``module.`` prefixes removed)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged or foreign file; never retried without weights_only
        raise EdgeIQAError(f"{path}: cannot read backbone weights ({type(err).__name__}); give a state dict "
                           ".pth or .safetensors file") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise EdgeIQAError(f"{path}: holds no state dict of tensors; give a .pth or .safetensors state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
