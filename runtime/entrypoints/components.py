"""Builds the parts a scheduler owns (runner, tokenizer, cache, scheduler) from `ServerArgs`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...radix_cache import NaiveCache, RadixCache
from ..config.server_args import ServerArgs
from ..config.tokenizer import load_tokenizer
from ..constrained.matcher import GrammarBackend
from ..model_executor.model_runner import ModelRunner
from ..model_executor.tp_worker import create_model_runner
from ..scheduler.scheduler import Scheduler, SchedulerConfig
from ..server.request_builder import RequestBuilder


@dataclass(slots=True)
class RuntimeState:
    args: ServerArgs
    runner: ModelRunner
    tokenizer: Any
    cache: Any
    scheduler: Scheduler
    request_builder: RequestBuilder


def eos_token_ids(runner: ModelRunner, tokenizer: Any) -> set[int]:
    ids = set(runner.config.eos_token_ids)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def grammar_backend(
    args: ServerArgs, tokenizer: Any, vocab_size: int, eos: set[int]
) -> GrammarBackend | None:
    if args.grammar_backend == "none":
        return None
    if args.grammar_backend != "llguidance":
        raise ValueError(
            f"unknown grammar backend {args.grammar_backend!r}; use llguidance or none"
        )
    return GrammarBackend(lambda: tokenizer, vocab_size, eos)


def num_draft_tokens(args: ServerArgs) -> int:
    if args.speculative_algorithm in (None, "", "none"):
        return 0
    if args.speculative_algorithm.lower() != "ngram":
        raise ValueError(f"unknown speculative algorithm {args.speculative_algorithm!r}; use ngram")
    if args.speculative_num_draft_tokens < 1 or args.speculative_ngram_max < 1:
        raise ValueError("--speculative-num-draft-tokens and --speculative-ngram-max must be >= 1")
    return args.speculative_num_draft_tokens


def build_runtime(args: ServerArgs) -> RuntimeState:
    runner = create_model_runner(args)
    tokenizer = load_tokenizer(runner.source, args.tokenizer_path)
    num_pages = runner.kv_pool.num_pages
    if args.disable_radix_cache:
        cache: Any = NaiveCache(num_pages, page_size=args.page_size)
    else:
        cache = RadixCache(num_pages, page_size=args.page_size)
    config = SchedulerConfig(
        page_size=args.page_size,
        context_len=runner.context_len,
        chunked_prefill_size=args.chunked_prefill_size,
        max_prefill_tokens=args.max_prefill_tokens,
        max_running_requests=args.max_running_requests,
        schedule_policy=args.schedule_policy,
        log_interval=args.stats_log_interval,
        num_draft_tokens=num_draft_tokens(args),
        ngram_max=args.speculative_ngram_max,
    )
    eos = eos_token_ids(runner, tokenizer)
    scheduler = Scheduler(
        runner,
        cache,
        config,
        eos,
        sharing=not args.disable_radix_cache,
        grammar_backend=grammar_backend(args, tokenizer, runner.vocab_size, eos),
        jump_forward=not args.disable_jump_forward,
    )
    builder = RequestBuilder(
        tokenizer=tokenizer,
        vocab_size=runner.vocab_size,
        context_len=runner.context_len,
        pool_tokens=num_pages * args.page_size,
    )
    return RuntimeState(args, runner, tokenizer, cache, scheduler, builder)
