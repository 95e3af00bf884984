from __future__ import annotations

import pytest

from gateway.routing.table import RouteTable

TABLE = RouteTable({"/": "root", "/api": "api", "/api/admin": "admin", "/static": "static"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("path", "route"),
    [
        (b"/", "root"),
        (b"/api", "api"),
        (b"/api/", "api"),
        (b"/api/users", "api"),
        (b"/apix", "root"),
        (b"/api/admin", "admin"),
        (b"/api/admin/x", "admin"),
        (b"/api/administrator", "api"),
        (b"/API", "api"),
        (b"/Api/Admin/x", "admin"),
        (b"/static/css/site.css", "static"),
    ],
)
def test_longest_whole_segment_prefix_wins(path: bytes, route: str) -> None:
    found = TABLE.match(path)
    assert found is not None
    assert found[1] == route


def test_without_a_root_route_unmatched_paths_find_nothing() -> None:
    table = RouteTable({"/api": "api"})  # type: ignore[dict-item]
    assert table.match(b"/apix") is None
    assert table.match(b"/") is None
    assert table.match(b"/other/api") is None
