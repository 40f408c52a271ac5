"""Simple and tag mode's image vectors from their own model: settings, the serve target, the gRPC service."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_search.cli import commands
from fashion_search.core.settings import Settings
from fashion_search.pipeline.components import build_image_embedder
from fashion_search.services.embedder import server as embedder_server
from tests.conftest import image_model, make_settings


def test_image_embedder_settings_move_its_fields_into_the_embedders() -> None:
    settings = Settings(image_embedder_model="fashion-v1", image_embedder_url="host:1", image_embedder_port=5,
                        image_embedder_weights=Path("w.pt"), embedder_url="other:2")
    image = settings.image_embedder_settings()
    assert (image.embedder_model, image.embedder_url, image.embedder_port) == ("fashion-v1", "host:1", 5)
    assert image.embedder_weights == Path("w.pt") and not image.separate_image_embedder
    same = Settings(image_embedder_model="same")
    assert same.image_embedder_settings() is same and not same.separate_image_embedder


def test_imagenet_vectors_cannot_sit_beside_another_image_model() -> None:
    # 1310-d garment vectors and 542-d image vectors cannot share one index: refused when the settings load.
    with pytest.raises(ValueError, match="FS_IMAGE_EMBEDDER_MODEL=same"):
        Settings(embedder_model="imagenet", image_embedder_model="fashion-v1-b8")
    assert not Settings(embedder_model="imagenet", image_embedder_model="same").separate_image_embedder


def test_the_command_names_a_bad_setting_instead_of_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fashion_search.cli.main import main
    from fashion_search.core.settings import get_settings

    monkeypatch.setenv("FS_EMBEDDER_MODEL", "imagenet")
    monkeypatch.setenv("FS_IMAGE_EMBEDDER_MODEL", "fashion-v1-b8")
    get_settings.cache_clear()
    try:
        assert main(["healthcheck", "grpc://127.0.0.1:1"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("error: invalid settings:") and "FS_IMAGE_EMBEDDER_MODEL=same" in err


def test_serving_an_image_embedder_needs_its_own_model(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(image_embedder_model="same")
    assert commands.cmd_serve(argparse.Namespace(target="image-embedder"), settings) == 2
    assert "FS_IMAGE_EMBEDDER_MODEL" in capsys.readouterr().err


def test_remote_image_embedder_serves_the_image_model(tmp_path: Path, shared_models: dict) -> None:
    local = shared_models["image_embedder"]
    settings = make_settings(tmp_path, image_embedder_model=image_model())
    server, port = embedder_server.start_server(settings.image_embedder_settings(), port=0, model=local)
    try:
        remote_settings = settings.model_copy(update={"image_embedder_url": f"127.0.0.1:{port}"})
        remote = build_image_embedder(remote_settings, shared_models["embedder"])
        assert remote.model_name == local.model_name != shared_models["embedder"].model_name
        photo = Image.new("RGB", (200, 260), (240, 240, 240))
        photo.paste((150, 30, 40), (40, 40, 160, 220))
        np.testing.assert_allclose(remote.embed([photo]), local.embed([photo]), atol=1e-5)
    finally:
        server.stop(None).wait()
