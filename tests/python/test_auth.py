"""HTTP authentication with real servers and the official client: a token
made on first start (0600, printed once), 401 with the protected resource
metadata for clients without it, constant-time token checks, the token from
the environment, OAuth access tokens (JWT) checked against a JWKS file and the
audience, /metrics behind the Host check and its own token, and a refusal to
serve a non-loopback address without authentication."""

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import time

import httpx2 as httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from conftest import DIST, MCPPLUS, HttpServer

pytestmark = pytest.mark.anyio


def client_with(url: str, token: str) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


def post_initialize(url: str, headers: dict | None = None) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    return httpx.post(url, json=body, headers={"Accept": "application/json, text/event-stream", **(headers or {})})


async def test_a_token_is_made_once_and_only_its_holder_gets_in(tmp_path):
    data = tmp_path / "data"
    server = HttpServer("--tools", str(DIST), "--data-dir", str(data), "--no-admin", auth=True)
    try:
        token_file = data / "http.token"
        token = token_file.read_text().strip()
        assert len(token) == 64
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        # The data directory and the queue in it are private too.
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "queue.sqlite3").stat().st_mode) == 0o600
        assert any(token in line for line in server.stderr_lines), "printed once on creation"

        bare = post_initialize(server.url)
        assert bare.status_code == 401
        base = server.url.removesuffix("/mcp")
        challenge = bare.headers["www-authenticate"]
        assert challenge == f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource"'
        wrong = post_initialize(server.url, {"Authorization": "Bearer " + "0" * 64})
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
        metadata = httpx.get(f"{base}/.well-known/oauth-protected-resource").json()
        assert metadata["resource"] == f"{base}/mcp" and metadata["bearer_methods_supported"] == ["header"]

        async with client_with(server.url, token) as client:
            result = await client.call_tool("echo", {"message": "authenticated"})
            assert result.structured_content == {"result": "authenticated"}
    finally:
        server.stop()
    # A restart keeps the token and does not print it again.
    again = HttpServer("--tools", str(DIST), "--data-dir", str(data), "--no-admin", auth=True)
    try:
        assert (data / "http.token").read_text().strip() == token
        assert not any(token in line for line in again.stderr_lines)
    finally:
        again.stop()


async def test_the_token_can_come_from_the_environment(tmp_path):
    token = "env-token-" + "x" * 20
    server = HttpServer("--tools", str(DIST), "--data-dir", str(tmp_path / "d"), "--no-admin",
                        auth=True, env={"MCPPLUS_HTTP_TOKEN": token})
    try:
        assert not (tmp_path / "d" / "http.token").exists()
        assert post_initialize(server.url).status_code == 401
        async with client_with(server.url, token) as client:
            assert (await client.call_tool("echo", {"message": "e"})).structured_content == {"result": "e"}
    finally:
        server.stop()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(secret: bytes, claims: dict, kid: str = "k1") -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


async def test_oauth_access_tokens_are_checked_against_the_jwks_and_audience(tmp_path):
    secret = os.urandom(32)
    (tmp_path / "jwks.json").write_text(json.dumps(
        {"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": b64url(secret)}]}))
    audience = "http://mcp.test/mcp"
    (tmp_path / "mcpplus.toml").write_text(
        f'[http.oauth]\nauthorization_servers = ["https://auth.test"]\n'
        f'jwks_file = "{tmp_path / "jwks.json"}"\naudience = "{audience}"\nissuer = "https://auth.test"\n')
    server = HttpServer("--tools", str(DIST), "--data-dir", str(tmp_path / "d"), "--no-admin",
                        "--config", str(tmp_path / "mcpplus.toml"), auth=True)
    now = int(time.time())
    good = {"iss": "https://auth.test", "aud": audience, "sub": "alice", "exp": now + 300}
    try:
        base = server.url.removesuffix("/mcp")
        metadata = httpx.get(f"{base}/.well-known/oauth-protected-resource").json()
        assert metadata["authorization_servers"] == ["https://auth.test"]
        async with client_with(server.url, hs256(secret, good)) as client:
            assert (await client.call_tool("echo", {"message": "jwt"})).structured_content == {"result": "jwt"}
        for bad in (
            hs256(secret, {**good, "aud": "http://other/mcp"}),
            hs256(secret, {**good, "exp": now - 120}),
            hs256(secret, {**good, "iss": "https://evil.test"}),
            hs256(os.urandom(32), good),
            hs256(secret, good, kid="unknown"),
        ):
            answer = post_initialize(server.url, {"Authorization": f"Bearer {bad}"})
            assert answer.status_code == 401, bad
    finally:
        server.stop()


async def test_metrics_answer_only_allowed_hosts_and_their_own_token(tmp_path):
    (tmp_path / "metrics.token").write_text("metrics-token-0123456789\n")
    (tmp_path / "metrics.token").chmod(0o600)
    (tmp_path / "mcpplus.toml").write_text(f'[http]\nmetrics_token_file = "{tmp_path / "metrics.token"}"\n')
    server = HttpServer("--tools", str(DIST), "--no-admin", "--config", str(tmp_path / "mcpplus.toml"))
    try:
        metrics = server.url.removesuffix("/mcp") + "/metrics"
        assert httpx.get(metrics, headers={"Host": "evil.example"}).status_code == 403
        assert httpx.get(metrics).status_code == 401
        ok = httpx.get(metrics, headers={"Authorization": "Bearer metrics-token-0123456789"})
        assert ok.status_code == 200 and "mcpplus_" in ok.text
    finally:
        server.stop()


def test_no_auth_is_refused_beyond_loopback(tmp_path):
    out = subprocess.run(
        [MCPPLUS, "serve", "--http", "0.0.0.0:0", "--no-auth", "--tools", str(DIST), "--no-admin"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "refusing to serve http://0.0.0.0:0/mcp without authentication" in out.stderr
    assert "bind a loopback address" in out.stderr
