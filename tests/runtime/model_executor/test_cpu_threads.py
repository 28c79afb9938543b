"""The CPU path's torch threads: --cpu-threads, else the CPUs this process may use less one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.entrypoints.launch_server import parse_args
from radixserve.runtime.model_executor import device
from radixserve.runtime.model_executor.device import apply_cpu_threads, resolve_cpu_threads


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 1), (8, 7), (64, 63)])
def test_default_leaves_one_of_the_available_cpus(
    monkeypatch: pytest.MonkeyPatch, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert device.available_cpus() == cpus
    assert resolve_cpu_threads(ServerArgs()) == expected


def test_tensor_parallel_ranks_share_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: set(range(9)))
    assert resolve_cpu_threads(ServerArgs(tp_size=2)) == 4
    assert resolve_cpu_threads(ServerArgs(tp_size=16)) == 1


def test_the_flag_wins_and_must_be_positive() -> None:
    assert parse_args(["--cpu-threads", "3"]).cpu_threads == 3
    assert resolve_cpu_threads(ServerArgs(cpu_threads=3)) == 3
    with pytest.raises(ValueError, match="--cpu-threads must be >= 1"):
        resolve_cpu_threads(ServerArgs(cpu_threads=0))


def test_apply_sets_torch_threads_on_the_cpu_only(restore_threads: None) -> None:
    assert apply_cpu_threads(ServerArgs(device="cpu", cpu_threads=1)) == 1
    assert torch.get_num_threads() == 1
    assert apply_cpu_threads(ServerArgs(device="cuda", cpu_threads=1)) is None
