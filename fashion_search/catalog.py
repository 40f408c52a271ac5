"""Reading catalogs: a folder of images (class = subfolder) or a CSV/JSONL product list."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


class CatalogError(ValueError):
    """A catalog file or record is malformed; the message names the line."""


@dataclass
class CatalogRecord:
    """One product to index: its id, where its image is, and its catalog data."""

    product_id: str
    image_path: str
    title: str = ""
    category: str = ""
    price: float = 0.0
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (for Celery task payloads)."""
        return asdict(self)


def load_catalog(path: str | Path) -> list[CatalogRecord]:
    """All records of a catalog folder, .csv or .jsonl file."""
    p = Path(path)
    if p.is_dir():
        return list(_from_folder(p))
    if not p.exists():
        raise CatalogError(f"catalog not found: {p}")
    if p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        return [_record(row, p.parent, f"{p}:{i + 2}") for i, row in enumerate(rows)]
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        records = []
        with p.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CatalogError(f"{p}:{i}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise CatalogError(f"{p}:{i}: expected a JSON object")
                records.append(_record(row, p.parent, f"{p}:{i}"))
        return records
    raise CatalogError(f"unsupported catalog {p}: use a folder of images, a .csv or a .jsonl file")


def _from_folder(root: Path) -> Iterator[CatalogRecord]:
    """ImageFolder layout: category = first subfolder; product id = path parts joined by ":" (URL-safe)."""
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
            continue
        rel = f.relative_to(root)
        category = rel.parts[0] if len(rel.parts) > 1 else ""
        yield CatalogRecord(
            product_id=":".join(rel.with_suffix("").parts), image_path=str(f.resolve()),
            title=f"{category} {f.stem[:8]}".strip(), category=category,
        )


def _record(row: dict[str, object], base: Path, where: str) -> CatalogRecord:
    """Validate one CSV/JSONL row; relative image paths are relative to the catalog file."""
    pid = str(row.get("product_id") or "").strip()
    image = str(row.get("image") or row.get("image_path") or "").strip()
    if not pid:
        raise CatalogError(f"{where}: missing product_id")
    if not image:
        raise CatalogError(f"{where}: missing image (path to the product photo)")
    try:
        price = float(row.get("price") or 0.0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CatalogError(f"{where}: price {row.get('price')!r} is not a number") from None
    tags = row.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    path = Path(image)
    if not path.is_absolute():
        path = (base / path).resolve()
    return CatalogRecord(
        product_id=pid, image_path=str(path), title=str(row.get("title") or ""),
        category=str(row.get("category") or ""), price=price, tags=[str(t) for t in tags],  # type: ignore[union-attr]
    )
