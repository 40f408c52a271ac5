"""`fashion-search eval` prints its figures (Markdown or JSON) and writes them into their section of a docs file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashion_search.cli.main import main


def test_eval_prints_json_and_replaces_its_docs_section(
    tmp_path: Path, small_catalog_dir: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "EVALUATION.md"
    docs.write_text("# Evaluation\n\nkept by hand\n")
    args = ["eval", "category", "--catalog", str(small_catalog_dir), "--queries", str(small_catalog_dir),
            "--limit", "2", "--output", str(docs)]

    assert main([*args, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    # Two products per class, each query's own photo among them: P@5 lies between 1/5 (itself) and 2/5.
    assert figures["n_queries"] == 20 and 0.2 <= figures["precision"]["P@5"] <= 0.4
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "P@5" in printed and "{" not in printed

    text = docs.read_text()
    assert text.startswith("# Evaluation\n\nkept by hand\n")
    # A --limit run writes its own section, so it never replaces a full run's figures.
    assert text.count("<!-- eval-simple-limit2:begin -->") == 1 and text.count("<!-- eval-simple-limit2:end -->") == 1
    assert "<!-- eval-simple:begin -->" not in text
    assert printed.strip() in text


@pytest.mark.parametrize(
    "flag", [["--efs", "0"], ["--efs", "x"], ["--oversamplings", "0.5"], ["--oversamplings", "two"]],
)
def test_bench_index_refuses_bad_sweep_values(
    flag: list[str], cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench-index", "--n", "1000", "--no-output", *flag]) == 2
    assert "error: " + flag[0] in capsys.readouterr().err
