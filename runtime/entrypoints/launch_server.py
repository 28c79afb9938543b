"""The server's command line: `radixserve --port 30000` or `python -m radixserve.launch_server`.

Flags are built from the `ServerArgs` fields (name, type, default, metadata["help"]), so the
dataclass is the only place a default lives; `choices` come from the registries. Start-up order:
scheduler and detokenizer processes (model load) while this process loads the tokenizer, then
uvicorn. SIGINT/SIGTERM stop uvicorn gracefully and then the children, so nothing is orphaned; a
dying child makes /health answer 503 and the server exit with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import types
import typing
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ...kernels.attention import ATTENTION_BACKENDS
from ..config.server_args import DTYPES, LOAD_FORMATS, SCHEDULE_POLICIES, ServerArgs

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger("radixserve.server")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _choices() -> dict[str, Sequence[str]]:
    from ...radix_cache import CACHE_REGISTRY, EVICTION_POLICIES
    from ...radix_cache.hicache import WRITE_POLICIES
    from ..server.dp_router import LOAD_BALANCE_METHODS

    return {
        "dtype": DTYPES,
        "schedule_policy": SCHEDULE_POLICIES,
        "load_format": LOAD_FORMATS,
        "attention_backend": ("auto", *ATTENTION_BACKENDS),
        "prefix_cache": tuple(CACHE_REGISTRY),
        "radix_eviction_policy": tuple(EVICTION_POLICIES),
        "hicache_write_policy": WRITE_POLICIES,
        "log_level": LOG_LEVELS,
        "load_balance_method": LOAD_BALANCE_METHODS,
    }


def _base_type(annotation: Any) -> type:
    """`int | None` -> int: the type argparse converts a flag's value with."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(members) == 1, f"flag type {annotation} is ambiguous"
        return members[0]
    return annotation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radixserve",
        description="Serve a model over HTTP: SGLang's native API and an OpenAI-compatible API.",
    )
    hints = typing.get_type_hints(ServerArgs)
    choices = _choices()
    for f in dataclasses.fields(ServerArgs):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if "default" not in help_text:
            help_text += f" (default: {f.default})"
        kind = _base_type(hints[f.name])
        if kind is bool:
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(flag, action=action, default=f.default, help=help_text)
            continue
        parser.add_argument(
            flag, type=kind, default=f.default, choices=choices.get(f.name), help=help_text
        )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServerArgs:
    namespace = build_parser().parse_args(argv)
    return ServerArgs(**vars(namespace))


class _Terminated(Exception):
    """SIGTERM, turned into an exception so `finally` blocks stop the children."""


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    raise _Terminated


def _load_tokenizer(args: ServerArgs) -> tuple[PreTrainedTokenizerBase, str, str]:
    from ..config.model_source import resolve_model_source
    from ..config.tokenizer import load_tokenizer_directory, tokenizer_directory

    source = resolve_model_source(args.model_path)
    directory = tokenizer_directory(source, args.tokenizer_path)
    return load_tokenizer_directory(directory), source.gguf_path or source.directory, directory


def serve(args: ServerArgs, config: Any = None) -> int:
    """Runs the server until a signal or a child's death; returns the exit status."""
    import uvicorn

    from ..server.http.app import create_app
    from ..server.http.config import HttpConfig
    from ..server.http.state import ServerState
    from .launcher import ChildProcesses, StartupError

    config = config or HttpConfig()
    children = ChildProcesses(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            # The tokenizer loads here while the scheduler loads the model.
            tokenizer_job = pool.submit(_load_tokenizer, args)
            info = children.start()
            tokenizer, model_path, tokenizer_path = tokenizer_job.result()
        state = ServerState(args, children, info, tokenizer, model_path, tokenizer_path, config)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(state),
                host=args.host,
                port=args.port,
                log_level=args.log_level,
                timeout_graceful_shutdown=int(config.graceful_shutdown_s),
            )
        )
        state.request_shutdown = lambda: setattr(server, "should_exit", True)
        state.shutting_down = lambda: bool(server.should_exit)
        logger.info("serving %s on http://%s:%d", state.model_name, args.host, args.port)
        server.run()
    except StartupError as exc:
        logger.error("%s", exc)
        return 1
    except (KeyboardInterrupt, _Terminated):
        logger.info("shutting down")
        return 0
    except Exception as exc:  # a tokenizer that does not load, a bad model path...
        logger.error("start-up failed: %s: %s", type(exc).__name__, exc)
        return 1
    finally:
        children.stop()
    if state.death_reason is not None:
        logger.error("stopped because the runtime died: %s", state.death_reason)
        return 1
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="[server] %(asctime)s %(levelname)s %(message)s"
    )
    sys.exit(serve(args))


if __name__ == "__main__":
    main()
