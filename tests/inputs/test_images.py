"""Input normalisation shared by predict / translate / caption: accepted kinds and bad inputs."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from loopback import Fault
from PIL import Image

from dlwp_models import ImageInputError
from dlwp_models.errors import ImageFetchError, ImageNotFoundError
from dlwp_models.inputs import images as _images
from dlwp_models.inputs.images import load_image, load_images, to_float_tensor


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), "RGB")


# ----------------------------------------------------------------------------- accepted kinds


def test_one_item_gives_single_and_a_list_gives_a_list(tmp_path, photo):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(photo))
    items, single = load_images(str(path))
    assert single and len(items) == 1 and items[0].mode == "RGB" and items[0].size == (60, 40)
    items, single = load_images([path, photo, np.asarray(photo)])
    assert not single and len(items) == 3
    assert all(np.array_equal(np.asarray(i), np.asarray(photo)) for i in items)


def test_nchw_batch_becomes_a_list_and_uint8_is_scaled(photo):
    batch = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).unsqueeze(0).repeat(2, 1, 1, 1)
    items, single = load_images(batch)
    assert not single and len(items) == 2
    torch.testing.assert_close(items[0], to_float_tensor(photo))
    assert items[0].dtype == torch.float32 and float(items[0].max()) <= 1.0


def test_one_channel_tensor_is_tiled_to_three():
    item = load_image(torch.rand(1, 5, 7))
    assert item.shape == (3, 5, 7) and torch.equal(item[0], item[2])


def test_url_is_fetched(weight_server, photo):
    url = weight_server.serve("picture.png", png_bytes(photo), "image/png")
    assert np.array_equal(np.asarray(load_image(url)), np.asarray(photo))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1"])
def test_other_modes_are_converted_to_rgb(tmp_path, photo, mode):
    if mode == "I;16":
        grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(grey)
        assert img.mode.startswith("I")
    else:
        img = photo.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"img{suffix}"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == photo.size
    if mode == "I;16":  # 16-bit grey is scaled to 8 bits, not clipped to white
        assert np.array_equal(np.asarray(out)[..., 0], np.asarray(photo.convert("L")))


def test_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    out = load_image(img)
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_bytes(photo, exif=exif.tobytes()))
    assert load_image(path).size == (40, 60)


# ----------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    with pytest.raises(ImageNotFoundError, match="does not exist") as info:
        load_images(tmp_path / "nope.jpg")
    assert isinstance(info.value, FileNotFoundError)


def test_directory(tmp_path):
    with pytest.raises(ImageInputError, match="is a directory"):
        load_images(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageInputError, match="is empty"):
        load_images(tmp_path / "empty.jpg")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("just some words\n" * 20)
    with pytest.raises(ImageInputError, match="not an image"):
        load_images(tmp_path / "notes.jpg")


def test_truncated_jpeg(tmp_path, photo):
    data = jpeg_bytes(photo.resize((400, 300)))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        load_images(tmp_path / "cut.jpg")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.jpg"])
def test_url_that_is_not_http(url):
    with pytest.raises(ImageInputError, match="only http"):
        load_images(url)


def test_url_that_times_out(weight_server, photo, monkeypatch):
    monkeypatch.setattr(_images, "URL_TIMEOUT", (1.0, 0.3))
    url = weight_server.serve("slow.png", png_bytes(photo), "image/png")
    weight_server.inject("slow.png", Fault("stall", seconds=1.0))
    with pytest.raises(ImageFetchError, match="timed out"):
        load_images(url)


def test_url_that_drips_bytes_hits_the_overall_deadline(weight_server, photo, monkeypatch):
    monkeypatch.setattr(_images, "URL_DEADLINE", 0.3)
    url = weight_server.serve("drip.png", png_bytes(photo.resize((400, 400))), "image/png")
    weight_server.delay_per_chunk["drip.png"] = 0.2
    with pytest.raises(ImageFetchError, match="took longer than"):
        load_images(url)
    # the server's handler drips on after we hang up; let it finish so no later test sees its hit
    deadline = time.monotonic() + 10
    while not weight_server.hits_for("drip.png") and time.monotonic() < deadline:
        time.sleep(0.05)


def test_url_that_returns_html(weight_server):
    url = weight_server.serve("page.png", b"x")
    weight_server.inject("page.png", Fault("html"))
    with pytest.raises(ImageFetchError, match="text/html, not an image"):
        load_images(url)


def test_url_that_returns_404(weight_server):
    with pytest.raises(ImageFetchError, match="HTTP 404"):
        load_images(f"{weight_server.base}/files/absent.png")


def test_tensor_with_wrong_channel_count():
    with pytest.raises(ImageInputError, match="1 or 3 channels"):
        load_images(torch.rand(2, 4, 8, 8))


def test_float_tensor_outside_unit_range():
    with pytest.raises(ImageInputError, match=r"values in \[0, 1\]"):
        load_images(torch.rand(3, 8, 8) * 2 - 0.5)


def test_nan_tensor():
    img = torch.rand(3, 8, 8)
    img[0, 0, 0] = float("nan")
    with pytest.raises(ImageInputError, match="NaN"):
        load_images(img)


def test_non_uint8_numpy_array():
    with pytest.raises(ImageInputError, match="uint8"):
        load_images(np.zeros((4, 4, 3), dtype=np.float32))


def test_unsupported_type():
    with pytest.raises(TypeError, match="unsupported image input"):
        load_images(42)


def test_empty_list():
    with pytest.raises(ImageInputError, match="empty list"):
        load_images([])


def test_decompression_bomb(tmp_path, monkeypatch):
    Image.new("RGB", (200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 px is over the limit
    with pytest.raises(ImageInputError, match="too large to decode safely"):
        load_images(tmp_path / "big.png")


def test_url_dripping_single_bytes_ends_at_the_deadline(weight_server, photo, monkeypatch):
    """One byte at a time never completes a 64 KiB chunk: the deadline is checked after every read."""
    monkeypatch.setattr(_images, "URL_DEADLINE", 1.0)
    url = weight_server.serve("one-byte-drip.png", png_bytes(photo.resize((64, 64))), "image/png")
    weight_server.inject("one-byte-drip.png", Fault("drip", seconds=0.1, after=40))
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="took longer than 1s"):
        load_images(url)
    assert time.monotonic() - started < 2.5


def test_url_with_a_content_encoding_is_not_inflated(weight_server, photo):
    import gzip

    url = weight_server.serve("bomb.png", b"x", "image/png")
    weight_server.inject(
        "bomb.png",
        Fault(
            "body",
            200,
            body=gzip.compress(b"\0" * (32 << 20)),
            headers={"Content-Encoding": "gzip", "Content-Type": "image/png"},
        ),
    )
    with pytest.raises(ImageFetchError, match="Content-Encoding 'gzip'"):
        load_images(url)
