"""Which padding do the EfficientNet-Lite0 ImageNet weights expect? A probe on real photos.

The ImageNet weights in ``../shared/weights/tf_efficientnet_lite0.imagenet.pth`` load into timm's
``tf_efficientnet_lite0`` (TensorFlow's "same" padding: asymmetric on stride-2 convs) and into
``efficientnet_lite0`` (symmetric padding), which the ``*-efficientnet-lite0`` presets build. The
two differ only in padding; this runs both on the Kodak photos (224×224 centre crop, pixels
(x − 0.5) / 0.5 as the weights' README says) and reports how often their ImageNet top-1 agree and
how confident each is (mean top-1 probability, mean entropy). The variant the weights were trained
with classifies more confidently; the other sees slightly shifted features from the first
stride-2 conv on (Tan & Le, "EfficientNet", ICML 2019; Lite: TensorFlow's EfficientNet-Lite release)::

    OMP_NUM_THREADS=1 python benchmarks/lite0_padding.py --weights ../shared/weights/tf_efficientnet_lite0.imagenet.pth \\
        --photos ../shared/photos/kodak24
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from edge_iqa.bench import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("efficientnet_lite0", "tf_efficientnet_lite0")  # symmetric padding, TensorFlow "same" padding


def centre_crop(path: Path, side: int = 224) -> np.ndarray:
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)).resize((side, side), Image.BICUBIC)
    return (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--name", default="lite0_padding")
    args = parser.parse_args()
    import timm
    import torch

    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not args.weights.is_file() or not files:
        print(f"need the weights file and photos: {args.weights}, {args.photos}", file=sys.stderr)
        return 2
    batch = torch.from_numpy(np.stack([centre_crop(f) for f in files])).permute(0, 3, 1, 2)
    state = torch.load(args.weights, map_location="cpu")
    probs = {}
    for name in VARIANTS:
        model = timm.create_model(name, pretrained=False)
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            probs[name] = model.eval()(batch).softmax(1).numpy()
    sym, same = (probs[n] for n in VARIANTS)
    entropy = {n: float(-(p * np.log(np.clip(p, 1e-12, None))).sum(1).mean()) for n, p in probs.items()}
    result = {"date": datetime.date.today().isoformat(),
              "command": shlex.join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "photos": len(files),
              "top1_agreement": float((sym.argmax(1) == same.argmax(1)).mean()),
              "mean_top1_probability": {n: float(p.max(1).mean()) for n, p in probs.items()},
              "mean_entropy_nats": entropy, "machine": machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# EfficientNet-Lite0 ImageNet weights: symmetric against TensorFlow padding ({result['date']})", "",
             f"Command: `{result['command']}`", "", f"{len(files)} photos, 224×224 centre crops.", "",
             "| timm model | padding | mean top-1 probability | mean entropy (nats) |", "|---|---|---|---|"]
    for name, padding in zip(VARIANTS, ("symmetric (the presets)", "TensorFlow same")):
        lines.append(f"| `{name}` | {padding} | {result['mean_top1_probability'][name]:.3f} | {entropy[name]:.3f} |")
    lines += ["", f"Top-1 agreement between the two: {result['top1_agreement']:.3f}.", "",
              f"Machine: {result['machine']}", ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
