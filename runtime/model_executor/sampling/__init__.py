"""Sampling on the model side: batched sampling tensors, the sampler and logprob helpers.

The per-request parameters (`SamplingParams`) are a wire type: `runtime/wire/sampling_params.py`.
"""

from .batch_info import SamplingBatchInfo
from .logprobs import token_logprobs, top_logprobs
from .sampler import SampleOutput, Sampler

__all__ = [
    "SampleOutput",
    "Sampler",
    "SamplingBatchInfo",
    "token_logprobs",
    "top_logprobs",
]
