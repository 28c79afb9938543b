"""Where a decode step's GPU time goes: kernels of the Llama-3.1-8B shape grouped by kind.

Runs the public Engine (dummy weights) at one batch size, then profiles `--new-tokens` decode
steps (a run less a one-token run, so the prefill step is not counted) with torch.profiler (CUDA graphs stay on: CUPTI reports the kernels a graph replays) and
prints, per step: GPU kernel time by kind (GEMMs, attention, norms, rotary, activation, sampling,
copies, other), the GEMMs' achieved weight-read bandwidth, the busiest kernels, and the wall time
per step, so a gap between kernel time and wall time (idle GPU) shows too.

    python3 benchmarks/profile_gpu_step.py [--batch-size 1] [--new-tokens 64] [--prompt-len 128]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.dummy_model import write_dummy_model_dir
from radixserve import Engine

# First match wins; names are lowercased kernel names.
KINDS = (
    ("attention", r"flashinfer|batchdecode|batchprefill|prefillwith|decodewith|merge_state"),
    ("gemm", r"gemm|gemv|cutlass|sm90_xmma|nvjet|splitk|cublas"),
    ("norm", r"rms|norm"),
    ("rotary", r"rope|rotary"),
    ("activation", r"silu|act_and_mul"),
    ("sampling", r"argmax|topk|top_k|sort|softmax|multinomial|sampl|max_kernel|reduce"),
    ("copy", r"copy|memcpy|memset|fill|index|scatter|gather|cat"),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, pattern in KINDS:
        if re.search(pattern, lowered):
            return kind
    return "other"


def weight_bytes(engine: Engine) -> int:
    model = engine.state.runner.model  # type: ignore[attr-defined]
    return sum(
        p.numel() * p.element_size() for n, p in model.named_parameters() if "embed" not in n
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="llama-3.1-8b-shape")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument(
        "--base-tokens",
        type=int,
        default=1,
        help="tokens of the run subtracted (see profile_steps)",
    )
    parser.add_argument(
        "--ragged",
        action="store_true",
        help="prompt lengths uniform in [1, 2 * prompt-len - 1] instead of all prompt-len",
    )
    parser.add_argument("--disable-cuda-graph", action="store_true")
    parser.add_argument("--disable-overlap-schedule", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--show-base",
        action="store_true",
        help="also the base run's kernels: the prefill's chunked steps with decodes riding along",
    )
    parser.add_argument(
        "--host",
        action="store_true",
        help="profile the host instead (cProfile over the base run and the whole run: the "
        "functions whose own time grew most per decode step)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model_dir = write_dummy_model_dir(args.model_path, Path(folder))
        engine = Engine(
            str(model_dir),
            load_format="dummy",
            device="cuda",
            dtype="bfloat16",
            disable_cuda_graph=args.disable_cuda_graph,
            disable_overlap_schedule=args.disable_overlap_schedule,
        )
        (profile_host if args.host else profile_steps)(engine, args)
        engine.shutdown()


def generate_from_flushed(engine: Engine, prompts: list[list[int]], new_tokens: int) -> float:
    """Wall seconds of one greedy generate call from a flushed cache (so its prefill runs)."""
    params = {"max_new_tokens": new_tokens, "temperature": 0, "ignore_eos": True}
    engine.flush_cache()
    torch.cuda.synchronize()
    start = time.perf_counter()
    engine.generate(input_ids=prompts, sampling_params=params)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def kernel_times(engine: Engine, prompts: list[list[int]], new_tokens: int) -> KernelTimes:
    """GPU time per kernel of one generate call from a flushed cache (so its prefill runs)."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall_s = generate_from_flushed(engine, prompts, new_tokens)
    by_name: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            by_name[event.name] += getattr(event, "device_time_total", 0.0)
    return KernelTimes(wall_s, by_name)


@dataclass(slots=True)
class KernelTimes:
    wall_s: float
    micros_by_name: dict[str, float]


def make_prompts(args: argparse.Namespace) -> list[list[int]]:
    """`batch_size` prompts of `prompt_len` tokens, or with `--ragged` of lengths uniform in
    [1, 2 * prompt_len - 1] (the same mean; a fixed seed), as a served batch's contexts vary."""
    rng = random.Random(0)
    lengths = [
        rng.randint(1, 2 * args.prompt_len - 1) if args.ragged else args.prompt_len
        for _ in range(args.batch_size)
    ]
    return [[(7 * i + j) % 30000 + 2 for j in range(n)] for i, n in enumerate(lengths)]


