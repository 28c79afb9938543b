"""A real server process on the embedded SmolLM2, started once for the whole HTTP test session.

`python -m radixserve.launch_server --port <free port> --api-key ...` runs as a subprocess; the
fixture waits for /health and, at teardown, sends SIGTERM and checks that the server and its
scheduler and detokenizer children are all gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

API_KEY = "test-secret-key"
STARTUP_TIMEOUT_S = 300.0  # SmolLM2 loads in ~20-40 s on a busy 2-core CPU
STOP_TIMEOUT_S = 30.0
# A small KV pool keeps the server light; still far more than any test request needs.
SERVER_FLAGS = ("--max-total-tokens", "32768", "--log-level", "warning")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: str
    api_key: str | None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def log_tail(self, chars: int = 4000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-chars:]

    def child_pids(self) -> list[int]:
        return children_of(self.process.pid)


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                pids.append(int(entry))
    return pids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_server(
    *flags: str, api_key: str | None = API_KEY, main_code: str | None = None
) -> ServerProcess:
    """`main_code`: Python run as `python -c` in place of `-m radixserve.launch_server` (it gets
    the flags in sys.argv[1:])."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="radixserve-http-", suffix=".log", delete=False)
    entry = ["-c", main_code] if main_code else ["-m", "radixserve.launch_server"]
    command = [sys.executable, *entry, "--port", str(port)]
    command += [*SERVER_FLAGS, *flags] + (["--api-key", api_key] if api_key else [])
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(process, port, log.name, api_key)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited during start-up:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(server)
    pytest.fail(f"the server did not become healthy:\n{server.log_tail()}")


def stop_server(server: ServerProcess) -> int:
    """SIGTERM, then the exit status; fails if any child process outlives the server."""
    children = server.child_pids()
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.process.kill()
        code = server.process.wait()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [p for p in children if alive(p)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"child processes {orphans} outlived the server"
    return code


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    handle = start_server()
    yield handle
    code = stop_server(handle)
    assert code == 0, f"the server exited with {code} on SIGTERM:\n{handle.log_tail()}"


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
