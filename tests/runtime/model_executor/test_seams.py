"""The model side's typed seams, on the CPU: the runners the scheduler drives are `StepRunner`s,
the model is a `CausalLM` that states its attention geometry, and the runner sizes the KV pool
and the attention backend from that geometry (never from the model's layers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from radixserve.runtime.config.server_args import ServerArgs
from radixserve.runtime.model_executor.model_runner import ModelRunner
from radixserve.runtime.model_executor.models import MODEL_REGISTRY, model_class
from radixserve.runtime.model_executor.models.base import AttentionGeometry, CausalLM
from radixserve.runtime.model_executor.tp_worker import TensorParallelRunner
from radixserve.runtime.scheduler.step import StepRunner
from tests.runtime.scheduler.stand_in_runner import StandInRunner
from tests.runtime.tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> ModelRunner:
    path = build_tiny_model("qwen3", tmp_path_factory.mktemp("models"))  # head_dim != hidden/heads
    args = ServerArgs(model_path=str(path), page_size=4, max_total_tokens=1024, device="cpu")
    return ModelRunner(args)


def test_the_model_runner_is_a_step_runner(runner: ModelRunner) -> None:
    assert isinstance(runner, StepRunner)
    assert StepRunner in ModelRunner.__mro__  # declared, not only structural
    assert runner.context_len == runner.config.max_context_len == 512
    assert runner.vocab_size == 320
    assert runner.num_kv_pages == runner.kv_pool.num_pages == 1024 // 4
    assert runner.model_name == runner.source.name == Path(runner.args.model_path).name
    runner.shutdown()  # nothing to stop; the runner stays usable
    assert runner.num_kv_pages == 256


def test_rank_zero_of_a_tensor_parallel_group_states_the_seam_explicitly() -> None:
    assert StepRunner in TensorParallelRunner.__mro__  # declared, not only structural
    for name in ("context_len", "vocab_size", "num_kv_pages", "model_name", "source", "config"):
        assert isinstance(getattr(TensorParallelRunner, name), property), name
    # No attribute forwarding: an unknown name is an AttributeError of the class itself.
    assert "__getattr__" not in vars(TensorParallelRunner)


def test_the_stand_in_runner_is_a_step_runner() -> None:
    stand_in = StandInRunner(num_pages=8, page_size=4)
    assert isinstance(stand_in, StepRunner)
    assert (stand_in.num_kv_pages, stand_in.vocab_size) == (8, 997)


def test_the_model_states_its_attention_geometry(runner: ModelRunner) -> None:
    model = runner.model
    assert isinstance(model, CausalLM)
    config = runner.config
    assert model.attention_geometry == AttentionGeometry(
        num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        softmax_scale=config.head_dim**-0.5,
    )
    # The pool and the backend are sized from it.
    k_buffer = runner.kv_pool.k_buffers[0]
    assert k_buffer.shape[-2:] == (config.num_kv_heads, config.head_dim)
    shape = runner.attention.shape
    assert (shape.num_heads, shape.num_kv_heads, shape.head_dim) == (4, 2, config.head_dim)
    assert shape.scale == model.attention_geometry.softmax_scale


def test_every_registered_architecture_is_a_causal_lm() -> None:
    for architecture in MODEL_REGISTRY:
        assert issubclass(model_class(architecture), CausalLM), architecture


def test_a_backend_without_cuda_graphs_gets_none(runner: ModelRunner) -> None:
    """The CPU's torch backend says it cannot replay graphs, so the runner captures none (and
    decodes eagerly) even though graphs are not disabled."""
    assert not runner.args.disable_cuda_graph
    assert not runner.attention.supports_cuda_graph
    assert runner.decode_graphs is None
    with pytest.raises(NotImplementedError, match="does not support CUDA graphs"):
        runner.attention.init_cuda_graph_state(4, 8)
