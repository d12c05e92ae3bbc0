"""Registries of the model parts: each adapter, backbone, head and loss is one class registered by name.

A part is found by the name a :class:`~neurodecode.models.BrainDecoder`, a
:class:`~neurodecode.training.Trainer` or a run config gives, and carries what
they need to know of it:

========================  =====================================================================
kind                      the registered object
========================  =====================================================================
``adapter``               ``nn.Module`` class with ``output_kind`` (``"vector"`` | ``"sequence"``:
                          what it passes to the backbone), ``out_features`` (its output width or
                          channels) and ``from_decoder(spec, **adapter_kwargs)``
``backbone``              ``nn.Module`` class with ``input_kind``, ``default_adapter`` (the adapter
                          used when ``adapter=None``) and ``from_decoder(spec, in_features,
                          **backbone_kwargs)``
``head``                  ``nn.Module`` class with ``from_decoder(spec, **head_kwargs)`` whose
                          instances have ``out_shape``; optional ``check_decoder_args(args)``
``loss``                  class called as ``loss(pred, target, ids)``; ``temperature_defaults``
                          (``(temperature, mode, allowed modes)`` or None) and optional
                          ``from_settings(**trainer_settings)``
``token_loss``,           function ``loss(pred, target) → scalar`` of the ``tokens`` /
``lowlevel_loss``         ``lowlevel`` head
``prior``                 ``nn.Module`` class with ``from_decoder(spec, **prior_kwargs)`` and
                          ``sample(cond, ...)`` (a diffusion prior over the pooled head's tokens)
========================  =====================================================================

The registration is the only place a part is named: a run config
(:mod:`neurodecode.config`, a higher layer) checks the ``models.mlp.*`` names,
the adapter / backbone kinds and a loss's temperature defaults against these
registries and classes directly (:func:`get_part`), so a registered part is
valid in ``models.mlp.*`` at once. Unknown names raise a ``ValueError``
listing the registered names and the closest match.

Examples
--------
>>> from torch import nn
>>> @register_backbone("identity")                                         # doctest: +SKIP
... class Identity(nn.Module):
...     input_kind, default_adapter = "vector", "linear"
...     @classmethod
...     def from_decoder(cls, spec, in_features):
...         return cls()
...     def forward(self, x, generator=None):
...         return x
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..utils import logger

__all__ = ["PART_KINDS", "DecoderSpec", "Registry", "build_loss", "get_adapter", "get_backbone", "get_head",
           "get_loss", "get_lowlevel_loss", "get_part", "get_prior", "get_token_loss", "list_adapters",
           "list_backbones", "list_heads", "list_losses", "list_lowlevel_losses", "list_parts", "list_priors",
           "list_token_losses", "register_adapter", "register_backbone", "register_head", "register_loss",
           "register_lowlevel_loss", "register_prior", "register_token_loss"]

T = TypeVar("T")
INPUT_KINDS = ("vector", "sequence")


@dataclass(frozen=True)
class DecoderSpec:
    """What a :class:`~neurodecode.models.BrainDecoder` tells each part it builds (from its config).

    Parameters
    ----------
    n_inputs : dict
        Subject (str) → number of input features (flattened ``n_chans · n_times`` for M/EEG).
    embed_dim, hidden_dim, n_blocks : int
        Pooled embedding size, shared width, backbone depth.
    dropout : float
        Backbone dropout.
    n_times : int | None
        Time samples per trial of M/EEG (sequence) input.
    embed_shape : tuple of int | None
        Shape of one target embedding (``(n_frames, dim)``: time-resolved).
    time_resolved : bool
        Whether the backbone keeps its time axis and the pooled head maps it onto the target's frames.
    token_shape, lowlevel_shape : tuple of int | None
        Output shapes of the ``tokens`` and ``lowlevel`` heads.
    device : str
        Where parts are built (``"meta"``: the decoder initialises them afterwards from its generator).
    """

    n_inputs: dict[str, int]
    embed_dim: int
    hidden_dim: int
    n_blocks: int
    dropout: float
    n_times: int | None = None
    embed_shape: tuple[int, ...] | None = None
    time_resolved: bool = False
    token_shape: tuple[int, ...] | None = None
    lowlevel_shape: tuple[int, ...] | None = None
    device: Any = "meta"

    @property
    def n_chans(self) -> dict[str, int] | None:
        """Subject → channels (``n_inputs // n_times``), for sequence input; None without ``n_times``."""
        if self.n_times is None:
            return None
        return {s: n // self.n_times for s, n in self.n_inputs.items()}


def unknown_name_message(label: str, name: Any, known: Sequence[str], register: str) -> str:
    """``unknown <label> 'x'. Did you mean 'y'? Registered <label>s: ...`` (difflib's closest match)."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    plural = f"{label}es" if label.endswith("s") else f"{label}s"
    return (f"unknown {label} {name!r}.{hint} Registered {plural}: {', '.join(repr(k) for k in known)}. "
            f"A {label} of your own is registered with neurodecode.models.{register} (import the module that "
            "registers it before building a decoder or loading a config that names it).")


class Registry:
    """Name → registered class (or function) of one kind of model part.

    Parameters
    ----------
    kind : str
        ``"adapter"``, ``"backbone"``, ``"head"``, ``"loss"``, ``"token_loss"``, ``"lowlevel_loss"`` (the
        ``models.mlp.<kind>`` field of a run config that names it; ``heads`` for ``"head"``) or ``"prior"``.
    label : str
        How messages name one part (``"low-level loss"``).
    check : callable
        ``check(obj)`` raises ``TypeError`` when ``obj`` lacks what the kind requires (called on
        registering, so a registered part carries every fact the decoder, the trainer and a run config
        read from it).
    """

    def __init__(self, kind: str, label: str, check: Callable[[Any], None]) -> None:
        self.kind, self.label, self._check = kind, label, check
        self._entries: dict[str, Any] = {}

    # -- container protocol ------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    # -- registering --------------------------------------------------------------------------
    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator registering a class (or, for the head losses, a function) under ``name``.

        Parameters
        ----------
        name : str
            The name ``BrainDecoder`` / ``Trainer`` / run configs use.
        replace : bool
            Replace another object registered under the same name (re-registering the same object is
            always accepted, e.g. when a module is reloaded).

        Returns
        -------
        decorator : callable
            Returns its argument unchanged (with ``registered_name`` set on a class).
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"a {self.label} name must be a Python identifier (e.g. 'my_{self.kind}'), "
                             f"got {name!r}")

        def decorator(obj: T) -> T:
            self._check(obj)
            old = self._entries.get(name)
            if old is not None and old is not obj and not _same_definition(old, obj) and not replace:
                raise ValueError(f"{self.label} {name!r} is already registered ({_qualname(old)}); pass "
                                 "replace=True to replace it")
            if isinstance(obj, type):
                obj.registered_name = name
            self._entries[name] = obj
            logger.debug("Registered %s %r: %s", self.label, name, _qualname(obj))
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name``; no-op for an unknown name.

        Parameters
        ----------
        name : str
            A registered name.
        """
        self._entries.pop(name, None)

    # -- looking up -----------------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """The object registered under ``name``; ``ValueError`` (registered names, closest match) if none.

        Parameters
        ----------
        name : str
            A registered name.

        Returns
        -------
        obj : type | callable
            The registered class or function.

        Raises
        ------
        ValueError
            If ``name`` is not registered; the message lists the registered names and the closest match.
        """
        obj = self._entries.get(name) if isinstance(name, str) else None
        if obj is None:
            raise ValueError(unknown_name_message(self.label, name, list(self._entries),
                                                  f"register_{self.kind}"))
        return obj

    def names(self) -> list[str]:
        """Registered names, in registration order.

        Returns
        -------
        names : list of str
            A new list of the names.
        """
        return list(self._entries)

    def view(self) -> RegisteredNames:
        """A live, tuple-like view of the registered names (for ``check_option`` and messages).

        Returns
        -------
        view : RegisteredNames
            A read-only view that follows later registrations and removals.
        """
        return RegisteredNames(self)


class RegisteredNames(Sequence[str]):
    """Read-only, live tuple-like view of a registry's names (``"mlp" in BACKBONES``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __getitem__(self, i: Any) -> Any:
        return tuple(self._registry.names())[i]

    def __len__(self) -> int:
        return len(self._registry)

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self._registry.names()))


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _same_definition(old: Any, new: Any) -> bool:
    """The same class or function defined again (a reloaded module), not a different one."""
    return _qualname(old) == _qualname(new) and getattr(old, "__module__", None) is not None


