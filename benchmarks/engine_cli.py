"""The command line of an in-process Engine benchmark: every server flag plus the benchmark's
own dataclass of flags, and model shapes run on dummy weights.

    parser = build_parser(); add_dataclass_flags(parser, BenchArgs, "benchmark")
    server, bench = split_args(parser.parse_args(argv), BenchArgs)
    return run_on_model(parser, server, lambda s: run(s, bench))
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.dummy_model import is_shape_name, write_dummy_model_dir
from radixserve.runtime.config.server_args import ServerArgs

T = TypeVar("T")
R = TypeVar("R")


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str,
    choices: Mapping[str, Sequence[str]] | None = None,
    aliases: Callable[[str], list[str]] = lambda flag: [],
) -> None:
    """cls's fields as `--field-name` flags with the fields' types and defaults (a False default
    is a store_true switch; `X | None` parses as X); `aliases(flag)` gives older names."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.default is False:
            group.add_argument(flag, action="store_true", dest=f.name)
            continue
        kind = next(
            a for a in (typing.get_args(hints[f.name]) or (hints[f.name],)) if a is not type(None)
        )
        group.add_argument(
            flag,
            *aliases(flag),
            dest=f.name,
            type=kind,
            default=f.default,
            choices=(choices or {}).get(f.name),
        )


def split_args(namespace: argparse.Namespace, cls: type[T]) -> tuple[ServerArgs, T]:
    values: dict[str, Any] = vars(namespace)
    server = {f.name: values[f.name] for f in dataclasses.fields(ServerArgs)}
    bench = {f.name: values[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return ServerArgs(**server), cls(**bench)


def run_on_model(
    parser: argparse.ArgumentParser, server: ServerArgs, run: Callable[[ServerArgs], R]
) -> R:
    """run(server) as given, or, for a model shape (`llama-3.1-8b-shape`, ...) with
    `--load-format dummy`, on a temporary directory holding the shape's config and tokenizer."""
    if not is_shape_name(server.model_path):
        return run(server)
    if server.load_format != "dummy":
        parser.error(f"{server.model_path} is a shape without weights: add --load-format dummy")
    with tempfile.TemporaryDirectory() as folder:
        model_dir = write_dummy_model_dir(str(server.model_path), Path(folder))
        return run(server.replace(model_path=str(model_dir)))
