"""Builds the parts a scheduler owns (runner, tokenizer, cache, scheduler) from `ServerArgs`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...radix_cache import PrefixCache, create_cache
from ...radix_cache.hicache import WRITE_POLICIES, HierarchicalRadixCache
from ..config.limits import RuntimeLimits
from ..config.server_args import ServerArgs
from ..config.tokenizer import load_tokenizer
from ..constrained.matcher import GrammarBackend
from ..model_executor.device import apply_cpu_threads, resolve_device
from ..model_executor.kv_pool import HostKVPool
from ..model_executor.model_runner import ModelRunner
from ..model_executor.tp_worker import TensorParallelRunner, create_model_runner
from ..scheduler.scheduler import Scheduler, SchedulerConfig
from ..scheduler.step import StepRunner
from ..server.request_builder import RequestBuilder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(slots=True)
class RuntimeState:
    args: ServerArgs
    runner: StepRunner
    tokenizer: PreTrainedTokenizerBase
    cache: PrefixCache
    scheduler: Scheduler
    request_builder: RequestBuilder
    limits: RuntimeLimits  # the batch limits the scheduler and the decode graphs run with


def eos_token_ids(
    runner: ModelRunner | TensorParallelRunner, tokenizer: PreTrainedTokenizerBase
) -> set[int]:
    ids = set(runner.config.eos_token_ids)
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    return ids


def runner_limits(runner: ModelRunner | TensorParallelRunner) -> RuntimeLimits:
    """The batch limits the model runner resolved against its KV pool (rank 0's under tensor
    parallelism: every rank resolves the same)."""
    return (runner.runner if isinstance(runner, TensorParallelRunner) else runner).limits


def grammar_backend(
    args: ServerArgs, tokenizer: PreTrainedTokenizerBase, vocab_size: int, eos: set[int]
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
    if args.speculative_num_draft_tokens < 1 or args.speculative_ngram_min < 1:
        raise ValueError("--speculative-num-draft-tokens and --speculative-ngram-min must be >= 1")
    if args.speculative_ngram_max < args.speculative_ngram_min:
        raise ValueError("--speculative-ngram-max must be >= --speculative-ngram-min")
    return args.speculative_num_draft_tokens


def overlap_schedule(args: ServerArgs) -> bool:
    """Overlap scheduling unless --disable-overlap-schedule; by default on a GPU only."""
    if args.disable_overlap_schedule is not None:
        return not args.disable_overlap_schedule
    return resolve_device(args).type == "cuda"


def idle_gather_ms(args: ServerArgs) -> float:
    """How long an idle scheduler waits for more arrivals: --idle-gather-ms, by default 3 ms
    on the CPU (a lone request pays that once; its first step costs 70+ ms) and none on a GPU,
    whose prefill steps are short enough that a late arrival costs little."""
    if args.idle_gather_ms is not None:
        if args.idle_gather_ms < 0:
            raise ValueError("--idle-gather-ms must be >= 0")
        return args.idle_gather_ms
    return 3.0 if resolve_device(args).type == "cpu" else 0.0


def prefix_cache_name(args: ServerArgs) -> str:
    """The registry name of the prefix cache the flags select (SGLang's --disable-radix-cache
    means the naive cache)."""
    if not args.disable_radix_cache:
        return args.prefix_cache
    if args.prefix_cache not in ("radix", "naive"):
        raise ValueError(
            f"--disable-radix-cache selects the naive cache; it conflicts with --prefix-cache "
            f"{args.prefix_cache}"
        )
    return "naive"


def build_cache(args: ServerArgs, num_pages: int) -> PrefixCache:
    """The prefix cache over a pool of `num_pages` pages; ValueError for an unknown cache or
    policy, or a policy the cache does not implement (only the radix cache takes lfu)."""
    return create_cache(
        prefix_cache_name(args), num_pages, args.page_size, policy=args.radix_eviction_policy
    )


def check_hierarchical(args: ServerArgs) -> None:
    """ValueError for flags the host tier cannot serve, before the slow model load."""
    if not args.enable_hierarchical_cache:
        return
    if prefix_cache_name(args) != "radix":
        raise ValueError("--enable-hierarchical-cache needs the radix cache (--prefix-cache radix)")
    if args.tp_size != 1:
        raise ValueError("--enable-hierarchical-cache runs with --tp-size 1 only")
    if args.hicache_write_policy not in WRITE_POLICIES:
        raise ValueError(f"--hicache-write-policy must be one of {WRITE_POLICIES}")
    if args.hicache_size < 0 or (args.hicache_size == 0 and args.hicache_ratio <= 0):
        raise ValueError("--hicache-size must be > 0 GiB, or --hicache-ratio > 0")


def build_hierarchical_cache(args: ServerArgs, runner: ModelRunner) -> HierarchicalRadixCache:
    """The radix cache with a host tier over the runner's KV pool: --hicache-size GiB, else
    --hicache-ratio times the device pool."""
    pool = runner.kv_pool
    if args.hicache_size > 0:
        host_pages = HostKVPool.pages_for_bytes(pool, args.hicache_size * 2**30)
    else:
        host_pages = int(pool.num_pages * args.hicache_ratio)
    host = HostKVPool(pool, host_pages)
    return HierarchicalRadixCache(
        pool.num_pages,
        args.page_size,
        args.radix_eviction_policy,
        host_pages=host_pages,
        mover=host,
        write_policy=args.hicache_write_policy,
    )


def build_runtime(args: ServerArgs) -> RuntimeState:
    build_cache(args, num_pages=1)  # a bad cache flag fails now, not after the slow model load
    drafts = num_draft_tokens(args)  # and so does a bad speculation flag
    check_hierarchical(args)
    idle_gather_ms(args)
    apply_cpu_threads(args)  # before the model load, which runs on these threads too
    runner = create_model_runner(args)
    tokenizer = load_tokenizer(runner.source, args.tokenizer_path)
    num_pages = runner.num_kv_pages
    if args.enable_hierarchical_cache:
        assert isinstance(runner, ModelRunner)  # check_hierarchical refused tensor parallelism
        cache: PrefixCache = build_hierarchical_cache(args, runner)
    else:
        cache = build_cache(args, num_pages)
    limits = runner_limits(runner)
    config = SchedulerConfig(
        page_size=args.page_size,
        context_len=runner.context_len,
        chunked_prefill_size=limits.chunked_prefill_size,
        max_prefill_tokens=args.max_prefill_tokens,
        max_running_requests=limits.max_running_requests,
        schedule_policy=args.schedule_policy,
        log_interval=args.stats_log_interval,
        num_draft_tokens=drafts,
        ngram_max=args.speculative_ngram_max,
        ngram_min=args.speculative_ngram_min,
    )
    eos = eos_token_ids(runner, tokenizer)
    scheduler = Scheduler(
        runner,
        cache,
        config,
        eos,
        sharing=cache.shares_prefixes,
        grammar_backend=grammar_backend(args, tokenizer, runner.vocab_size, eos),
        jump_forward=not args.disable_jump_forward,
        overlap=overlap_schedule(args),
    )
    builder = RequestBuilder(
        tokenizer=tokenizer,
        vocab_size=runner.vocab_size,
        context_len=runner.context_len,
        pool_tokens=num_pages * args.page_size,
    )
    return RuntimeState(args, runner, tokenizer, cache, scheduler, builder, limits)
