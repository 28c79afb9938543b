"""Pure-torch paged attention: the reference backend (CPU and GPU).

Planning turns the paged layout into padded gather indices, one group for decode rows
(extend_len == 1) and one for prefill chunks, so a long chunk does not pad every decode row to
its length. Each layer then gathers K/V by slot and runs one batched SDPA per group:

    slot(r, j) = kv_page_indices[kv_indptr[r] + j // page_size] * page_size + j % page_size
    mask[r, i, j] = j < seq_len[r] and j <= prefix_len[r] + i      (prefix_len = seq - extend)

A prefill group whose sequences have no cached prefix (each chunk is its whole sequence) needs no
mask: SDPA's own causal flag gives the same attention, and its flash kernel then skips the key
blocks above the diagonal, which a mask makes it compute (half of a long prompt's attention).
Right padding is harmless there: a real query row never sees a key past its own position. A
lone chunk after a shorter prefix (a long prompt's second chunk) goes the same way behind as
many placeholder query rows as its prefix: SDPA's causal flag aligns queries and keys at the
top left, so the real rows then see exactly their prefix and themselves, and the placeholders'
triangle costs less than the mask's full rectangle (prefix < chunk). On the CPU each prefill
chunk is a group of its own, so two prompts of 1,670 and 380 tokens in one step do not pad the
second to the first's length.

On the CPU, torch's own threads stay at --cpu-threads (one on a two-core machine: its small ops
are fastest there), so a group's SDPA over many (query, key) pairs widens to the threads the
products have now (kernels/cpu/blas_threads.py: the cores other processes leave free). A
2048-token prompt's attention took 237 ms a layer on one thread and 126 on two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..cpu.blas_threads import blas_threads_in_force
from .base import AttentionBackend, PagedBatchLayout

# Groups with at least this many (query, key) entries (padded) run SDPA on the products' threads
# when those are more than torch's: from 64-token prompts (4,096) two threads took 0.6x the time.
WIDE_SDPA_PAIRS = 4096


@dataclass(slots=True)
class _Group:
    batch: int
    max_q: int
    max_kv: int
    q_rows: torch.Tensor  # [b * max_q] long: row in the flat query tensor (padding clamps)
    kv_slots: torch.Tensor  # [b * max_kv] long: slot in the flat cache (padding clamps)
    mask: torch.Tensor | None  # [b, 1, max_q, max_kv] bool, True = attend; None = causal
    valid_index: torch.Tensor | None  # [n] long: real entries of b * max_q; None = all real
    out_rows: torch.Tensor  # [n] long: flat query row of each real entry
    # One query row per sequence and every row of the batch in order (a pure decode batch): the
    # query is used in place and the output is the group's own, no gather and no scatter.
    rows_in_order: bool


class TorchAttentionBackend(AttentionBackend):
    # Its plan builds index tensors whose shapes follow each batch's lengths: nothing a captured
    # graph could replay. The graph hooks keep the base class's NotImplementedError.
    supports_cuda_graph = False

    def plan(self, layout: PagedBatchLayout) -> None:
        # The groups are built at the first forward: the CPU's C step reads only token_slots(),
        # and building a group per prefill chunk for it cost 3-4 ms a step at 8 prompts.
        self._layout = layout
        self._planned: list[_Group] | None = None

    @property
    def _groups(self) -> list[_Group]:
        if self._planned is None:
            self._planned = self._plan_groups(self._layout)
        return self._planned

    def _plan_groups(self, layout: PagedBatchLayout) -> list[_Group]:
        device = self.shape.device
        is_decode = torch.tensor(layout.extend_lens_cpu, dtype=torch.long) == 1
        groups = []
        if bool(is_decode.any()):
            groups.append(self._plan_group(layout, torch.nonzero(is_decode).flatten(), device))
        prefills = torch.nonzero(~is_decode).flatten()
        if device.type == "cpu":  # each chunk alone: nothing padded to the longest (docstring)
            groups += [self._plan_group(layout, prefills[i : i + 1], device)
                       for i in range(len(prefills))]  # fmt: skip
        elif len(prefills):
            groups.append(self._plan_group(layout, prefills, device))
        return groups

    def _plan_group(
        self, layout: PagedBatchLayout, members: torch.Tensor, device: torch.device
    ) -> _Group:
        page_size = layout.page_size
        seq = torch.tensor(layout.seq_lens_cpu, dtype=torch.long)[members]
        extend = torch.tensor(layout.extend_lens_cpu, dtype=torch.long)[members]
        qo_start = layout.qo_indptr.to("cpu", torch.long)[members]
        page_start = layout.kv_indptr.to("cpu", torch.long)[members]
        pages = layout.kv_page_indices.to("cpu", torch.long)
        prefix = seq - extend
        kv_pos, kv_valid, kv_slots = _sequence_slots(seq, page_start, pages, page_size)
        # A lone chunk longer than its prefix: that many placeholder queries first make it a
        # plain causal square (docstring).
        lead = int(prefix[0]) if len(members) == 1 and 0 < prefix[0] < extend[0] else 0
        q_pos = torch.arange(lead + int(extend.max())) - lead
        valid = (q_pos[None, :] >= 0) & (q_pos[None, :] < extend[:, None])
        q_rows = torch.where(valid, qo_start[:, None] + q_pos[None, :], qo_start[:, None])
        # SDPA's causal flag where it gives this attention (docstring), else a mask.
        flag_is_exact = (lead > 0 or bool((prefix == 0).all())) and q_pos.numel() > 1
        mask = None
        if not flag_is_exact:
            seen = kv_pos[None, None, :] <= (prefix[:, None] + q_pos[None, :])[:, :, None]
            mask = kv_valid[:, None, :] & seen
            # Padding rows attend to slot 0 only, so softmax never sees an all-masked row.
            mask[:, :, 0] |= ~valid
            mask = mask.unsqueeze(1).to(device)
        all_valid = bool(valid.all())
        num_rows = sum(layout.extend_lens_cpu)
        in_order = q_rows.shape[1] == 1 and torch.equal(q_rows.flatten(), torch.arange(num_rows))
        return _Group(
            batch=len(members),
            max_q=q_pos.numel(),
            max_kv=kv_pos.numel(),
            q_rows=q_rows.flatten().to(device),
            kv_slots=kv_slots.flatten().to(device),
            mask=mask,
            valid_index=None if all_valid else torch.nonzero(valid.flatten()).flatten().to(device),
            out_rows=q_rows[valid].to(device),
            rows_in_order=in_order,
        )

    def token_slots(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The planned batch as the CPU's C step reads it (kernels/cpu/llama_step.py): [S,
        max_seq] KV slots of each sequence in order (padding repeats a valid slot), and for each
        of the T new tokens its sequence [T] and how many slots it sees [T] (causal: the prefix,
        then the batch's tokens up to its own). int64 on the plan's device."""
        layout = self._layout
        seq = torch.tensor(layout.seq_lens_cpu, dtype=torch.long)
        extend = torch.tensor(layout.extend_lens_cpu, dtype=torch.long)
        page_start = layout.kv_indptr.to("cpu", torch.long)[:-1]
        pages = layout.kv_page_indices.to("cpu", torch.long)
        _, _, kv_slots = _sequence_slots(seq, page_start, pages, layout.page_size)
        row_seq = torch.repeat_interleave(torch.arange(len(seq)), extend)
        first_row = torch.cumsum(extend, 0) - extend
        within = torch.arange(int(extend.sum())) - first_row[row_seq]
        row_len = (seq - extend)[row_seq] + within + 1
        device = self.shape.device
        return kv_slots.to(device), row_seq.to(device), row_len.to(device)

    def forward(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        num_tokens, num_heads, head_dim = q.shape
        num_kv_heads = k_cache.shape[-2]
        flat_k = k_cache.view(-1, num_kv_heads, head_dim)
        flat_v = v_cache.view(-1, num_kv_heads, head_dim)
        out = q.new_empty(num_tokens, num_heads * head_dim)
        for g in self._groups:
            # index_select on flat tensors: much cheaper than advanced indexing on the CPU.
            if g.rows_in_order:
                gq = q.unsqueeze(1)
            else:
                gq = q.index_select(0, g.q_rows).view(g.batch, g.max_q, num_heads, head_dim)
            gk = flat_k.index_select(0, g.kv_slots).view(g.batch, g.max_kv, num_kv_heads, head_dim)
            gv = flat_v.index_select(0, g.kv_slots).view(g.batch, g.max_kv, num_kv_heads, head_dim)
            with _threads_for(q.device, g.batch * g.max_q * g.max_kv):
                attn = F.scaled_dot_product_attention(
                    gq.transpose(1, 2),
                    gk.transpose(1, 2),
                    gv.transpose(1, 2),
                    attn_mask=g.mask,
                    is_causal=g.mask is None,
                    scale=scaling,
                    enable_gqa=True,
                )
            rows = attn.transpose(1, 2).reshape(g.batch * g.max_q, num_heads * head_dim)
            if g.rows_in_order:  # the batch's only group: its rows are the output
                return rows
            if g.valid_index is not None:
                rows = rows.index_select(0, g.valid_index)
            out.index_copy_(0, g.out_rows, rows)
        return out


@contextlib.contextmanager
def _threads_for(device: torch.device, pairs: int) -> Iterator[None]:
    """torch's threads widened to the products' for a large CPU SDPA (module docstring)."""
    wide = blas_threads_in_force() if device.type == "cpu" and pairs >= WIDE_SDPA_PAIRS else None
    before = torch.get_num_threads()
    if wide is None or wide <= before:
        yield
        return
    torch.set_num_threads(wide)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sequence_slots(
    seq: torch.Tensor, page_start: torch.Tensor, pages: torch.Tensor, page_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sequence's KV slots in order, padded to the longest with its first page's slot:
    (positions [max_seq], valid [S, max_seq], slots [S, max_seq]). `page_start` is each
    sequence's first entry in `pages`, its page table."""
    kv_pos = torch.arange(int(seq.max()))
    kv_valid = kv_pos[None, :] < seq[:, None]
    page_idx = page_start[:, None] + kv_pos[None, :] // page_size
    page_idx = torch.where(kv_valid, page_idx, page_start[:, None])
    return kv_pos, kv_valid, pages[page_idx] * page_size + kv_pos[None, :] % page_size
