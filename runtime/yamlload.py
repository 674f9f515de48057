"""YAML loading that remembers where every key came from, so an error can name file, line and key.

PyYAML keeps line marks on the node graph only; this composes the nodes, builds plain Python data, and
keeps a map from key path (``("devices", 0, "params", "port")``) to line. Duplicate keys, which PyYAML
otherwise resolves silently (last wins), are an error here: a user who wrote a key twice meant one of
them.

A site file may come from anyone who can edit it, so a hostile document is a configuration error like any
other, found in bounded time and memory: an alias inside its own anchor (PyYAML builds a cyclic graph), a
"billion laughs" (a few lines of nested aliases that expand to 10**9 nodes), nesting deep enough to exhaust
Python's stack, and scalars that PyYAML's constructors crash on. Limits: MAX_NODES, MAX_DEPTH.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Path_ = tuple[str | int | float, ...]  # keys may be any plain scalar
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


# Limits against hostile documents. The largest shipped file (the SunSpec inverter map) has under 600
# nodes and nests eight levels deep; these are about a hundred times more and keep the worst case to
# about a second of CPU and tens of megabytes.
MAX_NODES = 50_000
"""Nodes the document may expand to, aliases and merges counted at every use ("billion laughs")."""
MAX_DEPTH = 100
"""Nesting of the document as written, and of the built data through aliases and merges."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting while it composes (PyYAML's composer recurses per level) and
    remembers where each alias was written (the composer hands back the anchored node, whose marks are
    those of the anchor)."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.keys: list[str | int] = []
        self.alias_lines: dict[tuple[int, int], int] = {}

    def _flow_guard(self) -> None:
        # PyYAML's scanner keeps a possible simple key per open flow level and walks all of them for every
        # token: thousands of unclosed "[" cost quadratic time before the composer sees a node.
        if self.flow_level >= MAX_DEPTH:
            line = self.get_mark().line + 1
            raise ConfigError([ConfigIssue(self.file, line, dotted(tuple(self.keys[:8])), _too_deep())])

    def fetch_flow_sequence_start(self) -> None:
        self._flow_guard()
        super().fetch_flow_sequence_start()

    def fetch_flow_mapping_start(self) -> None:
        self._flow_guard()
        super().fetch_flow_mapping_start()

    def compose_node(self, parent: Any, index: Any) -> Any:
        key: str | int | None = None
        if parent is not None and index is not None:
            key = index if isinstance(index, int) else str(getattr(index, "value", "?"))
            self.keys.append(key)
        try:
            if len(self.keys) > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    [ConfigIssue(self.file, mark.line + 1, dotted(tuple(self.keys[:8])) + "...", _too_deep())]
                )
            if parent is not None and self.check_event(yaml.AliasEvent):
                slot = index if isinstance(index, int) else id(index)
                self.alias_lines[(id(parent), slot)] = self.peek_event().start_mark.line + 1
            return super().compose_node(parent, index)
        finally:
            if key is not None:
                self.keys.pop()


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels (limit of this loader)"


