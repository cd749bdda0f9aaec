"""A real `gatehouse serve` for the client tests: the binary `swift build` made (or
GATEHOUSE_BINARY), a fresh SQLite file — or, when GATEHOUSE_TEST_POSTGRES names a PostgreSQL
server (`make test`'s second pass), a fresh database there — loopback, an ephemeral port."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))


def binary() -> str:
    given = os.environ.get("GATEHOUSE_BINARY")
    if given:
        return given
    bin_path = subprocess.run(["swift", "build", "--show-bin-path"], cwd=ROOT, capture_output=True, text=True,
                              check=True, env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/opt/swift/usr/bin"}).stdout.strip()
    return str(Path(bin_path) / "gatehouse")


def fresh_database(workdir: str) -> str:
    """Where a test server keeps its state: a new database on GATEHOUSE_TEST_POSTGRES's server
    when it is set (tests/postgres/cluster.sh makes it), else a SQLite file in `workdir`."""
    server = os.environ.get("GATEHOUSE_TEST_POSTGRES")
    if not server:
        return os.path.join(workdir, "gatehouse.db")
    return subprocess.run([str(ROOT / "tests" / "postgres" / "cluster.sh"), "fresh", server],
                          check=True, capture_output=True, text=True).stdout.strip()


class Server:
    """One server process; `restart()` kills it with SIGKILL and starts it again on the same
    port and database, as a crash and a supervisor would."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.db = fresh_database(workdir)
        self.address = "127.0.0.1:0"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.start()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
        env.update({"GATEHOUSE_LOG_LEVEL": "warning", "SWIFT_BACKTRACE": "enable=no"})
        self.process = subprocess.Popen(
            [binary(), "serve", "--address", self.address, "--db", self.db], cwd=self.workdir, env=env,
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.workdir, "server.stderr"), "ab"), stdin=subprocess.DEVNULL)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if "http://" not in line:
            self.process.kill()
            raise RuntimeError(f"gatehouse serve did not start: {line!r}")
        self.url = line[line.index("http://"):].split()[0]
        self.address = self.url.removeprefix("http://")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture
def server():
    with tempfile.TemporaryDirectory(prefix="gatehouse-py-") as workdir:
        s = Server(workdir)
        try:
            yield s
        finally:
            s.kill()


@pytest.fixture
def anyio_backend():
    return "asyncio"
