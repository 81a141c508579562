"""Bad or unusual images: a documented repair or a clear ValueError, never a crash from deep inside numpy/torch."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from molmo_lite.preprocessing import MolmoImageProcessor, load_image

TINY = MolmoImageProcessor.from_config("tiny")


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def check_outputs(out, height: int, width: int) -> None:
    assert out.original_size == (height, width)
    assert torch.isfinite(out.crops).all()
    assert out.crops.shape[0] == out.num_crops == 1 + out.tiling[0] * out.tiling[1]


# ------------------------------------------------------------------------------------------------------ repairs


def test_grayscale_and_palette_become_rgb():
    gray = Image.fromarray(np.full((10, 12), 200, dtype=np.uint8), mode="L")
    x = load_image(gray)
    assert x.shape == (3, 10, 12) and torch.allclose(x, torch.full_like(x, 200 / 255))
    palette = gray.convert("P")
    assert torch.allclose(load_image(palette), x)
    assert torch.allclose(load_image(np.full((10, 12), 200, dtype=np.uint8)), x)  # a 2-D array is grayscale too


def test_rgba_and_la_are_composited_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[0, 0, 3] = 255  # ... opaque in one pixel, fully transparent elsewhere
    rgba[0, 1, 3] = 128  # half transparent
    x = load_image(Image.fromarray(rgba, mode="RGBA"))
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(x[:, 2, 2], torch.ones(3))  # transparent -> white, not black
    assert torch.allclose(x[:, 0, 1], torch.tensor([1.0, 1 - 128 / 255, 1 - 128 / 255]), atol=1e-6)
    la = Image.fromarray(rgba[..., [1, 3]], mode="LA")  # black, opaque only at (0, 0) and half at (0, 1)
    y = load_image(la)
    assert torch.allclose(y[:, 0, 0], torch.zeros(3)) and torch.allclose(y[:, 3, 3], torch.ones(3))
    assert torch.allclose(load_image(rgba), x)  # the same from an [H, W, 4] array


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (3, 3), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 0
    x = load_image(img)
    assert torch.allclose(x[:, 0, 0], torch.ones(3)) and torch.allclose(x[:, 1, 1], torch.tensor([1.0, 0, 0]))


def test_16_bit_images_are_scaled_to_unit_range():
    data = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    png = encode(Image.fromarray(data), "PNG")  # a real 16-bit grayscale PNG file
    x = load_image(png)
    assert x.shape == (3, 2, 2)
    assert x[0, 0, 1].item() == pytest.approx(1.0) and x[0, 1, 0].item() == pytest.approx(32768 / 65535)
    assert torch.allclose(load_image(data), x)  # the same from a uint16 array


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red in CMYK
    x = load_image(encode(cmyk, "JPEG", quality=95))
    assert x.shape == (3, 6, 8)
    assert x[0].mean() > 0.9 and x[1].mean() < 0.1 and x[2].mean() < 0.1


def test_exif_rotated_jpeg_is_turned_upright():
    """A camera stores a portrait photo as landscape pixels plus EXIF orientation 6 (rotate 90 degrees clockwise)."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :10] = 255  # a white band on the left of the stored pixels
    img = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    x = load_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert x.shape == (3, 40, 20)  # upright: portrait
    assert x[:, :10].mean() > 0.9 and x[:, -10:].mean() < 0.1  # rotated clockwise: the band is now on top


def test_paths_and_bytes_are_read(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    assert torch.equal(load_image(path), load_image(str(path)))
    assert torch.equal(load_image(path.read_bytes()), torch.from_numpy(arr).permute(2, 0, 1) / 255.0)


@pytest.mark.parametrize("height, width", [(1, 1), (1, 5000), (5000, 1), (2, 3)])
def test_extreme_sizes_are_processed(height, width):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    check_outputs(MolmoImageProcessor()(image), height, width)
    check_outputs(TINY(image), height, width)


# ------------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a readable image"),
        (b"this is not an image at all", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image|could not decode"),
    ],
)
def test_non_image_bytes_raise_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        TINY(data)


def test_truncated_jpeg_raises_value_error():
    full = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ValueError, match="could not decode|not a readable image"):
        TINY(full[: len(full) // 2])


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (0, 0)])
def test_zero_area_arrays_raise_value_error(shape):
    with pytest.raises(ValueError, match="zero area"):
        TINY(np.zeros(shape, dtype=np.uint8))


def test_zero_area_pil_image_raises_value_error():
    with pytest.raises(ValueError, match="zero area"):
        TINY(Image.new("RGB", (0, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_arrays_raise_value_error(bad):
    image = np.full((8, 8, 3), 0.5, dtype=np.float32)
    image[3, 4, 1] = bad
    with pytest.raises(ValueError, match="non-finite"):
        TINY(image)


@pytest.mark.parametrize(
    "shape, message",
    [((3, 32, 32), "channels-first"), ((8, 8, 5), r"C in 1\.\.4"), ((2, 8, 8, 3), r"\[H, W\]"), ((8,), r"\[H, W\]")],
)
def test_wrongly_shaped_arrays_raise_value_error(shape, message):
    with pytest.raises(ValueError, match=message):
        TINY(np.zeros(shape, dtype=np.uint8))


def test_out_of_range_values_raise_value_error():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TINY(np.full((4, 4, 3), 255.0, dtype=np.float32))
    with pytest.raises(ValueError, match="0..255"):
        TINY(np.full((4, 4, 3), -3, dtype=np.int32))
    with pytest.raises(ValueError, match="expected a PIL image"):
        TINY([[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(crop_size=50, patch_size=14), "multiple of patch_size"),
        (dict(crop_size=56, patch_size=14, overlap_margins=(2, 2)), "overlap_margins"),
        (dict(max_crops=0), "max_crops"),
        (dict(pooling=(0, 2)), "pooling"),
        (dict(resize="crop"), "resize"),
    ],
)
def test_bad_configurations_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MolmoImageProcessor(**kwargs)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    dtype=st.sampled_from([np.uint8, np.uint16, np.int64, np.float32, np.float64, bool]),
    fill=st.sampled_from([0.0, 0.5, 1.0, 255.0, 70000.0, -1.0, np.nan]),
)
def test_any_array_gives_inputs_or_value_error(shape, dtype, fill):
    """Property: whatever array a student passes, the processor answers or raises ValueError -- nothing else."""
    with np.errstate(invalid="ignore"):
        image = np.full(shape, fill).astype(dtype)
    try:
        out = TINY(image)
    except ValueError:
        return
    check_outputs(out, shape[0], shape[1])


def test_torch_tensors_are_channels_first_so_load_image_accepts_its_own_output():
    arr = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    pixels = load_image(arr)
    assert pixels.shape == (3, 5, 7)
    assert torch.equal(load_image(pixels), pixels)
    assert torch.equal(load_image(torch.from_numpy(arr[..., 0])), load_image(arr[..., 0]))  # [H, W] gray
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        load_image(torch.zeros(5, 7, 3))
