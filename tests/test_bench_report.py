"""The benchmark report replaces its own table and keeps the notes written around it."""

from __future__ import annotations

from pathlib import Path

from fashion_search.evaluation.bench import save_report, to_markdown

INFO = {"torch_threads": 2, "cpu": "x86_64", "catalog_size": 250, "ingest_s": 9.0, "ingest_per_s": 27.7,
        "catalog_garment": "photo", "queries": 40, "device": "cpu"}


def _report(fine_p50: float) -> str:
    table = {"simple": {"total": (10.6, 11.0)}, "fine": {"total": (fine_p50, 52.5)}}
    return to_markdown(table, INFO, "fashion-search bench")


def test_a_new_run_replaces_the_table_and_keeps_the_notes(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    save_report(out, _report(37.6))
    assert out.read_text().startswith("# Benchmarks\n")
    out.write_text(out.read_text() + "\nNotes: why fine mode costs what it does.\n")
    save_report(out, _report(41.2))
    text = out.read_text()
    assert "| fine | total | 41.2 | 52.5 |" in text and "37.6" not in text
    assert "Notes: why fine mode costs what it does." in text
    assert text.count("| mode | stage | p50 ms | p95 ms |") == 1
