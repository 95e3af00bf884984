from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from settings import SettingsError, load_settings
from settings.gateway import DEFAULT_CONFIG, GatewaySettings
from settings.reference import _models_in, sections

ROOT = Path(__file__).resolve().parents[2]


def problems_of(**overrides: object) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    return caught.value.problems


def test_the_built_in_default_serves_the_welcome_folder() -> None:
    settings = load_settings()
    assert [route.prefix for route in settings.routes] == ["/"]
    assert settings.routes[0].static_dir == DEFAULT_CONFIG.parent / "welcome"


def test_toml_file_named_by_gateway_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "files").mkdir()
    config = tmp_path / "gateway.toml"
    config.write_text(
        """
[server]
port = 9000
[[routes]]
prefix = "/api/"
upstreams = ["http://127.0.0.1:3001", { url = "http://127.0.0.1:3002/v1", weight = 2 }]
strip_prefix = true
[routes.timeouts]
connect = 1.5
response_header = 60
[[routes]]
prefix = "/static"
static_dir = "files"
"""
    )
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    settings = load_settings()
    api, static = settings.routes
    assert settings.server.port == 9000
    assert api.prefix == "/api"
    assert [(u.url, u.weight) for u in api.upstreams] == [("http://127.0.0.1:3001", 1), ("http://127.0.0.1:3002/v1", 2)]
    assert api.timeouts.connect == 1.5
    assert api.timeouts.response_header == 60
    assert api.timeouts.read == 30
    assert static.static_dir == tmp_path / "files"


def test_environment_beats_dotenv_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nport = 1\nworkers = 1\nkeepalive_timeout = 1\n")
    (tmp_path / ".env").write_text("GATEWAY_SERVER__PORT=2\nGATEWAY_SERVER__WORKERS=2\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    monkeypatch.setenv("GATEWAY_SERVER__PORT", "3")
    monkeypatch.setenv("GATEWAY_ROUTES", '[{"prefix": "/x", "upstreams": ["http://127.0.0.1:1"]}]')
    settings = load_settings()
    assert (settings.server.port, settings.server.workers, settings.server.keepalive_timeout) == (3, 2, 1)
    assert settings.routes[0].prefix == "/x"
    assert load_settings(server={"port": 4}).server.port == 4


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        ([{"prefix": "/a", "upstreams": ["ftp://x"]}], "routes[0].upstreams[0].url: 'ftp://x' must start with http"),
        ([{"prefix": "/a", "upstreams": ["http://:80"]}], "routes[0].upstreams[0].url: 'http://:80' has no host"),
        ([{"prefix": "/a", "upstreams": ["http://h:99999"]}], "routes[0].upstreams[0].url: 'http://h:99999' has an"),
        ([{"prefix": "a", "upstreams": ["http://h"]}], "routes[0].prefix: 'a' must start with /"),
        ([{"prefix": "/a/../b", "upstreams": ["http://h"]}], "routes[0].prefix: '/a/../b' must be plain"),
        ([{"prefix": "/_gateway", "upstreams": ["http://h"]}], "routes[0].prefix: /_gateway is reserved"),
        ([{"prefix": "/a"}], "routes[0]: a route needs either upstreams or static_dir"),
        ([{"prefix": "/a", "upstreams": [{"url": "http://h", "weight": 0}]}], "routes[0]: at least one upstream"),
        ([{"prefix": "/a", "upstreams": ["http://h"], "colour": 1}], "routes[0].colour: unknown setting"),
        ([{"prefix": "/a", "upstreams": ["http://h"], "max_body_bytes": -1}], "routes[0].max_body_bytes: Input"),
        ([{"prefix": "/a", "upstreams": ["http://h"], "timeouts": {"read": 0}}], "routes[0].timeouts.read: Input"),
        ([{"prefix": "/a", "static_dir": "/no/such/dir"}], "routes[0].static_dir: '/no/such/dir' is not a folder"),
        (
            [{"prefix": "/a", "upstreams": ["http://h"]}, {"prefix": "/a/", "upstreams": ["http://h"]}],
            "routes[1].prefix: '/a' is already used by routes[0]",
        ),
    ],
)
def test_a_wrong_route_is_named_by_its_key(routes: list[dict[str, object]], problem: str) -> None:
    found = problems_of(routes=routes)
    assert len(found) == 1
    assert found[0].startswith(problem), found


