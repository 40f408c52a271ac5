"""docs/CONFIGURATION.md is generated from the Settings class and checked for staleness."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashion_search.core import settings_doc
from fashion_search.core.settings import SETTING_GROUPS, Settings


def test_every_setting_is_documented_once_with_its_description() -> None:
    text = settings_doc.render()
    assert settings_doc.undescribed() == []
    for name, field in Settings.model_fields.items():
        rows = [line for line in text.splitlines() if line.startswith(f"| `FS_{name.upper()}` |")]
        assert len(rows) == 1, name
        assert str(field.description) in rows[0].replace("\\|", "|")
    # Package paths are shown relative to the repository, so the file is the same on every checkout.
    assert str(Path.cwd()) not in text and "`fashion_search/sample_catalog/catalog.jsonl`" in text


def test_groups_cover_every_field_and_env_vars_still_override(monkeypatch: pytest.MonkeyPatch) -> None:
    grouped = [name for group in SETTING_GROUPS for name in group.model_fields]
    assert sorted(grouped) == sorted(Settings.model_fields)
    monkeypatch.setenv("FS_QUERY_EXPANSION", "3")
    monkeypatch.setenv("FS_GATEWAY_PORT", "9123")
    monkeypatch.setenv("FS_CACHE_ENABLED", "false")
    settings = Settings(_env_file=None)
    assert (settings.query_expansion, settings.gateway_port, settings.cache_enabled) == (3, 9123, False)


def test_check_fails_when_stale_and_passes_once_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "CONFIGURATION.md"
    assert settings_doc.main(["--check", "--output", str(out)]) == 1  # missing
    assert settings_doc.main(["--output", str(out)]) == 0
    assert settings_doc.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text().replace("`FS_HNSW_M` | int | `16`", "`FS_HNSW_M` | int | `32`"))
    assert settings_doc.main(["--check", "--output", str(out)]) == 1
    assert "stale" in capsys.readouterr().err


def test_the_committed_file_is_current() -> None:
    assert settings_doc.main(["--check"]) == 0
