"""The launch command line: flags built from `ServerArgs`, --help, and a clear start-up error."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import pytest

from radixserve.kernels.attention import ATTENTION_BACKENDS
from radixserve.runtime.config.server_args import (
    DTYPES,
    LOAD_FORMATS,
    SCHEDULE_POLICIES,
    ServerArgs,
)
from radixserve.runtime.entrypoints.launch_server import build_parser, parse_args
from tests.runtime.server.http.conftest import free_port

ISSUE_FLAGS = (
    "--host --port --model-path --tokenizer-path --dtype --load-format --page-size "
    "--max-total-tokens --mem-fraction-static --chunked-prefill-size --max-running-requests "
    "--schedule-policy --disable-radix-cache --api-key --log-level --served-model-name"
).split()


def test_defaults_come_from_the_dataclass() -> None:
    assert parse_args([]) == ServerArgs()


def test_every_field_is_a_flag_with_its_help() -> None:
    help_text = build_parser().format_help()
    for f in dataclasses.fields(ServerArgs):
        assert "--" + f.name.replace("_", "-") in help_text
        assert f.metadata["help"].split()[0] in help_text
    for flag in ISSUE_FLAGS:
        assert flag in help_text


def test_flags_parse_to_server_args() -> None:
    args = parse_args(
        "--port 1234 --host 0.0.0.0 --max-total-tokens 4096 --disable-radix-cache "
        "--schedule-policy fcfs --dtype bfloat16 --mem-fraction-static 0.5 --api-key k".split()
    )
    assert args == ServerArgs().replace(
        port=1234,
        host="0.0.0.0",
        max_total_tokens=4096,
        disable_radix_cache=True,
        schedule_policy="fcfs",
        dtype="bfloat16",
        mem_fraction_static=0.5,
        api_key="k",
    )


def test_choices_come_from_the_registries(capsys: pytest.CaptureFixture[str]) -> None:
    actions = {a.dest: a for a in build_parser()._actions}
    assert tuple(actions["schedule_policy"].choices) == SCHEDULE_POLICIES
    assert tuple(actions["dtype"].choices) == DTYPES
    assert tuple(actions["load_format"].choices) == LOAD_FORMATS
    assert set(actions["attention_backend"].choices) == {"auto", *ATTENTION_BACKENDS}
    with pytest.raises(SystemExit):
        parse_args(["--schedule-policy", "random"])
    assert "invalid choice" in capsys.readouterr().err


def test_module_and_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "radixserve.launch_server", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(flag in out for flag in ISSUE_FLAGS)
    script = shutil.which("radixserve")
    if script is not None:
        assert (
            "--model-path"
            in subprocess.run([script, "--help"], capture_output=True, text=True).stdout
        )


def test_bad_model_path_is_a_clear_startup_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "radixserve.launch_server", "--model-path", "/no/such/model"]
        + ["--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1
    assert "does not exist" in done.stderr
