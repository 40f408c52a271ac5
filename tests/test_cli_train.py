"""`fashion-search train X` hands its options to that model's trainer."""

from __future__ import annotations

import pytest

from fashion_search.cli.main import main


@pytest.mark.parametrize(
    ("target", "own_option"), [("detector", "--variant"), ("segmenter", "--val"), ("embedder", "--stage")]
)
def test_train_passes_options_to_the_models_trainer(
    target: str, own_option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", target, "--help"])
    assert exit_info.value.code == 0
    assert own_option in capsys.readouterr().out


def test_train_rejects_an_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "classifier"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
