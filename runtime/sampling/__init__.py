"""Sampling: per-request parameters, batched sampling tensors, the sampler and logprob helpers."""

from radixserve.runtime.sampling.batch_info import SamplingBatchInfo
from radixserve.runtime.sampling.logprobs import token_logprobs, top_logprobs
from radixserve.runtime.sampling.params import (
    SamplingParams,
    SamplingParamsError,
    check_stop_token,
)
from radixserve.runtime.sampling.sampler import SampleOutput, Sampler

__all__ = [
    "SampleOutput",
    "Sampler",
    "SamplingBatchInfo",
    "SamplingParams",
    "SamplingParamsError",
    "check_stop_token",
    "token_logprobs",
    "top_logprobs",
]
