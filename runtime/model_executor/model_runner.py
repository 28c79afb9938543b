"""The model runner's one entry point: a batch of request slices in, sampled tokens out.

`ModelRunner.step` builds the ragged batch, runs the model over the paged KV pool, samples every
request that finished its prompt, and computes prompt-token logprobs where asked. The scheduler
talks to nothing else (the `StepRunner` seam), so it can be tested with a stand-in.

The runner reaches the model and the attention kernels only through their seams: `CausalLM`
(forward, load_weights, attention_geometry) and `AttentionBackend` (plan/forward, and the
CUDA-graph hooks the decode graphs use).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch

from ...kernels.attention import create_attention_backend
from ...kernels.attention.base import AttentionBackend, AttentionShape
from ..config.limits import RuntimeLimits, resolve_limits
from ..config.model_source import ModelSource, resolve_model_source
from ..config.server_args import ServerArgs
from ..constrained.bitmask import apply_token_bitmask
from ..scheduler.step import RequestSlice, StepRequest, StepResult, StepRunner, TopLogprobs
from .cuda_graph_runner import DecodeGraphRunner
from .device import resolve_attention_backend, resolve_device, resolve_dtype
from .distributed import tp_group
from .forward_batch import ForwardBatch
from .kv_pool import KVPool
from .model_config import ModelConfig
from .model_loader.weights import (
    init_dummy_weights,
    iter_weights,
    load_hf_config,
)
from .models import build_model
from .models.base import CausalLM
from .models.layers.attention import ForwardContext
from .sampling import (
    Sampler,
    SamplingBatchInfo,
    token_logprobs,
    top_logprobs,
)
from .sampling.batch_info import stack_vocab_masks

logger = logging.getLogger(__name__)


class ModelRunner(StepRunner):
    def __init__(self, args: ServerArgs) -> None:
        self.args = args
        self.device = resolve_device(args)
        if self.device.type == "cuda" and args.tp_size == 1:
            torch.cuda.set_device(args.base_gpu_id)  # a data-parallel replica's own GPU
        self.dtype = resolve_dtype(args)
        self.source: ModelSource = resolve_model_source(args.model_path)
        self.hf_config = load_hf_config(self.source)
        config = ModelConfig.from_hf(self.hf_config)
        if args.context_length:
            # The rotary table and every length check follow the context the user asked for.
            config = dataclasses.replace(config, max_context_len=args.context_length)
        self.config = config
        self.model = self._load_model()
        self.page_size = args.page_size
        geometry = self.model.attention_geometry
        self.kv_pool = KVPool(
            num_pages=self._num_kv_pages(),
            page_size=args.page_size,
            num_layers=self.config.num_layers,
            num_kv_heads=geometry.num_kv_heads,
            head_dim=geometry.head_dim,
            dtype=self.dtype,
            device=self.device,
        )
        self.limits = self._resolve_limits()
        self.attention = self._attention_backend()
        self.sampler = Sampler(seed=args.random_seed)
        use_graphs = not args.disable_cuda_graph and self.attention.supports_cuda_graph
        self.decode_graphs = self._capture_decode_graphs() if use_graphs else None

    def _attention_backend(self) -> AttentionBackend:
        geometry = self.model.attention_geometry
        shape = AttentionShape(
            num_heads=geometry.num_heads,
            num_kv_heads=geometry.num_kv_heads,
            head_dim=geometry.head_dim,
            page_size=self.page_size,
            dtype=self.dtype,
            device=self.device,
            softmax_scale=geometry.softmax_scale,
        )
        return create_attention_backend(resolve_attention_backend(self.args), shape)

    def _capture_decode_graphs(self) -> DecodeGraphRunner:
        """Decode graphs over an attention backend of their own: its fixed buffers are what
        these graphs replay, so no other set of graphs (or eager pass) may share them."""
        return DecodeGraphRunner(
            self.model,
            self.kv_pool,
            self._attention_backend(),
            max_bs=self.limits.cuda_graph_max_bs,
            max_pages_per_request=-(-self.context_len // self.page_size),
        )

    # --- the StepRunner seam -------------------------------------------------------------------

    @property
    def context_len(self) -> int:
        return self.config.max_context_len

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def num_kv_pages(self) -> int:
        return self.kv_pool.num_pages

    @property
    def model_name(self) -> str:
        return self.source.name

    def shutdown(self) -> None:
        """Nothing to stop: this runner started no process (its memory goes with it)."""

    # --- start-up ------------------------------------------------------------------------------

    def _load_model(self) -> CausalLM:
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device(self.device):
                model = build_model(self.config)
        finally:
            torch.set_default_dtype(torch.float32)
        if self.args.load_format == "dummy":
            init_dummy_weights(model, self.args.random_seed)
        else:
            model.load_weights(iter_weights(self.source, self.hf_config, self.args.load_format))
        return model.eval()

    def _num_kv_pages(self) -> int:
        per_token = self.config.kv_bytes_per_token(self.dtype)
        if self.args.max_total_tokens is not None:
            tokens = self.args.max_total_tokens
        elif self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            used = total - free
            budget = total * self.args.mem_fraction_static - used
            tokens = int(budget // per_token)
        else:
            tokens = int(self.args.cpu_kv_cache_gib * 2**30 // per_token)
        # Every tensor-parallel rank must hold the same pages: the smallest pool wins.
        num_pages = tp_group().min_over_ranks(tokens // self.args.page_size)
        if num_pages < 1:
            raise ValueError(
                f"KV pool too small: {tokens} tokens at page size {self.args.page_size}"
            )
        logger.info("KV pool: %d pages of %d tokens", num_pages, self.args.page_size)
        return num_pages

    def _resolve_limits(self) -> RuntimeLimits:
        """Batch limits the user left unset, derived from the KV pool and the GPU's memory
        (config/limits.py). Tensor-parallel ranks take the smallest GPU, so every rank captures
        the same decode graphs."""
        gpu_memory = None
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            gpu_memory = tp_group().min_over_ranks(total)
        limits = resolve_limits(
            self.args,
            pool_tokens=self.kv_pool.num_pages * self.page_size,
            context_len=self.context_len,
            gpu_memory_bytes=gpu_memory,
        )
        logger.info("limits: %s", limits)
        return limits

    @torch.inference_mode()
    def forward(self, slices: Sequence[RequestSlice]) -> tuple[ForwardBatch, torch.Tensor]:
        if self.decode_graphs is not None and self.decode_graphs.can_run(slices):
            return self.decode_graphs.replay(slices)
        batch = ForwardBatch.build(slices, self.page_size, self.device)
        self.attention.plan(batch.layout)
        ctx = ForwardContext(batch=batch, kv_pool=self.kv_pool, attention=self.attention)
        return batch, self.model(ctx)

    @torch.inference_mode()
    def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        batch, logits = self.forward([r.slice for r in requests])
        results = [StepResult() for _ in requests]
        self._sample(requests, batch, logits, results)
        self._verify_drafts(requests, batch, logits, results)
        self._input_logprobs(requests, batch, logits, results)
        return results

    def _verify_drafts(
        self,
        requests: Sequence[StepRequest],
        batch: ForwardBatch,
        logits: torch.Tensor,
        results: list[StepResult],
    ) -> None:
        """Greedy choice after every row of each speculative slice, in one argmax and one copy.
        The scheduler drafts only for greedy requests without penalties, bias or logprobs, so
        the argmax (under the grammar's mask for that row, if any) is what sampling would pick."""
        drafting = [i for i, r in enumerate(requests) if r.draft_token_ids]
        if not drafting:
            return
        rows = [row for i in drafting for row in range(*batch.logits_ranges[i])]
        scores = logits.index_select(0, torch.tensor(rows, device=logits.device))
        masks = self._draft_masks(requests, drafting)
        if masks is not None:
            scores = apply_token_bitmask(scores, masks)
        picked_ids = scores.argmax(-1).tolist()
        offset = 0
        for i in drafting:
            count = len(requests[i].draft_token_ids or ()) + 1
            results[i].verified_ids = picked_ids[offset : offset + count]
            offset += count

    def _draft_masks(
        self, requests: Sequence[StepRequest], drafting: list[int]
    ) -> torch.Tensor | None:
        """[verified rows, W]: each grammar request's per-row masks, all-allowed elsewhere;
        None when no drafting request has a grammar."""
        rows: list[torch.Tensor | None] = []
        for i in drafting:
            mask = requests[i].vocab_mask
            count = len(requests[i].draft_token_ids or ()) + 1
            rows.extend(mask.unbind(0) if mask is not None else [None] * count)
        return stack_vocab_masks(rows, self.vocab_size, self.device)

    def _sample(
        self,
        requests: Sequence[StepRequest],
        batch: ForwardBatch,
        logits: torch.Tensor,
        results: list[StepResult],
    ) -> None:
        chosen = [i for i, r in enumerate(requests) if r.sample and not r.draft_token_ids]
        if not chosen:
            return
        rows = torch.tensor([batch.logits_ranges[i][1] - 1 for i in chosen], device=logits.device)
        info = SamplingBatchInfo.build(
            [requests[i].sampling for i in chosen],
            [requests[i].prompt_ids for i in chosen],
            [requests[i].output_ids for i in chosen],
            self.vocab_size,
            logits.device,
            vocab_masks=[requests[i].vocab_mask for i in chosen],
            banned_token_ids=[requests[i].banned_token_ids for i in chosen],
        )
        num_top = max(requests[i].top_logprobs_num for i in chosen)
        out = self.sampler(logits.index_select(0, rows), info, num_top)
        ids = out.next_token_ids.tolist()
        lps = out.logprobs.tolist()
        top = TopLogprobRows(out.top_logprob_ids, out.top_logprob_values)
        for k, i in enumerate(chosen):
            result, request = results[i], requests[i]
            result.next_token_id = ids[k]
            if request.return_logprob:
                result.logprob = lps[k]
                if request.top_logprobs_num:
                    result.top_logprobs = top.row(k, request.top_logprobs_num)

    def _input_logprobs(
        self,
        requests: Sequence[StepRequest],
        batch: ForwardBatch,
        logits: torch.Tensor,
        results: list[StepResult],
    ) -> None:
        rows: list[int] = []
        targets: list[int] = []
        spans: list[tuple[int, int, int]] = []  # (request index, start in rows, count)
        for i, request in enumerate(requests):
            s = request.slice
            if s.logits_from is None or request.draft_token_ids:
                continue
            start, _ = batch.logits_ranges[i]
            first_target = s.prefix_len + s.logits_from + 1
            last_target = min(s.seq_len, len(request.prompt_ids) - 1)
            count = max(0, last_target - first_target + 1)
            spans.append((i, len(rows), count))
            rows.extend(range(start, start + count))
            targets.extend(request.prompt_ids[first_target : first_target + count])
        if not rows:
            return
        row_logits = logits.index_select(0, torch.tensor(rows, device=logits.device))
        values = token_logprobs(row_logits, torch.tensor(targets, device=logits.device)).tolist()
        num_top = max(requests[i].top_logprobs_num for i, _, _ in spans)
        top = TopLogprobRows(*(top_logprobs(row_logits, num_top) if num_top else (None, None)))
        for i, offset, count in spans:
            results[i].input_logprobs = values[offset : offset + count]
            n = requests[i].top_logprobs_num
            if n:
                results[i].input_top_logprobs = [
                    top.row(r, n) for r in range(offset, offset + count)
                ]


class TopLogprobRows:
    """Top-k (token id, logprob) pairs per row, copied to Python lists once per step."""

    def __init__(self, ids: torch.Tensor | None, values: torch.Tensor | None) -> None:
        self.ids = ids.tolist() if ids is not None else []
        self.values = values.tolist() if values is not None else []

    def row(self, index: int, n: int) -> TopLogprobs:
        if not self.ids:
            return []
        return list(zip(self.ids[index][:n], self.values[index][:n], strict=True))
