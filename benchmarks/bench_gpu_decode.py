"""GPU throughput on a Llama-3.1-8B-shaped model with random weights (the lease's H100).

Runs, in one process: HF transformers `generate` at batch 1 (a short run, the baseline), then
radixserve's scheduler + FlashInfer runner at batch 1 and on a batch of requests with mixed prompt
lengths, EOS ignored, in three modes on the same runner: torch ops run eagerly, the same ops
replayed as CUDA graphs, and the fused Triton kernels in CUDA graphs. Prints output tokens per second and ratios.
Random weights: speed does not depend on the values.

    python3 benchmarks/bench_gpu_decode.py [--requests 128] [--new-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from radixserve.kernels import fused
from radixserve.radix_cache import RadixCache
from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.model_executor.model_runner import ModelRunner
from radixserve.runtime.scheduler.scheduler import Scheduler, SchedulerConfig
from radixserve.runtime.wire.messages import GenerateReq
from radixserve.runtime.wire.sampling_params import SamplingParams

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def write_model_dir() -> Path:
    """A temporary model directory holding only the Llama-3.1-8B config (weights are dummy)."""
    model_dir = Path(tempfile.mkdtemp()) / "llama-3.1-8b-shape"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(LLAMA_31_8B))
    return model_dir


def dummy_model_args(model_dir: Path, **changes: object) -> ServerArgs:
    """The benchmarks' runner options: random bf16 weights on the GPU, 8k context."""
    base = ServerArgs(
        model_path=str(model_dir),
        load_format="dummy",
        device="cuda",
        dtype="bfloat16",
        page_size=16,
        mem_fraction_static=0.85,
        context_length=8192,
    )
    return base.replace(**changes)


def report(title: str, rows: dict[str, float], out: str, width: int = 40) -> None:
    """The benchmark's table on stdout, and as JSON at `out` when given."""
    print(f"\n{title}")
    for key, value in rows.items():
        print(f"{key:>{width}} : {value:10.2f}")
    if out:
        Path(out).write_text(json.dumps(rows, indent=2))


def hf_batch1(model_dir: Path, new_tokens: int) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 128000, (1, 128), device="cuda")
    kwargs = dict(do_sample=False, min_new_tokens=new_tokens, max_new_tokens=new_tokens)
    with torch.no_grad():
        model.generate(ids, **{**kwargs, "min_new_tokens": 4, "max_new_tokens": 4})
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(ids, **kwargs)
        torch.cuda.synchronize()
    rate = new_tokens / (time.perf_counter() - start)
    del model
    torch.cuda.empty_cache()
    return rate


def run_scheduler(runner: ModelRunner, prompts: list[list[int]], new_tokens: int) -> dict:
    cache = RadixCache(runner.kv_pool.num_pages, page_size=runner.page_size)
    config = SchedulerConfig(
        page_size=runner.page_size,
        context_len=runner.context_len,
        chunked_prefill_size=8192,
        max_prefill_tokens=16384,
        max_running_requests=256,
    )
    scheduler = Scheduler(runner, cache, config, eos_token_ids=[])
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)
    for i, p in enumerate(prompts):
        scheduler.add_request(GenerateReq(rid=f"r{i}", input_ids=p, sampling=params))
    torch.cuda.synchronize()
    start = time.perf_counter()
    decode_steps: list[float] = []
    generated = 0
    while scheduler.has_work:
        outs = scheduler.step()
        generated += sum(len(o.new_token_ids) for o in outs)
        if scheduler.last_step.prefill_tokens == 0:
            decode_steps.append(scheduler.last_step.forward_seconds)
    elapsed = time.perf_counter() - start
    decode_steps.sort()
    return {
        "tok_s": generated / elapsed,
        "decode_ms": 1e3 * decode_steps[len(decode_steps) // 2] if decode_steps else float("nan"),
        "sched_ms": 1e3 * scheduler.last_step.schedule_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--hf-tokens", type=int, default=32)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    model_dir = write_model_dir()
    hf_rate = hf_batch1(model_dir, args.hf_tokens)
    runner = ModelRunner(dummy_model_args(model_dir, attention_backend="flashinfer"))
    rng = random.Random(0)
    # Warm-up: FlashInfer compiles its kernels on first use (minutes on a fresh machine).
    run_scheduler(runner, [[rng.randrange(128000) for _ in range(300)] for _ in range(4)], 8)
    single_prompt = [[rng.randrange(128000) for _ in range(128)]]
    prompts = [
        [rng.randrange(128000) for _ in range(rng.randrange(64, 1024))]
        for _ in range(args.requests)
    ]
    rows: dict[str, float] = {"hf_generate_batch1_tok_s": hf_rate}
    # Three modes on one runner: the layers' torch ops run eagerly, the same ops in CUDA graphs,
    # and the fused Triton kernels in CUDA graphs (the default, captured at start-up).
    fused_graphs = runner.decode_graphs
    fused.set_enabled(False)
    plain_graphs = runner._capture_decode_graphs() if fused_graphs is not None else None
    measured = {}
    for mode, use_fused, mode_graphs in (
        ("eager", False, None),
        ("graphs", False, plain_graphs),
        ("graphs_fused", True, fused_graphs),
    ):
        if mode != "eager" and mode_graphs is None:
            continue
        fused.set_enabled(use_fused)
        runner.decode_graphs = mode_graphs
        single = run_scheduler(runner, single_prompt, 128)
        batch = run_scheduler(runner, prompts, args.new_tokens)
        measured[mode] = (single, batch)
        rows[f"{mode}_batch1_tok_s"] = single["tok_s"]
        rows[f"{mode}_batch1_decode_step_ms"] = single["decode_ms"]
        rows[f"{mode}_{args.requests}req_tok_s"] = batch["tok_s"]
        rows[f"{mode}_{args.requests}req_decode_step_ms"] = batch["decode_ms"]
    best = measured[list(measured)[-1]]
    rows["batch1_ratio_vs_hf"] = best[0]["tok_s"] / hf_rate
    eager = measured["eager"]
    for mode in list(measured)[1:]:
        rows[f"{mode}_vs_eager_batch1"] = measured[mode][0]["tok_s"] / eager[0]["tok_s"]
        rows[f"{mode}_vs_eager_{args.requests}req"] = measured[mode][1]["tok_s"] / eager[1]["tok_s"]
    report(
        f"{torch.cuda.get_device_name()} | Llama-3.1-8B shape, bf16, random weights", rows, args.out
    )


if __name__ == "__main__":
    main()
