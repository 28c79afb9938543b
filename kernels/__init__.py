"""Attention backends and fused kernels: `radixserve.kernels`.

This folder is only ever meant to be imported as `radixserve.kernels`. When the repository root
is on sys.path (any `python -m ...` run from a checkout puts the working directory first), a bare
`import kernels` finds this folder before Hugging Face's `kernels` distribution, which
transformers (5.25 and later) imports as soon as a model config loads. So imported under the bare
name, this module hands the import over to the installed distribution when there is one.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path


def _defer_to_installed_distribution() -> None:
    """Replaces the bare `kernels` module in sys.modules with the installed package of that name,
    found on sys.path without the repository root; leaves this folder in place without one."""
    root = Path(__file__).resolve().parent.parent
    paths = [p for p in sys.path if Path(p or ".").resolve() != root]
    spec = importlib.machinery.PathFinder.find_spec("kernels", paths)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module  # the import statement returns what sys.modules holds
    spec.loader.exec_module(module)


if __name__ == "kernels":
    _defer_to_installed_distribution()
