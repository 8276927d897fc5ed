"""Fixtures that start the real `mcpplus` binary and connect the official Python
MCP client (PyPI `mcp`, pinned in requirements.txt) in either protocol era, over
stdio or Streamable HTTP on 127.0.0.1 (ephemeral port)."""

import contextlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import sys
import threading
import time

import anyio
import pytest
from mcp import Client, StdioServerParameters

ROOT = pathlib.Path(__file__).resolve().parents[2]
MCPPLUS = os.environ.get("MCPPLUS_BIN", str(ROOT / "target" / "debug" / "mcpplus"))
DIST = pathlib.Path(os.environ.get("MCPPLUS_TOOLS_DIST", ROOT / "guest-tools" / "dist"))
FIXTURES = DIST / "fixtures"

# Every era this server speaks: "legacy" = the 2025-11-25 initialize handshake;
# "auto" = the client probes server/discover and, since we answer it, speaks
# 2026-07-28 (stateless requests with per-request _meta).
ERAS = ["legacy", "auto"]
TRANSPORTS = ["stdio", "http"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


class HttpServer:
    """`mcpplus serve --http 127.0.0.1:0 --no-auth` (loopback; the authentication
    tests start their own servers with tokens), stopped when the test ends."""

    def __init__(self, *args: str, auth: bool = False, env: dict | None = None):
        # Its own data directory and admin socket unless the test names them,
        # so no two servers of a run share state.
        self.own = tempfile.mkdtemp(prefix="mcpplus-server-")
        extra = []
        if "--data-dir" not in args:
            extra += ["--data-dir", os.path.join(self.own, "data")]
        if "--admin-socket" not in args and "--no-admin" not in args:
            extra += ["--admin-socket", os.path.join(self.own, "admin.sock")]
        self.proc = subprocess.Popen(
            [MCPPLUS, "serve", "--http", "127.0.0.1:0", *(() if auth else ("--no-auth",)), *args, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stderr_lines: list[str] = []
        self.url = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.stderr_lines.append(line)
                m = re.search(r"listening on (http://\S+)", line)
                if m and not self.url:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(180) or not self.url:
            self.stop()
            raise RuntimeError("mcpplus did not start:\n" + "".join(self.stderr_lines))

    async def wait_for_log(self, *fragments: str, within: float = 10.0) -> bool:
        """True once a log line containing every fragment appears within `within` s."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if any(all(f in line for f in fragments) for line in self.stderr_lines):
                return True
            await anyio.sleep(0.1)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.own, ignore_errors=True)


@pytest.fixture(scope="module")
def http_server():
    server = HttpServer()
    yield server
    server.stop()


def stdio_params(*args: str) -> StdioServerParameters:
    return StdioServerParameters(command=MCPPLUS, args=["serve", *args], env=dict(os.environ))


@contextlib.asynccontextmanager
async def connect(transport: str, mode: str, http_server: HttpServer | None = None, serve_args=()):
    if transport == "stdio":
        target = stdio_params(*serve_args)
    else:
        assert http_server is not None
        target = http_server.url
    async with Client(target, mode=mode, read_timeout_seconds=120) as client:
        yield client


def pytest_report_header(config):
    return [f"mcpplus binary: {MCPPLUS}", f"tools: {DIST}", f"python: {sys.version.split()[0]}"]


def backend_lines(backend, tmp_path):
    """`[queue]` lines for `backend`: nothing for SQLite; for PostgreSQL the test
    server scripts/test.sh started (MCPPLUS_TEST_PG_URL) and a schema of this test
    (the server is thrown away at the end of the run)."""
    if backend == "sqlite":
        return ""
    url = os.environ.get("MCPPLUS_TEST_PG_URL")
    assert url, "the PostgreSQL backend needs the test server: run scripts/test.sh, or set MCPPLUS_TEST_PG_URL"
    schema = "py_" + "".join(c if c.isalnum() else "_" for c in tmp_path.name.lower())[-30:] + f"_{os.getpid()}"
    return f'backend = "postgres"\nurl = "{url}"\nschema = "{schema}"\n'