# -- what each kind must carry -------------------------------------------------------------------
def _require(obj: Any, kind: str, attrs: Sequence[str]) -> None:
    from torch import nn

    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise TypeError(f"a registered {kind} must be an nn.Module subclass, got {obj!r}")
    missing = [a for a in attrs if not hasattr(obj, a)]
    if missing:
        raise TypeError(f"{obj.__name__} cannot be registered as a {kind}: it lacks {missing} (see "
                        "docs/contributing.md, 'Adding a backbone, adapter, head or loss')")


def _check_kind(obj: Any, attr: str) -> None:
    value = getattr(obj, attr)
    if value not in INPUT_KINDS:
        raise TypeError(f"{obj.__name__}.{attr} must be one of {INPUT_KINDS}, got {value!r}")


def _check_adapter(obj: Any) -> None:
    _require(obj, "adapter", ("output_kind", "from_decoder"))
    _check_kind(obj, "output_kind")


def _check_backbone(obj: Any) -> None:
    _require(obj, "backbone", ("input_kind", "default_adapter", "from_decoder"))
    _check_kind(obj, "input_kind")


def _check_head(obj: Any) -> None:
    _require(obj, "head", ("from_decoder",))


def _check_prior(obj: Any) -> None:
    _require(obj, "prior", ("from_decoder", "sample"))


