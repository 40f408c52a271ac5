"""Upload decoding: every kind of bad input becomes an InvalidImage with a clear message and status."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from fashion_search.images import InvalidImage, decode_image
from tests.conftest import make_settings


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_decodes_real_photo_to_rgb(tmp_path: Path, sample_records: list) -> None:
    data = Path(sample_records[0].image_path).read_bytes()
    img = decode_image(data, make_settings(tmp_path))
    assert img.mode == "RGB" and min(img.size) > 100


def test_transparent_png_is_flattened_on_white(tmp_path: Path) -> None:
    img = decode_image(_png(Image.new("RGBA", (20, 20), (255, 0, 0, 0))), make_settings(tmp_path))
    assert img.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"this is a text file, not a photo", 400, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, ""),
    ],
)
def test_bad_bytes_are_refused(tmp_path: Path, data: bytes, status: int, words: str) -> None:
    with pytest.raises(InvalidImage) as err:
        decode_image(data, make_settings(tmp_path))
    assert err.value.status == status
    assert words in str(err.value)


def test_truncated_jpeg_is_refused(tmp_path: Path, sample_records: list) -> None:
    data = Path(sample_records[0].image_path).read_bytes()
    with pytest.raises(InvalidImage) as err:
        decode_image(data[: len(data) // 2], make_settings(tmp_path))
    assert err.value.status == 400 and "truncated" in str(err.value)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    # 20000×20000 single-colour PNG: tiny on disk, 1.2 GB if decoded.
    bomb = _png(Image.new("1", (20000, 20000)))
    assert len(bomb) < 2_000_000
    with pytest.raises(InvalidImage) as err:
        decode_image(bomb, make_settings(tmp_path))
    assert err.value.status == 413 and "too large" in str(err.value)


def test_oversized_upload_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage) as err:
        decode_image(b"x" * 101, make_settings(tmp_path, max_upload_bytes=100))
    assert err.value.status == 413
