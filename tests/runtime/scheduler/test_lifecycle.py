"""How requests end, with a stand-in runner: abort codes, finishes found outside the scheduler
(stop strings), and the scheduler process's loop surviving any single bad request or failed step
with every page and lock returned."""

from __future__ import annotations

import os

import pytest

from radixserve.runtime.scheduler.process import SchedulerLoop
from radixserve.runtime.scheduler.scheduler import Scheduler
from radixserve.runtime.wire.messages import (
    AbortCode,
    AbortReq,
    FinishReason,
    FinishReq,
    GenerateReq,
    TokenBatchOut,
    TokenOut,
)
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.scheduler.stand_in_runner import StandInRunner, expected_output
from tests.runtime.scheduler.test_scheduler import VOCAB, make_scheduler, request, run_all


class SentMessages:
    """Stands in for the loop's sender to the detokenizer: keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[object] = []

    def send(self, message: object) -> None:
        self.messages.append(message)

    def outputs(self) -> list[TokenOut]:
        return [o for m in self.messages if isinstance(m, TokenBatchOut) for o in m.outputs]


def make_loop(scheduler: Scheduler) -> tuple[SchedulerLoop, SentMessages]:
    sent = SentMessages()
    return SchedulerLoop(scheduler, None, sent, os.getpid()), sent  # type: ignore[arg-type]


def drain(loop: SchedulerLoop, sent: SentMessages, max_steps: int = 10_000) -> None:
    """What `SchedulerLoop.run` does with each step's outputs, until the scheduler is idle."""
    for _ in range(max_steps):
        if not loop.scheduler.has_work:
            return
        outputs = loop.safe_step()
        if outputs:
            sent.send(TokenBatchOut(outputs))
        loop.scheduler.check_integrity()
    pytest.fail("the scheduler did not go idle")


def assert_all_pages_back(scheduler: Scheduler) -> None:
    assert not scheduler.has_work and not scheduler.requests
    scheduler.check_integrity()
    scheduler.flush_cache()
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages


def finals(sent: SentMessages) -> dict[str, FinishReason]:
    return {o.rid: o.finish for o in sent.outputs() if o.finish is not None}


def test_abort_code_says_who_asked() -> None:
    scheduler = make_scheduler()
    scheduler.add_request(request("a", list(range(40)), 100))
    scheduler.add_request(request("s", list(range(40)), 100))
    scheduler.step()
    scheduler.abort("a")
    scheduler.abort("s", "engine shut down", AbortCode.SHUTDOWN)
    results = run_all(scheduler)
    assert results["a"][1].finish == FinishReason.abort(AbortCode.CLIENT, "aborted")
    assert results["s"][1].finish.code == AbortCode.SHUTDOWN
    assert scheduler.counters.requests_aborted == 2
    assert results["a"][1].finish.to_json() == {
        "type": "abort",
        "message": "aborted",
        "code": "client",
    }


def test_finish_externally_frees_the_request_and_counts_it_finished() -> None:
    scheduler = make_scheduler()
    prompt = list(range(100))
    scheduler.add_request(request("x", prompt, 1000))
    scheduler.add_request(request("y", list(range(50, 90)), 5))
    for _ in range(3):
        scheduler.step()
    stop = FinishReason("stop", matched="END")
    assert stop.is_stop_string
    scheduler.finish_externally("x", stop)
    assert "x" not in scheduler.requests
    scheduler.check_integrity()
    results = run_all(scheduler)
    assert "x" not in results  # no output follows: the detokenizer sent the final one
    assert results["y"][1].finish.type == "length"
    assert scheduler.counters.requests_finished == 2
    assert scheduler.counters.requests_aborted == 0
    scheduler.finish_externally("x", stop)  # late (the request ended already): a no-op
    assert scheduler.counters.requests_finished == 2
    # Its computed prefix went into the tree like any finished request's.
    scheduler.add_request(request("z", prompt, 1))
    assert run_all(scheduler)["z"][1].cached_tokens >= 96
    assert_all_pages_back(scheduler)


def test_loop_handles_finish_and_abort_messages() -> None:
    scheduler = make_scheduler()
    loop, sent = make_loop(scheduler)
    loop.handle(request("f", list(range(30)), 500))
    loop.handle(request("a", list(range(60, 90)), 500))
    for _ in range(2):
        loop.safe_step()
    loop.handle(FinishReq("f", FinishReason("stop", matched="!")))
    loop.handle(AbortReq("a"))
    drain(loop, sent)
    assert finals(sent) == {"a": FinishReason.abort(AbortCode.CLIENT, "aborted")}
    assert scheduler.counters.requests_finished == 1
    assert scheduler.counters.requests_aborted == 1
    assert_all_pages_back(scheduler)


