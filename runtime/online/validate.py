"""Read and validate one revision of a site file in a child process; print its description as JSON.

``python -m runtime.online.validate SITE``. Why a child: parsing YAML and building every component holds
the interpreter for tens of milliseconds, which a thread of the scan process would take from the scan.
The child checks exactly what ``v2g-plc check`` checks (same errors, file:line: key) and describes the
result in plain JSON (validated params, the tag set, the digests of the files the components read), so
that the scan process compares revisions without parsing anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from runtime.api import site_files
from runtime.config import LoadedSite, SiteConfig, check_components
from runtime.online.plan import COMPONENT_SECTIONS
from runtime.site import BuiltSite, build_site
from runtime.yamlload import ConfigError, ConfigIssue, parse_yaml, validate


def load_site_text(path: Path, text: str) -> LoadedSite:
    """``config.load_site`` of a text already read (a snapshot): errors and relative paths as for ``path``."""
    doc = parse_yaml(text, str(path))
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.issue((), "a site file is a mapping with site:, scan:, devices:, ...")])
    loaded = LoadedSite(path, doc, validate(SiteConfig, doc.data, doc))
    check_components(loaded)
    return loaded


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(str(path), line, "", f"not UTF-8 text (byte {exc.start})")]) from None


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


def describe(built: BuiltSite, text: str) -> dict[str, Any]:
    """A validated site as plain JSON: what ``plan.classify`` compares, and the text the revision is."""
    loaded, cfg = built.loaded, built.loaded.config
    components: dict[str, list[dict[str, Any]]] = {}
    watched = [str(loaded.path.resolve())]
    for section in COMPONENT_SECTIONS:
        entries = []
        for comp in built.parts[section]:
            files = {rel: _digest(loaded.resolve(rel)) for _, rel in site_files(comp.params)}
            watched += [str(loaded.resolve(rel).resolve()) for rel in files]
            entries.append(
                {
                    "name": comp.name,
                    "type": _type_of(cfg, section, comp.name),
                    "params": comp.params.model_dump(mode="json"),
                    "files": files,
                }
            )
        components[section] = entries
    tags = {
        s.name: [s.type.value, s.unit, s.direction.value, s.default, s.stale_after_s] for s in built.tags.specs.values()
    }
    h = hashlib.sha256(text.encode())
    for entries in components.values():
        for e in entries:
            for rel, dig in sorted(e["files"].items()):
                h.update(f"\n{rel}\0{dig}".encode())
    return {
        "ok": True,
        "revision": h.hexdigest()[:12],
        "text": text,
        # a depot's EVSEs are compared as the components they expand into (evse<n>.<name>), not as text
        "config": cfg.model_dump(mode="json", exclude={*COMPONENT_SECTIONS, "evses"}),
        "components": components,
        "tags": tags,
        "watch": sorted(set(watched)),
    }


def _type_of(cfg: SiteConfig, section: str, name: str) -> str:
    """The type a built component was declared with: in the site's own section, or, for a depot's
    ``evse<n>.<name>``, in the EVSE template's (docs/depot.md)."""
    from runtime.evses import evse_of

    for c in getattr(cfg, section):
        if c.label == name:
            return str(c.type)
    if cfg.evses is not None and evse_of(name) is not None:
        plain = name.split(".", 1)[1]
        for c in getattr(cfg.evses.template, section):
            if c.label == plain:
                return str(c.type)
    raise KeyError(f"{section}: no component named {name!r} in the site file")


def validate_site(path: Path, text: str | None = None) -> dict[str, Any]:
    """The description of ``path`` (or of ``text`` as if it were that file), or ``{"ok": false, "errors"}``."""
    try:
        text = read_text(path) if text is None else text
        return describe(build_site(load_site_text(path, text)), text)
    except ConfigError as exc:
        return {"ok": False, "errors": str(exc)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.online.validate")
    ap.add_argument("site", type=Path)
    a = ap.parse_args(argv)
    sys.stdout.write(json.dumps(validate_site(a.site), allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
