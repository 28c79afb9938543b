"""The generic registry: lazy imports, clear errors, and every real registry resolving here."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from radixserve.utils.registry import Registry, import_target


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A throwaway package (a name of its own per test, so sys.modules never carries one over):
    base.Base, good.Good(Base), other.NotABase, and broken.py, which cannot be imported."""
    name = f"plugins_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "base.py").write_text("class Base:\n    pass\n")
    (root / "good.py").write_text("from .base import Base\n\nclass Good(Base):\n    pass\n")
    (root / "other.py").write_text("class NotABase:\n    pass\n\nvalue = 3\n")
    (root / "broken.py").write_text("import a_module_that_is_not_installed_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def registry(package: str, **targets: str) -> Registry[object]:
    base = import_target(f"{package}.base:Base")
    assert isinstance(base, type)
    return Registry("plugin", targets, package=package, base=base)


def test_names_are_read_without_importing_anything(plugins: str) -> None:
    plugins_registry = registry(plugins, good=".good:Good", broken=".broken:Broken")
    assert list(plugins_registry) == ["good", "broken"] and len(plugins_registry) == 2
    assert plugins_registry["good"] == ".good:Good" and "broken" in plugins_registry
    assert f"{plugins}.good" not in sys.modules
    cls = plugins_registry.load("good")
    assert cls.__name__ == "Good" and f"{plugins}.good" in sys.modules
    assert plugins_registry.load("good") is cls


def test_an_unknown_name_lists_the_choices(plugins: str) -> None:
    plugins_registry = registry(plugins, good=".good:Good", other=".other:NotABase")
    with pytest.raises(ValueError, match=r"unknown plugin 'bad'; choose one of: good, other$"):
        plugins_registry.load("bad")

    class UnknownPlugin(ValueError):
        pass

    strict = Registry("plugin", {"good": ".good:Good"}, package=plugins, error=UnknownPlugin)
    with pytest.raises(UnknownPlugin, match="choose one of: good"):
        strict.load("bad")


def test_a_module_that_cannot_be_imported_here_names_what_can(plugins: str) -> None:
    plugins_registry = registry(plugins, broken=".broken:Broken", good=".good:Good")
    with pytest.raises(ValueError, match="plugin 'broken' cannot be imported here") as info:
        plugins_registry.load("broken")
    message = str(info.value)
    assert "a_module_that_is_not_installed_here" in message
    assert message.endswith("available here: good")
    assert isinstance(info.value.__cause__, ImportError)
    nothing = registry(plugins, broken=".broken:Broken", gone=".gone:Gone")
    with pytest.raises(ValueError, match="available here: none"):
        nothing.load("gone")


def test_a_wrong_entry_is_a_type_error(plugins: str) -> None:
    plugins_registry = registry(plugins, other=".other:NotABase", value=".other:value")
    with pytest.raises(TypeError, match="not a subclass of Base"):
        plugins_registry.load("other")
    with pytest.raises(TypeError, match="is not a subclass"):
        plugins_registry.load("value")
    missing = registry(plugins, missing=".good:Missing")
    with pytest.raises(AttributeError):
        missing.load("missing")


def test_bad_targets_are_refused_when_the_registry_is_made() -> None:
    with pytest.raises(ValueError, match="not 'module:Class'"):
        Registry("plugin", {"x": "json.JSONDecoder"})
    with pytest.raises(ValueError, match="needs a package"):
        Registry("plugin", {"x": ".json:JSONDecoder"})
    with pytest.raises(ValueError, match="'module:attribute'"):
        import_target("json:")
    assert import_target("json:JSONDecoder").__name__ == "JSONDecoder"  # type: ignore[attr-defined]


def test_every_registry_of_the_package_resolves_here() -> None:
    from radixserve.kernels.attention import ATTENTION_BACKENDS
    from radixserve.kernels.attention.base import AttentionBackend
    from radixserve.radix_cache import CACHE_REGISTRY, EVICTION_POLICIES, EvictionPolicy
    from radixserve.radix_cache.base import PrefixCache
    from radixserve.runtime.model_executor.models import MODEL_REGISTRY

    for names, base in (
        (CACHE_REGISTRY, PrefixCache),
        (EVICTION_POLICIES, EvictionPolicy),
        (MODEL_REGISTRY, object),
    ):
        for name in names:
            assert issubclass(names.load(name), base)
    assert issubclass(ATTENTION_BACKENDS.load("torch"), AttentionBackend)
    try:
        flashinfer = ATTENTION_BACKENDS.load("flashinfer")
    except ValueError as exc:  # a CPU install: the message says what works instead
        assert "available here: torch" in str(exc)
    else:
        assert issubclass(flashinfer, AttentionBackend)


def test_registries_the_cli_reads_import_no_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        from radixserve.kernels.attention import ATTENTION_BACKENDS
        from radixserve.radix_cache import CACHE_REGISTRY, EVICTION_POLICIES
        assert list(ATTENTION_BACKENDS) == ["torch", "flashinfer"]
        assert list(CACHE_REGISTRY) == ["radix", "block_hash", "naive"]
        assert list(EVICTION_POLICIES) == ["lru", "lfu"]
        assert "torch" not in sys.modules, "torch was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
