"""What the scheduler needs of structured outputs: a grammar per request and a backend.

`runtime/constrained/matcher.py` implements both on llguidance; scheduler tests stand in their
own. The masks are the runner's business (a [W] int32 bitmask per sampled row): the scheduler
only hands them over in `StepRequest.vocab_mask`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


class RequestGrammar(Protocol):
    """One request's position in its grammar, past every output token so far."""

    @property
    def is_finished(self) -> bool:
        """The grammar is complete and accepts nothing more (only EOS)."""
        ...

    def accept(self, token_id: int) -> bool:
        """Advances past a sampled token; False if the grammar forbids it."""
        ...

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar allows no alternative to from here (jump-forward)."""
        ...

    def accept_forced(self, tokens: list[int]) -> bool: ...

    def valid_prefix_len(self, tokens: list[int]) -> int:
        """How many leading `tokens` would be accepted from here; consumes nothing."""
        ...

    def draft_bitmasks(self, drafts: list[int]) -> torch.Tensor:
        """[len(drafts) + 1, W]: row i allows what may follow drafts[:i]."""
        ...


class GrammarBackend(Protocol):
    def matcher(self, kind: str, text: str) -> RequestGrammar:
        """A grammar at its start; raises a ValueError (GrammarError) it cannot build."""
        ...

    def allowed_tokens_bitmasks(
        self, matchers: Sequence[RequestGrammar]
    ) -> Iterable[torch.Tensor | None]:
        """One allowed-token bitmask per grammar, in order."""
        ...
