"""YAML loading that remembers where every key came from, so an error can name file, line and key.

PyYAML keeps line marks on the node graph only; this composes the nodes, builds plain Python data, and
keeps a map from key path (``("devices", 0, "params", "port")``) to line. Duplicate keys, which PyYAML
otherwise resolves silently (last wins), are an error here: a user who wrote a key twice meant one of
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """One or more problems in configuration files; ``str()`` lists each as ``file:line: key: what``."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass
class YamlDoc:
    file: str
    data: Any
    lines: dict[Path_, int]

    def line(self, path: Path_) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), 1)

    def issue(self, path: Path_, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line(path), dotted(path), message)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], file: str, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        loader.flatten_mapping(node)
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError(
                    [ConfigIssue(file, knode.start_mark.line + 1, dotted(path), "keys must be plain scalars")]
                )
            if key in out:
                raise ConfigError(
                    [
                        ConfigIssue(
                            file,
                            knode.start_mark.line + 1,
                            dotted((*path, key)),
                            "duplicate key (each key may appear once)",
                        )
                    ]
                )
            lines[(*path, key)] = knode.start_mark.line + 1
            out[key] = _build(vnode, (*path, key), lines, file, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            items.append(_build(item, (*path, i), lines, file, loader))
        return items
    return loader.construct_object(node, deep=True)


def load_yaml(file: str | Path) -> YamlDoc:
    """Parse one YAML file; syntax errors become a ConfigError with the line PyYAML reports."""
    file = str(file)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    return parse_yaml(text, file)


def parse_yaml(text: str, file: str = "<string>") -> YamlDoc:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {(): 1}
        data = {} if node is None else _build(node, (), lines, file, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([ConfigIssue(file, line, "", f"YAML syntax error: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"YAML error: {exc}")]) from exc
    finally:
        loader.dispose()
    return YamlDoc(file, data, lines)


def validate(model: type[M], data: Any, doc: YamlDoc, prefix: Path_ = ()) -> M:
    """Validate ``data`` (found at ``prefix`` in ``doc``) against a pydantic model, translating every
    error to ``file:line: key: message``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_translate(err, doc, prefix) for err in exc.errors()]) from None


def _translate(err: Mapping[str, Any], doc: YamlDoc, prefix: Path_) -> ConfigIssue:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = (*prefix, *loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    else:
        msg = err["msg"]
        if "input" in err and kind not in ("missing",) and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
    return doc.issue(path, msg)
