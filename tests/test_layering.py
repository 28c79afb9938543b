"""The package's layering contracts, checked on the source text (no imports, no install hook).

Every import statement of the package (module level or inside a function: a lazy import is a
dependency too) is resolved to a file by its path on disk, the way pyright and import-graph tools
see it. Inside the package, imports of our own code are relative; an absolute `radixserve.*`
import there would only resolve through the install's package mapping, so it is refused.

    radix_cache/                pure data structures: no torch, nothing from runtime/ or kernels/
    utils/                      nothing else of ours
    kernels/                    nothing from runtime/ or radix_cache/
    runtime/wire, runtime/config, runtime/detokenizer, runtime/server
                                no torch and no model code (model_executor/, kernels/), directly
                                or through anything they import
    runtime/scheduler/ (the core: all but process.py, the process's composition root)
                                no model code
    frontend_lang/              nothing from the runtime, kernels or caches; no torch
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "radixserve"
FOLDERS = ("runtime", "radix_cache", "kernels", "frontend_lang", "utils")
MODEL_CODE = ("radixserve.runtime.model_executor", "radixserve.kernels")


@dataclass(frozen=True, slots=True)
class Imports:
    ours: frozenset[str]  # modules of this package
    external: frozenset[str]  # top-level names of other packages


def module_files() -> dict[str, Path]:
    """radixserve.<dotted> -> its file, for every module of the package."""
    files = {PACKAGE: ROOT / PACKAGE / "__init__.py"}
    for path in [*(ROOT / PACKAGE).glob("*.py"), *(ROOT / PACKAGE / "lang").glob("*.py")]:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if len(parts) > 1:  # the root's own __init__ is already in
            files[".".join(parts)] = path
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([PACKAGE, *parts])] = path
    return files


FILES = module_files()


def package_of(module: str) -> str:
    return module if FILES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The modules a `from ... import ...` statement in `module` loads (its base, plus each name
    that is itself a submodule)."""
    package = package_of(module).split(".")
    if node.level > len(package):
        raise AssertionError(f"{module}: relative import above the package root")
    base = package[: len(package) - node.level + 1] + (
        node.module.split(".") if node.module else []
    )
    base_name = ".".join(base)
    found = [base_name] + [
        f"{base_name}.{alias.name}" for alias in node.names if f"{base_name}.{alias.name}" in FILES
    ]
    return found


@functools.cache
def direct_imports(module: str) -> Imports:
    tree = ast.parse(FILES[module].read_text(), str(FILES[module]))
    ours: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == PACKAGE:
                    raise AssertionError(f"{module}: absolute import of {alias.name}")
                external.add(top)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")[0]
                if top == PACKAGE:
                    raise AssertionError(f"{module}: absolute import from {node.module}")
                external.add(top)
                continue
            for target in resolve(module, node):
                if target not in FILES:
                    raise AssertionError(f"{module}: import of {target} resolves to no file")
                ours.add(target)
    return Imports(frozenset(ours), frozenset(external))


@functools.cache
def reachable(module: str) -> Imports:
    """Everything `module` imports, directly or through modules of ours (packages' __init__
    included: importing a.b.c runs a/__init__ and a/b/__init__ too)."""
    ours: set[str] = set()
    external: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in ours:
            continue
        ours.add(current)
        imports = direct_imports(current)
        external |= imports.external
        parts = current.split(".")
        parents = {".".join(parts[:i]) for i in range(2, len(parts))}
        todo.extend((imports.ours | parents) - ours)
    ours.discard(module)
    return Imports(frozenset(ours), frozenset(external))


def modules_under(prefix: str, *, exclude: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        m for m in FILES if (m == prefix or m.startswith(prefix + ".")) and m not in exclude
    )


def offenders(modules: list[str], banned: tuple[str, ...], banned_external=()) -> list[str]:
    found = []
    for module in modules:
        imports = reachable(module)
        bad = sorted(m for m in imports.ours if m.startswith(banned)) if banned else []
        bad += sorted(imports.external & set(banned_external))
        if bad:
            found.append(f"{module} -> {bad}")
    return found


def test_every_import_of_our_code_resolves_to_a_file_by_path() -> None:
    assert len(FILES) > 100
    for module in FILES:
        direct_imports(module)  # raises on an absolute or unresolvable import


def test_radix_cache_imports_neither_torch_nor_the_runtime() -> None:
    banned = ("radixserve.runtime", "radixserve.kernels")
    assert offenders(modules_under("radixserve.radix_cache"), banned, ("torch",)) == []


def test_utils_and_kernels_stay_below_the_runtime() -> None:
    ours = ("radixserve.runtime", "radixserve.radix_cache", "radixserve.kernels")
    assert offenders(modules_under("radixserve.utils"), ours) == []
    assert offenders(modules_under("radixserve.kernels"), ("radixserve.runtime",)) == []


@pytest.mark.parametrize(
    "prefix",
    [
        "radixserve.runtime.wire",
        "radixserve.runtime.config",
        "radixserve.runtime.detokenizer",
        "radixserve.runtime.server",
    ],
)
def test_processes_without_a_model_import_neither_model_code_nor_torch(prefix: str) -> None:
    assert offenders(modules_under(prefix), MODEL_CODE, ("torch",)) == []


def test_the_scheduler_core_imports_no_model_code() -> None:
    core = modules_under(
        "radixserve.runtime.scheduler", exclude=("radixserve.runtime.scheduler.process",)
    )
    assert "radixserve.runtime.scheduler.scheduler" in core
    assert offenders(core, MODEL_CODE) == []


def test_the_dsl_imports_no_runtime_internals() -> None:
    banned = ("radixserve.runtime", "radixserve.kernels", "radixserve.radix_cache")
    assert offenders(modules_under("radixserve.frontend_lang"), banned, ("torch",)) == []


def test_the_checker_sees_a_violation() -> None:
    """The contracts above are not vacuous: the model runner does reach torch and kernels."""
    runner = reachable("radixserve.runtime.model_executor.model_runner")
    assert "torch" in runner.external
    assert any(m.startswith("radixserve.kernels") for m in runner.ours)
    process = reachable("radixserve.runtime.scheduler.process")
    assert any(m.startswith(MODEL_CODE) for m in process.ours)
