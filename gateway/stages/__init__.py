"""The gateway's own per-request features as stages (stage.py), the passes that run them (pipeline.py), and
the user middleware named in settings (user_middleware.py)."""
