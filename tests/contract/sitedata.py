"""The bundled site as data, and where its JSON Schema says a number goes: the ground for hostile-settings tests.

The schema comes from ``runtime.schema`` (what ``v2g-plc schema`` prints); the walk below reads it as an
editor would, so a number field the schema shows is a field these tests attack.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from runtime.schema import site_schema
from runtime.site import bundled_site
from runtime.yamlload import dotted

Key = tuple[str | int, ...]

# Relative file references of the bundled site, made absolute when a test writes a copy elsewhere.
FILE_KEYS: tuple[Key, ...] = (
    ("tasks", 0, "params", "path"),
    ("tasks", 2, "params", "password_file"),
    ("plant", "params", "scenario"),
)


# libyaml where it is there: these helpers parse the site hundreds of times (the loader under test does not use it)
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@cache
def _bundled() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(bundled_site().read_text(), Loader)
    for key in FILE_KEYS:
        set_at(data, key, str(bundled_site().parent / get_at(data, key)))
    return data


def bundled_data() -> dict[str, Any]:
    """The bundled site's data with its file references absolute (a copy: change it at will)."""
    return copy.deepcopy(_bundled())


def get_at(data: Any, key: Key) -> Any:
    for k in key:
        data = data[k]
    return data


def set_at(data: Any, key: Key, value: Any) -> None:
    """Set ``value`` at ``key``, creating mappings that are not there yet."""
    for k in key[:-1]:
        if isinstance(data, dict) and k not in data:
            data[k] = {}
        data = data[k]
    data[key[-1]] = value


def with_value(data: dict[str, Any], changes: dict[Key, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for key, value in changes.items():
        set_at(out, key, value)
    return out


def _resolve(s: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in s:
        s = root["$defs"][s["$ref"].rsplit("/", 1)[-1]]
    return s


def _numeric(s: dict[str, Any], root: dict[str, Any]) -> bool:
    s = _resolve(s, root)
    if s.get("type") in ("number", "integer"):
        return True
    return any(_numeric(v, root) for k in ("anyOf", "oneOf") for v in s.get(k, []))


def number_keys(data: Any, s: dict[str, Any], root: dict[str, Any], key: Key = ()) -> Iterator[Key]:
    """Every key of ``data`` where the schema allows a number: those written in the file, and those of
    the file's mappings that are left at their defaults."""
    s = _resolve(s, root)
    variants = s.get("anyOf") or s.get("oneOf")
    if variants:
        vs = [_resolve(v, root) for v in variants]
        if isinstance(data, dict):  # a component: the variant of its type
            typed = [v for v in vs if v.get("properties", {}).get("type", {}).get("const") == data.get("type")]
            vs = typed or [v for v in vs if "properties" in v]
        for v in vs:
            yield from number_keys(data, v, root, key)
        return
    if isinstance(data, dict) and "properties" in s:
        for name, ps in s["properties"].items():
            if name in data:
                yield from number_keys(data[name], ps, root, (*key, name))
            elif _numeric(ps, root):
                yield (*key, name)
    elif isinstance(data, list) and "items" in s:
        for i, item in enumerate(data):
            yield from number_keys(item, s["items"], root, (*key, i))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and _numeric(s, root):
        yield key


def bundled_number_keys() -> list[Key]:
    schema = site_schema()
    return sorted(set(number_keys(bundled_data(), schema, schema)), key=dotted)


def write(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / "site.yaml"
    path.write_text(yaml.dump(data, Dumper=Dumper, sort_keys=False))
    return path


def line_of_key(text: str, key: Key) -> int:
    """1-based line where ``key`` is written, from PyYAML's own node marks (not the loader under test)."""
    node = yaml.compose(text, Loader)
    line = node.start_mark.line + 1
    for k in key:
        if isinstance(node, yaml.MappingNode):
            for knode, vnode in node.value:
                if knode.value == k:
                    line, node = knode.start_mark.line + 1, vnode
                    break
            else:
                raise KeyError(key)
        else:
            node = node.value[k]
            line = node.start_mark.line + 1
    return line


def bundled_here(tmp: Path) -> dict[str, Any]:
    """The bundled site for a test: its own free ports (devices and plant alike) and state in ``tmp``."""
    from tests.ports import free_ports

    data = bundled_data()
    ports = free_ports(len(data["devices"]))
    by_name = dict(zip((d["name"] for d in data["devices"]), ports))
    for d in data["devices"]:
        d["params"]["port"] = by_name[d["name"]]
    for d in data["plant"]["params"]["devices"]:
        d["port"] = by_name[d["name"]]
    data["state_dir"] = str(tmp / "var")
    return data
