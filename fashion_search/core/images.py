"""Safe image decoding: every way an upload can be bad becomes an InvalidImage with a clear message."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fashion_search.core.domain import Box
from fashion_search.core.settings import Settings, get_settings


class InvalidImage(ValueError):
    """The bytes are not a usable image; `status` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def stored_image_type(path: Path) -> str:
    """The MIME type of a stored image file, from its header (application/octet-stream if unreadable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only
                return Image.MIME.get(img.format or "", "application/octet-stream")
    except MemoryError:
        raise
    except Exception:  # any header Pillow cannot parse (it raises more than OSError, see decode_image)
        return "application/octet-stream"


def decode_image(data: bytes, settings: Settings | None = None) -> Image.Image:
    """Decode bytes to an RGB image, refusing empty, non-image, truncated and oversized (bomb) inputs."""
    settings = settings or get_settings()
    if not data:
        raise InvalidImage("empty upload: no image bytes received")
    if len(data) > settings.max_upload_bytes:
        raise InvalidImage(f"upload is {len(data)} bytes; the limit is {settings.max_upload_bytes}", 413)
    try:
        with warnings.catch_warnings():
            # Pillow warns before it errors on bombs; the size check below is ours, so silence it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise InvalidImage("image has no pixels")
            if (
                width * height > settings.max_image_pixels
                or max(width, height) > settings.max_image_side
            ):
                raise InvalidImage(
                    f"image is {width}x{height} pixels; the limit is {settings.max_image_pixels} pixels "
                    f"and {settings.max_image_side} per side", 413,
                )
            img.draft("RGB", (2048, 2048))  # JPEG: decode at reduced scale, cheap for big photos
            img.load()
            img = ImageOps.exif_transpose(img) or img
            if img.mode != "RGB":
                img = _to_rgb(img)
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        raise InvalidImage("not an image: the bytes are not a format we can read (JPEG, PNG, WebP, ...)") from None
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"image too large: {exc}", 413) from None
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow's decoders raise more than OSError and ValueError on hostile files (a fuzzed 273-byte TIFF raised
        # TypeError): whatever fails while decoding the upload is the upload's fault.
        raise InvalidImage(f"corrupt or truncated image: {exc or type(exc).__name__}") from None
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Flatten transparency onto white (catalog convention) and convert to RGB."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def garment_pixels(
    image: Image.Image, box: Box, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The box's pixels (uint8 RGB, read-only) and the garment's bool mask where it applies: one that does not fit
    the crop, or selects nothing, is dropped (the whole box stands for the garment)."""
    x0, y0, x1, y1 = box.clip(image.width, image.height).as_int()
    crop = np.asarray(image.crop((x0, y0, x1, y1)).convert("RGB"), dtype=np.uint8)
    fits = mask is not None and mask.shape == crop.shape[:2] and mask.any()
    return crop, (mask.astype(bool) if fits else None)


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """Encode an RGB image as JPEG bytes (for sending images between services)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(img: Image.Image) -> bytes:
    """Encode an image losslessly (used where remote and in-process results must match exactly)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
