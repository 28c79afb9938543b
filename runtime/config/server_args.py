"""Every option of the runtime in one dataclass; the CLI's flags and defaults are read from it.

Field names follow SGLang's server arguments, so `--chunked-prefill-size` is `chunked_prefill_size`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

SCHEDULE_POLICIES = ("lpm", "fcfs", "dfs-weight")
DTYPES = ("auto", "float32", "bfloat16", "float16")
LOAD_FORMATS = ("auto", "safetensors", "gguf", "dummy")


@dataclass(slots=True)
class ServerArgs:
    model_path: str | None = field(
        default=None,
        metadata={"help": "HF model directory or GGUF file (default: embedded SmolLM2)"},
    )
    tokenizer_path: str | None = field(default=None, metadata={"help": "tokenizer directory"})
    served_model_name: str | None = field(default=None, metadata={"help": "model id in the API"})
    dtype: str = field(
        default="auto",
        metadata={"help": "weights/activations dtype; auto = float32 on CPU, bfloat16 on GPU"},
    )
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto"})
    load_format: str = field(default="auto", metadata={"help": "auto, safetensors, gguf, dummy"})
    context_length: int | None = field(
        default=None, metadata={"help": "max tokens per request (default: the model's)"}
    )
    page_size: int = field(default=16, metadata={"help": "tokens per KV page"})
    max_total_tokens: int | None = field(
        default=None, metadata={"help": "KV pool size in tokens (default: from memory)"}
    )
    mem_fraction_static: float = field(
        default=0.85, metadata={"help": "GPU memory fraction for weights + KV pool"}
    )
    cpu_kv_cache_gib: float = field(default=2.0, metadata={"help": "KV pool size on the CPU, GiB"})
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch intra-op threads of the scheduler (and of an offline Engine) on the "
            "CPU (default: the CPUs this process may run on, os.sched_getaffinity, less one "
            "left to the HTTP and detokenizer processes, at least 1: more threads than free "
            "cores make every op wait for a descheduled thread, 7x slower per step on a busy "
            "2-core machine)"
        },
    )
    cpu_blas_threads: int | None = field(
        default=None,
        metadata={
            "help": "threads of numpy's BLAS, which runs the CPU's float32 matrix products where "
            "it is faster than torch (default: the cores other processes leave free, re-checked "
            "every second and a tenth of a second after a pause, at most the CPUs available "
            "over the tensor-parallel ranks; 0: torch's own products only)"
        },
    )
    disable_cpu_gguf_blocks: bool = field(
        default=False,
        metadata={
            "help": "on the CPU, compute with the float32 weights only: by default products of "
            "up to 3 (Q4_1) or 4 (Q8_0) rows read a GGUF model's blocks instead, dequantized in "
            "registers to the same float32 values (the same results, 3.5-5x fewer bytes read)"
        },
    )
    chunked_prefill_size: int | None = field(
        default=None,
        metadata={
            "help": "max prompt tokens per chunk (default: 2048 on the CPU; on a GPU from its "
            "memory as SGLang does: 8192 on an H100/H200, 4096 under 60 GiB, 2048 under 35 GiB, "
            "16384 from 160 GiB)"
        },
    )
    max_prefill_tokens: int = field(default=8192, metadata={"help": "token budget of one step"})
    max_running_requests: int | None = field(
        default=None,
        metadata={
            "help": "max concurrent requests (default: 256 on the CPU; on a GPU from the KV "
            "pool as SGLang does: pool tokens / context length * 512, kept within 2048..4096, "
            "at most pool tokens / 2)"
        },
    )
    schedule_policy: str = field(default="lpm", metadata={"help": "lpm, fcfs, or dfs-weight"})
    disable_radix_cache: bool = field(default=False, metadata={"help": "no prefix sharing"})
    prefix_cache: str = field(
        default="radix",
        metadata={
            "help": "prefix cache: radix (a radix tree), block_hash (vLLM-style, a hash per "
            "block), or naive (no sharing, what --disable-radix-cache selects)"
        },
    )
    radix_eviction_policy: str = field(
        default="lru",
        metadata={
            "help": "which unlocked cached prefixes the radix cache evicts first: lru (least "
            "recently used) or lfu (least frequently matched)"
        },
    )
    enable_hierarchical_cache: bool = field(
        default=False,
        metadata={
            "help": "keep KV the radix cache evicts in a host-memory tier (pinned on a GPU) and "
            "copy it back on a hit instead of recomputing it (SGLang's HiCache)"
        },
    )
    hicache_ratio: float = field(
        default=2.0,
        metadata={"help": "host tier size as a multiple of the device KV pool"},
    )
    hicache_size: float = field(
        default=0.0,
        metadata={"help": "host tier size in GiB; overrides --hicache-ratio when > 0"},
    )
    hicache_write_policy: str = field(
        default="write_back",
        metadata={
            "help": "write_back (copy a device leaf to the host when it is evicted) or "
            "write_through (copy every new leaf to the host at once)"
        },
    )
    attention_backend: str = field(default="auto", metadata={"help": "torch, flashinfer, or auto"})
    tp_size: int = field(
        default=1, metadata={"help": "tensor-parallel ranks: one process per GPU (gloo on the CPU)"}
    )
    dp_size: int = field(
        default=1, metadata={"help": "data-parallel scheduler replicas, each with its own cache"}
    )
    load_balance_method: str = field(
        default="cache_aware",
        metadata={"help": "routing over dp replicas: cache_aware, shortest_queue, round_robin"},
    )
    base_gpu_id: int = field(default=0, metadata={"help": "first GPU this runtime uses"})
    disable_cuda_graph: bool = field(
        default=False, metadata={"help": "run decode steps eagerly instead of as CUDA graphs"}
    )
    cuda_graph_max_bs: int | None = field(
        default=None,
        metadata={
            "help": "largest decode batch captured as a CUDA graph (default: max running "
            "requests, capped from the GPU's memory: 512 from 60 GiB, 32 / 24 / 8 on smaller GPUs)"
        },
    )
    disable_overlap_schedule: bool | None = field(
        default=None,
        metadata={
            "help": "build and launch each step only after the previous one's results are "
            "processed (default: overlap on a GPU, where the host prepares step N+1 while the "
            "device computes step N; off on the CPU, where the device is the host itself and "
            "overlap gains nothing: bench_decode measured it no faster)"
        },
    )
    # Requests sent together reach an idle scheduler 0.2-0.8 ms apart (bench_cpu_peers' 8 at
    # once); taken as they come, the first prefills alone and the rest wait for its step. On the
    # CPU a small gain (that workload, 8 rounds alternating: medians 1.46 against 1.48 s).
    idle_gather_ms: float | None = field(
        default=None,
        metadata={
            "help": "when the scheduler is idle and a request arrives, how long it waits for "
            "another before its first step, again after each arrival, up to 10x this in all, "
            "so that requests sent together prefill in one batch (default: 3 on the CPU, 0 = "
            "start at once on a GPU)"
        },
    )
    grammar_backend: str = field(
        default="llguidance",
        metadata={"help": "structured output (regex, json_schema, ebnf): llguidance or none"},
    )
    disable_jump_forward: bool = field(
        default=False,
        metadata={"help": "decode grammar-forced tokens one step each instead of in one chunk"},
    )
    speculative_algorithm: str | None = field(
        default=None,
        metadata={"help": "speculative decoding: ngram (drafts looked up in the context) or off"},
    )
    speculative_num_draft_tokens: int = field(
        default=4, metadata={"help": "draft tokens checked per decode step"}
    )
    speculative_ngram_max: int = field(
        default=3, metadata={"help": "longest suffix n-gram looked up for drafts"}
    )
    # vLLM's prompt_lookup_min. A lone matching token is a weak guess, and each draft is a row
    # the model computes: on bench_speculative's tasks (embedded model, 4 drafts) lookups from
    # one token kept 213 of 638 drafts in 102 steps, from two tokens 193 of 320 in 111.
    speculative_ngram_min: int = field(
        default=2, metadata={"help": "shortest suffix n-gram looked up for drafts"}
    )
    random_seed: int = field(default=0, metadata={"help": "seed for unseeded sampling"})
    stats_log_interval: int = field(
        default=200, metadata={"help": "scheduler steps between telemetry log lines; 0 = none"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP host"})
    port: int = field(default=30000, metadata={"help": "HTTP port"})
    api_key: str | None = field(default=None, metadata={"help": "require Bearer KEY"})
    log_level: str = field(default="info", metadata={"help": "logging level"})

    def replace(self, **changes: object) -> ServerArgs:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown option(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
