"""Hostile YAML: recursive aliases, "billion laughs", deep nesting and bad scalars are refused with exit 2
and ``file:line: key: what``, in bounded time and memory, by ``check`` and ``run`` alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.yamlload import MAX_DEPTH, MAX_NODES, ConfigError, parse_yaml
from tests.slow.bundled import ROOT

BUNDLED = ROOT / "runtime" / "sites" / "sim.yaml"


def laughs(levels: int, width: int) -> str:
    """``levels`` anchors, each a list of ``width`` aliases of the one before: width**levels nodes."""
    text = f"lol0: &lol0 [{', '.join(['lol'] * width)}]\n"
    for i in range(1, levels + 1):
        text += f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]\n"
    return text


def merge_laughs(levels: int) -> str:
    """Merge keys (<<) doubling at every level: 2**levels merged mappings."""
    text = "m0: &m0 {a: 1}\n"
    for i in range(1, levels + 1):
        text += f"m{i}: &m{i}\n  <<: [*m{i - 1}, *m{i - 1}]\n  k{i}: 1\n"
    return text


# Each attack follows the 13-line bundled site header so that the line numbers are not trivially 1.
ATTACKS = {
    # name: (text appended to a valid site, expected "line: key" fragment, expected message fragment)
    "recursive_mapping": ("x-loop: &loop\n  again: *loop\n", "x-loop.again", "recursive alias"),
    "recursive_list": ("x-loop: &loop [1, 2, *loop]\n", "x-loop[2]", "recursive alias"),
    "recursive_merge": ("x-loop: &loop\n  <<: *loop\n  a: 1\n", "x-loop", "recursive alias"),
    "billion_laughs": (laughs(9, 10), "lol4", f"more than {MAX_NODES} nodes"),
    "merge_laughs": (merge_laughs(40), "m1", f"more than {MAX_NODES} nodes"),
    "deep_flow": ("x-deep: " + "[" * 50_000 + "]" * 50_000 + "\n", "x-deep", f"deeper than {MAX_DEPTH}"),
    "bad_date": ("x-when: 2027-13-01\n", "x-when", "month must be in 1..12"),
}


def hostile_site(tmp_path: Path, attack: str) -> tuple[Path, int]:
    """The bundled site with an attack appended; returns the file and the attack's first line."""
    base = BUNDLED.read_text()
    path = tmp_path / "site.yaml"
    path.write_text(base + ATTACKS[attack][0])
    return path, base.count("\n") + 1


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("command", ["check", "run"])
def test_hostile_site_is_refused_with_exit_2_naming_file_line_key(tmp_path: Path, command: str, attack: str) -> None:
    site, first = hostile_site(tmp_path, attack)
    _, key, what = ATTACKS[attack]
    args = [command, str(site)] + (["--for", "1", "--no-plant"] if command == "run" else [])
    # The timeout is a backstop only: the measured figures are in the hardening report / BENCHMARKS.md.
    res = subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    line = next(ln for ln in res.stderr.splitlines() if str(site) in ln)
    where, found_key, message = line.split(": ", 2)
    assert where.startswith(f"{site}:") and int(where.rsplit(":", 1)[1]) >= first, line
    assert found_key.startswith(key), line
    assert what in message, line


def test_expansion_is_counted_at_every_use_and_a_document_inside_the_limit_loads() -> None:
    doc = parse_yaml(laughs(3, 10))  # lol3 alone expands to 10 000 strings: inside the limit
    assert len(doc.data["lol3"]) == 10 and doc.data["lol3"][9][9][9][9] == "lol"
    with pytest.raises(ConfigError, match=f"more than {MAX_NODES} nodes"):
        parse_yaml(laughs(4, 10))  # lol4 expands to 100 000 strings, from 5 short lines


def test_nesting_limit_holds_for_block_flow_and_alias_chains() -> None:
    block = "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * (MAX_DEPTH + 5) + "v\n"
    with pytest.raises(ConfigError, match="deeper than") as exc:
        parse_yaml(block, "b.yaml")
    assert exc.value.issues[0].key.startswith("k0.k1.k2") and exc.value.issues[0].line == MAX_DEPTH + 2
    ok = "".join("  " * i + f"k{i}:\n" for i in range(20)) + "  " * 20 + "v\n"
    assert parse_yaml(ok).data["k0"]["k1"]["k2"]
    # each anchor nests 30 deep and refers to the one before: the built data would be 120 deep
    chain = "a0: &a0 1\n" + "".join(f"a{i}: &a{i} {'[' * 30}*a{i - 1}{']' * 30}\n" for i in range(1, 5))
    with pytest.raises(ConfigError, match="deeper than"):
        parse_yaml(chain)


def test_duplicate_keys_and_lines_survive_the_limits() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_yaml("a: 1\nb:\n  c: 2\n  c: 3\n", "d.yaml")
    assert str(exc.value) == "d.yaml:4: b.c: duplicate key (each key may appear once)"
    doc = parse_yaml("base: &b\n  x: 1\n  y: 2\nuse:\n  - *b\n  - 7\n")
    assert doc.line(("use", 0)) == 5 and doc.line(("use", 1)) == 6 and doc.line(("base", "y")) == 3


def test_merge_keys_follow_yaml_written_keys_win_and_lines_point_at_the_source() -> None:
    doc = parse_yaml("base: &b {x: 1, y: 2}\nother: &o {y: 5, z: 6}\nc:\n  <<: [*b, *o]\n  y: 3\n")
    assert doc.data["c"] == {"y": 3, "x": 1, "z": 6}
    assert doc.line(("c", "y")) == 5 and doc.line(("c", "x")) == 1 and doc.line(("c", "z")) == 2
    with pytest.raises(ConfigError, match="merge key"):
        parse_yaml("c:\n  <<: [1, 2]\n")


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("a: 1\nb: \x07\n", 2, "special characters"),
        ("a: !!int abc\n", 1, "cannot read value 'abc' as int"),
        # found by tests/yaml/test_fuzz.py: PyYAML's constructors crash on empty tagged scalars
        ("a: 1\nb: !!int\n", 2, "cannot read value '' as int"),
        ("!!float ", 1, "cannot read value '' as float"),
        ("x:\n  y: !!timestamp\n", 2, "cannot read value '' as timestamp"),
        ("a:\n  - 2027-01-01 25:00:00\n", 2, "cannot read value"),
        ("? [x, y]\n: 1\n", 1, "keys must be plain scalars"),
        ("a: [1\n", 2, "YAML syntax error"),
    ],
)
def test_bad_scalars_and_characters_name_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(ConfigError, match=what) as exc:
        parse_yaml(text, "s.yaml")
    assert exc.value.issues[0].line == line


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    from runtime.yamlload import load_yaml

    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"site:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8") as exc:
        load_yaml(path)
    assert exc.value.issues[0].line == 2
