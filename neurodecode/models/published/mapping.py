"""Strict placement of a published state dict onto a neurodecode model.

Each family module lists the original's keys and shapes for a configuration (written from the original's
code), so a file is checked against that list before anything is copied: every key must be expected, every
expected key present, every shape equal. Then each original tensor is either placed (possibly converted:
transposed, concatenated, permuted) into the neurodecode model's state dict, or kept in a side dict with the
reason it plays no part at inference. Whatever fails is reported in one ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["StateMapper", "check_keys", "dim_of"]


def _listing(items: list[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f", … ({len(items) - n} more)" if len(items) > n else "")


def dim_of(state: Mapping[str, torch.Tensor], key: str, axis: int, default: int) -> int:
    """Size of axis ``axis`` of tensor ``key``, or ``default`` when the file lacks it (reading a config).

    Parameters
    ----------
    state : dict of str → Tensor
        The checkpoint's tensors.
    key : str
        An original key.
    axis : int
        The axis.
    default : int
        What a missing key (or axis) gives; :func:`check_keys` names the key afterwards.

    Returns
    -------
    size : int
        The size.
    """
    t = state.get(key)
    return int(t.shape[axis]) if t is not None and t.ndim > axis else default


def check_keys(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], *,
               family: str) -> None:
    """Raise one ``ValueError`` listing unknown keys, missing keys and shape mismatches (first few + counts).

    Parameters
    ----------
    state : dict of str → Tensor
        The checkpoint's tensors.
    expected : dict of str → tuple of int
        The original model's keys and shapes for the configuration read from the file.
    family : str
        The published family, for the message.
    """
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    shapes = sorted(f"{k}: file {list(state[k].shape)} vs expected {list(expected[k])}"
                    for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k]))
    problems = [f"{len(v)} {what} ({_listing(v)})" for what, v in
                (("unknown keys", unknown), ("missing keys", missing), ("shape mismatches", shapes)) if v]
    if problems:
        raise ValueError(f"the checkpoint is not a {family!r} model as neurodecode reproduces it: "
                         f"{'; '.join(problems)}. Nothing was loaded (see docs/published.md for the "
                         "supported configurations).")


class StateMapper:
    """Move a checked original state dict into a neurodecode model, tensor by tensor.

    Parameters
    ----------
    state : dict of str → Tensor
        The original tensors (already checked with :func:`check_keys`).
    family : str
        The published family, for messages.
    """

    def __init__(self, state: Mapping[str, torch.Tensor], family: str) -> None:
        self.state, self.family = dict(state), family
        self.target: dict[str, torch.Tensor] = {}
        self.side: dict[str, dict[str, Any]] = {}
        self._used: set[str] = set()

    def take(self, key: str) -> torch.Tensor:
        """The original tensor ``key``, marked as used.

        Parameters
        ----------
        key : str
            An original key.

        Returns
        -------
        tensor : Tensor
            The tensor.
        """
        self._used.add(key)
        return self.state[key]

    def put(self, target: str, source: str | list[str],
            convert: Callable[..., torch.Tensor] | None = None) -> None:
        """Place original tensor(s) ``source`` at ``target`` of the neurodecode state dict.

        Parameters
        ----------
        target : str
            A key of the neurodecode model's state dict.
        source : str | list of str
            The original key (or keys, passed together to ``convert``).
        convert : callable | None
            ``convert(*tensors) → tensor`` (a transpose, a concatenation, a permutation); None copies.
        """
        keys = [source] if isinstance(source, str) else list(source)
        tensors = [self.take(k) for k in keys]
        # no copy: load_into copies each tensor once, into the model's own parameter
        self.target[target] = convert(*tensors) if convert is not None else tensors[0]

    def keep(self, key: str, reason: str, tensor: torch.Tensor | None = None) -> None:
        """Keep original tensor ``key`` (or a part of it) aside, with why it plays no part at inference.

        Parameters
        ----------
        key : str
            The original key (or a label of a part of one, such as ``"…weight[0]"``).
        reason : str
            Why it is not placed.
        tensor : Tensor | None
            The tensor kept (default: the original tensor ``key``, which is marked as used).
        """
        if tensor is None:
            tensor = self.take(key)
        self.side[key] = {"tensor": tensor.clone(), "reason": reason}

    def load_into(self, model: nn.Module) -> None:
        """Check that every original tensor was used and every model tensor filled, then load strictly.

        Parameters
        ----------
        model : nn.Module
            The neurodecode model built from the checkpoint's configuration.
        """
        own = model.state_dict()
        unused = sorted(set(self.state) - self._used)
        unfilled = sorted(set(own) - set(self.target))
        extra = sorted(set(self.target) - set(own))
        shapes = sorted(f"{k}: mapped {list(v.shape)} vs model {list(own[k].shape)}"
                        for k, v in self.target.items() if k in own and tuple(v.shape) != tuple(own[k].shape))
        problems = [f"{len(v)} {what} ({_listing(v)})" for what, v in
                    (("original tensors not placed", unused), ("model tensors not filled", unfilled),
                     ("targets the model lacks", extra), ("shape mismatches", shapes)) if v]
        if problems:
            raise ValueError(f"cannot map the {self.family!r} checkpoint onto the neurodecode model: "
                             f"{'; '.join(problems)}")
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in self.target.items()}, strict=True)
