"""`uvicorn gateway.main:app`: the gateway with settings from the environment.

A wrong setting ends the process here with one line per problem and no traceback. Imported by uvicorn, it puts
the gateway's edge protocol in place (gateway.edge.adopt) unless `--http` chose another.
"""

from __future__ import annotations

import sys

from gateway.app import create_app
from gateway.edge.adopt import adopt_loading_config
from gateway.ops.logs import configure_logging
from settings import SettingsError, load_settings

try:
    _settings = load_settings()
    configure_logging(_settings.server.log_level, _settings.access_log)
    app = create_app(_settings)
    adopt_loading_config(_settings)
except SettingsError as exc:
    sys.exit("\n".join(f"configuration error: {problem}" for problem in exc.problems))
