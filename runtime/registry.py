"""Where the runtime finds devices, programs, interlocks and tasks by type name: one registry type for all.

Every module below ``programs``, ``safety``, ``runtime.io`` and ``runtime.tasks`` is imported once, and
each registers its classes with a decorator (``register_program`` and friends, each a ``Registry.register``).
Adding a capability is adding a module; no central list to keep in step. The four registries follow one
rule: a type name names one class, and a second class under a taken name is an error at import, so two
plug-ins can never shadow each other depending on import order.

This module imports nothing of the runtime at load, so ``runtime.api`` can build on it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

PLUGIN_PACKAGES = ("programs", "safety", "runtime.io", "runtime.tasks", "runtime.secc")

C = TypeVar("C", bound=type)


class Registry(Mapping[str, Any]):
    """Type name -> class for one section of the site file (``devices``, ``programs``, ``safety``, ``tasks``).

    Reading it imports every plug-in module first, so a lookup never depends on what happened to be
    imported before.
    """

    def __init__(self, section: str, kind: str):
        self.section = section  # the site file's key
        self.kind = kind  # what one entry is called in messages
        self._classes: dict[str, type] = {}

    def register(self, type_name: str) -> Callable[[C], C]:
        """Class decorator: make ``cls`` the ``type_name`` of this section. A second class is an error."""

        def deco(cls: C) -> C:
            have = self._classes.get(type_name)
            if have is not None and have is not cls:
                raise ValueError(
                    f"{self.kind} type {type_name!r} registered twice: "
                    f"{have.__module__}.{have.__qualname__} and {cls.__module__}.{cls.__qualname__}"
                )
            self._classes[type_name] = cls
            return cls

        return deco

    def __getitem__(self, type_name: str) -> Any:
        load_all()
        return self._classes[type_name]

    def __iter__(self) -> Iterator[str]:
        load_all()
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        load_all()
        return len(self._classes)

    def __repr__(self) -> str:
        return f"Registry({self.section!r}, {sorted(self._classes)})"


DRIVERS = Registry("devices", "device")
PROGRAMS = Registry("programs", "program")
INTERLOCKS = Registry("safety", "interlock")
TASKS = Registry("tasks", "task")

SECTIONS: tuple[Registry, ...] = (DRIVERS, PROGRAMS, INTERLOCKS, TASKS)
"""The component sections of a site file, in the order a site is built (devices first: their tags)."""


_loaded: bool | None = False  # None while importing: a lookup from inside an import sees what is there


def load_all() -> None:
    """Import every plug-in module once."""
    global _loaded
    if _loaded is not False:
        return
    _loaded = None
    try:
        for pkg_name in PLUGIN_PACKAGES:
            pkg = importlib.import_module(pkg_name)
            for mod in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
                if not mod.name.rsplit(".", 1)[-1].startswith("_"):
                    importlib.import_module(mod.name)
    except BaseException:
        _loaded = False
        raise
    _loaded = True
