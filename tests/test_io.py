"""Tests for edge_iqa.io: every file is written in its real format by Pillow in tmp_path."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_iqa.errors import ImageError
from edge_iqa.io import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    iter_image_files,
    load_image,
    scan_images,
    to_rgb,
    to_rgb_image,
)

# A Pillow warning (decompression bomb, palette transparency, ...) reaching the user is a bug.
pytestmark = pytest.mark.filterwarnings("error")

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, ...]:
    return tuple(image.getpixel(xy))


def assert_close(actual, expected, tol=2):
    assert all(abs(a - e) <= tol for a, e in zip(actual, expected)), (actual, expected)


def assert_rgb(image: Image.Image, expected, tol=2):
    assert image.mode == "RGB"
    values = np.asarray(image).reshape(-1, 3)
    assert np.abs(values.astype(int) - np.array(expected)).max() <= tol, (values[:3], expected)


def write(tmp_path: Path, name: str, image: Image.Image, **save_args) -> Path:
    path = tmp_path / name
    image.save(path, **save_args)
    return path


def two_tone(width: int, height: int, left=RED, right=BLUE) -> Image.Image:
    """Left half one colour, right half another: shows which way a rotation went."""
    image = Image.new("RGB", (width, height), right)
    image.paste(left, (0, 0, width // 2, height))
    return image


def assert_image_error(excinfo, path: Path, *fragments: str):
    message = str(excinfo.value)
    assert path.name in message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    """12000x9000 (108 MP): over Pillow's own 89 MP warning limit, under MAX_PIXELS."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.new("RGB", (12000, 9000), (40, 120, 200)).save(path, quality=90)
    return path


# ---------------------------------------------------------------------------------------------
# Mode conversion


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("1", (4, 4), 1), (255, 255, 255)),
        (Image.new("1", (4, 4), 0), (0, 0, 0)),
        (Image.new("L", (4, 4), 77), (77, 77, 77)),
        (Image.new("LA", (4, 4), (77, 255)), (77, 77, 77)),
        (Image.new("LA", (4, 4), (0, 0)), (255, 255, 255)),
        (Image.new("LA", (4, 4), (0, 128)), (127, 127, 127)),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 255)), RED),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), (255, 255, 255)),  # not red: alpha composited
        (Image.new("RGBA", (4, 4), (0, 0, 0, 128)), (127, 127, 127)),
        (Image.new("RGB", (4, 4), (200, 50, 30)).convert("YCbCr"), (200, 50, 30)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), RED),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 255)), (0, 0, 0)),
        (Image.new("RGB", (4, 4), (200, 50, 30)).convert("P", palette=Image.Palette.ADAPTIVE), (200, 50, 30)),
    ],
    ids=lambda v: v.mode if isinstance(v, Image.Image) else "",
)
def test_to_rgb_modes(image, expected):
    assert_rgb(to_rgb(image), expected, tol=3)


def test_to_rgb_passes_rgb_through():
    image = Image.new("RGB", (4, 4), GREEN)
    assert to_rgb(image) is image


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_to_rgb_sixteen_bit_scales_not_clips(mode, dtype):
    values = np.array([[0, 257 * 128, 65535, 1000]], dtype=dtype)
    image = Image.frombytes(mode, (4, 1), values.tobytes())
    assert image.mode == mode
    out = np.asarray(to_rgb(image))
    assert out[0, :, 0].tolist() == [0, 128, 255, 4]  # clipping would give 255 for all but 0
    assert (out[..., 0] == out[..., 2]).all()


def test_to_rgb_float_mode():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert np.asarray(to_rgb(unit))[0, :, 1].tolist() == [0, 128, 255]
    byte_range = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32))
    assert np.asarray(to_rgb(byte_range))[0, :, 1].tolist() == [0, 100, 255]


def test_palette_with_transparency_composited_over_white(tmp_path):
    image = Image.new("P", (4, 2), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (2, 0, 4, 2))
    image.info["transparency"] = 1  # the blue entry is transparent
    with Image.open(write(tmp_path, "p.png", image, transparency=1)) as png:
        for source in (image, png):
            out = to_rgb(source)
            assert pixel(out, (0, 0)) == RED
            assert pixel(out, (3, 0)) == (255, 255, 255)
    # A GIF's transparency is a palette index as well.
    gif = load_image(write(tmp_path, "p.gif", image, transparency=1))
    assert pixel(gif, (0, 0)) == RED and pixel(gif, (3, 1)) == (255, 255, 255)


