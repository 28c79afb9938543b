"""What every handler shares: the tokenizer manager, request builder, metrics and limits."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...config.server_args import ServerArgs
from ...wire.messages import RuntimeInfo
from ...wire.stats import SchedulerStats
from ..processes import RuntimeProcesses
from ..request_builder import RequestBuilder
from ..tokenizer_manager import TokenizerManager
from .config import HttpConfig
from .errors import ApiError
from .metrics import ServerMetrics
from .prompt_logprobs import PromptLogprobCache
from .token_text import TokenTexts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(slots=True)
class ServerState:
    args: ServerArgs
    children: RuntimeProcesses  # the launcher's children (a stand-in in some tests)
    info: RuntimeInfo  # what the schedulers reported at start-up
    tokenizer: PreTrainedTokenizerBase
    model_path: str = ""  # resolved: the GGUF file or HF directory actually loaded
    tokenizer_path: str = ""
    config: HttpConfig = field(default_factory=HttpConfig)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    builder: RequestBuilder = field(init=False)
    token_texts: TokenTexts = field(init=False)
    prompt_logprobs: PromptLogprobCache = field(init=False)
    tm: TokenizerManager | None = None
    death_reason: str | None = None
    request_shutdown: Callable[[], None] | None = None  # stops the HTTP server (runtime died)
    # True once a signal asked the server to stop: children dying then (a SIGTERM to the whole
    # process group reaches them too) is the shutdown itself, not a failure.
    shutting_down: Callable[[], bool] = lambda: False

    def __post_init__(self) -> None:
        self.builder = RequestBuilder(
            tokenizer=self.tokenizer,
            vocab_size=self.info.vocab_size,
            context_len=self.info.context_len,
            pool_tokens=self.info.pool_tokens,
        )
        self.token_texts = TokenTexts(self.tokenizer)
        self.prompt_logprobs = PromptLogprobCache(
            self.config.prompt_logprob_cache_values, self.args.page_size
        )

    @property
    def model_name(self) -> str:
        return self.args.served_model_name or self.info.model_name or "default"

    @property
    def healthy(self) -> bool:
        return self.tm is not None and self.tm.healthy and self.death_reason is None

    def manager(self) -> TokenizerManager:
        """The tokenizer manager, or 503 once the runtime behind it has died."""
        if self.tm is None or not self.healthy:
            reason = self.death_reason or (self.tm.error if self.tm else "not started")
            raise ApiError(503, f"the runtime is not available: {reason}", code="unavailable")
        return self.tm

    def on_runtime_death(self, reason: str) -> None:
        """Called by the tokenizer manager's watchdog (in the event loop) when a child dies."""
        if self.shutting_down():
            return
        self.death_reason = reason
        if self.request_shutdown is not None:
            # A short delay lets health checkers see the 503 and its reason before we exit.
            loop = asyncio.get_running_loop()
            loop.call_later(self.config.death_grace_s, self.request_shutdown)

    @staticmethod
    def new_rid(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}"

    async def scheduler_stats(self) -> SchedulerStats | None:
        """Fresh scheduler stats (also fed to the metrics collector); the last ones on timeout
        (None before any answer)."""
        try:
            stats = await asyncio.wait_for(self.manager().stats(), self.config.stats_timeout_s)
        except (asyncio.TimeoutError, ApiError, RuntimeError):
            return self.metrics.scheduler.stats
        self.metrics.scheduler.stats = stats
        return stats

    def public_args(self) -> dict[str, Any]:
        args = dataclasses.asdict(self.args)
        if args.get("api_key"):
            args["api_key"] = "<set>"  # never echo the secret
        return args


def check_model(state: ServerState, model: str | None) -> None:
    """A request may name the model; naming another than the served one is a 404."""
    if model is not None and model != state.model_name:
        raise ApiError(
            404,
            f"the model {model!r} does not exist; this server serves {state.model_name!r}",
            "model",
            "model_not_found",
        )
