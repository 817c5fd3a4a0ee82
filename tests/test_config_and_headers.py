"""Configuration by environment (`AUTOBOTS_*`, pydantic-settings), the refusal to serve beyond
loopback without sign-in, and the headers every answer carries (no caching of API data, the
page's hardening, CORS only for named origins)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from autobots.settings import load_settings
from tests.support.auth import cli
from tests.support.server import RunningServer, free_port, start_server


def test_every_key_can_be_set_by_environment_and_unknown_ones_are_refused() -> None:
    settings = load_settings(
        env={
            "AUTOBOTS_AUTH__MODE": "token",
            "AUTOBOTS_LIMITS__MAX_LLM_CALLS": "400",
            "AUTOBOTS_CORS__ALLOWED_ORIGINS": '["https://chat.example.com"]',
            "AUTOBOTS_LIMITS__PER_USER": '{"live_runs": 3}',
            "AUTOBOTS_CODE_EXECUTION__TIMEOUT_S": "12",
            "AUTOBOTS_REQUIRE_DOCKER": "1",  # the test suite's own switches are not settings
        }
    )
    assert settings.auth.mode == "token" and settings.limits.max_llm_calls == 400
    assert settings.cors.allowed_origins == ["https://chat.example.com"]
    assert settings.limits.per_user.live_runs == 3 and settings.code_execution.timeout_s == 12
    assert settings.limits.history_messages == 20  # the rest of the file's values stay
    with pytest.raises(SystemExit, match="AUTOBOTS_LIMITS__MAX_LLM_CALS"):
        load_settings(env={"AUTOBOTS_LIMITS__MAX_LLM_CALS": "3"})
    with pytest.raises(SystemExit, match="AUTOBOTS_AUTH__MODE"):
        load_settings(env={"AUTOBOTS_AUTH__MODE": "everyone"})
    with pytest.raises(SystemExit, match=r"auth\.oidc\.issuer"):
        load_settings(env={"AUTOBOTS_AUTH__MODE": "oidc"})


def test_a_misconfigured_server_does_not_start(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="AUTOBOTS_AUTH__MDOE"):
        start_server(tmp_path, env={"AUTOBOTS_AUTH__MDOE": "token"}, timeout=30)


def test_serve_without_sign_in_stays_on_loopback(tmp_path) -> None:
    port = str(free_port())
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        out = cli(tmp_path, "serve", "--host", host, "--port", port)
        assert out.returncode == 2, out
        assert "auth.mode" in out.stderr and "--insecure-no-auth" in out.stderr
    assert not (tmp_path / "database.sqlite").exists()  # refused before anything was made


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"AUTOBOTS_CORS__ALLOWED_ORIGINS": '["https://chat.example.com"]'}
    srv = start_server(tmp_path_factory.mktemp("cors"), env=env)
    yield srv
    srv.stop()


def test_api_answers_are_never_cached_and_the_page_is_hardened(server: RunningServer, user_id: str) -> None:
    for path in ("/api/health", f"/api/sessions?user_id={user_id}", "/api/gallery", "/api/nothing-here"):
        r = requests.get(server.url + path, timeout=30)
        assert r.headers["Cache-Control"] == "no-store", path
    page = requests.get(server.url + "/", timeout=30)
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    asset = requests.get(server.url + "/static/js/api.js", timeout=30)
    assert (
        asset.headers["Cache-Control"] != "no-store" and asset.headers["X-Content-Type-Options"] == "nosniff"
    )


def test_cors_is_off_unless_an_origin_is_named(server: RunningServer, cors_server: RunningServer) -> None:
    preflight = {"Origin": "https://chat.example.com", "Access-Control-Request-Method": "POST"}
    r = requests.options(server.url + "/api/sessions", headers=preflight, timeout=30)
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.options(cors_server.url + "/api/sessions", headers=preflight, timeout=30)
    assert r.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in r.headers  # cookies never cross origins
    other = requests.get(
        cors_server.url + "/api/health", headers={"Origin": "https://evil.example.net"}, timeout=30
    )
    assert "Access-Control-Allow-Origin" not in other.headers and other.status_code == 200


def test_a_loopback_server_without_sign_in_answers_only_loopback_hosts(
    server: RunningServer, user_id: str
) -> None:
    """DNS rebinding: a page on attacker.example re-pointed at 127.0.0.1 sends its own Host."""
    port = server.url.rsplit(":", 1)[1]
    for host in (f"attacker.example:{port}", "attacker.example"):
        r = requests.get(
            f"{server.url}/api/sessions", params={"user_id": user_id}, headers={"Host": host}, timeout=30
        )
        assert r.status_code == 400 and r.json()["status"] is False, (host, r.text)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        r = requests.get(
            f"{server.url}/api/sessions", params={"user_id": user_id}, headers={"Host": host}, timeout=30
        )
        assert r.status_code == 200, (host, r.text)
    refused = requests.get(
        f"{server.url}/api/runs/x/events", headers={"Host": "attacker.example"}, timeout=30
    )
    assert refused.status_code == 400


def test_the_sign_in_cookie_can_be_marked_secure_behind_a_tls_proxy(tmp_path) -> None:
    from tests.support.auth import create_key

    key = create_key(tmp_path, "proxied@example.com")
    srv = start_server(tmp_path, env={"AUTOBOTS_AUTH__MODE": "token", "AUTOBOTS_AUTH__COOKIE_SECURE": "true"})
    try:
        r = requests.post(
            srv.url + "/api/auth/session", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert r.status_code == 200 and "; secure" in r.headers["Set-Cookie"].lower()
    finally:
        srv.stop()
