"""The one way to plug things in: an extension point's built-ins by short alias, anything else by dotted path.

Balancers (gateway.upstream.selection), rate-limit stores (gateway.ratelimit) and cache stores (gateway.cache)
each keep a Registry; settings name an alias (`round_robin`, `redis`) or `package.module:Name`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories of one kind of extension. `required` names the methods a loaded one must have, so that a wrong
    dotted path stops start-up with a clear error instead of failing on the first request."""

    def __init__(self, kind: str, built_in: Mapping[str, Callable[..., T]], required: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._built_in = dict(built_in)
        self._required = required

    def __contains__(self, name: object) -> bool:
        return name in self._built_in

    def aliases(self) -> list[str]:
        return list(self._built_in)

    def make(self, name: str, *args: object) -> T:
        """A new extension from `name` (an alias, or `package.module:Name` called with `args`); ValueError naming
        what could not be loaded or lacks a required method."""
        factory = self._built_in.get(name) or self._load(name)
        made = factory(*args)
        missing = [method for method in self._required if not callable(getattr(made, method, None))]
        if missing:
            raise ValueError(f"{name!r} is no {self.kind}: it has no {', '.join(missing)} method")
        return made

    def _load(self, name: str) -> Callable[..., T]:
        module_name, _, attribute = name.replace(":", ".").rpartition(".")
        try:
            factory: Callable[..., T] = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"cannot load {self.kind} {name!r}: {exc}") from None
        if not callable(factory):
            raise ValueError(f"{name!r} is not a class or callable")
        return factory
