"""Grammar-constrained requests in the scheduler with a stand-in runner and a stand-in grammar.

The stand-in grammar forces two tokens after every sampled one. Jump-forward appends them at once
and the next step feeds them with the sampled token as one chunk; the outputs must equal a
token-by-token run of the same rule, under sharing, chunking and memory pressure, with fewer
runner steps and every page accounted for.
"""

from __future__ import annotations

import pytest

from radixserve.runtime.scheduler.scheduler import Scheduler
from radixserve.runtime.wire.messages import AbortCode, GenerateReq
from radixserve.runtime.wire.sampling_params import SamplingParams
from tests.runtime.scheduler.stand_in_runner import next_token
from tests.runtime.scheduler.test_scheduler import (
    VOCAB,
    make_scheduler,
    run_all,
    shared_prefix_prompts,
)

FORCED_PER_TOKEN = 2


def forced_after(token: int) -> list[int]:
    return [(token * 7 + k) % VOCAB for k in range(1, FORCED_PER_TOKEN + 1)]


class ForcingGrammar:
    """Accepts any token; after each sampled token it forces `forced_after(token)`."""

    def __init__(self, finish_after: int | None = None) -> None:
        self.pending: list[int] = []
        self.consumed = 0
        self.finish_after = finish_after

    @property
    def is_finished(self) -> bool:
        return self.finish_after is not None and self.consumed >= self.finish_after

    def accept(self, token: int) -> bool:
        self.consumed += 1
        self.pending = forced_after(token)
        return True

    def forced_tokens(self) -> list[int]:
        return list(self.pending)

    def accept_forced(self, tokens: list[int]) -> bool:
        assert tokens == self.pending[: len(tokens)]
        self.consumed += len(tokens)
        self.pending = []
        return True


class ForcingBackend:
    def __init__(self, finish_after: int | None = None) -> None:
        self.finish_after = finish_after

    def allowed_tokens_bitmasks(self, matchers: list[ForcingGrammar]) -> list[None]:
        return [None] * len(matchers)  # the stand-in runner ignores masks

    def matcher(self, kind: str, text: str) -> ForcingGrammar:
        assert kind == "regex"
        return ForcingGrammar(self.finish_after)


def expected_constrained(prompt: list[int], max_new_tokens: int) -> list[int]:
    """The same rule, one token at a time."""
    seq, out = list(prompt), []
    while len(out) < max_new_tokens:
        token = next_token(seq, VOCAB)
        for t in [token, *forced_after(token)][: max_new_tokens - len(out)]:
            out.append(t)
            seq.append(t)
    return out


def make(num_pages: int, jump_forward: bool, chunk: int = 256, page_size: int = 16) -> Scheduler:
    return make_scheduler(
        num_pages,
        page_size,
        chunk,
        grammar_backend=ForcingBackend(),
        jump_forward=jump_forward,
    )


def constrained(rid: str, prompt: list[int], max_new: int) -> GenerateReq:
    params = SamplingParams(max_new_tokens=max_new, regex="stand-in")
    return GenerateReq(rid=rid, input_ids=prompt, sampling=params)


@pytest.mark.parametrize("num_pages", [2048, 120])
def test_jump_forward_outputs_match_token_by_token(num_pages: int) -> None:
    prompts = shared_prefix_prompts(12)
    scheduler = make(num_pages, jump_forward=True, page_size=4)
    for i, prompt in enumerate(prompts):
        scheduler.add_request(constrained(f"c{i}", prompt, 40 + i))
    results = run_all(scheduler)
    for i, prompt in enumerate(prompts):
        tokens, last = results[f"c{i}"]
        assert tokens == expected_constrained(prompt, 40 + i)
        assert last.finish.type == "length" and last.completion_tokens == 40 + i
    forced = sum(min(FORCED_PER_TOKEN, 40 + i) for i in range(12))
    assert scheduler.counters.jump_forward_tokens > forced
    if num_pages == 120:
        assert scheduler.counters.retractions > 0  # the pool forced retractions meanwhile
    scheduler.flush_cache()
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages


def test_one_runner_step_per_sampled_token() -> None:
    # Without jump-forward each forced token would cost a decode step of its own (60 steps).
    prompt = shared_prefix_prompts(1)[0]
    scheduler = make(512, jump_forward=True)
    scheduler.add_request(constrained("c", prompt, 60))
    assert run_all(scheduler)["c"][0] == expected_constrained(prompt, 60)
    assert scheduler.runner.steps == 60 // (1 + FORCED_PER_TOKEN)
    assert scheduler.counters.jump_forward_tokens == 40


def test_jump_forward_chunks_under_a_small_prefill_budget() -> None:
    prompt = shared_prefix_prompts(1)[0]
    scheduler = make(512, jump_forward=True, chunk=2)
    scheduler.add_request(constrained("c", prompt, 30))
    assert run_all(scheduler)["c"][0] == expected_constrained(prompt, 30)


def test_mixed_with_plain_requests_leaves_them_unchanged() -> None:
    from tests.runtime.scheduler.stand_in_runner import expected_output

    prompts = shared_prefix_prompts(8, seed=3)
    scheduler = make(512, jump_forward=True)
    for i, prompt in enumerate(prompts):
        if i % 2:
            scheduler.add_request(constrained(f"r{i}", prompt, 25))
        else:
            params = SamplingParams(max_new_tokens=25)
            scheduler.add_request(GenerateReq(rid=f"r{i}", input_ids=prompt, sampling=params))
    results = run_all(scheduler)
    for i, prompt in enumerate(prompts):
        expected = expected_constrained(prompt, 25) if i % 2 else expected_output(prompt, 25)
        assert results[f"r{i}"][0] == expected


def test_finished_grammar_stops_the_request() -> None:
    prompt = shared_prefix_prompts(1)[0]
    scheduler = make(512, jump_forward=True)
    scheduler.grammar_backend = ForcingBackend(finish_after=6)
    scheduler.add_request(constrained("c", prompt, 50))
    tokens, last = run_all(scheduler)["c"]
    assert tokens == expected_constrained(prompt, 6)
    assert last.finish.type == "stop"


def test_grammar_request_without_a_backend_is_refused() -> None:
    scheduler = make(64, jump_forward=True)
    scheduler.grammar_backend = None
    with pytest.raises(ValueError, match="structured output"):
        scheduler.add_request(constrained("c", [1, 2, 3], 5))
    assert not scheduler.has_work


def test_a_grammar_error_aborts_the_request_and_frees_it() -> None:
    class BrokenGrammar(ForcingGrammar):
        def accept_forced(self, tokens: list[int]) -> bool:
            return False

    class BrokenBackend(ForcingBackend):
        def matcher(self, kind: str, text: str) -> ForcingGrammar:
            return BrokenGrammar()

    prompt = shared_prefix_prompts(1)[0]
    scheduler = make(512, jump_forward=True)
    scheduler.grammar_backend = BrokenBackend()
    scheduler.add_request(constrained("c", prompt, 20))
    plain = GenerateReq(rid="p", input_ids=prompt, sampling=SamplingParams(max_new_tokens=5))
    scheduler.add_request(plain)
    results = run_all(scheduler)
    assert results["c"][1].finish.type == "abort" and "grammar" in results["c"][1].finish.message
    assert results["c"][1].finish.code == AbortCode.GRAMMAR  # an answer, not a server error
    assert results["p"][1].finish.type == "length"  # the other request is unaffected
    scheduler.flush_cache()
    assert scheduler.cache.num_free_pages == scheduler.cache.num_pages