def test_rgba_png_composited_over_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.paste((0, 255, 0, 255), (0, 0, 2, 4))
    out = load_image(write(tmp_path, "rgba.png", image))
    assert pixel(out, (0, 0)) == GREEN
    assert pixel(out, (3, 0)) == (255, 255, 255)


# ---------------------------------------------------------------------------------------------
# Loading real files


def test_load_jpeg_png_bmp_tiff_webp(tmp_path):
    source = Image.new("RGB", (16, 8), (200, 50, 30))
    for suffix in IMAGE_SUFFIXES:
        out = load_image(write(tmp_path, f"flat{suffix}", source))
        assert out.size == (16, 8)
        assert_rgb(out, (200, 50, 30), tol=4)


def test_sixteen_bit_png(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 200, 65535]], dtype=np.uint16)
    path = write(tmp_path, "deep.png", Image.fromarray(values))
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
    out = load_image(path)
    assert out.mode == "RGB"
    assert np.asarray(out)[0, :, 0].tolist() == [0, 64, 200, 255]


def test_grayscale_and_palette_files(tmp_path):
    assert_rgb(load_image(write(tmp_path, "gray.png", Image.new("L", (4, 4), 90))), (90, 90, 90), tol=0)
    assert_rgb(load_image(write(tmp_path, "gray.jpg", Image.new("L", (8, 8), 90))), (90, 90, 90))
    assert_rgb(load_image(write(tmp_path, "bw.png", Image.new("1", (4, 4), 1))), (255, 255, 255), tol=0)
    palette = Image.new("RGB", (4, 4), (10, 120, 240)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert_rgb(load_image(write(tmp_path, "pal.png", palette)), (10, 120, 240), tol=3)


def test_cmyk_jpeg_round_trips_to_its_colour(tmp_path):
    # Pillow writes CMYK JPEGs Adobe-style (inverted, with an Adobe marker), as Photoshop does;
    # a wrong inversion shows up as cyan instead of red.
    path = write(tmp_path, "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=95)
    with Image.open(path) as opened:
        assert opened.mode == "CMYK"
    assert_rgb(load_image(path), RED, tol=8)
    path = write(tmp_path, "cmyk_blue.jpg", Image.new("CMYK", (16, 16), (255, 255, 0, 0)), quality=95)
    assert_rgb(load_image(path), BLUE, tol=8)


def test_exif_orientation_6_rotates(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the viewer turns it 90° clockwise
    path = write(tmp_path, "sideways.jpg", two_tone(40, 20), exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    assert_close(pixel(out, (10, 5)), RED, tol=10)  # the stored left half is now on top
    assert_close(pixel(out, (10, 35)), BLUE, tol=10)


def test_exif_orientation_3_and_none(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 3
    upside_down = load_image(write(tmp_path, "r180.jpg", two_tone(40, 20), exif=exif, quality=95))
    assert upside_down.size == (40, 20)
    assert_close(pixel(upside_down, (5, 10)), BLUE, tol=10)
    upright = load_image(write(tmp_path, "plain.jpg", two_tone(40, 20), quality=95))
    assert_close(pixel(upright, (5, 10)), RED, tol=10)


def test_result_is_fully_loaded_and_file_closed(tmp_path):
    path = write(tmp_path, "a.png", Image.new("RGB", (8, 8), GREEN))
    out = load_image(path)
    path.unlink()  # the pixels must not depend on the file any more
    assert_rgb(out, GREEN, tol=0)


# ---------------------------------------------------------------------------------------------
# Draft (DCT-domain downscaling) and the decompression-bomb guard


def test_big_jpeg_loads_without_draft_and_without_warnings(big_jpeg):
    limit = Image.MAX_IMAGE_PIXELS
    out = load_image(big_jpeg)
    assert out.size == (12000, 9000)
    assert_close(pixel(out, (6000, 4500)), (40, 120, 200), tol=3)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's global limit restored


def test_draft_downscales_big_jpeg(big_jpeg):
    seen = []

    def need(size):
        seen.append(size)
        return (1400, 1000)

    start = time.perf_counter()
    out = load_image(big_jpeg, draft_to=need)
    assert time.perf_counter() - start < 5
    assert seen == [(12000, 9000)]
    assert out.width < 12000 and out.height < 9000
    assert out.width >= 1400 and out.height >= 1000
    assert out.size == (1500, 1125)  # 1/8 scale: the smallest that still covers 1400x1000
    assert_close(pixel(out, (700, 500)), (40, 120, 200), tol=3)


def test_draft_none_means_full_size(tmp_path):
    path = write(tmp_path, "a.jpg", Image.new("RGB", (800, 600), GREEN))
    assert load_image(path, draft_to=lambda size: None).size == (800, 600)


def test_draft_respects_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write(tmp_path, "tall.jpg", two_tone(4000, 2000), exif=exif, quality=80)
    seen = []

    def need(size):
        seen.append(size)
        return (500, 1000)  # displayed (width, height)

    out = load_image(path, draft_to=need)
    assert seen == [(2000, 4000)]  # as displayed, not as stored
    # Stored 4000x2000 asked for 1000x500 -> 1/4 scale; without the swap it would be 1/2.
    assert out.size == (500, 1000)
    assert_close(pixel(out, (250, 100)), RED, tol=10)
    assert_close(pixel(out, (250, 900)), BLUE, tol=10)


def test_draft_ignored_for_png(tmp_path):
    path = write(tmp_path, "a.png", Image.new("RGB", (64, 32), GREEN))
    assert load_image(path, draft_to=lambda size: (8, 4)).size == (64, 32)


def test_over_pixel_limit_refused(tmp_path):
    path = write(tmp_path, "large.png", Image.new("RGB", (64, 64), GREEN))
    with pytest.raises(ImageError) as excinfo:
        load_image(path, max_pixels=1000)
    assert_image_error(excinfo, path, "64x64", "decompression-bomb limit", "--max-pixels")
    assert load_image(path, max_pixels=64 * 64).size == (64, 64)
    assert load_image(path, max_pixels=None).size == (64, 64)


def bmp_header_claiming(tmp_path: Path, width: int, height: int) -> Path:
    """A BMP whose header claims width x height but holds 1x1 of pixels: a decompression bomb
    that costs nothing to write, since the guard must fire before any decoding."""
    path = write(tmp_path, "bomb.bmp", Image.new("RGB", (1, 1)))
    data = bytearray(path.read_bytes())
    data[18:22] = width.to_bytes(4, "little")
    data[22:26] = height.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def test_bomb_refused_from_header_with_default_limit(tmp_path):
    path = bmp_header_claiming(tmp_path, 20000, 12500)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_image_error(excinfo, path, "250 MP", "over the 200 MP decompression-bomb limit",
                       "raise the limit with --max-pixels 250000000")


def test_raised_limit_overrides_pillows_own(tmp_path):
    # 250 MP is over Pillow's hard 179 MP limit too; with max_pixels raised, the load goes on to
    # decoding (and fails there, the data being missing) instead of a DecompressionBombError.
    path = bmp_header_claiming(tmp_path, 20000, 12500)
    with pytest.raises(ImageError) as excinfo:
        load_image(path, max_pixels=300_000_000)
    assert_image_error(excinfo, path)
    assert "decompression-bomb" not in str(excinfo.value)
    assert MAX_PIXELS == 200_000_000


# ---------------------------------------------------------------------------------------------
# Broken files: one-line ImageError naming the file


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.jpg"
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_image_error(excinfo, path, "no such file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_image_error(excinfo, path, "empty")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n" * 10)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_image_error(excinfo, path, "not an image Pillow can read")


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    path = write(tmp_path, "cut.jpg", Image.fromarray(noise), quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for draft_to in (None, lambda size: (32, 32)):
        with pytest.raises(ImageError) as excinfo:
            load_image(path, draft_to=draft_to)
        assert_image_error(excinfo, path, "truncated")


def noisy_jpeg(tmp_path: Path, name: str = "photo.jpg", **save_args) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return write(tmp_path, name, Image.fromarray(noise), quality=90, **save_args)


def decoded_by_pillow(path: Path, draft=None) -> np.ndarray:
    with Image.open(path) as image:
        if draft:
            image.draft("RGB", draft)
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("save_args", [{}, {"progressive": True}, {"subsampling": 0}], ids=["420", "progressive", "444"])
def test_strict_jpeg_decode_matches_pillow_pixel_for_pixel(tmp_path, save_args):
    path = noisy_jpeg(tmp_path, **save_args)
    assert np.array_equal(np.asarray(load_image(path)), decoded_by_pillow(path))
    drafted = load_image(path, draft_to=lambda size: (40, 30))
    assert drafted.size == (64, 48)
    assert np.array_equal(np.asarray(drafted), decoded_by_pillow(path, (40, 30)))
    gray = write(tmp_path, "gray.jpg", Image.open(path).convert("L"), quality=90)
    assert np.array_equal(np.asarray(load_image(gray))[:, :, 0], np.asarray(Image.open(gray)))


@pytest.mark.parametrize("damage", ["zeros", "inserted", "early_end"])
def test_jpeg_with_garbage_mid_stream_decodes_with_a_warning(tmp_path, caplog, damage):
    path = noisy_jpeg(tmp_path)
    data = path.read_bytes()
    middle = len(data) // 2
    damaged = {"zeros": data[:middle] + bytes(300) + data[middle + 300:],
               "inserted": data[:middle] + b"garbage" * 50 + data[middle:],
               "early_end": data[:middle] + b"\xff\xd9" + data[middle:]}[damage]
    path.write_bytes(damaged)
    with caplog.at_level("WARNING", logger="edge_iqa.io"):
        out = load_image(path)
    assert out.size == (128, 96)
    assert np.array_equal(np.asarray(out), decoded_by_pillow(path))  # what Pillow makes of it
    [record] = caplog.records
    assert "photo.jpg" in record.getMessage() and "JPEG data is damaged" in record.getMessage()


def test_clean_jpeg_gives_no_warning(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="edge_iqa.io"):
        load_image(noisy_jpeg(tmp_path))
    assert not caplog.records


def test_heic_gif_avif_files(tmp_path):
    two = two_tone(16, 8)
    for name in ("a.heic", "a.heif", "a.avif"):
        out = load_image(write(tmp_path, name, two, quality=95))
        assert out.size == (16, 8)
        assert_close(pixel(out, (0, 4)), RED, tol=40)  # lossy codecs blur a 16 px edge
        assert_close(pixel(out, (15, 4)), BLUE, tol=40)
    frames = [Image.new("RGB", (8, 8), c) for c in (GREEN, RED, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert_rgb(load_image(tmp_path / "anim.gif"), GREEN, tol=0)  # the first frame


def test_directory_given_as_image(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path)
    assert_image_error(excinfo, tmp_path, "directory")


# ---------------------------------------------------------------------------------------------
# In-memory inputs


def test_arrays():
    gray = np.full((3, 5), 90, dtype=np.uint8)
    out = to_rgb_image(gray)
    assert out.size == (5, 3)
    assert_rgb(out, (90, 90, 90), tol=0)
    assert_rgb(to_rgb_image(np.full((3, 5, 1), 90, dtype=np.uint8)), (90, 90, 90), tol=0)
    assert_rgb(to_rgb_image(np.full((3, 5, 3), (200, 50, 30), dtype=np.uint8)), (200, 50, 30), tol=0)
    assert_rgb(to_rgb_image(np.full((3, 5, 4), (255, 0, 0, 0), dtype=np.uint8)), (255, 255, 255), tol=0)
    assert_rgb(to_rgb_image(np.full((3, 5, 4), (255, 0, 0, 255), dtype=np.uint8)), RED, tol=0)
    assert_rgb(to_rgb_image(np.full((3, 5, 3), (1.0, 0.5, 0.0), dtype=np.float32)), (255, 128, 0), tol=0)
    assert_rgb(to_rgb_image(np.full((3, 5), 0.5, dtype=np.float64)), (128, 128, 128), tol=0)
    assert_rgb(to_rgb_image(np.full((3, 5, 3), (65535, 257 * 128, 0), dtype=np.uint16)), (255, 128, 0), tol=0)


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.full((4, 4, 3), 255.0, dtype=np.float32), "[0, 1]"),
        (np.full((4, 4), np.nan, dtype=np.float32), "[0, 1]"),
        (np.zeros((3, 16, 16), dtype=np.uint8), "channels-first"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "shape"),
        (np.zeros((2, 4, 4, 3), dtype=np.uint8), "shape"),
        (np.zeros((4, 4), dtype=np.int64), "dtype"),
    ],
)
def test_bad_arrays(array, fragment):
    with pytest.raises(ImageError) as excinfo:
        to_rgb_image(array)
    assert fragment in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_pil_inputs(tmp_path):
    rgb = Image.new("RGB", (4, 4), GREEN)
    assert to_rgb_image(rgb) is rgb
    assert_rgb(to_rgb_image(Image.new("RGBA", (4, 4), (0, 0, 255, 0))), (255, 255, 255), tol=0)
    assert_rgb(to_rgb_image(Image.new("L", (4, 4), 50)), (50, 50, 50), tol=0)
    with Image.open(write(tmp_path, "a.png", Image.new("LA", (4, 4), (50, 255)))) as lazy:
        assert_rgb(to_rgb_image(lazy), (50, 50, 50), tol=0)


def test_pil_input_with_truncated_data(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    path = write(tmp_path, "cut.jpg", Image.fromarray(noise), quality=95)
    path.write_bytes(path.read_bytes()[:3000])
    with Image.open(path) as lazy, pytest.raises(ImageError) as excinfo:
        to_rgb_image(lazy)
    assert_image_error(excinfo, path, "truncated")


def test_other_objects_refused():
    with pytest.raises(ImageError, match="list"):
        to_rgb_image([[0, 1], [1, 0]])
    with pytest.raises(TypeError, match="to_rgb_image"):
        load_image(np.zeros((4, 4), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Finding files


def test_iter_image_files(tmp_path):
    tiny = Image.new("RGB", (2, 2))
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / ".cache").mkdir()
    for rel in ("b/deep/z.PNG", "b/a.jpg", "c.JPEG", "x.webp", "y.tif", ".cache/hidden.jpg", "._c.jpg"):
        tiny.save(tmp_path / rel, format="PNG")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "readme.md").write_text("hi")

    found = iter_image_files([tmp_path])
    assert found == [tmp_path / "b" / "a.jpg", tmp_path / "b" / "deep" / "z.PNG",
                     tmp_path / "c.JPEG", tmp_path / "x.webp", tmp_path / "y.tif"]
    # Files named explicitly are kept whatever their suffix, in the order given; no duplicates.
    explicit = iter_image_files([tmp_path / "notes.txt", tmp_path / "c.JPEG", tmp_path])
    assert explicit[:2] == [tmp_path / "notes.txt", tmp_path / "c.JPEG"]
    assert len(explicit) == 6
    assert iter_image_files(str(tmp_path / "c.JPEG")) == [tmp_path / "c.JPEG"]
    assert iter_image_files(tmp_path / "b") == [tmp_path / "b" / "a.jpg", tmp_path / "b" / "deep" / "z.PNG"]


def test_iter_image_files_missing_path(tmp_path):
    missing = tmp_path / "gone"
    with pytest.raises(ImageError) as excinfo:
        iter_image_files([tmp_path, missing])
    assert_image_error(excinfo, missing, "no such file or directory")


def test_scan_reports_what_a_folder_scan_leaves_out(tmp_path, caplog):
    tiny = Image.new("RGB", (2, 2))
    (tmp_path / "x.jpg").mkdir()  # a folder named like a photo, empty
    (tmp_path / "y.jpg").mkdir()  # a folder named like a photo, with a photo inside
    (tmp_path / ".git").mkdir()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for rel in ("a.jpg", "y.jpg/in.png", "b.heic", "c.gif", ".git/obj.jpg"):
        tiny.save(tmp_path / rel, format="PNG")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".DS_Store").write_bytes(b"\0")

    scan = scan_images(tmp_path)
    assert scan.files == (tmp_path / "a.jpg", tmp_path / "b.heic", tmp_path / "c.gif", tmp_path / "x.jpg",
                          tmp_path / "y.jpg" / "in.png")
    reasons = {s.path.name: s.reason for s in scan.skipped}
    assert set(reasons) == {".git", "link", "notes.txt", ".DS_Store"}
    assert "hidden folder" in reasons[".git"] and "not followed" in reasons["link"]
    assert "not an image suffix (.txt)" == reasons["notes.txt"] and reasons[".DS_Store"] == "hidden file"
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "x.jpg")
    assert_image_error(excinfo, tmp_path / "x.jpg", "is a directory")

    with caplog.at_level("WARNING", logger="edge_iqa.io"):
        assert iter_image_files([tmp_path]) == list(scan.files)
    [record] = caplog.records
    line = record.getMessage()
    assert "\n" not in line and line.startswith(f"{tmp_path}: 4 entries left out") and "and 1 more" in line


def test_scan_keeps_a_missing_path_in_order(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "a.jpg")
    scan = scan_images([tmp_path / "gone.jpg", tmp_path])
    assert scan.files == (tmp_path / "gone.jpg", tmp_path / "a.jpg")
    assert scan.missing == (tmp_path / "gone.jpg",)
    assert scan_images(str(tmp_path / "a.jpg")).files == (tmp_path / "a.jpg",)  # one path, not characters


def test_suffixes():
    assert set(IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".heic",
                                   ".heif", ".avif"}
