"""CPU matrix products through numpy's BLAS (kernels/cpu): the same results as torch's, taken
only where they are faster, and a thread count that follows the machine's load."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from radixserve.kernels.cpu import blas_linear, small_gemm
from radixserve.kernels.cpu.blas_linear import (
    blas_linear_enabled,
    column_major,
    linear,
    set_blas_linear,
)
from radixserve.kernels.cpu.blas_threads import BlasThreadGovernor, machine_busy_seconds
from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.model_executor.device import apply_cpu_blas


@pytest.fixture(autouse=True)
def restore_blas_state() -> Iterator[None]:
    saved = dict(blas_linear._state)
    yield
    blas_linear._state.update(saved)


def spy_on_blas(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every product that went through BLAS (torch's F.linear is not counted)."""
    calls: list[int] = []
    original = blas_linear._use_blas

    def recording(x: torch.Tensor, weight: torch.Tensor) -> bool:
        used = original(x, weight)
        if used:
            calls.append(x.shape[0])
        return used

    monkeypatch.setattr(blas_linear, "_use_blas", recording)
    return calls


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 13, 16, 70])
@pytest.mark.parametrize("layout", ["row-major", "column-major"])
@pytest.mark.parametrize("bias", [False, True])
def test_blas_products_match_torch(monkeypatch, rows: int, layout: str, bias: bool) -> None:
    calls = spy_on_blas(monkeypatch)
    set_blas_linear(True)
    gen = torch.Generator().manual_seed(rows)
    weight = torch.randn(96, 64, generator=gen)
    if layout == "column-major":
        column_major(weight)
        assert weight.shape == (96, 64) and weight.stride() == (1, 96)
    b = torch.randn(96, generator=gen) if bias else None
    x = torch.randn(rows, 64, generator=gen)
    with torch.inference_mode():
        out = linear(x, weight, b)
    expected = F.linear(x, weight, b)
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert calls == [rows]  # every float32 row count (one GEMV a row up to three, else a GEMM)
    assert out.is_contiguous()  # also where the GEMM ran over rows padded to a multiple of 8


def test_other_inputs_stay_on_torch(monkeypatch) -> None:
    calls = spy_on_blas(monkeypatch)
    set_blas_linear(True)
    weight = torch.randn(8, 4)
    for x in (torch.randn(1, 4, dtype=torch.float64), torch.randn(2, 1, 4), torch.randn(0, 4)):
        out = linear(x, weight.to(x.dtype))
        torch.testing.assert_close(out, F.linear(x, weight.to(x.dtype)))
    set_blas_linear(False)
    linear(torch.randn(1, 4), weight)
    assert calls == [] and not blas_linear_enabled()


def test_a_product_that_needs_grad_stays_on_torch() -> None:
    set_blas_linear(True)
    weight = torch.randn(8, 4, requires_grad=True)
    out = linear(torch.randn(1, 4), weight)
    assert out.requires_grad  # autograd saw it: torch's product, not a numpy round trip


class FakeMachine:
    """A clock, the machine's busy CPU seconds and this process's, advanced by the test."""

    def __init__(self) -> None:
        self.now = 0.0
        self.machine = 0.0
        self.own = 0.0
        self.applied: list[int] = []

    def run(self, seconds: float, own_cpus: float, other_cpus: float) -> None:
        self.now += seconds
        self.own += own_cpus * seconds
        self.machine += (own_cpus + other_cpus) * seconds

    def governor(self, max_threads: int = 2, cpus: int = 2) -> BlasThreadGovernor:
        return BlasThreadGovernor(
            max_threads,
            cpus,
            interval=1.0,
            clock=lambda: self.now,
            machine=lambda: self.machine,
            own=lambda: self.own,
            apply=self.applied.append,
        )


def test_the_governor_takes_the_cores_others_leave_free() -> None:
    fake = FakeMachine()
    governor = fake.governor()
    assert governor.threads == 1 and fake.applied == [1]  # until the first sample
    fake.run(1.0, own_cpus=1.0, other_cpus=0.1)  # our own use does not count against us
    assert governor.tick() == 2
    fake.run(0.5, own_cpus=2.0, other_cpus=1.0)
    assert governor.tick() == 2  # within the interval: not re-decided
    fake.run(0.6, own_cpus=1.0, other_cpus=1.0)  # another process keeps a core busy
    assert governor.tick() == 1
    fake.run(1.5, own_cpus=1.0, other_cpus=0.6)  # 1.4 cores free: round to 1
    assert governor.tick() == 1
    fake.run(1.5, own_cpus=1.0, other_cpus=0.3)
    assert governor.tick() == 2
    assert fake.applied == [1, 2, 1, 2]  # applied only on a change


def test_the_governor_decides_first_after_a_tenth_of_a_second() -> None:
    fake = FakeMachine()
    governor = fake.governor()
    fake.run(0.05, own_cpus=1.0, other_cpus=0.0)
    assert governor.tick() == 1  # too soon
    fake.run(0.06, own_cpus=1.0, other_cpus=0.1)
    assert governor.tick() == 2  # the machine is free: both cores from the first decision on
    fake.run(0.2, own_cpus=1.0, other_cpus=1.0)
    assert governor.tick() == 2  # later decisions wait the full interval
    fake.run(0.9, own_cpus=1.0, other_cpus=1.0)
    assert governor.tick() == 1


