"""Where the runtime finds programs, interlocks, drivers and tasks by type name.

Every module below ``programs``, ``safety``, ``runtime.io`` and ``runtime.tasks`` is imported once, and
each registers its classes with a decorator (``register_program`` and friends). Adding a capability is
adding a module; no central list to keep in step.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from runtime.api import INTERLOCKS, PROGRAMS


@cache
def _load_all() -> None:
    for pkg_name in ("programs", "safety", "runtime.io", "runtime.tasks"):
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
            if mod.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            importlib.import_module(mod.name)


def programs() -> dict[str, Any]:
    _load_all()
    return PROGRAMS


def interlocks() -> dict[str, Any]:
    _load_all()
    return INTERLOCKS


def drivers() -> dict[str, Any]:
    _load_all()
    from runtime.io.driver import DRIVERS

    return DRIVERS


def tasks() -> dict[str, Any]:
    _load_all()
    from runtime.tasks.base import TASKS

    return TASKS
