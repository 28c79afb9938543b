"""One local server (`rs.Runtime` on the embedded SmolLM2) shared by every DSL test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import radixserve as rs
from radixserve.frontend_lang.backend.runtime import group_alive


@pytest.fixture(scope="session")
def runtime() -> Iterator[rs.Runtime]:
    server = rs.Runtime(log_level="warning")
    pid = server.process.pid
    rs.set_default_backend(server)
    yield server
    rs.set_default_backend(None)
    server.shutdown()
    # shutdown() must leave nothing behind: not the server, nor its scheduler or detokenizer.
    assert not group_alive(pid), "the server's process group outlived shutdown()"


@pytest.fixture
def backend(runtime: rs.Runtime) -> rs.RuntimeEndpoint:
    return runtime.endpoint
