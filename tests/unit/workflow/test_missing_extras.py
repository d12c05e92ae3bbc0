"""A missing optional dependency is a clear error naming the extra, never a raw ModuleNotFoundError."""

from __future__ import annotations

import subprocess
import sys

import pytest

# sys.modules[name] = None makes "import name" raise ModuleNotFoundError, as if it were not installed
_DRIVER = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
from neurodecode.cli import main
sys.exit(main({argv!r}))
"""


def _run(blocked, argv, tmp_path):
    code = _DRIVER.format(blocked=list(blocked), argv=list(argv))
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("dataset", ["things_meg", "masc"])
def test_simulating_meg_without_mne_names_the_extra(dataset, tmp_path):
    proc = _run(["mne", "mne_bids"], ["simulate", dataset, str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "pip install 'neurodecode[meeg]'" in proc.stderr
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.fif"))


def test_an_unexpected_missing_optional_module_still_names_its_extra():
    from neurodecode.cli import _missing_dependency

    err = ModuleNotFoundError("No module named 'nilearn'", name="nilearn")
    assert _missing_dependency(err).endswith("pip install 'neurodecode[fmri]'")
    ours = ImportError("CLIP encoders need open_clip: pip install 'neurodecode[clip]'")
    assert _missing_dependency(ours) == str(ours)
    other = ModuleNotFoundError("No module named 'foo'", name="foo")
    assert "reinstall neurodecode" in _missing_dependency(other)
    for name, extra in (("mne", "meeg"), ("diffusers", "generation"), ("submitit", "cluster"),
                        ("tensorboard", "tracking")):
        err = ModuleNotFoundError(f"No module named '{name}'", name=name)
        assert _missing_dependency(err).endswith(f"pip install 'neurodecode[{extra}]'")
    wandb = ModuleNotFoundError("No module named 'wandb'", name="wandb")
    assert _missing_dependency(wandb).endswith("pip install wandb")  # no extra installs it


def test_a_brain_map_without_nilearn_is_a_note_naming_the_extra(monkeypatch):
    """Without nilearn the map fails with a message naming the extra (the report shows it as a note in the
    map's place and logs a warning: add_ablation_section)."""
    import sys

    from neurodecode.reports import ablation

    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn -> ImportError
    with pytest.raises(ablation._MapPlotError, match=r"pip install 'neurodecode\[fmri\]'"):
        ablation._nilearn_plot("plot_glass_brain", None)
