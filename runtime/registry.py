"""Where the runtime finds devices, programs, interlocks and tasks by type name: one registry type for all.

Each module below ``programs``, ``safety``, ``runtime.io``, ``runtime.tasks`` and ``runtime.secc``
registers its classes with a decorator (``register_program`` and friends, each a ``Registry.register``).
Adding a capability is adding a module; no central list to keep in step. A lookup imports only the module
that registers the type asked for, found by reading the plug-in sources for those decorators (no import),
so a process imports the plug-ins its site uses and no other: a task process the modules of its own tasks
(the bundled site's three task processes used to import every plug-in, each). Listing a registry imports
them all. The four registries follow one rule: a type name names one class, and a second class under a
taken name is an error, so two plug-ins can never shadow each other depending on import order: a type
whose decorator the sources show twice is looked up only after importing everything, which raises.

This module imports nothing of the runtime at load, so ``runtime.api`` can build on it.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
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
        cls = self._classes.get(type_name)
        if cls is None:
            module = source_index().get((self.section, type_name))
            if module is not None:
                importlib.import_module(module)
                cls = self._classes.get(type_name)
        if cls is None:  # not in the sources' index (or twice): everything, then a KeyError if unknown
            load_all()
            cls = self._classes[type_name]
        return cls

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
_index: dict[tuple[str, str], str | None] | None = None

# ``@register_task("ocpp")`` and its kin, as every plug-in writes them: decorator -> site file section.
_DECORATOR = re.compile(r'^@register_(driver|program|interlock|task)\(\s*"([A-Za-z0-9_]+)"\s*\)', re.M)
_SECTION_OF = {"driver": "devices", "program": "programs", "interlock": "safety", "task": "tasks"}


def _modules(pkg_name: str) -> Iterator[tuple[str, Path]]:
    """(module name, source file) of every plug-in module below a package, as ``load_all`` imports them,
    found on disk without importing the package."""
    spec = importlib.util.find_spec(pkg_name)
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        base = Path(root)
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(p.startswith("_") for p in parts):
                continue
            yield ".".join((pkg_name, *parts)), path


def source_index() -> Mapping[tuple[str, str], str | None]:
    """(section, type name) -> the module whose source registers it (None: more than one does)."""
    global _index
    if _index is None:
        index: dict[tuple[str, str], str | None] = {}
        for pkg_name in PLUGIN_PACKAGES:
            for module, path in _modules(pkg_name):
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                for kind, name in _DECORATOR.findall(text):
                    key = (_SECTION_OF[kind], name)
                    index[key] = None if key in index and index[key] != module else module
        _index = index
    return _index


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
