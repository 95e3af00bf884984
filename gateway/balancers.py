"""The Balancer Protocol's documented import path (`gateway.balancers.Balancer`).

It lives in gateway.upstream.selection."""

from gateway.upstream.selection import Balancer

__all__ = ["Balancer"]
