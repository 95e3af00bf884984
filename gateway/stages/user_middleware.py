"""Building middleware chains: user middleware from settings (checked at start-up) and per-route stacks."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.types import ASGIApp

from settings import MiddlewareSettings, SettingsError


def from_settings(entries: Sequence[MiddlewareSettings], key: str) -> list[Middleware]:
    """`Middleware` for each entry; options that the class cannot take stop start-up naming `key[i].options`."""
    middleware = []
    for index, entry in enumerate(entries):
        if not callable(entry.factory):
            raise SettingsError([f"{key}[{index}].factory: {entry.factory!r} is not a class or callable"])
        try:
            inspect.signature(entry.factory).bind(None, **entry.options)
        except TypeError as exc:
            raise SettingsError([f"{key}[{index}].options: {exc}"]) from None
        except ValueError:
            pass  # no inspectable signature (a builtin): trust the options
        middleware.append(Middleware(entry.factory, **entry.options))
    return middleware


def wrap(app: ASGIApp, middleware: Sequence[Middleware]) -> ASGIApp:
    """`app` inside `middleware`, the first entry outermost (as Starlette orders them)."""
    for factory, args, kwargs in reversed(middleware):
        app = factory(app, *args, **kwargs)
    return app
