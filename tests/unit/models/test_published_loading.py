"""The weights-only reader behind ``from_published``: containers, safetensors, and what it refuses."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from neurodecode.models.published import loading
from neurodecode.models.published.loading import OpaqueObject, read_checkpoint, unwrap_state_dict

CALLS: list[str] = []


def _record(tag: str) -> str:
    """What unpickling a hostile object would run: it must never be called."""
    CALLS.append(tag)
    return tag


class _Hostile:
    """A custom class instance whose unpickling calls :func:`_record`."""

    def __reduce__(self):
        return (_record, ("code ran",))


def _state() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(2, dtype=torch.float16),
            "bn.num_batches_tracked": torch.tensor(3)}


@pytest.mark.parametrize(("container", "where"), [(None, "<bare>"), ("model_state_dict", "model_state_dict"),
                                                  ("best_state", "best_state"), ("state_dict", "state_dict")])
def test_containers_are_unwrapped(tmp_path, container, where):
    obj = _state() if container is None else {container: _state(), "epoch": 40, "lrs": [1e-3, 2e-4]}
    if container == "best_state":
        obj["state"] = {"other": torch.zeros(1)}     # flashy's solver state next to it
    torch.save(obj, tmp_path / "ckpt.pth")
    state, found = read_checkpoint(tmp_path / "ckpt.pth")
    assert found == where
    assert set(state) == set(_state())
    assert state["a.bias"].dtype == torch.float32 and state["bn.num_batches_tracked"].dtype == torch.long
    assert torch.equal(state["a.weight"], _state()["a.weight"])


def test_safetensors_files_are_read(tmp_path):
    save_file(_state(), str(tmp_path / "model.safetensors"))
    state, found = read_checkpoint(tmp_path / "model.safetensors")
    assert found == "<safetensors>" and torch.equal(state["a.weight"], _state()["a.weight"])


def test_a_pickled_code_object_is_refused_without_running_it(tmp_path):
    path = tmp_path / "hostile.pth"
    torch.save({"model_state_dict": _state(), "extra": _Hostile()}, path)
    CALLS.clear()
    with pytest.raises(ValueError, match=r"pickles globals that are not tensors.*_record.*not read"):
        read_checkpoint(path)
    assert CALLS == []


def test_expected_globals_become_inert_placeholders(tmp_path):
    path = tmp_path / "dora.th"
    torch.save({"best_state": _state(), "cfg": _Hostile(), "hist": [{"loss": 1.0}]}, path)
    CALLS.clear()
    state, found = read_checkpoint(path, allowed_globals=[f"{__name__}.*"])
    assert CALLS == [] and found == "best_state" and set(state) == set(_state())


def test_placeholders_need_a_recent_torch(tmp_path, monkeypatch):
    path = tmp_path / "dora.th"
    torch.save({"best_state": _state(), "cfg": _Hostile()}, path)
    monkeypatch.delattr(torch.serialization, "safe_globals")
    with pytest.raises(ValueError, match=r"needs torch >= 2\.5"):
        read_checkpoint(path, allowed_globals=[f"{__name__}.*"])


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        read_checkpoint(tmp_path / "missing.pth")
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match=r"no state dict found.*\['epoch', 'note'\]"):
        read_checkpoint(tmp_path / "empty.pth")
    torch.save(_state(), tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="Cannot read"):
        read_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(OSError, match="Cannot read"):
        read_checkpoint(tmp_path / "text.pth")


def test_opaque_object_accepts_anything():
    o = OpaqueObject(1, x=2)
    o.__setstate__({"a": 1})
    assert o.state == {"a": 1} and isinstance(o.anything, OpaqueObject) and isinstance(o(3), OpaqueObject)
    assert unwrap_state_dict({"model": {"w": torch.ones(1)}})[1] == "model"
    assert "state" in loading.CONTAINER_KEYS
