"""The scheduler's side of structured outputs: one llguidance matcher per constrained request.

`GrammarBackend` owns the one llguidance tokenizer (built on first use: about a second) and gives
each constrained request a `GrammarMatcher`, which says which tokens may come next, follows the
sampled tokens, and offers the tokens the grammar forces next (jump-forward: SGLang's
compressed-FSM decoding, where a run of forced tokens costs one forward pass instead of one each).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .bitmask import bitmask_words
from .grammar import GrammarError, compile_grammar

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..scheduler.grammar import RequestGrammar


class GrammarMatcher:
    """One request's position in its grammar."""

    def __init__(self, matcher: Any, num_words: int) -> None:
        self._matcher = matcher
        self._num_words = num_words

    @property
    def error(self) -> str | None:
        return self._matcher.get_error() if self._matcher.is_error() else None

    @property
    def is_finished(self) -> bool:
        """The grammar is complete and accepts nothing more (only EOS)."""
        return self._matcher.is_stopped()

    def allowed_tokens_bitmask(self) -> torch.Tensor:
        """[W] int32: bit t set when token t may come next."""
        from llguidance.torch import fill_next_token_bitmask

        mask = torch.empty(1, self._num_words, dtype=torch.int32)
        fill_next_token_bitmask(self._matcher, mask, 0)
        return mask[0]

    def accept(self, token_id: int) -> bool:
        """Advances past a sampled token; False (and an error state) if the grammar forbids it."""
        return bool(self._matcher.consume_token(token_id))

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar allows no alternative to from here, not yet consumed."""
        return list(self._matcher.compute_ff_tokens())

    def accept_forced(self, tokens: list[int]) -> bool:
        return bool(self._matcher.consume_tokens(tokens)) if tokens else True

    def valid_prefix_len(self, tokens: list[int]) -> int:
        """How many leading `tokens` the grammar would accept from here (nothing is consumed)."""
        return int(self._matcher.validate_tokens(tokens)) if tokens else 0

    def draft_bitmasks(self, drafts: list[int]) -> torch.Tensor:
        """[len(drafts) + 1, W]: row i allows what may follow drafts[:i] (for verifying drafts
        under the grammar in one pass). The drafts must be valid; the state is left unchanged."""
        from llguidance.torch import fill_next_token_bitmask

        masks = torch.empty(len(drafts) + 1, self._num_words, dtype=torch.int32)
        for row in range(len(drafts) + 1):
            fill_next_token_bitmask(self._matcher, masks, row)
            if row < len(drafts) and not self._matcher.consume_token(drafts[row]):
                raise ValueError(f"draft token {drafts[row]} is not valid here")
        self._matcher.rollback(len(drafts))
        return masks


class GrammarBackend:
    """Builds matchers for one tokenizer; the tokenizer conversion runs once, on first use."""

    def __init__(
        self,
        tokenizer_factory: Callable[[], PreTrainedTokenizerBase],
        vocab_size: int,
        eos_token_ids: Collection[int],
    ) -> None:
        self._tokenizer_factory = tokenizer_factory
        self.vocab_size = vocab_size
        self._eos = sorted(eos_token_ids)
        self._ll_tokenizer: Any = None
        self._executor: Any = None

    def _tokenizer(self) -> Any:
        # Only the scheduler's thread builds matchers, so first use needs no lock.
        if self._ll_tokenizer is None:
            import llguidance.hf
            from transformers import PreTrainedTokenizerFast

            tokenizer = self._tokenizer_factory()
            if not isinstance(tokenizer, PreTrainedTokenizerFast):
                raise GrammarError(
                    f"structured output needs a fast tokenizer, not {type(tokenizer).__name__}",
                    "tokenizer",
                )
            self._ll_tokenizer = llguidance.hf.from_tokenizer(
                tokenizer, n_vocab=self.vocab_size, eos_token=self._eos
            )
        return self._ll_tokenizer

    def allowed_tokens_bitmasks(self, matchers: Sequence[RequestGrammar]) -> torch.Tensor:
        """[n, W] int32, row i allowing what matchers[i] allows next. The rows are computed in
        parallel on llguidance's native threads: a batch of constrained requests costs about
        one request's mask time per thread, not one each. Every matcher must be one of ours."""
        from llguidance import LLExecutor
        from llguidance.torch import fill_next_token_bitmask_par

        if self._executor is None:
            self._executor = LLExecutor()
        masks = torch.empty(len(matchers), bitmask_words(self.vocab_size), dtype=torch.int32)
        pairs = []
        for row, m in enumerate(matchers):
            if not isinstance(m, GrammarMatcher):
                raise TypeError(f"not a matcher of this backend: {type(m).__name__}")
            pairs.append((m._matcher, row))
        fill_next_token_bitmask_par(self._executor, pairs, masks)
        return masks

    def matcher(self, kind: str, text: str) -> GrammarMatcher:
        """A fresh matcher at the grammar's start; GrammarError when it cannot be built."""
        from llguidance import LLMatcher

        grammar = compile_grammar(kind, text)
        matcher = GrammarMatcher(
            LLMatcher(self._tokenizer(), grammar, log_level=0), bitmask_words(self.vocab_size)
        )
        if matcher.error:
            raise GrammarError(f"invalid {kind}: {matcher.error}", kind)
        return matcher
