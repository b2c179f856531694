"""Views: output shapes, determinism at evaluation, randomness only in training, draft sizes."""

import numpy as np
import pytest
from PIL import Image

from edge_iqa.config import ViewConfig
from edge_iqa.errors import EdgeIQAError, ImageError
from edge_iqa.views import apply_view, draft_size


def gradient_image(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                          np.full((height, width, 1), 128.0)], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


VIEWS = [
    ViewConfig("resize", size=(36, 64)),
    ViewConfig("center_crop", size=(40, 40)),
    ViewConfig("fragments", grid=3, patch=16),
    ViewConfig("full"),
]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.spec())
def test_view_shape_and_range(view):
    image = gradient_image(160, 90)
    out = apply_view(image, view)
    assert out.dtype == np.float32
    assert out.shape == (3, *view.output_size((90, 160)))
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("view", VIEWS[:3], ids=lambda v: v.spec())
def test_views_deterministic_at_eval_random_in_training(view):
    image = gradient_image(160, 120)
    assert np.array_equal(apply_view(image, view), apply_view(image, view))
    draws = [apply_view(image, view, np.random.default_rng(seed)) for seed in range(6)]
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])


def test_center_crop_takes_native_middle_pixels():
    image = gradient_image(100, 60)
    out = apply_view(image, ViewConfig("center_crop", size=(20, 30)))
    expected = np.asarray(image)[20:40, 35:65].transpose(2, 0, 1) / 255.0
    assert np.allclose(out, expected)


def test_fragments_take_centre_patch_of_every_cell():
    image = gradient_image(90, 90)
    out = apply_view(image, ViewConfig("fragments", grid=3, patch=10))
    pixels = np.asarray(image)
    # cell (1, 2): rows 30..60, cols 60..90; its centred 10 px patch starts at (40, 70)
    assert np.allclose(out[:, 10:20, 20:30], pixels[40:50, 70:80].transpose(2, 0, 1) / 255.0)


def test_resize_crops_to_target_aspect_before_resizing():
    # a 2:1 photo into a 1:1 view keeps the middle square, so the left edge is not visible
    image = gradient_image(200, 100)
    out = apply_view(image, ViewConfig("resize", size=(50, 50)))
    assert out[0, :, 0].mean() > 0.2  # red channel ramps with x; x=0 (red 0) is cropped away


@pytest.mark.parametrize("view", [ViewConfig("center_crop", size=(64, 64)), ViewConfig("fragments", grid=4, patch=32)],
                         ids=lambda v: v.spec())
def test_image_smaller_than_view_is_a_clear_error(view):
    with pytest.raises(ImageError, match="smaller than"):
        apply_view(gradient_image(60, 60), view)


def test_draft_size_only_for_resize_views():
    resize = ViewConfig("resize", size=(720, 1280))
    assert draft_size([resize], (3840, 2160)) == (1280, 720)
    assert draft_size([resize, ViewConfig("fragments", grid=15, patch=32)], (3840, 2160)) is None
    assert draft_size([resize], (1000, 500)) is None  # already smaller than needed


@pytest.mark.parametrize("text", ["resize:720x1280", "center_crop:480x480", "fragments:15x32", "full"])
def test_view_spec_round_trip(text):
    assert ViewConfig.parse(text).spec() == text


@pytest.mark.parametrize("text", ["resize", "resize:abc", "blur:3x3", "fragments:0x32", "resize:4x4"])
def test_bad_view_spec(text):
    with pytest.raises(EdgeIQAError):
        ViewConfig.parse(text)
