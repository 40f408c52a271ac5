"""Reading catalogs: a folder of images (class = subfolder) or a CSV/JSONL product list."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fashion_search.core.domain import MAX_PRODUCT_ID_LENGTH, check_new_product_id

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
    # Where the photo is fetched from when image_path is empty or unreadable (core/fetch.py's limits and guard).
    image_url: str = ""
    brand: str = ""
    in_stock: bool = True
    attributes: dict[str, str] = field(default_factory=dict)

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
    return parse_catalog(_text(p), p.suffix, str(p), p.parent)


def parse_catalog(text: str, suffix: str, where: str, base: Path | None) -> list[CatalogRecord]:
    """The records of a CSV or JSONL catalog's text (suffix says which); messages name `where` and the line.

    base: the folder relative image paths are relative to; None (a catalog uploaded over HTTP) refuses image paths,
    so that such records name their photo by image_url only.
    """
    if suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise CatalogError(f"{where}: not a readable CSV file ({exc})") from None
        # DictReader keeps the last of two same-named columns, silently.
        columns = list(reader.fieldnames or ())
        if twice := sorted({c for c in columns if columns.count(c) > 1}):
            raise CatalogError(f"{where}:1: column {', '.join(map(repr, twice))} given more than once")
        return [_record(row, base, f"{where}:{i + 2}") for i, row in enumerate(rows)]
    if suffix.lower() in (".jsonl", ".ndjson"):
        records = []
        # split("\n"), not splitlines(): JSON strings may hold U+2028 and other characters splitlines() breaks at
        for i, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CatalogError(f"{where}:{i}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise CatalogError(f"{where}:{i}: not valid JSON (nested too deeply)") from None
            if not isinstance(row, dict):
                raise CatalogError(f"{where}:{i}: expected a JSON object")
            records.append(_record(row, base, f"{where}:{i}"))
        return records
    raise CatalogError(f"unsupported catalog {where}: use a folder of images, a .csv or a .jsonl file")


def decode_text(data: bytes, where: str) -> str:
    """A catalog's bytes as text: UTF-8, a leading byte-order mark dropped (spreadsheets write one)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CatalogError(f"{where}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _text(p: Path) -> str:
    """A catalog file's text."""
    return decode_text(p.read_bytes(), str(p))


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


def _record(row: dict[str, object], base: Path | None, where: str) -> CatalogRecord:
    """Validate one CSV/JSONL row; relative image paths are relative to base (None: paths are refused)."""
    pid = str(row.get("product_id") or "").strip()
    image = row.get("image") or row.get("image_path") or ""
    url = row.get("image_url") or ""
    if not pid:
        raise CatalogError(f"{where}: missing product_id")
    try:
        check_new_product_id(pid)
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    if not isinstance(url, str) or (url and not _URL.fullmatch(url.strip())):
        raise CatalogError(f"{where}: image_url must be an http:// or https:// URL, not {url!r}")
    if image and base is None:
        raise CatalogError(f"{where}: a catalog sent over HTTP names photos by image_url, not by a path")
    if not url and (not isinstance(image, str) or not image.strip() or "\0" in image):
        raise CatalogError(
            f"{where}: missing image (path to the product photo) or image_url, or not a path: {image!r}"
        )
    path = ""
    if isinstance(image, str) and image.strip() and base is not None:
        if "\0" in image:
            raise CatalogError(f"{where}: image is not a path: {image!r}")
        resolved = Path(image.strip())
        path = str(resolved if resolved.is_absolute() else (base / resolved).resolve())
    return CatalogRecord(
        product_id=pid, image_path=path, title=str(row.get("title") or ""),
        category=str(row.get("category") or ""), price=_price(row.get("price"), where),
        tags=_tags(row.get("tags"), where), image_url=url.strip(), brand=str(row.get("brand") or "").strip(),
        in_stock=parse_bool(row.get("in_stock"), "in_stock", where, default=True),
        attributes=parse_attributes(row.get("attributes"), where),
    )


_URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)


_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n"}


def parse_bool(value: object, name: str, where: str, default: bool) -> bool:
    """A yes/no field: a JSON bool, or true/false/1/0/yes/no in any case; empty or missing means default."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CatalogError(f"{where}: {name} {value!r} must be true or false")


def parse_attributes(value: object, where: str) -> dict[str, str]:
    """Attributes: a JSON object (JSONL), or "name=value; name=value" (CSV) of strings."""
    if not value:
        return {}
    if isinstance(value, str):
        pairs = [p.split("=", 1) for p in value.split(";") if p.strip()]
        if not all(len(p) == 2 and p[0].strip() for p in pairs):
            raise CatalogError(f"{where}: attributes {value!r} must read name=value; name=value")
        return {k.strip(): v.strip() for k, v in pairs}
    if isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values()):
        return {str(k): str(v) for k, v in value.items() if str(k)}
    raise CatalogError(f"{where}: attributes {value!r} must be an object of names to strings")


def _price(value: object, where: str) -> float:
    """A price: a finite number, 0 or more (as the HTTP API and the index accept); empty means 0."""
    try:
        price = float(value or 0.0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CatalogError(f"{where}: price {value!r} is not a number") from None
    if not math.isfinite(price) or price < 0:
        raise CatalogError(f"{where}: price {value!r} must be a finite number, 0 or more")
    return price


def _tags(value: object, where: str) -> list[str]:
    """Tags: a comma-separated string (CSV) or a list of strings and numbers (JSONL)."""
    if not value:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str | int | float) for t in value):
        return [str(t).strip() for t in value if str(t).strip()]
    raise CatalogError(f"{where}: tags {value!r} must be a comma-separated string or a list of strings")
