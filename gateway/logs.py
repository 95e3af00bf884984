"""Logging for the `gateway.*` loggers when no one else has configured them."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "info") -> None:
    """Give the `gateway` logger a stderr handler unless it (or the root logger) already has one."""
    logger = logging.getLogger("gateway")
    logger.setLevel(level.upper())
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
