"""Find references to documents and files that do not exist, and documents no reader can reach.

Why: the design once lived outside the repository, and 40 references pointed at files a contributor
did not have. A reference is one of: a relative Markdown link (``[text](path#anchor)``), a mention of a
document under the docs folder by its path, a bare document name in capitals (the design card's
``<NAME>.md`` form), or a repository path such as ``runtime/engine.py`` or ``io_maps/plc_modem.yaml``.
Each must name something that exists; a Markdown anchor must name a heading of its target.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SKIP_DIRS = frozenset({".git", ".venv", "venv", "__pycache__", "build", "dist", "node_modules", ".mypy_cache"})
SUFFIXES = frozenset({".py", ".md", ".yaml", ".yml"})
NAMES = frozenset({"Makefile"})
# The checker's own tests hold broken references on purpose, as fixtures.
FIXTURES = frozenset({Path("tests/docs/test_references.py"), Path("tests/docs/test_design_rules.py")})
# Top-level folders whose paths the text may mention; a mention like ``runtime/engine.py`` must exist.
TOP_DIRS = ("runtime", "programs", "safety", "io_maps", "deploy", "tests", "docs", "backtest")
FILE_EXT = r"(?:py|md|yaml|yml|json|toml|nft|service|conf|rules|csv|txt)"

MD_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
DOC_MENTION = re.compile(r"(?<![\w./-])(docs/[\w.-]+\.md)(?:#([\w-]+))?")
BARE_CAPS_MD = re.compile(r"(?<![\w./-])([A-Z][A-Z0-9_-]*\.md)\b")
REPO_PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP_DIRS) + r")/[\w./-]*\." + FILE_EXT + r")(?![\w*{<])")
TEST_NODE = re.compile(r"(?<![\w./-])(tests/[\w/]+\.py)::(\w+)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Broken:
    file: Path
    line: int
    ref: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.ref}: {self.why}"


def source_files(root: Path = ROOT) -> Iterator[Path]:
    """Every .py, .md, .yaml/.yml and Makefile of the repository (not the virtual environment)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".") and not d.endswith(".egg-info")
        )
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if (path.suffix in SUFFIXES or name in NAMES) and path.relative_to(root) not in FIXTURES:
                yield path


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "").replace("*", "")
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else HEADING.match(line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def generated_dirs(root: Path) -> tuple[str, ...]:
    """Folders the repository ignores (``.gitignore`` entries ending in ``/``): files there are made at run
    time (``runtime/sites/var/state.json``), so a mention of one is not a dangling reference."""
    ignore = root / ".gitignore"
    if not ignore.is_file():
        return ()
    lines = (ln.strip() for ln in ignore.read_text(encoding="utf-8").splitlines())
    return tuple(ln.lstrip("/") for ln in lines if ln.endswith("/") and not ln.startswith("#") and "*" not in ln)


def _target(root: Path, base: Path, ref: str) -> Path | None:
    """The file a reference names, tried relative to the referring file's folder, then to the root."""
    for start in (base, root):
        p = (start / ref).resolve()
        if p.exists() and (p == root or root in p.parents):
            return p
    return None


def _check_anchor(target: Path, anchor: str | None) -> str | None:
    if not anchor or target.suffix != ".md" or not target.is_file():
        return None
    return None if anchor in anchors(target) else f"no heading #{anchor} in {target.name}"


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= pos < b for a, b in spans)


def check_file(path: Path, root: Path = ROOT) -> list[Broken]:
    rel = path.relative_to(root)
    base = path.parent
    broken: list[Broken] = []
    generated = generated_dirs(root)
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        in_links: list[tuple[int, int]] = []  # a path inside a Markdown link is checked once, as the link
        if path.suffix == ".md":
            for m in MD_LINK.finditer(line):
                in_links.append(m.span())
                ref = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", ref) or ref.startswith("<"):
                    continue  # a URL (http:, mailto:): not a file of this repository
                file_part, _, anchor = ref.partition("#")
                target = path if not file_part else _target(root, base, file_part)
                if target is None:
                    broken.append(Broken(rel, no, ref, "link to a file that does not exist"))
                elif why := _check_anchor(target, anchor):
                    broken.append(Broken(rel, no, ref, why))
        for m in DOC_MENTION.finditer(line):
            if _inside(m.start(), in_links):
                continue
            target = _target(root, root, m.group(1))
            if target is None:
                broken.append(Broken(rel, no, m.group(1), "no such document"))
            elif why := _check_anchor(target, m.group(2)):
                broken.append(Broken(rel, no, m.group(0), why))
        for m in BARE_CAPS_MD.finditer(line):
            name = m.group(1)
            if not any((d / name).is_file() for d in (base, root, root / "docs")):
                broken.append(Broken(rel, no, name, f"no {name} here, at the root or in docs/"))
        for m in REPO_PATH.finditer(line):
            if _inside(m.start(), in_links):
                continue
            ref = m.group(1).rstrip(".")
            if (ref.startswith("docs/") and ref.endswith(".md")) or ref.startswith(generated):
                continue  # a document is checked above, with its anchor; a generated file need not exist
            if _target(root, root, ref) is None and _target(root, base, ref) is None:
                broken.append(Broken(rel, no, ref, "no such file"))
        for m in TEST_NODE.finditer(line):
            target = _target(root, root, m.group(1))
            if target is not None and not re.search(rf"^\s*(?:async\s+)?def {m.group(2)}\(", _text(target), re.M):
                broken.append(Broken(rel, no, m.group(0), "no such test"))
    return broken


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def check(files: Iterable[Path], root: Path = ROOT) -> list[Broken]:
    return [b for f in files for b in check_file(f, root)]


def md_links(md: Path, root: Path = ROOT) -> set[Path]:
    """Markdown documents of the repository that one document links to."""
    out: set[Path] = set()
    for m in MD_LINK.finditer(md.read_text(encoding="utf-8")):
        file_part = m.group(1).partition("#")[0]
        if not file_part or re.match(r"^[a-z][a-z0-9+.-]*:", file_part):
            continue
        target = _target(root, md.parent, file_part)
        if target is not None and target.suffix == ".md":
            out.add(target)
    return out


def reachable(starts: Iterable[Path], root: Path = ROOT) -> set[Path]:
    """Every Markdown document reachable by links from ``starts`` (which are included)."""
    todo = [p.resolve() for p in starts if p.is_file()]
    seen: set[Path] = set(todo)
    while todo:
        for nxt in md_links(todo.pop(), root):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
