"""NIMA as an edge-iqa teacher: a real IQA model trained on human opinions.

NIMA (Talebi & Milanfar, "NIMA: Neural Image Assessment", IEEE TIP 2018) puts a 10-way softmax
on the pooled features of an ImageNet backbone: the predicted distribution of human ratings
over the scores 1–10 (trained with the earth mover's distance on AVA's rating histograms). Its
quality score is the distribution's mean, Σ i·p_i. The weights used here are idealo's Keras
MobileNet trained on AVA aesthetics, converted to the key names of timm's ``mobilenetv1_100``
(``num_classes=10, bn_eps=1e-3``: Keras batch norm). Input convention: RGB resized to
224×224, pixels scaled as ``x / 127.5 - 1``, which is the model's ``mean = std = 0.5`` on
[0, 1] pixels.

:class:`NIMAModel` is an edge-iqa model (``ModelConfig.head == "nima"``): the timm
``features_only`` backbone of every other model, so distillation addresses its features as
``branches.0.level1`` … ``level4`` (``head`` is the pooled 1024-d vector NIMA's classifier
reads), and a :class:`NIMAHead` whose output, mapped onto ``score_range`` (1, 10), is the
mean score. :func:`import_nima` turns the converted state dict (``conv_stem.*``,
``blocks.*``, ``classifier.*``) into such a model, every tensor checked; saved with
:func:`edge_iqa.checkpoint.save_checkpoint` it is an ordinary checkpoint that ``distill
--teacher``, ``pseudo-label``, ``score``, ``evaluate``, ``profile`` and ``export`` take.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.model import BackboneBranches, IQAModel

NIMA_BINS = 10  # ratings 1..10
KERAS_BN_EPS = 1e-3  # Keras BatchNormalization's epsilon; timm's default is 1e-5
# names of a NIMA file in a weights folder (edge_iqa.pretrained.find_in_folder), first match wins
NIMA_FILE_NAMES = ("nima", "nima_aesthetic_ava_mobilenetv1_100")


def nima_config() -> ModelConfig:
    """The ``nima`` preset: one 224×224 resize view, pixels to [-1, 1], scores 1–10."""
    from edge_iqa.presets import get_preset

    return get_preset("nima")


class NIMAHead(nn.Module):
    """Pooled features → softmax over ``bins`` ratings → their mean, in [0, 1] units (bin 1 → 0,
    bin ``bins`` → 1), which the model maps onto its score range."""

    def __init__(self, in_features: int, bins: int = NIMA_BINS, dropout: float = 0.75):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, bins)
        self.register_buffer("bin_units", torch.linspace(0.0, 1.0, bins), persistent=False)

    def distribution(self, features: torch.Tensor) -> torch.Tensor:
        """(B, bins) probabilities of the ratings 1..bins."""
        return torch.softmax(self.fc(self.drop(features)), dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (self.distribution(features) * self.bin_units).sum(dim=-1)


class NIMAModel(IQAModel):
    """An edge-iqa model with NIMA's head on the deepest pooled level of each branch."""

    def __init__(self, config: ModelConfig):
        BackboneBranches.__init__(self, config)  # IQAModel's MLP head is replaced by NIMA's
        for module in self.branches.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = KERAS_BN_EPS
        deepest = sum(branch.feature_info.channels()[-1] for branch in self.branches)
        self.head = NIMAHead(deepest, NIMA_BINS, config.head_dropout)

    def head_features(self, *views: torch.Tensor) -> torch.Tensor:
        """The (B, D) vector NIMA's classifier reads: the global average of each branch's deepest map."""
        return torch.cat([levels[-1].mean(dim=(2, 3)) for levels in self.feature_maps(*views)], dim=1)

    def distribution(self, *views: torch.Tensor) -> torch.Tensor:
        """(B, 10) predicted distribution of human ratings 1..10."""
        return self.head.distribution(self.head_features(*views))


def import_nima(path: str | Path, config: ModelConfig | None = None) -> NIMAModel:
    """A :class:`NIMAModel` from a NIMA state dict with timm ``mobilenetv1_100`` key names
    (backbone keys and ``classifier.weight``/``classifier.bias``); the backbone's provenance
    (file and sha256) is recorded in the config like any initial weights."""
    from edge_iqa.model import build_model
    from edge_iqa.pretrained import file_source, read_state_dict

    source = file_source(path, "nima import", made_for="mobilenetv1_100 (NIMA, AVA)")
    model = build_model(config or nima_config(), source)  # loads and checks every backbone tensor
    state = read_state_dict(path)
    head = {"weight": state.get("classifier.weight"), "bias": state.get("classifier.bias")}
    own = model.head.fc.state_dict()
    for key, value in head.items():
        if not isinstance(value, torch.Tensor) or value.shape != own[key].shape:
            shape = None if not isinstance(value, torch.Tensor) else tuple(value.shape)
            raise EdgeIQAError(f"{path}: classifier.{key} is {shape}, NIMA's head needs {tuple(own[key].shape)}; "
                               "is this a NIMA MobileNet state dict?")
    model.head.fc.load_state_dict(head)
    return model.eval()


def find_nima_file(folder: str | Path) -> Path | None:
    """The NIMA weights file in a weights folder (``nima.pth``, ``nima_aesthetic_ava_mobilenetv1_100.pth``, ...)."""
    from edge_iqa.pretrained import find_in_folder

    for name in NIMA_FILE_NAMES:
        found = find_in_folder(name, Path(folder))
        if found is not None:
            return found[0]
    return None
