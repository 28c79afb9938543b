"""`Runtime`: starts a local radixserve server process and talks to it over HTTP.

    with rs.Runtime(model_path=None, max_running_requests=64) as runtime:
        rs.set_default_backend(runtime)
        ...

The server runs as `python -m radixserve.launch_server --port <free port> ...` in its own process
group, so `shutdown()` can stop it together with its scheduler and detokenizer children.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx

from .endpoint import RuntimeEndpoint

STARTUP_TIMEOUT_S = 300.0
SHUTDOWN_GRACE_S = 10.0
POLL_INTERVAL_S = 0.25
LOG_TAIL_CHARS = 4000


class Runtime:
    def __init__(
        self,
        model_path: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        **server_args: Any,
    ) -> None:
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.api_key: str | None = server_args.get("api_key")
        command = [sys.executable, "-m", "radixserve.launch_server", "--host", host]
        command += ["--port", str(self.port)]
        command += server_flags({"model_path": model_path, **server_args})
        # The server's output goes to a file, not a pipe nobody reads (a full pipe would block
        # it); its tail explains a failed start.
        self.log = tempfile.NamedTemporaryFile(prefix="radixserve-server-", suffix=".log")
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: shutdown signals all of it
        )
        atexit.register(self.shutdown)
        try:
            self._wait_healthy(startup_timeout)
            self.endpoint = RuntimeEndpoint(self.url, api_key=self.api_key)
        except BaseException:
            self.shutdown()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"the server exited with code {code} while starting:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", headers=headers, timeout=2).status_code == 200:
                    return
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(
            f"the server at {self.url} was not healthy after {timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self) -> str:
        with open(self.log.name, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - LOG_TAIL_CHARS, 0))
            return f.read().decode(errors="replace")

    def shutdown(self) -> None:
        """Stops the server and every process it started; safe to call more than once."""
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.shutdown)
        endpoint = getattr(self, "endpoint", None)
        if endpoint is not None:
            endpoint.shutdown()
        group = process.pid  # the group id equals the leader's pid (start_new_session)
        _signal_group(group, signal.SIGTERM)
        try:
            process.wait(SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            process.wait()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while group_alive(group) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        if group_alive(group):
            _signal_group(group, signal.SIGKILL)
        self.log.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.shutdown()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_flags(options: dict[str, Any]) -> list[str]:
    """`{"disable_radix_cache": True, "page_size": 16}` -> `--disable-radix-cache --page-size 16`."""
    flags: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def group_alive(group: int) -> bool:
    """True while a live (not zombie) process is in the group; zombies cannot be signalled away
    and wait for their parent (or init) to reap them."""
    if sys.platform.startswith("linux") and os.path.isdir("/proc"):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != b"Z":
                return True
        return False
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


@contextlib.contextmanager
def connect(
    url: str | None = None, api_key: str | None = None, **server_args: Any
) -> Iterator[RuntimeEndpoint]:
    """An endpoint for a running server at `url`, or a local server started for the duration
    of the block (`server_args` are its flags) when `url` is None:

        with rs.connect(args.url) as backend:
            rs.set_default_backend(backend)
    """
    if url:
        yield RuntimeEndpoint(url, api_key=api_key)
        return
    with Runtime(api_key=api_key, **server_args) as runtime:
        yield runtime.endpoint