def test_refused_requests_get_a_coded_answer_and_the_loop_goes_on() -> None:
    class RaisingBackend:
        def matcher(self, kind: str, text: str) -> object:
            if text == "bad":
                raise ValueError("the regex does not compile")  # as GrammarError does
            raise RuntimeError("the grammar backend broke")

    scheduler = make_scheduler(num_pages=64, grammar_backend=RaisingBackend())
    loop, sent = make_loop(scheduler)
    loop.handle(GenerateReq(rid="empty", input_ids=[], sampling=SamplingParams()))
    loop.handle(request("big", list(range(100 * 16)), 4))  # more pages than the pool has
    loop.handle(request("ok", list(range(40)), 4))
    loop.handle(request("ok", list(range(40)), 4))  # a duplicate rid
    bad = SamplingParams(max_new_tokens=4, regex="bad")
    loop.handle(GenerateReq(rid="grammar", input_ids=[1, 2], sampling=bad))
    broken = SamplingParams(max_new_tokens=4, regex="fine")
    loop.handle(GenerateReq(rid="broken", input_ids=[1, 2], sampling=broken))
    refused = {o.rid: o.finish for o in sent.outputs()}
    assert [rid for rid in refused] == ["empty", "big", "ok", "grammar", "broken"]
    for rid in ("empty", "big", "ok", "grammar"):
        assert refused[rid].type == "abort" and refused[rid].code == AbortCode.REJECTED
    assert "already in use" in refused["ok"].message
    assert refused["broken"].code == AbortCode.INTERNAL
    assert "grammar backend broke" in refused["broken"].message
    drain(loop, sent)
    assert finals(sent)["ok"] == FinishReason("length")  # the first "ok" was served
    assert_all_pages_back(scheduler)


class FailingRunner(StandInRunner):
    """Raises on the given step numbers (1-based), like a runner hitting a bad batch."""

    fail_on: frozenset[int] = frozenset()

    def step(self, requests):
        if self.steps + 1 in self.fail_on:
            self.steps += 1
            raise RuntimeError("the forward pass failed")
        return super().step(requests)


def test_a_failed_step_aborts_its_requests_and_the_loop_serves_on() -> None:
    class FailsOnThirdStep(FailingRunner):
        fail_on = frozenset({3})

    scheduler = make_scheduler(runner_type=FailsOnThirdStep)
    loop, sent = make_loop(scheduler)
    for i in range(4):
        loop.handle(request(f"r{i}", list(range(i, 40 + i)), 50))
    drain(loop, sent)
    ends = finals(sent)
    assert set(ends) == {"r0", "r1", "r2", "r3"}
    for finish in ends.values():
        assert finish.code == AbortCode.INTERNAL and "forward pass failed" in finish.message
    assert scheduler.counters.requests_aborted == 4
    assert_all_pages_back(scheduler)
    # The loop serves on, with correct outputs.
    sent.messages.clear()
    prompt = list(range(200, 260))
    loop.handle(request("after", prompt, 6))
    drain(loop, sent)
    tokens = [t for o in sent.outputs() for t in o.new_token_ids]
    assert tokens == expected_output(prompt, 6, VOCAB)
    assert finals(sent)["after"] == FinishReason("length")


def test_a_step_failing_after_retiring_requests_answers_each_one() -> None:
    """The failure comes after the step retired a finished request: its final output went down
    with the step's return value, so the recovery must send one for it too."""
    scheduler = make_scheduler()
    loop, _ = make_loop(scheduler)
    loop.handle(request("short", list(range(40)), 1))  # finishes in its first step
    loop.handle(request("long", list(range(50, 90)), 100))
    collect = scheduler._collect_outputs

    def collect_then_fail(reqs):
        collect(reqs)
        raise RuntimeError("failed after retiring")

    scheduler._collect_outputs = collect_then_fail  # type: ignore[method-assign]
    outputs = loop.safe_step()
    ends = {o.rid: o.finish for o in outputs}
    assert set(ends) == {"short", "long"}
    assert all(f.code == AbortCode.INTERNAL for f in ends.values())
    # "short" was counted finished by the step itself; only "long" counts as aborted.
    assert scheduler.counters.requests_finished == 1
    assert scheduler.counters.requests_aborted == 1
    assert_all_pages_back(scheduler)
