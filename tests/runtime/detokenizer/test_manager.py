"""The detokenizer's per-request state (shared by the detokenizer process and the offline
Engine): a stop string ends the request with a stop-string finish, and what was still in flight
for it is dropped, with the real SmolLM2 tokenizer."""

from __future__ import annotations

from radixserve.runtime.detokenizer.manager import DetokenizerManager
from radixserve.runtime.wire.messages import (
    AbortCode,
    DetokenizeSpec,
    FinishReason,
    TokenBatchOut,
    TokenOut,
)
from tests.runtime.smollm2 import smollm2_tokenizer


def token_out(
    rid: str,
    ids: list[int],
    spec: DetokenizeSpec | None = None,
    finish: FinishReason | None = None,
) -> TokenOut:
    return TokenOut(
        rid=rid,
        spec=spec,
        new_token_ids=ids,
        prompt_tokens=1,
        cached_tokens=0,
        completion_tokens=len(ids),
        finish=finish,
    )


def test_stop_string_ends_the_request_and_drops_what_was_in_flight() -> None:
    tok = smollm2_tokenizer()
    ids = tok.encode("6, 7, 8, 9, 10", add_special_tokens=False)
    manager = DetokenizerManager(tok)
    spec = DetokenizeSpec(stop=["8"])
    texts, finish = [], None
    for i, token in enumerate(ids):
        out = manager.detokenize(token_out("r", [token], spec if i == 0 else None))
        if out is None:  # after the stop: still in flight from the scheduler
            assert finish is not None
            continue
        assert finish is None, "an output after the final one"
        texts.append(out.text_delta)
        finish = out.token_out.finish
    assert finish == FinishReason("stop", matched="8", external=True) and finish.is_stop_string
    assert "".join(texts) == "6, 7, "
    assert not manager.states
    # The scheduler's own final output, if it crossed the stop, passes through with no text.
    late = manager.detokenize(token_out("r", [5], finish=FinishReason("length")))
    assert late is not None and late.text_delta == "" and not manager.states


def test_refused_requests_pass_through_and_batches_keep_order() -> None:
    tok = smollm2_tokenizer()
    manager = DetokenizerManager(tok)
    refused = FinishReason.abort(AbortCode.REJECTED, "the prompt is empty")
    hello = tok.encode("Hello", add_special_tokens=False)
    batch = TokenBatchOut(
        [
            token_out("x", [], finish=refused),
            token_out("y", hello, DetokenizeSpec(), FinishReason("length")),
        ]
    )
    outs = manager.handle(batch)
    assert [o.rid for o in outs] == ["x", "y"]
    assert outs[0].token_out.finish == refused and outs[1].text_delta == "Hello"
    assert not manager.states


def test_a_request_that_cannot_be_decoded_ends_alone_with_an_internal_abort() -> None:
    """A tokenizer error on one request's tokens (an id the tokenizer cannot hold) ends it,
    marked for the scheduler to be told; the rest of the batch is detokenized as usual."""
    tok = smollm2_tokenizer()
    manager = DetokenizerManager(tok)
    hello = tok.encode("Hello", add_special_tokens=False)
    batch = TokenBatchOut(
        [
            token_out("bad", [2**40], DetokenizeSpec()),
            token_out("good", hello, DetokenizeSpec(), FinishReason("length")),
        ]
    )
    bad, good = manager.handle(batch)
    finish = bad.token_out.finish
    assert finish is not None and finish.type == "abort" and finish.code == AbortCode.INTERNAL
    assert finish.external and "detokenizing the output failed" in (finish.message or "")
    assert good.text_delta == "Hello" and good.token_out.finish == FinishReason("length")
    assert not manager.states
    # What the scheduler still had in flight for it is dropped.
    assert manager.detokenize(token_out("bad", hello)) is None
