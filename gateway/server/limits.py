"""Where the edge's protocols find `[limits]`."""

from __future__ import annotations

import functools

from uvicorn.config import Config

from settings import LimitsSettings, load_settings


@functools.cache
def _limits_from_environment() -> LimitsSettings:
    return load_settings().limits


def limits_for(config: Config) -> LimitsSettings:
    """The limits `python -m gateway` put on its config, else those of the settings (`uvicorn --http ...`)."""
    limits = getattr(config, "limits", None)
    return limits if isinstance(limits, LimitsSettings) else _limits_from_environment()
