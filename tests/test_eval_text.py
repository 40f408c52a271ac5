"""`fashion-search eval text`: colour names read from photos, and photo + words figures on a tiny catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_search.cli.main import main
from fashion_search.evaluation.text_fusion import photo_colour, pixel_colours


def test_pixels_get_the_colour_names_of_their_hue_saturation_and_value() -> None:
    rgb = {"red": (200, 20, 20), "blue": (30, 60, 200), "green": (30, 160, 40), "white": (245, 245, 240),
           "black": (15, 15, 20), "grey": (128, 128, 130), "pink": (230, 60, 170), "brown": (110, 60, 20)}
    pixels = Image.new("RGB", (len(rgb), 1))
    pixels.putdata(list(rgb.values()))
    names = pixel_colours(np.asarray(pixels.convert("HSV")).reshape(-1, 3))
    assert list(names) == list(rgb)


def test_a_photo_is_named_by_its_centre_not_its_border() -> None:
    photo = Image.new("RGB", (100, 100), (245, 245, 245))  # a white wall around a red garment
    photo.paste((200, 20, 20), (30, 30, 70, 70))
    assert photo_colour(photo) == "red"


def test_eval_text_prints_both_figures_and_writes_its_section(
    tmp_path: Path, small_catalog_dir: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "EVALUATION.md"
    args = ["eval", "text", "--catalog", str(small_catalog_dir), "--holdout", "1", "--limit", "2", "--colours", "2",
            "--text-weights", "1,0.5", "--output", str(docs), "--json"]

    assert main(args) == 0
    figures = json.loads(capsys.readouterr().out)
    classes = len([d for d in small_catalog_dir.iterdir() if d.is_dir()])
    assert figures["n_queries"] == classes and figures["n_catalog"] == 2 * classes
    assert len(figures["colours"]) == 2 and len(figures["rows"]) == 2
    for row in figures["rows"].values():
        assert 0.0 <= row["P@10 photo"] <= 0.2  # two catalog photos per class, so at most two in ten results
        # Every catalog photo of a named colour matches both the words and (at some rank) the photo, so fusion puts
        # all of them (at most ten here) first: the named colour's share can only grow.
        for c in figures["colours"]:
            assert row[f"{c}: photo + {c}"] >= row[f"{c}: photo"]
            assert row[f"{c}: photo + {c}"] == min(10, figures["catalog_colours"][c]) / 10
    section = docs.read_text()
    assert "<!-- eval-text-holdout1-limit2:begin -->" in section and "| weight 0.5, 100 candidates |" in section
