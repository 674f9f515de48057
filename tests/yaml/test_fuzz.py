"""Fuzzing the YAML loader at a bounded budget: whatever the text, the answer is data or a ConfigError
naming the file, never another exception (a traceback is a crash of ``check`` or ``run``)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.yamlload import ConfigError, YamlDoc, parse_yaml
from tests.slow.bundled import ROOT

SITE = (ROOT / "runtime" / "sites" / "sim.yaml").read_text()
BUDGET = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# YAML's structural characters, anchors and aliases with short names (so that they resolve), merge keys,
# tags, and a few characters the reader refuses.
TOKENS = [
    *"abcxyz019-.:,[]{}#&*!|>'\"?%@` \t\n",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "- ",
    ": ",
    "!!int ",
    "!!float ",
    "!!binary ",
    "!!timestamp ",
    "!!set ",
    "2027-13-01",
    "1e999",
    ".nan",
    "~",
    "\x00",
    "\x07",
    "\ufeff",
    "é",
    "\U0001f600",
    "---\n",
    "...\n",
]


def loads_or_config_error(text: str) -> YamlDoc | None:
    try:
        return parse_yaml(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.issues and all(i.file == "fuzz.yaml" for i in exc.issues)
        assert all(i.line is None or 1 <= i.line <= text.count("\n") + 2 for i in exc.issues), str(exc)
        return None


@BUDGET
@given(st.lists(st.sampled_from(TOKENS), max_size=120).map("".join))
def test_random_documents_give_data_or_config_error(text: str) -> None:
    loads_or_config_error(text)


@st.composite
def mutated_site(draw: st.DrawFn) -> str:
    """The bundled site file with a few edits: tokens inserted, spans deleted or duplicated, lines swapped."""
    text = SITE
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "swap"]))
        if op == "insert":
            text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)) :]
        elif op == "duplicate":
            text = text[:pos] + text[pos : pos + draw(st.integers(1, 200))] + text[pos:]
        else:
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@BUDGET
@given(mutated_site())
def test_mutations_of_the_bundled_site_give_data_or_config_error(text: str) -> None:
    loads_or_config_error(text)


plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
documents = st.recursive(
    plain,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=30,
)


@BUDGET
@given(st.dictionaries(st.text(max_size=8), documents, max_size=5))
def test_well_formed_documents_load_to_what_was_dumped(data: dict[str, Any]) -> None:
    """Hostile-input limits must not refuse honest documents: this loader reads a dump of plain data as
    PyYAML's own safe_load does (which is the data, but for PyYAML's own quirks such as U+0085)."""
    text = yaml.safe_dump(data, allow_unicode=True)
    assert parse_yaml(text, "round.yaml").data == yaml.safe_load(text)