def host_times(engine: Engine, prompts: list[list[int]], new_tokens: int) -> dict[str, float]:
    """Own (not cumulative) host seconds per function of one generate call from a flushed cache."""
    profiler = cProfile.Profile()
    profiler.enable()
    generate_from_flushed(engine, prompts, new_tokens)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # pyright: ignore[reportAttributeAccessIssue]
    return {f"{func[0].split('/')[-1]}:{func[1]}({func[2]})": row[2] for func, row in stats.items()}


def profile_host(engine: Engine, args: argparse.Namespace) -> None:
    """The host's share of a decode step, by function: cProfile's own time in a run less the
    base run's (see profile_steps for why the base run)."""
    prompts = make_prompts(args)
    params = {"max_new_tokens": args.new_tokens, "temperature": 0, "ignore_eos": True}
    engine.generate(input_ids=prompts, sampling_params=params)  # warm-up
    base = host_times(engine, prompts, args.base_tokens)
    whole = host_times(engine, prompts, args.new_tokens)
    steps = args.new_tokens - args.base_tokens
    grown = {name: whole[name] - base.get(name, 0.0) for name in whole}
    print(f"\nbatch {args.batch_size}, prompt {args.prompt_len}, {steps} decode steps (host):")
    print(f"  all functions' own time: {sum(grown.values()) / steps * 1e3:.3f} ms/step")
    for name, seconds in sorted(grown.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {seconds / steps * 1e3:8.3f} ms/step  {name[:100]}")


def profile_steps(engine: Engine, args: argparse.Namespace) -> None:
    """Decode steps only: a run of `new_tokens` less a run of `base_tokens` (by default one: the
    prefill and its first sample), both from a flushed cache, so a long prompt's prefill does not
    swamp the per-step figures. A batch whose prefill takes many chunked steps (some requests
    decode while others prefill) needs `base_tokens` past those steps, so that the difference is
    whole decode steps of the full batch."""
    prompts = make_prompts(args)
    params = {"max_new_tokens": args.new_tokens, "temperature": 0, "ignore_eos": True}
    engine.generate(input_ids=prompts, sampling_params=params)  # warm-up, kernels compiled
    steps = args.new_tokens - args.base_tokens  # decode steps
    quiet = generate_from_flushed(engine, prompts, args.new_tokens) - generate_from_flushed(
        engine, prompts, args.base_tokens
    )
    prefill = kernel_times(engine, prompts, args.base_tokens)
    whole = kernel_times(engine, prompts, args.new_tokens)
    by_name = {
        name: whole.micros_by_name[name] - prefill.micros_by_name.get(name, 0.0)
        for name in whole.micros_by_name
    }
    total = sum(by_name.values())
    wall = whole.wall_s - prefill.wall_s
    print(
        f"\nbatch {args.batch_size}, prompt {args.prompt_len}{' ragged' if args.ragged else ''}, "
        f"{steps} decode steps: wall {quiet / steps * 1e3:.3f} ms/step ({wall / steps * 1e3:.3f} "
        f"with the profiler on), kernels {total / steps / 1e3:.3f} "
        f"ms/step; the first {args.base_tokens} token(s): {prefill.wall_s * 1e3:.1f} ms wall"
    )
    print_kernels(by_name, steps, weight_bytes(engine), args.top)
    if args.show_base:
        # The base run itself: the prefill's chunked steps (decodes riding along in them as
        # requests finish their prompts), so the kernels a prefill-carrying step runs.
        base_total = sum(prefill.micros_by_name.values())
        print(
            f"\nthe base run ({args.base_tokens} token(s), prefill included): wall "
            f"{prefill.wall_s * 1e3:.1f} ms with the profiler on, kernels {base_total / 1e3:.1f} ms"
        )
        print_kernels(prefill.micros_by_name, 1, 0, args.top, unit="ms")


def print_kernels(
    by_name: dict[str, float], steps: int, gemm_bytes: int, top: int, unit: str = "ms/step"
) -> None:
    """Kernel time by kind and the busiest kernels, per step (`steps` = 1: in all)."""
    by_kind: dict[str, float] = defaultdict(float)
    for name, micros in by_name.items():
        by_kind[kind_of(name)] += micros
    total = sum(by_kind.values())
    for kind, micros in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<11} {micros / steps / 1e3:8.3f} {unit}  {micros / total:6.1%}")
    gemm_s = by_kind["gemm"] / steps / 1e6
    if gemm_s > 0 and gemm_bytes:
        print(
            f"  GEMM weight read: {gemm_bytes / 1e9:.2f} GB/step -> "
            f"{gemm_bytes / gemm_s / 1e12:.2f} TB/s"
        )
    print(f"busiest kernels ({unit}):")
    for name, micros in sorted(by_name.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {micros / steps / 1e3:9.3f}  {name[:110]}")


if __name__ == "__main__":
    main()
