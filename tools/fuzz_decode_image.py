"""Fuzz the upload decoder with atheris (coverage-guided): any exception but InvalidImage is a crash to fix.

    python tools/fuzz_decode_image.py --seeds /tmp/fuzz-corpus PHOTO.jpg
    pip install atheris   # not a project dependency
    python tools/fuzz_decode_image.py -- /tmp/fuzz-corpus -max_total_time=300 -max_len=20000 -artifact_prefix=/tmp/fz-

--seeds writes a small file of the photo in each format Pillow writes here (JPEG, PNG, GIF, WebP, TIFF, BMP, ICO,
PPM, TGA, plus RGBA, CMYK, EXIF-rotated and progressive variants) and exits. Found this way: a 273-byte TIFF on which
Pillow raised TypeError (FUZZED_TIFF in tests/test_images.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

from PIL import Image

SEED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "ICO", "PPM", "TGA")
SEED_SIZE = (24, 32)  # small seeds keep the fuzzer's mutations inside the headers and chunk tables


def write_seeds(photo: Path, out: Path) -> None:
    """One small file per format and colour variant of the photo."""
    out.mkdir(parents=True, exist_ok=True)
    src = Image.open(photo).convert("RGB").resize(SEED_SIZE)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated, so exif_transpose runs
    variants = [(f, src.convert("P") if f == "GIF" else src, {}) for f in SEED_FORMATS] + [
        ("PNG", src.convert("RGBA"), {}), ("JPEG", src.convert("CMYK"), {}), ("JPEG", src, {"exif": exif.tobytes()}),
        ("JPEG", src, {"progressive": True}),
    ]
    for i, (fmt, img, options) in enumerate(variants):
        buf = io.BytesIO()
        img.save(buf, fmt, **options)
        (out / f"seed-{i:02d}-{fmt.lower()}").write_bytes(buf.getvalue())


def fuzz(libfuzzer_args: list[str]) -> None:
    """Run libFuzzer over decode_image with every Pillow plugin instrumented."""
    import atheris

    Image.init()  # load every format plugin first, so instrument_all reaches them
    from fashion_search.core.images import InvalidImage, decode_image
    from fashion_search.core.settings import Settings

    atheris.instrument_all()
    settings = Settings(max_image_pixels=4_000_000, max_image_side=4000)

    def one(data: bytes) -> None:
        with contextlib.suppress(InvalidImage):
            decode_image(data, settings)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


def main() -> None:
    """Write seeds (--seeds DIR PHOTO) or fuzz (libFuzzer arguments after --)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs=2, metavar=("DIR", "PHOTO"), help="write a seed corpus and exit")
    parser.add_argument("libfuzzer", nargs="*", help="libFuzzer arguments and corpus folders (after --)")
    args = parser.parse_args()
    if args.seeds:
        write_seeds(Path(args.seeds[1]), Path(args.seeds[0]))
    else:
        fuzz(args.libfuzzer)


if __name__ == "__main__":
    main()
