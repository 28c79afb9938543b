"""Pure helpers: chat-template role extraction, select's token alignment, CLI flags, errors."""

from __future__ import annotations

import httpx
import pytest

from radixserve.frontend_lang.backend.endpoint import choice_logprobs, error_message
from radixserve.frontend_lang.backend.runtime import server_flags
from radixserve.frontend_lang.chat_template import CHATML, ChatTemplate, ChatTemplateError
from tests.frontend_lang.fakes import SMOLLM2_TEMPLATE

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
    "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_smollm2_template_roles_and_default_system() -> None:
    t = ChatTemplate.from_jinja(SMOLLM2_TEMPLATE)
    assert t.begin("user") == "<|im_start|>user\n" and t.end("assistant") == "<|im_end|>\n"
    assert t.default_system.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert CHATML.default_system == ""


def test_a_bos_template_keeps_bos_before_the_first_block() -> None:
    t = ChatTemplate.from_jinja(LLAMA3_TEMPLATE, {"bos_token": "<|begin_of_text|>"})
    assert t.begin("system") == "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    assert t.begin("user") == "<|start_header_id|>user<|end_header_id|>\n\n"
    assert t.default_system == "<|begin_of_text|>"
    assert t.end("user") == "<|eot_id|>"


def test_a_template_that_raises_reports_it() -> None:
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        ChatTemplate.from_jinja("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ChatTemplateError, match="no role 'tool'"):
        CHATML.begin("tool")


def test_choice_logprobs_drop_the_prompts_own_last_token() -> None:
    # unchanged boundary: the first entry is the prompt's last token (id 7)
    assert choice_logprobs([[-0.5, 7, None], [-1.0, 8, None], [-2.0, 9, None]], 7) == [-1.0, -2.0]
    # merged boundary: the first entry is a new token that covers the prompt's tail
    assert choice_logprobs([[-0.5, 11, None], [-1.0, 8, None]], 7) == [-0.5, -1.0]
    # no prompt: position 0 has no logprob
    assert choice_logprobs([[None, 5, None], [-1.0, 8, None]], None) == [-1.0]


def test_server_flags() -> None:
    flags = server_flags(
        {"model_path": None, "disable_radix_cache": True, "page_size": 16, "api_key": False}
    )
    assert flags == ["--disable-radix-cache", "--page-size", "16"]


def test_error_message_prefers_the_servers_text() -> None:
    body = {"error": {"message": "the prompt is empty", "type": "invalid_request_error"}}
    assert error_message(httpx.Response(400, json=body)) == "HTTP 400: the prompt is empty"
    assert error_message(httpx.Response(502, text="bad gateway")) == "HTTP 502: bad gateway"


def test_template_files_are_read_like_the_tokenizer_reads_them(tmp_path) -> None:
    """A server that does not report its template (SGLang's) but serves an HF directory on this
    machine: the DSL reads the template from the files, without the runtime or transformers."""
    import json

    from radixserve.frontend_lang.backend.endpoint import _local_template, read_template_files

    config = {"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|eot_id|>"}
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({**config, "chat_template": [{"name": "default", "template": LLAMA3_TEMPLATE}]})
    )
    template, tokens = read_template_files(str(tmp_path))
    assert template == LLAMA3_TEMPLATE
    assert tokens == {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    (tmp_path / "chat_template.jinja").write_text(SMOLLM2_TEMPLATE)  # takes precedence
    assert read_template_files(str(tmp_path))[0] == SMOLLM2_TEMPLATE
    chat = _local_template(str(tmp_path), None)
    assert chat is not None and chat.begin("user") == "<|im_start|>user\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_template_files(str(empty)) is None
    assert _local_template(str(tmp_path / "nowhere"), None) is None
