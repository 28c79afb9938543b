"""The model runner's one entry point: a batch of request slices in, sampled tokens out.

`ModelRunner.launch` builds the ragged batch, runs the model over the paged KV pool, samples every
request that finished its prompt, and computes prompt-token logprobs where asked, all enqueued on
the device without waiting; `collect` waits and returns the results (launched_step.py). The
scheduler talks to nothing else (the `StepRunner` seam), so it can be tested with a stand-in.

Overlap scheduling launches step N+1 before collecting step N. Its decodes then feed the
placeholders of N's samples: `last_sampled` keeps N's sampled ids on the device and the forward
pass resolves the placeholders there, so no token makes a round trip through the host. Nothing
between the launch's start and the copies of its outputs may synchronize with the device
(`torch.tensor(..., device=cuda)` does; host tensors go over with non_blocking copies).

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
from ...kernels.cpu.blas_linear import blas_linear_enabled
from ...kernels.cpu.small_gemm import small_gemm
from ...utils.pinned_staging import begin_staging
from ..config.limits import RuntimeLimits, resolve_limits
from ..config.model_source import ModelSource, resolve_model_source
from ..config.server_args import ServerArgs
from ..scheduler.step import RequestSlice, StepHandle, StepRequest, StepResult, StepRunner
from .cuda_graph_runner import DecodeGraphRunner
from .device import apply_cpu_blas, resolve_attention_backend, resolve_device, resolve_dtype
from .distributed import tp_group
from .forward_batch import ForwardBatch, resolve_futures
from .kv_pool import KVPool
from .launched_step import LaunchedStep
from .model_config import ModelConfig
from .model_loader.gguf_blocks import read_llama_blocks, verified_blocks
from .model_loader.weights import (
    init_dummy_weights,
    iter_weights,
    load_hf_config,
)
from .models import build_model
from .models.base import CausalLM
from .models.layers.attention import ForwardContext
from .models.layers.cpu_layout import lay_out_cpu_weights
from .sampling import Sampler
from .step_sampling import input_logprobs, sample, verify_drafts

logger = logging.getLogger(__name__)


class ModelRunner(StepRunner):
    def __init__(self, args: ServerArgs) -> None:
        self.args = args
        self.device = resolve_device(args)
        if self.device.type == "cuda" and args.tp_size == 1:
            torch.cuda.set_device(args.base_gpu_id)  # a data-parallel replica's own GPU
        self.dtype = resolve_dtype(args)
        # The CPU's matrix products through numpy's BLAS, its threads following the machine.
        self.blas_governor = apply_cpu_blas(args)
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
        # The second of the eager backends that alternate on a GPU (`_eager_attention`).
        self._spare_attention = self._attention_backend() if self.device.type == "cuda" else None
        self._eager_flip = False
        # The last launch's sampled ids by request: what future placeholders stand for.
        self.last_sampled: torch.Tensor | None = None
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
        name = resolve_attention_backend(self.args, geometry.head_dim)
        return create_attention_backend(name, shape)

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
        if self.device.type == "cpu" and blas_linear_enabled():
            lay_out_cpu_weights(model)  # what the CPU's products read fastest (kernels/cpu)
            self._use_gguf_blocks(model)
        return model.eval()

    def _use_gguf_blocks(self, model: CausalLM) -> None:
        """Hands the model its GGUF's quantized blocks for the CPU's small-batch products where
        they dequantize to its float32 weights bit for bit (model_loader/gguf_blocks.py)."""
        kernel = small_gemm()
        path = self.source.gguf_path
        if (
            path is None
            or self.args.load_format not in ("auto", "gguf")
            or self.args.disable_cpu_gguf_blocks
            or tp_group().size != 1
            or kernel is None
        ):
            return
        config = self.config
        try:
            found = read_llama_blocks(
                path, config.num_layers, config.num_heads, config.num_kv_heads
            )
        except (OSError, ValueError) as exc:
            logger.warning("GGUF blocks unreadable, the CPU reads float32 weights: %s", exc)
            return
        blocks = verified_blocks(kernel, model, found)
        used = model.use_cpu_blocks(blocks)
        megabytes = sum(b.nbytes for b in blocks.values()) / 2**20
        logger.info("CPU products read GGUF blocks for %d weights (%.0f MiB)", used, megabytes)

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
    def forward(
        self, slices: Sequence[RequestSlice], futures: torch.Tensor | None = None
    ) -> tuple[ForwardBatch, torch.Tensor]:
        """One forward pass; `futures` are the previous launch's samples by request, which
        the slices' placeholder inputs stand for (see `StepRunner`)."""
        if self.decode_graphs is not None and self.decode_graphs.can_run(slices):
            return self.decode_graphs.replay(slices, futures)
        staged = begin_staging(self.device)
        batch = ForwardBatch.build(slices, self.page_size, self.device, staged)
        if batch.max_future_index >= 0:
            resolve_futures(batch.input_ids, futures, batch.max_future_index)
        attention = self._eager_attention()
        attention.plan(batch.layout)
        ctx = ForwardContext(batch=batch, kv_pool=self.kv_pool, attention=attention)
        logits = self.model(ctx)
        if staged is not None:
            # FlashInfer plans at the first layer: every copy from the staged host tensors
            # (the batch's uploads and the plan's) is enqueued once the model's launch returns.
            staged.close()
        return batch, logits

    def _eager_attention(self) -> AttentionBackend:
        """Alternates two backends on a GPU: FlashInfer plans through a pinned host buffer
        whose copy to the device runs in stream order, so under overlap the plan of step N+1
        must not reuse the buffer of step N, whose copy may not have run yet. Step N+2 may:
        step N was collected before it launches."""
        if self._spare_attention is None:
            return self.attention
        self._eager_flip = not self._eager_flip
        return self._spare_attention if self._eager_flip else self.attention

    @torch.inference_mode()
    def launch(self, requests: Sequence[StepRequest]) -> StepHandle:
        if self.blas_governor is not None:
            self.blas_governor.tick()
        step = LaunchedStep(requests, self.device)
        batch, logits = self.forward([r.slice for r in requests], self.last_sampled)
        sample(requests, batch, logits, step, self.sampler, self.vocab_size)
        verify_drafts(requests, batch, logits, step, self.vocab_size)
        input_logprobs(requests, batch, logits, step)
        self.last_sampled = step.samples_by_request()
        step.start_copies()
        return step

    def collect(self, handle: StepHandle) -> list[StepResult]:
        if not isinstance(handle, LaunchedStep):
            raise TypeError(f"not a step this runner launched: {type(handle).__name__}")
        return handle.results()
