"""Named model configs: the one registry of presets.

- ``aim-baseline``: the AIM 2024 UHD-IQA challenge baseline equivalent (MobileNetV3-Large on a
  1280×720 resize of the 3840×2160 photo; the report gives 3.22 M params, 4.2 GMAC).
- ``ghostnetv2-uhd``: a GhostNetV2 student (Tang et al., "GhostNetV2", NeurIPS 2022) with a
  global resize branch and a FAST-VQA fragments branch, as the AIM winners combine them.
- ``mobilenetv3-small-uhd``, ``ghostnet-uhd``: lighter students on the same resize view.
- ``mobilenetv2-uhd``, ``efficientnet-lite0-uhd``: students that quantize well, MobileNetV2
  (Sandler et al., CVPR 2018) and EfficientNet-Lite0 (Tan & Le, ICML 2019, the Lite variant):
  ReLU6 and no squeeze-excite, made for INT8 on phones, with ImageNet weights to start from
  (``--pretrained``); the ghostnetv2-uhd views.
- ``uhd-teacher``: a ResNet-50 teacher on 1080p resize + native center crop + fragments; over
  the 50 GMAC budget by design (teachers are exempt).
- ``demo-student`` / ``demo-teacher``: small models for the embedded synthetic data (photos of
  at most 512 px), used by ``edge-iqa demo``. SSIM labels depend on fine structure, so the
  student looks at native-pixel fragments; views are fixed-size so photos of different sizes
  batch together.
- ``demo-student-mobilenetv2`` / ``demo-student-efficientnet-lite0``: demo-student's views on
  the two INT8-friendly backbones, for ImageNet-initialised students on the embedded data;
  ``demo-teacher-mobilenetv2``: demo-teacher's views on MobileNetV2, the demo's teacher where
  only MobileNetV2 has ImageNet weights at hand.
- ``nima``: NIMA (Talebi & Milanfar, IEEE TIP 2018), MobileNetV1 with a 10-way distribution of
  human ratings (``edge_iqa.nima``); a teacher whose weights come from ``edge-iqa import-teacher``.

- ``burst-student``: the burst model (``edge_iqa.burst_model``) on MobileNetV3-Large with the
  ghostnetv2-uhd views, 1280×720 resize + 15×15 fragments of 32 px, for the denoising and ×2
  super-resolution tasks; an 8-frame 4K burst costs 39.2 GMAC (4.90 a frame), within 50.
- ``burst-teacher``: the same on ResNet-50 with wider relation layers, about 753 GMAC per
  8-frame burst (teachers are exempt).
- ``demo-burst-student`` / ``demo-burst-teacher``: burst models for the embedded burst data
  (``edge-iqa data synth --kind burst``: 64×64 px frames): MobileNetV3-Small on the frame at
  its native 64×64, ResNet-18 on it resized to 128×128 (finer deep features).

Any timm backbone can be named directly (``timm:NAME`` or a bare timm model name): it gets
the default student views. Names are checked without importing timm (which imports torch, 10 s
and more on a loaded machine), so a mistyped name is refused at once.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from pathlib import Path

from edge_iqa.config import BurstConfig, ModelConfig, ViewConfig
from edge_iqa.errors import EdgeIQAError

PRESETS: dict[str, ModelConfig] = {}
DEFAULT_VIEWS = (ViewConfig("resize", size=(720, 1280)),)
DEMO_SOURCE = (384, 512)
DEMO_BURST_SOURCE = (64, 64)  # (height, width) of an embedded burst frame (data synth --kind burst)
BURST_TASKS = ("denoise", "sr2")


def register_preset(config: ModelConfig) -> ModelConfig:
    if config.name in PRESETS:
        raise ValueError(f"preset {config.name!r} registered twice")
    PRESETS[config.name] = config
    return config


def list_presets() -> list[str]:
    return sorted(PRESETS)


_REGISTERED = re.compile(r"^@register_model\s*\ndef\s+(\w+)\s*\(", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def timm_model_names() -> tuple[str, ...]:
    """The names ``timm.list_models()`` gives, read from timm's model sources without importing it.

    Every timm model is a function under ``@register_model`` in ``timm/models/*.py``; a test
    checks this list against ``timm.list_models()``. Where the sources cannot be read (a zipped
    install), timm is imported after all.
    """
    spec = importlib.util.find_spec("timm")
    folder = Path(spec.origin).parent / "models" if spec and spec.origin else None
    names: set[str] = set()
    for source in sorted(folder.glob("*.py")) if folder and folder.is_dir() else ():
        names.update(_REGISTERED.findall(source.read_text(encoding="utf-8")))
    if not names:
        import timm

        names = set(timm.list_models())
    return tuple(sorted(names))


def get_preset(name: str) -> ModelConfig:
    """A registered preset, or a student on a timm backbone given as ``timm:NAME`` or ``NAME``."""
    if name in PRESETS:
        return PRESETS[name]
    backbone = name.removeprefix("timm:")
    timm_names = timm_model_names()
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
    name="mobilenetv2-uhd",
    backbone="mobilenetv2_100",
    views=(ViewConfig("resize", size=(720, 1280)), ViewConfig("fragments", grid=15, patch=32)),
    description="MobileNetV2 student (ReLU6, no SE; INT8-friendly): 1280x720 resize + 15x15 fragments of 32 px, "
                "6.44 GMAC at 3840x2160",
))
register_preset(ModelConfig(
    name="efficientnet-lite0-uhd",
    backbone="efficientnet_lite0",
    views=(ViewConfig("resize", size=(720, 1280)), ViewConfig("fragments", grid=15, patch=32)),
    description="EfficientNet-Lite0 student (ReLU6, no SE; INT8-friendly): 1280x720 resize + 15x15 fragments of 32 px, "
                "8.40 GMAC at 3840x2160",
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
    name="demo-student-mobilenetv2",
    backbone="mobilenetv2_100",
    views=(ViewConfig("fragments", grid=8, patch=32),),
    source_size=DEMO_SOURCE,
    description="demo-student's fragments on MobileNetV2 (INT8-friendly, ImageNet weights with --pretrained), "
                "0.37 GMAC at 512x384",
))
register_preset(ModelConfig(
    name="demo-student-efficientnet-lite0",
    backbone="efficientnet_lite0",
    views=(ViewConfig("fragments", grid=8, patch=32),),
    source_size=DEMO_SOURCE,
    description="demo-student's fragments on EfficientNet-Lite0 (INT8-friendly, ImageNet weights with "
                "--pretrained), 0.48 GMAC at 512x384",
))
register_preset(ModelConfig(
    name="nima",
    backbone="mobilenetv1_100",
    views=(ViewConfig("resize", size=(224, 224)),),
    head="nima",
    head_dropout=0.75,  # NIMA's dropout before the classifier
    mean=(0.5, 0.5, 0.5),  # NIMA's input convention x / 127.5 - 1 on [0, 1] pixels
    std=(0.5, 0.5, 0.5),
    score_range=(1.0, 10.0),
    role="teacher",
    description="NIMA (Talebi & Milanfar 2018): MobileNetV1 on AVA human ratings, the mean of a 10-way "
                "score distribution; weights: edge-iqa import-teacher nima FILE",
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
register_preset(ModelConfig(
    name="demo-teacher-mobilenetv2",
    backbone="mobilenetv2_100",
    views=(ViewConfig("resize", size=(384, 512)), ViewConfig("fragments", grid=8, patch=32)),
    head_hidden=256,
    source_size=DEMO_SOURCE,
    role="teacher",
    description="demo-teacher's views on MobileNetV2: the demo's teacher where ImageNet weights exist for "
                "mobilenetv2_100 and not for resnet18",
))
register_preset(ModelConfig(
    name="burst-student",
    backbone="mobilenetv3_large_100",
    views=(ViewConfig("resize", size=(720, 1280)), ViewConfig("fragments", grid=15, patch=32)),
    burst=BurstConfig(tasks=BURST_TASKS, frames=8),
    description="burst student: MobileNetV3-Large per frame (1280x720 resize + fragments), scored against frame 0",
))
register_preset(ModelConfig(
    name="burst-teacher",
    backbone="resnet50",
    views=(ViewConfig("resize", size=(720, 1280)), ViewConfig("fragments", grid=15, patch=32)),
    head_hidden=256,
    role="teacher",
    burst=BurstConfig(tasks=BURST_TASKS, frames=8, relation_dim=128, attention_hidden=128),
    description="burst teacher: ResNet-50 per frame (1280x720 resize + fragments); over budget",
))
register_preset(ModelConfig(
    name="demo-burst-student",
    backbone="mobilenetv3_small_100",
    views=(ViewConfig("resize", size=(64, 64)),),
    source_size=DEMO_BURST_SOURCE,
    burst=BurstConfig(tasks=BURST_TASKS, frames=8, relation_dim=32, attention_hidden=32),
    description="small burst student for the embedded burst data (64x64 px frames, seen at native size)",
))
register_preset(ModelConfig(
    name="demo-burst-teacher",
    backbone="resnet18",
    views=(ViewConfig("resize", size=(128, 128)),),
    head_hidden=256,
    source_size=DEMO_BURST_SOURCE,
    role="teacher",
    burst=BurstConfig(tasks=BURST_TASKS, frames=8),
    description="burst teacher for the embedded burst data: ResNet-18 per frame, resized to 128x128",
))