_TEMPERATURE_MODES = ("fixed", "learnable", "schedule")


def _check_loss(obj: Any) -> None:
    if not (isinstance(obj, type) and callable(obj)):
        raise TypeError(f"a registered loss must be a class (called as loss(pred, target, ids)), got {obj!r}")
    temperature = getattr(obj, "temperature_defaults", None)
    if temperature is None:
        return
    try:
        t, mode, allowed = temperature
        ok = float(t) > 0 and mode in allowed and set(allowed) <= set(_TEMPERATURE_MODES)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(f"{obj.__name__}.temperature_defaults must be None or (temperature > 0, default "
                        f"mode, allowed modes) with the default mode among the allowed ones, all of "
                        f"{_TEMPERATURE_MODES}; got {temperature!r}")


def _check_function(obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"a registered head loss must be a function loss(pred, target), got {obj!r}")


ADAPTER_REGISTRY: Registry = Registry("adapter", "adapter", _check_adapter)
BACKBONE_REGISTRY: Registry = Registry("backbone", "backbone", _check_backbone)
HEAD_REGISTRY: Registry = Registry("head", "head", _check_head)
LOSS_REGISTRY: Registry = Registry("loss", "loss", _check_loss)
TOKEN_LOSS_REGISTRY: Registry = Registry("token_loss", "token loss", _check_function)
LOWLEVEL_LOSS_REGISTRY: Registry = Registry("lowlevel_loss", "low-level loss", _check_function)
PRIOR_REGISTRY: Registry = Registry("prior", "prior", _check_prior)
_REGISTRIES: dict[str, Registry] = {r.kind: r for r in (ADAPTER_REGISTRY, BACKBONE_REGISTRY, HEAD_REGISTRY,
                                                        LOSS_REGISTRY, TOKEN_LOSS_REGISTRY,
                                                        LOWLEVEL_LOSS_REGISTRY, PRIOR_REGISTRY)}
#: Kinds of model part, each the ``models.mlp.<kind>`` field of a run config that names one (``heads``
#: lists ``head`` parts; a ``prior`` is named by ``BrainDecoder(prior=...)``).
PART_KINDS: tuple[str, ...] = tuple(_REGISTRIES)


def _registry(kind: str) -> Registry:
    if kind not in _REGISTRIES:
        raise ValueError(f"unknown kind of model part {kind!r}; kinds: {', '.join(PART_KINDS)}")
    return _REGISTRIES[kind]


def get_part(kind: str, name: str) -> Any:
    """The part of ``kind`` registered under ``name`` (what a run config validates ``models.mlp.*`` with).

    Parameters
    ----------
    kind : {"adapter", "backbone", "head", "loss", "token_loss", "lowlevel_loss", "prior"}
        The kind of part (see :data:`PART_KINDS`).
    name : str
        A registered name of that kind.

    Returns
    -------
    part : type | callable
        The registered class (a function for ``token_loss`` / ``lowlevel_loss``).

    Raises
    ------
    ValueError
        Unknown kind, or unknown name: the message lists the registered names and the closest match.
    """
    return _registry(kind).get(name)


