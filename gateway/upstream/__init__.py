"""Upstream instances and their pool, balancers (selection policies) and active health checks."""
