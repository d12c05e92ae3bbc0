"""`-q` silences diffusers' own "Loading pipeline components" bar too, and leaves its setting as it was."""

from __future__ import annotations

import pytest

pytest.importorskip("diffusers")

from diffusers.utils import logging as dlogging  # noqa: E402

from neurodecode.tasks._diffusion_backends import load_pipeline  # noqa: E402
from neurodecode.tasks.reconstruction import make_random_pipeline  # noqa: E402
from neurodecode.utils import progress_disabled, use_log_level  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("kandinsky")
    make_random_pipeline("kandinsky", embed_dim=12, seed=0).save_pretrained(out)
    return out


def test_quiet_load_shows_no_library_bar(folder, capfd, monkeypatch):
    monkeypatch.delenv("NEURODECODE_TQDM", raising=False)
    assert dlogging.is_progress_bar_enabled()
    with use_log_level("warning"):
        assert progress_disabled()
        load_pipeline("kandinsky", folder)
    assert "Loading pipeline components" not in capfd.readouterr().err
    assert dlogging.is_progress_bar_enabled()  # restored
    with use_log_level("info"):
        assert not progress_disabled()
        load_pipeline("kandinsky", folder)
    assert "Loading pipeline components" in capfd.readouterr().err
