"""Names of replaceable parts mapped to classes that are imported on first use.

    BACKENDS: Registry[AttentionBackend] = Registry(
        "attention backend",
        {"torch": ".torch_backend:TorchAttentionBackend", "flashinfer": ".flashinfer_backend:..."},
        package=__name__,
    )
    sorted(BACKENDS)                   # the names: a CLI's choices, read without importing any
    BACKENDS.load("torch")             # the class; its module is imported now, not before
    BACKENDS["torch"]                  # the "module:Class" text

A target is "module:Class"; a module starting with "." is relative to `package` (the registry's
own package, as our relative imports are). Nothing is imported until `load`, so a registry of
torch or FlashInfer classes can be read by a process that has neither. An unknown name, and a
name whose module cannot be imported here (FlashInfer on the CPU), are a ValueError that lists
the choices, so a bad flag or config value reads as what it is.

This module imports nothing else of ours.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar, cast

T = TypeVar("T")


def import_target(target: str, package: str | None = None) -> object:
    """The object `target` ("module:attribute") names, importing its module; a module starting
    with "." is relative to `package`. ImportError if the module cannot be imported,
    AttributeError if it has no such attribute."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"a registry target is 'module:attribute', got {target!r}")
    return getattr(importlib.import_module(module_name, package), attribute)


class Registry(Mapping[str, str], Generic[T]):
    """An ordered, read-only map of name -> "module:Class" whose classes are imported lazily.

    `kind` names what is registered ("prefix cache") in error messages. With `base` given, a
    loaded class must subclass it (a wrong entry is a TypeError); without, `T` is only declared
    by the annotation, for registries whose base class itself is too heavy to import early.
    `error` is the ValueError subclass raised for an unknown name.
    """

    __slots__ = ("kind", "_targets", "_package", "_base", "_error", "_loaded")

    def __init__(
        self,
        kind: str,
        targets: Mapping[str, str],
        *,
        package: str | None = None,
        base: type[T] | None = None,
        error: type[ValueError] = ValueError,
    ) -> None:
        for name, target in targets.items():
            if ":" not in target:
                raise ValueError(f"{kind} {name!r}: target {target!r} is not 'module:Class'")
            if target.startswith(".") and package is None:
                raise ValueError(f"{kind} {name!r}: relative target {target!r} needs a package")
        self.kind = kind
        self._targets = dict(targets)
        self._package = package
        self._base = base
        self._error = error
        self._loaded: dict[str, type[T]] = {}

    def __getitem__(self, name: str) -> str:
        return self._targets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self._targets!r})"

    def choices(self) -> str:
        return ", ".join(self._targets)

    def load(self, name: str) -> type[T]:
        """The class registered as `name`, its module imported on the first call."""
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        if name not in self._targets:
            raise self._error(f"unknown {self.kind} {name!r}; choose one of: {self.choices()}")
        try:
            return self._import(name)
        except ImportError as exc:
            available = [
                other for other in self._targets if other != name and self._can_import(other)
            ]
            raise ValueError(
                f"{self.kind} {name!r} cannot be imported here ({type(exc).__name__}: {exc}); "
                f"available here: {', '.join(available) or 'none'}"
            ) from exc

    def _import(self, name: str) -> type[T]:
        target = self._targets[name]
        cls = import_target(target, self._package)
        if not isinstance(cls, type) or (
            self._base is not None and not issubclass(cls, self._base)
        ):
            expected = f"a subclass of {self._base.__name__}" if self._base else "a class"
            raise TypeError(f"{self.kind} {name!r}: {target} is not {expected}")
        self._loaded[name] = cast("type[T]", cls)
        return self._loaded[name]

    def _can_import(self, name: str) -> bool:
        # Only on the error path: the message then lists what does work here.
        try:
            self._import(name)
        except ImportError:
            return False
        return True
