"""Several real `mcpplus serve` nodes forming a mesh on loopback, for the
federation and peer-tool tests: each node has its own folder (tools, data,
config), its PeerId from `mcpplus peers id`, and is killed when the test ends."""

import os
import pathlib
import shutil
import signal
import subprocess

from conftest import DIST, FIXTURES, MCPPLUS, HttpServer


def peer_id(data_dir: pathlib.Path) -> str:
    out = subprocess.run(
        [MCPPLUS, "peers", "id", "--data-dir", str(data_dir)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


class Node:
    def __init__(self, root: pathlib.Path, name: str):
        self.dir = root / name
        (self.dir / "tools").mkdir(parents=True)
        (self.dir / "journal").mkdir()
        self.id = peer_id(self.dir / "data")
        self.server: HttpServer | None = None

    def host(self, *components: str):
        """Copy bundled components (by file name in dist/ or dist/fixtures/)."""
        for name in components:
            source = DIST / name if (DIST / name).exists() else FIXTURES / name
            shutil.copy(source, self.dir / "tools" / name)
            policy = source.with_suffix(".policy.toml")
            if policy.exists():
                shutil.copy(policy, self.dir / "tools" / policy.name)
        if "recorder.wasm" in components:
            (self.dir / "tools" / "recorder.policy.toml").write_text(
                f'[[files]]\nhost = "{self.dir / "journal"}"\nguest = "/journal"\naccess = "read-write"\n'
            )

    def configure(self, peers: dict[str, list[str]], extra: str = "", mesh: str = ""):
        """`peers`: PeerId → roles allowed here."""
        text = f"{extra}\n[mesh]\nmdns = false\nslots = 2\n{mesh}\n"
        for peer, roles in peers.items():
            quoted = ", ".join(f'"{r}"' for r in roles)
            text += f'\n[mesh.peers."{peer}"]\nroles = [{quoted}]\n'
        (self.dir / "mcpplus.toml").write_text(text)

    def start(self, *mesh_args: str) -> HttpServer:
        self.server = HttpServer(
            "--tools", str(self.dir / "tools"),
            "--data-dir", str(self.dir / "data"),
            "--config", str(self.dir / "mcpplus.toml"),
            "--log-format", "json",
            "--no-admin", "--no-watch",
            *mesh_args,
        )
        return self.server

    @property
    def address(self) -> str:
        assert self.server is not None
        for line in self.server.stderr_lines:
            if line.startswith("mcpplus: mesh listening on "):
                return line.split(" on ", 1)[1].strip()
        raise AssertionError("the node printed no mesh address")

    def journal(self) -> list[str]:
        path = self.dir / "journal" / "executions.log"
        return path.read_text().splitlines() if path.exists() else []

    def kill(self):
        """`kill -9`: no shutdown of any kind."""
        if self.server and self.server.proc.poll() is None:
            os.kill(self.server.proc.pid, signal.SIGKILL)
            self.server.proc.wait()

    def stop(self):
        if self.server:
            self.server.stop()
