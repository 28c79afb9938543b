"""The one-row products of a batch-1 decode step on the GPU: cuBLAS (F.linear) against
kernels/fused/matvec.py, side by side in one run.

Two tables, on the Llama-3.1-8B shapes (bf16, random weights):

1. each product alone: microseconds per product and the weight bytes read per second, for
   F.linear and for the Triton kernel at every block configuration swept (the best one printed);
   the product is replayed from a CUDA graph over enough weight copies that none stays in the
   60 MB L2;
2. a whole step's products (32 layers and the LM head) with the ops between them as the model
   runs them (RMSNorm, qkv, o, RMSNorm with the residual, gate_up, SiLU-and-multiply, down):
   through F.linear against through the kernel, ms per step.

    python3 benchmarks/bench_gpu_gemv.py [--layers 32] [--no-sweep]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from radixserve.kernels.fused import activation, matvec, rmsnorm

HIDDEN, HEADS_DIM, INTERMEDIATE, VOCAB = 4096, 6144, 14336, 128256
SHAPES = {  # name -> (N, K)
    "qkv_proj": (HEADS_DIM, HIDDEN),
    "o_proj": (HIDDEN, HIDDEN),
    "gate_up_proj": (2 * INTERMEDIATE, HIDDEN),
    "down_proj": (HIDDEN, INTERMEDIATE),
    "lm_head": (VOCAB, HIDDEN),
}
L2_BYTES = 60 * 2**20
DTYPE = torch.bfloat16


def graph_time_us(fn: Callable[[int], object], calls: int, replays: int = 20) -> float:
    """Microseconds per call of fn(i) for i in 0..calls-1, captured in one CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(calls):
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000 / (replays * calls)


def configs() -> list[tuple[int, int, int]]:
    return list(itertools.product((1, 2, 4, 8), (1024, 2048, 4096), (1, 2, 4, 8)))


def sweep(do_sweep: bool) -> None:
    print("| product | F.linear us | TB/s | gemv us (BLOCK_N, BLOCK_K, warps) | TB/s | max diff |")
    print("|---|---|---|---|---|---|")
    for name, (n, k) in SHAPES.items():
        copies = max(1, -(-3 * L2_BYTES // (n * k * 2)))
        weights = [torch.randn(n, k, device="cuda", dtype=DTYPE) * 0.02 for _ in range(copies)]
        print(sweep_one(name, weights, do_sweep))
        del weights
        torch.cuda.empty_cache()


def sweep_one(name: str, weights: list[torch.Tensor], do_sweep: bool) -> str:
    """One table row: F.linear and the best configuration of the kernel for this product."""
    n, k = weights[0].shape
    nbytes, copies = n * k * 2, len(weights)
    x = torch.randn(1, k, device="cuda", dtype=DTYPE)
    t_ref = graph_time_us(lambda i: F.linear(x, weights[i % copies]), 2 * copies)
    candidates = configs() if do_sweep else [matvec.BLOCK_CONFIG]
    timed = [
        (graph_time_us(lambda i, c=c: matvec.gemv(x, weights[i % copies], config=c), 2 * copies), c)
        for c in candidates
    ]
    t_best, cfg_best = min(timed)
    diff = (matvec.gemv(x, weights[0], config=cfg_best) - F.linear(x, weights[0])).abs().max()
    return (
        f"| {name} [{n}x{k}] | {t_ref:.1f} | {nbytes / t_ref / 1e6:.2f} | "
        f"{t_best:.1f} {cfg_best} | {nbytes / t_best / 1e6:.2f} | {diff.item():.3g} |"
    )


class Layer:
    def __init__(self) -> None:
        def w(name: str) -> torch.Tensor:
            n, k = SHAPES[name]
            return torch.randn(n, k, device="cuda", dtype=DTYPE) * 0.02

        self.qkv, self.o, self.gate_up, self.down = (
            w("qkv_proj"),
            w("o_proj"),
            w("gate_up_proj"),
            w("down_proj"),
        )
        self.norm1 = torch.rand(HIDDEN, device="cuda", dtype=DTYPE) + 0.5
        self.norm2 = torch.rand(HIDDEN, device="cuda", dtype=DTYPE) + 0.5


def step(
    layers: list[Layer], head: torch.Tensor, hidden: torch.Tensor, use_gemv: bool
) -> torch.Tensor:
    """One step's products and the ops between them; through F.linear or the kernel."""

    def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return matvec.gemv(x, w) if use_gemv else F.linear(x, w)

    residual = None
    for layer in layers:
        normed, residual = rmsnorm.rms_norm(hidden, layer.norm1, 1e-5, residual)
        residual = hidden if residual is None else residual
        qkv = linear(normed, layer.qkv)
        attn = qkv[:, :HIDDEN]  # stands in for attention's output: the same width
        hidden = linear(attn, layer.o)
        normed, residual = rmsnorm.rms_norm(hidden, layer.norm2, 1e-5, residual)
        assert residual is not None
        hidden = linear(activation.silu_and_mul(linear(normed, layer.gate_up)), layer.down)
    normed, _ = rmsnorm.rms_norm(hidden, layers[-1].norm1, 1e-5, residual)
    return linear(normed, head)


def whole_step(num_layers: int) -> None:
    layers = [Layer() for _ in range(num_layers)]
    head = torch.randn(VOCAB, HIDDEN, device="cuda", dtype=DTYPE) * 0.02
    nbytes = sum(t.numel() * 2 for ly in layers for t in (ly.qkv, ly.o, ly.gate_up, ly.down))
    nbytes += head.numel() * 2
    hidden = torch.randn(1, HIDDEN, device="cuda", dtype=DTYPE)
    t_cublas = graph_time_us(lambda i: step(layers, head, hidden, False), 1, 10) / 1000
    t_gemv = graph_time_us(lambda i: step(layers, head, hidden, True), 1, 10) / 1000
    a, b = step(layers, head, hidden, False).float(), step(layers, head, hidden, True).float()
    diff = (a - b).abs().max().item() / a.abs().max().item()
    print(f"\nwhole step: {num_layers} layers and the LM head, {nbytes / 1e9:.2f} GB of weights")
    print("| F.linear ms | TB/s | gemv ms | TB/s | gemv/F.linear | max logit diff / max logit |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {t_cublas:.3f} | {nbytes / t_cublas / 1e9:.2f} | {t_gemv:.3f} | "
        f"{nbytes / t_gemv / 1e9:.2f} | {t_gemv / t_cublas:.3f} | {diff:.3g} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--no-sweep", action="store_true", help="only matvec.BLOCK_CONFIG")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    sweep(not args.no_sweep)
    whole_step(args.layers)


if __name__ == "__main__":
    main()
