"""What a sampled slice must obey, attached to its step request before the launch: the grammar's
allowed-token bitmask, and bans on the tokens that would end a request short of min_new_tokens.
"""

from __future__ import annotations

from collections.abc import Set

from .batch_builder import ScheduledSlice
from .grammar import GrammarBackend, RequestGrammar
from .step import StepRequest


def ban_early_stops(slices: list[ScheduledSlice], eos_token_ids: Set[int]) -> None:
    """Requests short of min_new_tokens may not sample a token that would end them. A sample
    still in flight counts among the outputs: this one comes after it."""
    for scheduled in slices:
        req, request = scheduled.req, scheduled.step_request
        params = req.sampling
        if not request.sample or params.min_new_tokens <= req.outputs_decided:
            continue
        stops = set(params.stop_token_ids or ())
        if not params.ignore_eos:
            stops |= eos_token_ids
        request.banned_token_ids = sorted(stops)


def attach_vocab_masks(slices: list[ScheduledSlice], backend: GrammarBackend | None) -> bool:
    """Gives each constrained request that samples this step its allowed-token bitmask; True if
    there is one (its grammar must see the sample before its next mask)."""
    constrained: list[tuple[StepRequest, RequestGrammar]] = []
    any_sampled = False
    for scheduled in slices:
        request, grammar = scheduled.step_request, scheduled.req.grammar
        if grammar is None or not request.sample:
            continue
        any_sampled = True
        if request.draft_token_ids:  # a mask per verified row
            request.vocab_mask = grammar.draft_bitmasks(list(request.draft_token_ids))
        else:
            constrained.append((request, grammar))
    if constrained and backend is not None:  # no backend: no grammar admitted
        masks = backend.allowed_tokens_bitmasks([g for _, g in constrained])
        for (request, _), mask in zip(constrained, masks, strict=True):
            request.vocab_mask = mask
    return any_sampled
