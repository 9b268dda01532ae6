"""The method registry: the facts of every fine-tuning method, one entry each.

An entry holds the name, the label and colour used in every table and figure, the family, the
default learning rate, its builder (which lives in the method's own module), any Trainer
callbacks, a finisher that reads the trained model, the formula of its trainable adapter
parameters, and its own settings (a dataclass of `option` fields with their checks). The order
of registration is the order of every table and figure.

Adding a method is one module that calls `register(Method(...))` on import (see
`gelora.methods.lora`) and one row in `tests/test_methods.py`; a method defined outside the
package registers the same way.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

FAMILIES = ("full", "lora", "lora_xs")  # every weight; B A factors; B R A with only R trained


def option(default, help: str):
    """A method's own setting: a field of its settings dataclass, with the help text that
    `gelora train --help` shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Method:
    """One fine-tuning method: its facts and how to build it."""

    name: str
    label: str
    family: str
    lr: float  # default peak learning rate
    colour: str
    marker: str
    build: Callable  # (BuildContext) -> (model, info)
    params: Callable[[dict, dict], int] | None  # (block shapes, per-block ranks) -> trainable adapter parameters
    budget_rule: str | None = None  # the matched_baselines entry used at a budget (None: none or its own)
    uses_profile: bool = False
    ranks_adapter: str = "lora"  # the adapter whose parameter count GeLoRA's budget scaling uses
    callbacks: Callable[[], list] = lambda: []
    finish: Callable = lambda model: {}
    description: str = ""
    settings: type | None = None  # a dataclass of `option` fields with `check(self, config)`; None: no own settings


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.family not in FAMILIES:
        raise ValueError(f"method {method.name!r}: unknown family {method.family!r}; expected one of {FAMILIES}")
    if method.settings is not None:
        if not dataclasses.is_dataclass(method.settings) or not callable(getattr(method.settings, "check", None)):
            raise ValueError(f"method {method.name!r}: settings must be a dataclass with a check(self, config) method")
        known = options()
        for f in dataclasses.fields(method.settings):
            if f.name in known and known[f.name][0].default != f.default:
                raise ValueError(f"method {method.name!r}: setting {f.name!r} defaults to {f.default!r} but "
                                 f"{known[f.name][1]} declare it with {known[f.name][0].default!r}")
    REGISTRY[method.name] = method
    return method


def options() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Every registered method's own settings by name: the field and the methods that read it."""
    found: dict = {}
    for method in REGISTRY.values():
        for f in dataclasses.fields(method.settings) if method.settings else ():
            found.setdefault(f.name, (f, []))[1].append(method.name)
    return found


def settings_of(name: str, given: dict):
    """Method `name`'s settings: its dataclass filled from `given` (the options it declares;
    others, meant for other methods, are left), or None for a method without settings."""
    cls = get_method(name).settings
    if cls is None:
        return None
    own = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in given.items() if k in own})


def get_method(name) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; expected one of {names()}")
    return REGISTRY[name]


def names() -> list[str]:
    return list(REGISTRY)


def labels() -> dict[str, str]:
    return {m.name: m.label for m in REGISTRY.values()}


def label(name: str) -> str:
    return REGISTRY[name].label if name in REGISTRY else name


def marker(name: str) -> str:
    return REGISTRY[name].marker if name in REGISTRY else "o"


def family_members(family: str) -> list[str]:
    return [m.name for m in REGISTRY.values() if m.family == family]


def colours() -> dict[str, str]:
    return {m.name: m.colour for m in REGISTRY.values()}


def order(present) -> list[str]:
    """The methods in `present`, registry order first, unknown names after (sorted)."""
    present = list(dict.fromkeys(present))
    return [m for m in REGISTRY if m in present] + sorted(set(present) - set(REGISTRY))
