"""Named model configs: the one registry of presets.

- ``aim-baseline``: the AIM 2024 UHD-IQA challenge baseline equivalent (MobileNetV3-Large on a
  1280×720 resize of the 3840×2160 photo; the report gives 3.22 M params, 4.2 GMAC).
- ``ghostnetv2-uhd``: a GhostNetV2 student (Tang et al., "GhostNetV2", NeurIPS 2022) with a
  global resize branch and a FAST-VQA fragments branch, as the AIM winners combine them.
- ``mobilenetv3-small-uhd``, ``ghostnet-uhd``: lighter students on the same resize view.
- ``uhd-teacher``: a ResNet-50 teacher on 1080p resize + native center crop + fragments; over
  the 50 GMAC budget by design (teachers are exempt).
- ``demo-student`` / ``demo-teacher``: small models for the embedded synthetic data (photos of
  at most 512 px), used by ``edge-iqa demo``. SSIM labels depend on fine structure, so the
  student looks at native-pixel fragments; views are fixed-size so photos of different sizes
  batch together.

Any timm backbone can be named directly (``timm:NAME`` or a bare timm model name): it gets
the default student views.
"""

from __future__ import annotations

import difflib

from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.errors import EdgeIQAError

PRESETS: dict[str, ModelConfig] = {}
DEFAULT_VIEWS = (ViewConfig("resize", size=(720, 1280)),)
DEMO_SOURCE = (384, 512)


def register_preset(config: ModelConfig) -> ModelConfig:
    if config.name in PRESETS:
        raise ValueError(f"preset {config.name!r} registered twice")
    PRESETS[config.name] = config
    return config


def list_presets() -> list[str]:
    return sorted(PRESETS)


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def get_preset(name: str) -> ModelConfig:
    """A registered preset, or a student on a timm backbone given as ``timm:NAME`` or ``NAME``."""
    if name in PRESETS:
        return PRESETS[name]
    backbone = name.removeprefix("timm:")
    timm_names = _timm_names()
    if backbone in timm_names:
        return ModelConfig(name=f"timm:{backbone}", backbone=backbone, views=DEFAULT_VIEWS,
                           description=f"timm {backbone} on the default student views")
    close = difflib.get_close_matches(name, list(PRESETS), n=3, cutoff=0.5)
    close += difflib.get_close_matches(backbone, timm_names, n=3 - len(close), cutoff=0.7) if len(close) < 3 else []
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise EdgeIQAError(f"unknown model {name!r}{hint} (presets: {', '.join(list_presets())}; or any timm model name)")


register_preset(ModelConfig(
    name="aim-baseline",
    backbone="mobilenetv3_large_100",
    views=(ViewConfig("resize", size=(720, 1280)),),
    feature_levels=(4,),
    description="AIM 2024 UHD-IQA baseline equivalent: MobileNetV3-Large on a 1280x720 resize",
))
register_preset(ModelConfig(
    name="ghostnetv2-uhd",
    backbone="ghostnetv2_100",
    views=(ViewConfig("resize", size=(720, 1280)), ViewConfig("fragments", grid=15, patch=32)),
    description="GhostNetV2 student: 1280x720 resize branch + 15x15 grid of 32 px fragments",
))
register_preset(ModelConfig(
    name="ghostnet-uhd",
    backbone="ghostnet_100",
    views=(ViewConfig("resize", size=(720, 1280)),),
    description="GhostNet student on a 1280x720 resize",
))
register_preset(ModelConfig(
    name="mobilenetv3-small-uhd",
    backbone="mobilenetv3_small_100",
    views=(ViewConfig("resize", size=(720, 1280)),),
    description="MobileNetV3-Small student on a 1280x720 resize",
))
register_preset(ModelConfig(
    name="uhd-teacher",
    backbone="resnet50",
    views=(
        ViewConfig("resize", size=(1080, 1920)),
        ViewConfig("center_crop", size=(1080, 1080)),
        ViewConfig("fragments", grid=15, patch=32),
    ),
    head_hidden=256,
    role="teacher",
    description="ResNet-50 teacher: 1080p resize + 1080 px native crop + fragments (over budget)",
))
register_preset(ModelConfig(
    name="demo-student",
    backbone="mobilenetv3_small_100",
    views=(ViewConfig("fragments", grid=8, patch=32),),
    source_size=DEMO_SOURCE,
    description="small student for the embedded synthetic data (photos up to 512 px): native-pixel fragments",
))
register_preset(ModelConfig(
    name="demo-teacher",
    backbone="resnet18",
    views=(ViewConfig("resize", size=(384, 512)), ViewConfig("fragments", grid=8, patch=32)),
    head_hidden=256,
    source_size=DEMO_SOURCE,
    role="teacher",
    description="teacher for the embedded synthetic data: ResNet-18 on the whole photo + fragments",
))
