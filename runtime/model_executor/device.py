"""What `ServerArgs`' "auto" choices resolve to on this machine (needs torch, so not in config/)."""

from __future__ import annotations

import torch

from ..config.server_args import DTYPES, ServerArgs


def resolve_device(args: ServerArgs) -> torch.device:
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def resolve_dtype(args: ServerArgs) -> torch.dtype:
    if args.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {args.dtype!r}; choose one of {DTYPES}")
    if args.dtype == "auto":
        return torch.float32 if resolve_device(args).type == "cpu" else torch.bfloat16
    return getattr(torch, args.dtype)


def resolve_attention_backend(args: ServerArgs) -> str:
    if args.attention_backend != "auto":
        return args.attention_backend
    return "flashinfer" if resolve_device(args).type == "cuda" else "torch"
