"""Extension points named in settings: a built-in alias, or a `package.module:Name` the gateway loads at start-up
(settings never import gateway, so only the shape is checked here; the gateway's registry loads it)."""

from __future__ import annotations

from collections.abc import Sequence


def alias_or_dotted_path(value: str, aliases: Sequence[str], key: str) -> str:
    """`value` when it is one of `aliases` or looks like a dotted path; ValueError naming `key` otherwise."""
    if value in aliases or ":" in value or "." in value:
        return value
    raise ValueError(f"{key}: {value!r} is none of {', '.join(aliases)} nor a dotted path")