class _Builder:
    """Plain Python data from the composed node graph, with the line of every key path.

    The graph may share nodes (aliases) and may contain cycles (an alias inside its own anchor): the
    nodes on the way down are tracked to refuse a cycle, and every node built counts against MAX_NODES,
    so an alias used a million times costs a million, and is refused long before that."""

    def __init__(self, loader: _Loader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[Path_, int] = {(): 1}
        self.built = 0
        self.stack: list[int] = []
        self.via_alias: int | None = None

    def fail(self, line: int | None, path: Path_, message: str) -> ConfigError:
        return ConfigError([ConfigIssue(self.file, line, dotted(path), message)])

    def build(self, node: yaml.Node, path: Path_, line: int, alias: bool = False) -> Any:
        """``alias``: ``node`` was reached through an alias written on ``line``; the outermost such line is
        where an expansion that runs over the limit is reported."""
        outer = self.via_alias
        if alias and outer is None:
            self.via_alias = line
        try:
            self.built += 1
            if self.built > MAX_NODES:
                raise self.fail(
                    self.via_alias or line,
                    path,
                    f"the document expands to more than {MAX_NODES} nodes through aliases (limit of this loader)",
                )
            if id(node) in self.stack:
                raise self.fail(line, path, "recursive alias: this node contains itself")
            if len(self.stack) >= MAX_DEPTH:
                raise self.fail(line, path, _too_deep())
            self.stack.append(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self.mapping(node, path)
                if isinstance(node, yaml.SequenceNode):
                    items = []
                    for i, item in enumerate(node.value):
                        at, is_alias = self.where(node, i, item)
                        self.lines[(*path, i)] = at
                        items.append(self.build(item, (*path, i), at, is_alias))
                    return items
                return self.scalar(node, path, line)
            finally:
                self.stack.pop()
        finally:
            self.via_alias = outer

    def where(self, parent: yaml.Node, slot: int, node: yaml.Node) -> tuple[int, bool]:
        """Line where ``node`` was written as item or value ``slot`` of ``parent``, and whether as an alias."""
        line = self.loader.alias_lines.get((id(parent), slot))
        return (node.start_mark.line + 1, False) if line is None else (line, True)

    def scalar(self, node: yaml.Node, path: Path_, line: int) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            raise
        # PyYAML's constructors fail on bad scalars with whatever Python raises: a date 2027-13-01
        # (ValueError), an empty "!!int" (IndexError), an empty "!!timestamp" (AttributeError)
        except (ValueError, TypeError, OverflowError, LookupError, AttributeError) as exc:
            raise self.fail(
                line, path, f"cannot read value {node.value!r} as {node.tag.rsplit(':', 1)[-1]}: {exc}"
            ) from None

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        """Keys written twice are an error; ``<<`` merges follow YAML's merge key: keys written in the
        mapping win over merged ones, an earlier merged mapping over a later one."""
        out: dict[Any, Any] = {}
        merged: list[tuple[dict[Any, Any], dict[Path_, int]]] = []
        for knode, vnode in node.value:
            kline = knode.start_mark.line + 1
            if knode.tag == _MERGE_TAG:
                merged += self.merge(vnode, path, self.where(node, id(knode), vnode))
                continue
            if not isinstance(knode, yaml.ScalarNode):
                raise self.fail(kline, path, "keys must be plain scalars")
            key = self.scalar(knode, path, kline)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise self.fail(kline, path, "keys must be plain scalars")
            if key in out:
                raise self.fail(kline, (*path, key), "duplicate key (each key may appear once)")
            self.lines[(*path, key)] = kline
            out[key] = self.build(vnode, (*path, key), kline, self.where(node, id(knode), vnode)[1])
        for data, lines in merged:
            for key, value in data.items():
                if key not in out:
                    out[key] = value
                    n = len(path)
                    self.lines.update({p: ln for p, ln in lines.items() if len(p) > n and p[n] == key})
        return out

    def merge(
        self, vnode: yaml.Node, path: Path_, at: tuple[int, bool]
    ) -> list[tuple[dict[Any, Any], dict[Path_, int]]]:
        """Each merged mapping built on its own (it counts against MAX_NODES at every use), with the lines
        of its keys moved under ``path``."""
        if isinstance(vnode, yaml.SequenceNode):
            sources = [(src, self.where(vnode, i, src)) for i, src in enumerate(vnode.value)]
        else:
            sources = [(vnode, at)]
        out = []
        for src, (line, alias) in sources:
            if not isinstance(src, yaml.MappingNode):
                raise self.fail(line, path, "a merge key (<<) takes a mapping or a list of mappings")
            outer, self.lines = self.lines, {}
            try:
                data = self.build(src, path, line, alias)
                lines = self.lines
            finally:
                self.lines = outer
            out.append((data, lines))
        return out


def load_yaml(file: str | Path) -> YamlDoc:
    """Parse one YAML file; syntax errors become a ConfigError with the line PyYAML reports."""
    file = str(file)
    try:
        raw = Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(file, line, "", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_yaml(text, file)


def parse_yaml(text: str, file: str = "<string>") -> YamlDoc:
    """Parse YAML text; every problem, hostile documents included, is a ConfigError naming file and line."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text, file)  # the reader checks every character here
        builder = _Builder(loader, file)
        node = loader.get_single_node()
        data = {} if node is None else builder.build(node, (), 1)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([ConfigIssue(file, line, "", f"YAML syntax error: {exc.problem or exc}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; position counts characters
        line = text[: exc.position].count("\n") + 1
        raise ConfigError(
            [ConfigIssue(file, line, "", f"YAML error: {exc.reason}: character #x{exc.character:04x}")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"YAML error: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDoc(file, data, builder.lines)


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
