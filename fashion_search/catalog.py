"""Reading catalogs: a folder of images (class = subfolder) or a CSV/JSONL product list."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fashion_search.domain import MAX_PRODUCT_ID_LENGTH, check_new_product_id

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
        return _from_folder(p)
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


def _from_folder(root: Path) -> list[CatalogRecord]:
    """ImageFolder layout: category = first subfolder; product id = path parts joined by ":" (made URL-safe)."""
    records: list[CatalogRecord] = []
    seen: dict[str, Path] = {}
    for f in sorted(root.rglob("*")):
        if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
            continue
        rel = f.relative_to(root)
        pid = folder_product_id(rel)
        if pid in seen:
            # Two photos under one id: the second would silently replace the first in the index.
            raise CatalogError(f"{seen[pid]} and {rel} both map to product id {pid!r}; rename one of them")
        seen[pid] = rel
        category = rel.parts[0] if len(rel.parts) > 1 else ""
        records.append(CatalogRecord(
            product_id=pid, image_path=str(f.resolve()), title=f"{category} {f.stem[:8]}".strip(), category=category,
        ))
    return records


_NOT_IN_ID = re.compile(r"[^A-Za-z0-9._-]+")


def folder_product_id(rel: Path) -> str:
    """The product id of a catalog folder's photo: its path parts joined by ":", other characters as "_"; a
    path too long for an id keeps its start and a digest of the whole path."""
    pid = ":".join(_NOT_IN_ID.sub("_", part) for part in rel.with_suffix("").parts)
    if len(pid) > MAX_PRODUCT_ID_LENGTH:
        digest = hashlib.sha256(rel.as_posix().encode()).hexdigest()[:12]
        pid = f"{pid[:MAX_PRODUCT_ID_LENGTH - len(digest) - 1]}-{digest}"
    return check_new_product_id(pid)


def _record(row: dict[str, object], base: Path, where: str) -> CatalogRecord:
    """Validate one CSV/JSONL row; relative image paths are relative to the catalog file."""
    pid = str(row.get("product_id") or "").strip()
    image = str(row.get("image") or row.get("image_path") or "").strip()
    if not pid:
        raise CatalogError(f"{where}: missing product_id")
    try:
        check_new_product_id(pid)
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None
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
