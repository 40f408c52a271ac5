"""Catalog readers: folders, CSV and JSONL, with line-numbered errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_search.core.catalog import CatalogError, load_catalog


def test_folder_layout_gives_categories_and_url_safe_ids(tmp_path: Path) -> None:
    (tmp_path / "dress").mkdir()
    (tmp_path / "dress" / "a1.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("ignored")
    [rec] = load_catalog(tmp_path)
    assert rec.category == "dress" and rec.product_id == "dress:a1" and rec.image_path.endswith("a1.jpg")


def test_folder_ids_are_made_valid_and_never_shared(tmp_path: Path) -> None:
    (tmp_path / "summer dresses").mkdir()
    (tmp_path / "summer dresses" / "Red (1).png").write_bytes(b"x")
    (tmp_path / ("a" * 200 + ".jpg")).write_bytes(b"x")
    recs = {r.image_path.rsplit("/", 1)[-1][:3]: r for r in load_catalog(tmp_path)}
    assert recs["Red"].product_id == "summer_dresses:Red_1_" and recs["Red"].category == "summer dresses"
    long_id = recs["aaa"].product_id
    assert len(long_id) == 128 and long_id.startswith("a" * 100)
    # Two names that map to one id: the second photo would silently replace the first in the index.
    (tmp_path / "summer dresses" / "Red_1_.jpg").write_bytes(b"x")
    with pytest.raises(CatalogError, match="both map to product id 'summer_dresses:Red_1_'"):
        load_catalog(tmp_path)


def test_csv_and_jsonl(tmp_path: Path) -> None:
    header = "product_id,image,title,category,price,tags\n"
    (tmp_path / "c.csv").write_text(header + 'p1,img/p1.jpg,Red dress,dress,19.5,"a,b"\n')
    [rec] = load_catalog(tmp_path / "c.csv")
    assert (rec.product_id, rec.price, rec.tags) == ("p1", 19.5, ["a", "b"])
    assert rec.image_path == str((tmp_path / "img" / "p1.jpg").resolve())
    (tmp_path / "c.jsonl").write_text('{"product_id": "p2", "image": "/abs/p2.jpg", "tags": ["x"]}\n\n')
    [rec] = load_catalog(tmp_path / "c.jsonl")
    assert rec.image_path == "/abs/p2.jpg" and rec.tags == ["x"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"image": "a.jpg"}\n', "c.jsonl:1: missing product_id"),
        ('{"product_id": "p"}\n', "missing image"),
        ('{"product_id": "p", "image": "a.jpg", "price": "cheap"}\n', "not a number"),
        ("not json\n", "not valid JSON"),
        ('{"product_id": "sku 1/a", "image": "a.jpg"}\n', "c.jsonl:1: product id 'sku 1/a' is not valid"),
        # Each of these was a traceback (TypeError, UnicodeDecodeError, ValueError) or, for the prices, a batch the
        # index refused as a whole at ingest time.
        ('{"product_id": "p", "image": "a.jpg", "tags": 5}\n', "c.jsonl:1: tags 5 must be"),
        ('{"product_id": "p", "image": ["a.jpg"]}\n', "not a path"),
        ('{"product_id": "p", "image": "a\\u0000.jpg"}\n', "not a path"),
        ('{"product_id": "p", "image": "a.jpg", "price": "nan"}\n', "must be a finite number, 0 or more"),
        ('{"product_id": "p", "image": "a.jpg", "price": -5}\n', "must be a finite number, 0 or more"),
        ('{"product_id": "p", "image": "a.jpg"}\n{"product_id": "q", "title": "\xff"}\n', "c.jsonl:2: not UTF-8"),
        ("[" * 100_000 + "]" * 100_000 + "\n", "c.jsonl:1: not valid JSON \\(nested too deeply\\)"),
    ],
)
def test_bad_records_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "c.jsonl").write_bytes(content.encode("utf-8").replace("\xff".encode(), b"\xff"))
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path / "c.jsonl")


def test_a_spreadsheets_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_bytes("product_id,image,price\r\np1,a.jpg,2.5\r\n".encode("utf-8-sig"))
    [rec] = load_catalog(tmp_path / "c.csv")
    assert (rec.product_id, rec.price) == ("p1", 2.5)


def test_a_csv_column_given_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("product_id,image,product_id\np1,a.jpg,p2\n")
    with pytest.raises(CatalogError, match=r"c\.csv:1: column 'product_id' given more than once"):
        load_catalog(tmp_path / "c.csv")


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "c.xml").write_text("<x/>")
    with pytest.raises(CatalogError, match="unsupported"):
        load_catalog(tmp_path / "c.xml")
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "missing.csv")


@pytest.mark.parametrize("command", [["ingest", "--sync"], ["demo", "--no-serve", "--catalog"]])
def test_the_cli_names_the_bad_line_of_a_catalog_without_a_traceback(tmp_path: Path, command: list[str]) -> None:
    catalog = tmp_path / "c.jsonl"
    catalog.write_text('{"product_id": "p1", "image": "a.jpg"}\n{"product_id": "p2", "image": "b.jpg", "tags": 5}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")}
    env.update({"FS_DATA_DIR": str(tmp_path / "data"), "FS_CACHE_ENABLED": "false"})
    done = subprocess.run([sys.executable, "-m", "fashion_search.cli", *command, str(catalog)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {catalog}:2: tags 5 must be a comma-separated string or a list of strings"
