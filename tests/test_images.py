"""Upload decoding: every kind of bad input becomes an InvalidImage with a clear message and status."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from fashion_search.core.images import InvalidImage, decode_image
from tests.conftest import make_settings

# A 273-byte TIFF found by fuzzing decode_image (atheris): Pillow raised TypeError while loading it, a 500 then.
FUZZED_TIFF = bytes.fromhex(
    "49492a00080000000a000001040001000000180000000101040001000000200000001201050103000100000003000000"
    "160104000100000500060000000100000000b726708600000003010300010000002000000017070400012f2f2f2f2f2f"
    "2f2f2f2f2f2f2f2f2f2f06000000010000000200000011010700010000008c0000001501030001000000030000001601"
    "040001000001200000001701040001000000000900001c010300010000000100000000000000f8fff7fff7ff24d2b8e0"
    "d7bde4db2d2d2d2d2d2d2d2d2d2d2d424d3609000000000000330000dc28000000180000002000000001001800010000"
    "0000b726700000270000007fffffffff0000fe0e1d402d2d2dc1e8dc0318000128"
)


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
        (FUZZED_TIFF, 400, "corrupt"),
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