def list_parts(kind: str) -> list[str]:
    """Registered names of one kind of part, in registration order.

    Parameters
    ----------
    kind : {"adapter", "backbone", "head", "loss", "token_loss", "lowlevel_loss", "prior"}
        The kind of part (see :data:`PART_KINDS`).

    Returns
    -------
    names : list of str
        The names.
    """
    return _registry(kind).names()


# -- the public functions ------------------------------------------------------------------------
def register_adapter(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator: register a subject adapter under ``name`` (see :meth:`Registry.register`).

    Parameters
    ----------
    name : str
        The name ``BrainDecoder`` / run configs use.
    replace : bool
        Replace another adapter registered under the same name.

    Returns
    -------
    decorator : callable
        Registers its argument and returns it unchanged.
    """
    return ADAPTER_REGISTRY.register(name, replace=replace)


def register_backbone(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator: register a shared backbone under ``name``.

    Parameters
    ----------
    name : str
        The name ``BrainDecoder`` / run configs use.
    replace : bool
        Replace another backbone registered under the same name.

    Returns
    -------
    decorator : callable
        Registers its argument and returns it unchanged.
    """
    return BACKBONE_REGISTRY.register(name, replace=replace)


def register_head(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator: register an output head under ``name``.

    Parameters
    ----------
    name : str
        The name ``BrainDecoder`` / run configs use.
    replace : bool
        Replace another head registered under the same name.

    Returns
    -------
    decorator : callable
        Registers its argument and returns it unchanged.
    """
    return HEAD_REGISTRY.register(name, replace=replace)


def register_loss(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator: register a training loss of the pooled embedding under ``name``.

    Parameters
    ----------
    name : str
        The name ``Trainer`` / run configs use.
    replace : bool
        Replace another loss registered under the same name.

    Returns
    -------
    decorator : callable
        Registers its argument and returns it unchanged.
    """
    return LOSS_REGISTRY.register(name, replace=replace)


def register_token_loss(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Function decorator: register a loss of the ``tokens`` head (``fn(pred, target) → scalar``).

    Parameters
    ----------
    name : str
        The name ``Trainer`` / run configs use.
    replace : bool
        Replace another token loss registered under the same name.

    Returns
    -------
    decorator : callable
        Registers its argument and returns it unchanged.
    """
    return TOKEN_LOSS_REGISTRY.register(name, replace=replace)


def register_lowlevel_loss(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Function decorator: register a loss of the ``lowlevel`` head (``fn(pred, target) → scalar``).

    Parameters
    ----------
    name : str
        The name ``Trainer`` / run configs use.
    replace : bool
        Replace another low-level loss registered under the same name.

    Returns
    -------
    decorator : callable
        Registers its argument and returns it unchanged.
    """
    return LOWLEVEL_LOSS_REGISTRY.register(name, replace=replace)


def register_prior(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator: register a diffusion prior (over the pooled head's tokens) under ``name``.

    Parameters
    ----------
    name : str
        The name ``BrainDecoder(prior=...)`` uses.
    replace : bool
        Replace another prior registered under the same name.

    Returns
    -------
    decorator : callable
        Registers its argument and returns it unchanged.
    """
    return PRIOR_REGISTRY.register(name, replace=replace)


def get_adapter(name: str) -> type:
    """The adapter class registered under ``name`` (``ValueError`` listing the names if unknown).

    Parameters
    ----------
    name : str
        A registered adapter name (see :func:`list_adapters`).

    Returns
    -------
    cls : type
        The adapter class.
    """
    return ADAPTER_REGISTRY.get(name)


def get_backbone(name: str) -> type:
    """The backbone class registered under ``name``.

    Parameters
    ----------
    name : str
        A registered backbone name (see :func:`list_backbones`).

    Returns
    -------
    cls : type
        The backbone class.
    """
    return BACKBONE_REGISTRY.get(name)


def get_head(name: str) -> type:
    """The head class registered under ``name``.

    Parameters
    ----------
    name : str
        A registered head name (see :func:`list_heads`).

    Returns
    -------
    cls : type
        The head class.
    """
    return HEAD_REGISTRY.get(name)


def get_loss(name: str) -> type:
    """The loss class registered under ``name``.

    Parameters
    ----------
    name : str
        A registered loss name (see :func:`list_losses`).

    Returns
    -------
    cls : type
        The loss class.
    """
    return LOSS_REGISTRY.get(name)


def get_token_loss(name: str) -> Callable:
    """The ``tokens``-head loss function registered under ``name``.

    Parameters
    ----------
    name : str
        A registered token loss name (see :func:`list_token_losses`).

    Returns
    -------
    loss : callable
        The loss function ``loss(pred, target) → scalar``.
    """
    return TOKEN_LOSS_REGISTRY.get(name)


def get_lowlevel_loss(name: str) -> Callable:
    """The ``lowlevel``-head loss function registered under ``name``.

    Parameters
    ----------
    name : str
        A registered low-level loss name (see :func:`list_lowlevel_losses`).

    Returns
    -------
    loss : callable
        The loss function ``loss(pred, target) → scalar``.
    """
    return LOWLEVEL_LOSS_REGISTRY.get(name)


def get_prior(name: str) -> type:
    """The prior class registered under ``name``.

    Parameters
    ----------
    name : str
        A registered prior name (see :func:`list_priors`).

    Returns
    -------
    cls : type
        The prior class.
    """
    return PRIOR_REGISTRY.get(name)


def list_adapters() -> list[str]:
    """Registered adapter names.

    Returns
    -------
    names : list of str
        The names, in registration order.
    """
    return ADAPTER_REGISTRY.names()


def list_backbones() -> list[str]:
    """Registered backbone names.

    Returns
    -------
    names : list of str
        The names, in registration order.
    """
    return BACKBONE_REGISTRY.names()


def list_heads() -> list[str]:
    """Registered head names (the order of ``BrainDecoder.heads``).

    Returns
    -------
    names : list of str
        The names, in registration order.
    """
    return HEAD_REGISTRY.names()


def list_losses() -> list[str]:
    """Registered training-loss names.

    Returns
    -------
    names : list of str
        The names, in registration order.
    """
    return LOSS_REGISTRY.names()


def list_token_losses() -> list[str]:
    """Registered ``tokens``-head loss names.

    Returns
    -------
    names : list of str
        The names, in registration order.
    """
    return TOKEN_LOSS_REGISTRY.names()


def list_lowlevel_losses() -> list[str]:
    """Registered ``lowlevel``-head loss names.

    Returns
    -------
    names : list of str
        The names, in registration order.
    """
    return LOWLEVEL_LOSS_REGISTRY.names()


def list_priors() -> list[str]:
    """Registered prior names.

    Returns
    -------
    names : list of str
        The names, in registration order.
    """
    return PRIOR_REGISTRY.names()


#: Trainer settings a registered loss may take (``Trainer(loss=name, ...)`` passes them by name).
LOSS_SETTINGS = ("temperature", "temperature_mode", "temperature_schedule", "n_epochs", "mixco_fraction",
                 "clip_weight")


def build_loss(name: str, **settings: Any) -> Any:
    """Build the loss registered under ``name`` from the :class:`~neurodecode.training.Trainer`'s settings.

    A class with a ``from_settings`` classmethod gets every setting; any other class gets those its
    ``__init__`` accepts by name. ``temperature`` / ``temperature_mode`` given to a loss without a
    temperature (``temperature_defaults = None``) raise.

    Parameters
    ----------
    name : str
        A registered loss.
    **settings
        Some of :data:`LOSS_SETTINGS` (None = the loss's default).

    Returns
    -------
    loss : nn.Module | callable
    """
    unknown = sorted(set(settings) - set(LOSS_SETTINGS))
    if unknown:
        raise TypeError(f"build_loss got unknown settings {unknown}; known: {list(LOSS_SETTINGS)}")
    cls = get_loss(name)
    if getattr(cls, "temperature_defaults", None) is None:
        given = [k for k in ("temperature", "temperature_mode") if settings.get(k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to losses with a temperature; loss {name!r} has "
                             "none")
    if hasattr(cls, "from_settings"):
        return cls.from_settings(**settings)
    from torch import nn

    own_init = cls.__init__ not in (object.__init__, nn.Module.__init__)  # their *args/**kwargs take nothing
    params = inspect.signature(cls).parameters if own_init else {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return cls(**{k: v for k, v in settings.items() if (takes_any or k in params) and v is not None})