def test_every_problem_gets_its_own_line() -> None:
    found = problems_of(
        routes=[{"prefix": "/ok", "upstreams": ["http://h"]}, {"prefix": "bad", "upstreams": ["http://h", "nope"]}],
        server={"port": 70000},
    )
    assert [line.split(":")[0] for line in found] == ["server.port", "routes[1].prefix", "routes[1].upstreams[1].url"]


def test_unknown_keys_are_errors_in_toml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nprot = 1\n[caching]\nx = 1\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    assert sorted(problems_of()) == ["caching: unknown setting", "server.prot: unknown setting"]
    monkeypatch.delenv("GATEWAY_CONFIG")
    monkeypatch.setenv("GATEWAY_SERVR__PORT", "1")
    assert problems_of() == ["GATEWAY_SERVR__PORT: unknown setting"]


def test_missing_or_broken_config_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", str(tmp_path / "missing.toml"))
    assert problems_of()[0].startswith("GATEWAY_CONFIG: cannot read")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[routes]\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(broken))
    assert problems_of()[0].startswith("GATEWAY_CONFIG: ") and "is not valid TOML" in problems_of()[0]


def test_bad_json_in_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ROUTES", "[not json")
    assert "routes" in problems_of()[0]


def test_trusted_proxies_must_be_networks() -> None:
    assert problems_of(proxy={"trusted_proxies": ["10.0.0.0/8", "bogus"]})[0].startswith("proxy.trusted_proxies[1]")


def run_module(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_command_prints_the_route_table(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[[routes]]\nprefix = "/api"\nupstreams = ["http://127.0.0.1:3001"]\nstrip_prefix = true\n')
    result = run_module("-m", "gateway", "check", env={"GATEWAY_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert "/api" in result.stdout and "http://127.0.0.1:3001 (weight 1)" in result.stdout
    assert "strip_prefix" in result.stdout


def test_wrong_settings_stop_start_up_with_one_line_each_and_no_traceback(tmp_path: Path) -> None:
    env = {"GATEWAY_ROUTES": '[{"prefix": "/a", "upstreams": ["nope"]}]', "GATEWAY_SERVER__PORT": "x"}
    for args in (("-m", "gateway", "check"), ("-m", "uvicorn", "gateway.main:app", "--port", "0")):
        result = run_module(*args, env=env)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("configuration error:")]
        assert [line.split(":")[1].strip() for line in lines] == ["server.port", "routes[0].upstreams[0].url"]


def _models_of_the_tree() -> list[type[BaseModel]]:
    return [GatewaySettings, *(model for _, _, model in sections())]


def _a_settings_path(path: list[str]) -> bool:
    """Whether `a.b.c` names a key, starting from any model of the settings tree (the README writes route keys
    as `timeouts.read` and global ones as `limits.send_timeout`)."""
    for start in _models_of_the_tree():
        model: type[BaseModel] | None = start
        for index, part in enumerate(path):
            if model is None or part not in model.model_fields:
                break
            inner = [found for found, _ in _models_in(model.model_fields[part].annotation)]
            model = inner[0] if inner else None
            if index == len(path) - 1:
                return True
    return False


def _named_keys(text: str) -> list[list[str]]:
    """Dotted settings names in backticks: `limits.send_timeout`, `[routes.cache] enabled`, `[routes.timeouts]`."""
    keys = [name.split(".") for name in re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", text)]
    for section, key in re.findall(r"`\[\[?([a-z_.]+)\]\]?(?: ([a-z_]+))?`", text):
        keys.append(section.split(".") + ([key] if key else []))
    first_segments = {name for model in _models_of_the_tree() for name in model.model_fields}
    return [key for key in keys if key[0] in first_segments]


def test_every_settings_key_the_readme_names_exists() -> None:
    """The README once named `timeouts.total`, which the settings refuse (issue 30)."""
    readme = (ROOT / "README.md").read_text()
    named = _named_keys(readme[: readme.index("## Changelog")])  # the changelog may name keys that were renamed
    assert len(named) > 30  # the check reads what it should
    assert [".".join(key) for key in named if not _a_settings_path(key)] == []
    assert not _a_settings_path(["timeouts", "total"]) and _a_settings_path(["timeouts", "response_header"])