def test_a_pause_does_not_count_what_others_did_meanwhile() -> None:
    """bench_cpu_peers' case: our requests end, another server keeps both cores busy for a
    while and stops, then our next requests come; the others' burst does not cost us a thread."""
    fake = FakeMachine()
    governor = fake.governor()
    fake.run(1.0, own_cpus=2.0, other_cpus=0.0)
    assert governor.tick() == 2
    fake.run(0.5, own_cpus=2.0, other_cpus=0.0)
    assert governor.tick() == 2
    fake.run(1.5, own_cpus=0.01, other_cpus=1.99)  # we wait for work; the other runs
    assert governor.tick() == 2  # a new window starts here
    fake.run(0.12, own_cpus=2.0, other_cpus=0.1)  # our step; the other has stopped
    assert governor.tick() == 2
    assert fake.applied == [1, 2]
    # Without the pause, the same window decides as before: the other's load counts.
    fake.run(1.5, own_cpus=1.0, other_cpus=1.5)
    assert governor.tick() == 1


def test_a_long_step_is_not_a_pause() -> None:
    """A prefill step a second long between two ticks keeps the window (and its decision)."""
    fake = FakeMachine()
    governor = fake.governor()
    fake.run(1.0, own_cpus=1.0, other_cpus=0.0)
    assert governor.tick() == 2
    fake.run(1.2, own_cpus=1.0, other_cpus=1.0)  # one long step while another process runs
    assert governor.tick() == 1


def test_the_governor_respects_its_cap_and_a_missing_proc_stat() -> None:
    fake = FakeMachine()
    capped = fake.governor(max_threads=1, cpus=8)
    fake.run(1.0, own_cpus=1.0, other_cpus=0.0)
    assert capped.tick() == 1
    blind = BlasThreadGovernor(2, 2, clock=lambda: fake.now, machine=lambda: None, apply=print)
    fake.run(5.0, own_cpus=0.0, other_cpus=0.0)
    assert blind.tick() == 1


def test_machine_busy_seconds_reads_proc_stat(tmp_path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait
    stat.write_text("cpu  100 5 50 1000 20 3 2 10 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    from radixserve.kernels.cpu.blas_threads import USER_HZ

    assert machine_busy_seconds(str(stat)) == pytest.approx(170 / USER_HZ)
    assert machine_busy_seconds(str(tmp_path / "missing")) is None


def test_server_args_choose_the_blas_setup() -> None:
    with pytest.raises(ValueError, match="--cpu-blas-threads must be >= 0"):
        apply_cpu_blas(ServerArgs(device="cpu", cpu_blas_threads=-1))
    assert apply_cpu_blas(ServerArgs(device="cpu", cpu_blas_threads=0)) is None
    assert not blas_linear_enabled()
    assert apply_cpu_blas(ServerArgs(device="cpu", cpu_blas_threads=1)) is None
    assert blas_linear_enabled()
    governor = apply_cpu_blas(ServerArgs(device="cpu", tp_size=2))
    assert isinstance(governor, BlasThreadGovernor) and governor.threads == 1


def test_without_the_compiled_kernels_the_weights_are_column_major(monkeypatch) -> None:
    """An Engine on the CPU with RADIXSERVE_CPU_NATIVE=0: every float32 linear and LM-head
    weight is column-major for BLAS (the tied head and embedding once), and greedy generation
    runs through it. (With the kernels, the default, they stay row-major:
    test_model_parity.py checks that on every tiny model, and every other Engine test runs so.)"""
    from radixserve.runtime.entrypoints.engine import Engine
    from radixserve.runtime.model_executor.model_runner import ModelRunner
    from radixserve.runtime.model_executor.models.layers.embedding import ParallelLMHead
    from radixserve.runtime.model_executor.models.layers.linear import LinearBase

    monkeypatch.setenv(small_gemm.DISABLE_ENV, "0")
    monkeypatch.setattr(small_gemm, "_state", {"tried": False, "kernel": None, "threads": 1})
    engine = Engine(cpu_blas_threads=1)
    try:
        runner = engine.state.runner
        assert isinstance(runner, ModelRunner)
        model = runner.model
        weights = [m.weight for m in model.modules() if isinstance(m, LinearBase | ParallelLMHead)]
        assert weights and small_gemm.small_gemm() is None
        assert all(w.stride() == (1, w.shape[0]) for w in weights)
        params = {"max_new_tokens": 4, "temperature": 0, "ignore_eos": True}
        outs = engine.generate(["The capital of France is"], params)
        assert isinstance(outs, list) and outs[0]["meta_info"]["completion_tokens"] == 4
    finally:
        engine.shutdown()


def test_the_products_thread_count_in_force_is_recorded() -> None:
    from radixserve.kernels.cpu.blas_threads import blas_threads_in_force, set_blas_threads

    before = blas_threads_in_force()
    try:
        set_blas_threads(1)
        assert blas_threads_in_force() == 1
        set_blas_threads(2)
        assert blas_threads_in_force() == 2  # what a large SDPA widens to (torch_backend.py)
    finally:
        set_blas_threads(before or 1)
