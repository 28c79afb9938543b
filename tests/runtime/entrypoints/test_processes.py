"""The scheduler and detokenizer processes on SmolLM2: start-up errors, generation over ZeroMQ,
a killed scheduler failing its callers at once, and no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.entrypoints.launcher import (
    CPU_THREAD_ENVIRONMENT,
    ChildProcesses,
    StartupError,
    runs_on_cpu,
)
from radixserve.runtime.server.tokenizer_manager import RuntimeDiedError, TokenizerManager
from radixserve.runtime.wire.messages import AbortCode, GenerateReq
from radixserve.runtime.wire.sampling_params import SamplingParams

ARGS = ServerArgs(max_total_tokens=8192, log_level="warning")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same. It may also be reaped between
    # kill(0) and the open: then it is gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_the_device_is_told_without_torch() -> None:
    assert runs_on_cpu(ARGS.replace(device="cpu"))
    assert not runs_on_cpu(ARGS.replace(device="cuda"))
    assert runs_on_cpu(ARGS) == (not os.path.exists("/dev/nvidiactl"))  # "auto"


def test_bad_model_path_is_a_clear_startup_error() -> None:
    children = ChildProcesses(ARGS.replace(model_path="/no/such/model"))
    with pytest.raises(StartupError, match="scheduler failed to start.*does not exist"):
        children.start()
    assert not os.path.exists(children.paths.directory)
    assert all(not p.is_alive() for p in children.processes.values())


async def collect(tm: TokenizerManager, req: GenerateReq) -> tuple[str, list]:
    text, outs = "", []
    async for out in tm.generate(req):
        text += out.text_delta
        outs.append(out)
    return text, outs


def test_generation_then_killed_scheduler_fails_callers_fast() -> None:
    children = ChildProcesses(ARGS)
    children.start()
    assert oct(os.stat(children.paths.directory).st_mode & 0o777) == "0o700"
    if runs_on_cpu(ARGS):  # the scheduler's thread pools sleep when done (launcher.py)
        with open(f"/proc/{children.processes['scheduler'].pid}/environ", "rb") as f:
            environment = dict(
                entry.decode().split("=", 1) for entry in f.read().split(b"\0") if b"=" in entry
            )
        for name, value in CPU_THREAD_ENVIRONMENT.items():
            assert environment[name] == os.environ.get(name, value)

    async def scenario() -> None:
        tm = TokenizerManager(children)
        tm.start()
        tok_ids = [1, 504, 3458, 282, 4649, 314]  # "The capital of France is" in SmolLM2
        greedy = SamplingParams(max_new_tokens=8, temperature=0)
        text, outs = await collect(tm, GenerateReq(rid="a", input_ids=tok_ids, sampling=greedy))
        assert outs[-1].token_out.finish is not None and text
        # A request the scheduler refuses comes back as an abort with the reason.
        empty = GenerateReq(rid="e", input_ids=[], sampling=greedy)
        _, refused = await collect(tm, empty)
        assert refused[-1].token_out.finish.type == "abort"
        assert refused[-1].token_out.finish.code == AbortCode.REJECTED
        assert "empty" in refused[-1].token_out.finish.message
        long = SamplingParams(max_new_tokens=5000, ignore_eos=True)
        slow = asyncio.create_task(
            collect(tm, GenerateReq(rid="b", input_ids=tok_ids, sampling=long))
        )
        await asyncio.sleep(1.0)
        os.kill(children.processes["scheduler"].pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(RuntimeDiedError, match="scheduler process died"):
            await slow
        assert time.monotonic() - started < 3.0
        assert not tm.healthy
        await tm.close()

    try:
        asyncio.run(scenario())
    finally:
        children.stop()
    assert all(not p.is_alive() for p in children.processes.values())
    assert not os.path.exists(children.paths.directory)


def test_children_exit_when_the_parent_is_killed(tmp_path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from radixserve.runtime.entrypoints.launcher import ChildProcesses
        from radixserve.runtime.config.server_args import ServerArgs
        children = ChildProcesses(ServerArgs(max_total_tokens=4096, log_level="warning"))
        children.start()
        print(" ".join(str(p.pid) for p in children.processes.values()), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        parent.kill()
        parent.wait()
        assert wait_gone(pids, timeout=10), "child processes outlived their parent"
    finally:
        parent.kill()
