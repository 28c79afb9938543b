"""Paged decode attention for the smallest CUDA-graph batches (Triton, GPU only).

At batch 1 the Llama-3.1-8B shape's attention reads a few hundred KB of KV per layer, yet
FlashInfer's decode took about 10 us a layer on the H200 (its kernel about 8, the split-KV merge
about 2): 0.34 ms of a 4.25 ms step. The work is latency, not bandwidth: a few dependent loads
(indptr, page ids, K, V) and a write. These two kernels do it in less:

    split   grid (rows, KV heads, splits): a program takes one query row's group of query heads
            (all the heads that share one KV head), walks its share of the request's tokens in
            BLOCK_N blocks through the page table with an online softmax, and writes its
            normalised partial output and log-sum-exp (base 2)
    merge   grid (rows, query heads): combines the splits that hold tokens, by their
            log-sum-exps, MERGE_CHUNK partials a load

The split count is fixed per captured batch size (a graph's grid cannot change): about
SPLITS_PER_SM programs per SM. A request's tokens are cut into that many equal ranges of whole
blocks, so a long context spreads over the whole GPU while a short one fills a few splits and
leaves the rest empty (they exit at once, and the merge reads only the filled ones).

Measured on the H200 (benchmarks/bench_gpu_decode_attention.py, device time per layer, 32 query
and 8 KV heads of 128, bf16, page size 16), this against FlashInfer's tensor-core decode:

    context   batch 1       batch 2       batch 4       batch 8
    384       5.5 / 7.8     5.8 / 8.2     6.6 / 9.0     8.5 / 11.6
    4096      11.0 / 12.0   13.5 / 14.8   25.0 / 25.6   42.1 / 41.7
    16384     27.5 / 26.1   43.3 / 41.8   77.0 / 71.1   138.6 / 131.6

(the configuration, swept with `--sweep`: 4 programs per SM, blocks of 32 tokens, 2 stages, 4
warps; blocks of 64 were faster at 16K tokens and slower at a few hundred). The layout is the one
`AttentionBackend` documents: request r's pages are kv_page_indices[kv_indptr[r]:kv_indptr[r+1]],
its last page holds kv_last_page_len[r] tokens, the caches are [pages, page_size, KV heads,
head_dim].
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
BLOCK_N = 32  # tokens per step of a split's walk (two pages of 16)
NUM_STAGES = 2
NUM_WARPS = 4
SPLITS_PER_SM = 4  # programs per SM a graph's grid aims at (splits_for)
MERGE_CHUNK = 16  # partials per load in the merge
MIN_GROUP_ROWS = 16  # tl.dot's smallest M: a group of 4 query heads is padded to 16 rows


@triton.jit
def _split_range(
    kv_indptr, kv_last, r, PAGE: tl.constexpr, SPLITS: tl.constexpr, BLOCK: tl.constexpr
):
    """Tokens of request r and the tokens per split: equal ranges of whole blocks, so the
    trailing splits may be empty (both kernels cut the same way)."""
    first_page = tl.load(kv_indptr + r)
    num_pages = tl.load(kv_indptr + r + 1) - first_page
    seq_len = (num_pages - 1) * PAGE + tl.load(kv_last + r)
    per_split = tl.cdiv(tl.cdiv(seq_len, SPLITS), BLOCK) * BLOCK
    return first_page, seq_len, per_split


@triton.jit
def _split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    kv_indptr,
    kv_pages,
    kv_last,
    part_o,
    part_lse,
    scale_log2,
    NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    SPLITS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r = tl.program_id(0)
    h = tl.program_id(1)
    s = tl.program_id(2)
    # pyright cannot see that a jit function is callable inside another's body
    first_page, seq_len, per_split = _split_range(kv_indptr, kv_last, r, PAGE, SPLITS, BLOCK)  # pyright: ignore[reportCallIssue]
    start = s * per_split
    end = tl.minimum(start + per_split, seq_len)

    rows = tl.arange(0, GROUP_PAD)
    dims = tl.arange(0, HEAD_DIM)
    heads = h * GROUP + rows
    row_ok = rows < GROUP
    q = tl.load(
        q_ptr + (r * NUM_KV_HEADS * GROUP + heads)[:, None] * HEAD_DIM + dims[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    m = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    denom = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    for n0 in range(start, end, BLOCK):
        tokens = n0 + tl.arange(0, BLOCK)
        valid = tokens < end
        page = tl.load(kv_pages + first_page + tokens // PAGE, mask=valid, other=0)
        slot = page.to(tl.int64) * PAGE + tokens % PAGE
        offs = (slot * NUM_KV_HEADS + h)[:, None] * HEAD_DIM + dims[None, :]
        k = tl.load(k_ptr + offs, mask=valid[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k)) * scale_log2  # [GROUP_PAD, BLOCK], base-2 logits
        scores = tl.where(valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, 1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new[:, None])
        denom = denom * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + offs, mask=valid[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    filled = denom > 0  # an empty split: weight zero in the merge
    out = tl.where(filled[:, None], acc / tl.where(filled, denom, 1.0)[:, None], 0.0)
    lse = tl.where(filled, m + tl.log2(tl.where(filled, denom, 1.0)), float("-inf"))
    # Partials [rows, query heads, splits, head_dim]: one query head's splits side by side.
    slots = (r * NUM_KV_HEADS * GROUP + heads) * SPLITS + s
    tl.store(part_o + slots[:, None] * HEAD_DIM + dims[None, :], out, mask=row_ok[:, None])
    tl.store(part_lse + slots, lse, mask=row_ok)


@triton.jit
def _merge_kernel(
    part_o,
    part_lse,
    out_ptr,
    kv_indptr,
    kv_last,
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    PAGE: tl.constexpr,
    SPLITS: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
):
    # One program per (row, query head): the splits that hold tokens, CHUNK partials a load,
    # weighed by their log-sum-exps (a short context reads one chunk however many splits the
    # graph's grid has).
    r = tl.program_id(0)
    head = tl.program_id(1)
    _, seq_len, per_split = _split_range(kv_indptr, kv_last, r, PAGE, SPLITS, BLOCK)  # pyright: ignore[reportCallIssue]
    active = tl.cdiv(seq_len, per_split)
    dims = tl.arange(0, HEAD_DIM)
    base = (r * NUM_HEADS + head) * SPLITS
    m = tl.max(tl.full([CHUNK], float("-inf"), dtype=tl.float32), 0)
    total = tl.sum(tl.zeros([CHUNK], dtype=tl.float32), 0)
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for c in range(0, active, CHUNK):
        splits = c + tl.arange(0, CHUNK)
        ok = splits < active
        lse = tl.load(part_lse + base + splits, mask=ok, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(lse, 0))  # finite: every active split holds a token
        rescale = tl.exp2(m - m_new)
        weight = tl.exp2(lse - m_new)
        o = tl.load(
            part_o + (base + splits)[:, None] * HEAD_DIM + dims[None, :],
            mask=ok[:, None],
            other=0.0,
        )
        acc = acc * rescale + tl.sum(weight[:, None] * o, 0)
        total = total * rescale + tl.sum(weight, 0)
        m = m_new
    result = acc / tl.where(total > 0, total, 1.0)
    tl.store(
        out_ptr + (r * NUM_HEADS + head) * HEAD_DIM + dims,
        result.to(out_ptr.dtype.element_ty),
    )


def splits_for(
    batch_size: int, num_kv_heads: int, num_sms: int, per_sm: int = SPLITS_PER_SM
) -> int:
    """Splits per (row, KV head) so that one graph's grid gives every SM about `per_sm`
    programs."""
    return max(1, -(-per_sm * num_sms // (batch_size * num_kv_heads)))


def partial_buffers(
    batch_size: int, num_heads: int, head_dim: int, splits: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 partial outputs [rows, heads, splits, head_dim] and their log-sum-exps that
    `decode` writes and merges."""
    part_o = torch.empty(
        batch_size * num_heads * splits * head_dim, dtype=torch.float32, device=device
    )
    part_lse = torch.empty(batch_size * num_heads * splits, dtype=torch.float32, device=device)
    return part_o, part_lse


def decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_page_indices: torch.Tensor,
    kv_last_page_len: torch.Tensor,
    scale: float,
    splits: int,
    part_o: torch.Tensor,
    part_lse: torch.Tensor,
    block: int = BLOCK_N,
    num_stages: int = NUM_STAGES,
    num_warps: int = NUM_WARPS,
) -> torch.Tensor:
    """Attention of one query token per row over its paged KV: q [B, H, D] -> [B, H, D].

    `kv_indptr` [B + 1], `kv_last_page_len` [B] and the page list are int32 on q's device;
    `part_o` / `part_lse` come from `partial_buffers` for at least B rows and `splits`."""
    rows, num_heads, head_dim = q.shape
    _, page_size, num_kv_heads, cache_dim = k_cache.shape
    if cache_dim != head_dim or num_heads % num_kv_heads:
        raise ValueError(
            f"queries [{rows}, {num_heads}, {head_dim}] do not fit caches of {num_kv_heads} KV "
            f"heads of {cache_dim}"
        )
    if not (k_cache.is_contiguous() and v_cache.is_contiguous() and q.is_contiguous()):
        raise ValueError("decode attention needs contiguous queries and caches")
    group = num_heads // num_kv_heads
    if part_o.numel() < rows * num_heads * splits * head_dim or part_lse.numel() < (
        rows * num_heads * splits
    ):
        raise ValueError(f"partial buffers too small for {rows} rows and {splits} splits")
    group_pad = max(MIN_GROUP_ROWS, triton.next_power_of_2(group))
    out = torch.empty_like(q)
    _split_kernel[(rows, num_kv_heads, splits)](
        q,
        k_cache,
        v_cache,
        kv_indptr,
        kv_page_indices,
        kv_last_page_len,
        part_o,
        part_lse,
        scale * LOG2E,
        NUM_KV_HEADS=num_kv_heads,
        GROUP=group,
        GROUP_PAD=group_pad,
        HEAD_DIM=head_dim,
        PAGE=page_size,
        SPLITS=splits,
        BLOCK=block,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    _merge_kernel[(rows, num_heads)](
        part_o,
        part_lse,
        out,
        kv_indptr,
        kv_last_page_len,
        NUM_HEADS=num_heads,
        HEAD_DIM=head_dim,
        PAGE=page_size,
        SPLITS=splits,
        BLOCK=block,
        CHUNK=MERGE_CHUNK,
        num_warps=4,
    )
    return out
