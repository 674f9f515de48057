"""Broken site files: each error names the file, the line and the key, and nothing starts (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.site import build_site
from runtime.yamlload import ConfigError
from tests.runtime.helpers import BASE_SITE, cli, write_site

GOOD = BASE_SITE.format(period_ms=20)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth occurrence of needle: the tests compute, never hard-code, the line."""
    count = 0
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            count += 1
            if count == nth:
                return i
    raise AssertionError(f"{needle!r} not in text")


# (id, edit of the good file, the line's needle (nth occurrence), the key, words of the message)
CASES = [
    (
        "syntax",
        lambda t: t.replace("period_ms: 20", "period_ms: [20"),
        ("overrun_fault_after", 1),
        "",
        "YAML syntax error",
    ),
    ("unknown_top_key", lambda t: t + "scna:\n  period_ms: 10\n", ("scna:", 1), "scna", "unknown key"),
    (
        "wrong_type",
        lambda t: t.replace("period_ms: 20", "period_ms: fast"),
        ("period_ms", 1),
        "scan.period_ms",
        "number",
    ),
    (
        "out_of_range",
        lambda t: t.replace("period_ms: 20", "period_ms: 0"),
        ("period_ms", 1),
        "scan.period_ms",
        "greater than or equal to 1",
    ),
    (
        "missing_key",
        lambda t: t.replace("  nominal_frequency: 60\n", ""),
        ("site:", 1),
        "site.nominal_frequency",
        "required key is missing",
    ),
    (
        "bad_choice",
        lambda t: t.replace("nominal_frequency: 60", "nominal_frequency: 55"),
        ("nominal_frequency", 1),
        "site.nominal_frequency",
        "50 or 60",
    ),
    (
        "unknown_program_type",
        lambda t: t.replace("type: example_copy", "type: example_cpy", 1),
        ("type: example_cpy", 1),
        "programs[0].type",
        "unknown programs type 'example_cpy'",
    ),
    (
        "unknown_param",
        lambda t: t.replace("gain: 10000,", "gain: 10000, gian: 2,"),
        ("gian", 1),
        "programs[0].params.gian",
        "unknown key",
    ),
    (
        "param_wrong_type",
        lambda t: t.replace("gain: 10000,", "gain: lots,"),
        ("gain: lots", 1),
        "programs[0].params.gain",
        "number",
    ),
    (
        "duplicate_yaml_key",
        lambda t: t.replace("  overrun_fault_after: 5\n", "  overrun_fault_after: 5\n  period_ms: 10\n"),
        ("period_ms: 10", 1),
        "scan.period_ms",
        "duplicate key",
    ),
    (
        "duplicate_tag",
        lambda t: t.replace(
            "programs:\n",
            "  - name: dev2\n    type: memory\n    params:\n      tags:\n"
            "        - {name: grid.voltage, value: 1.0}\nprograms:\n",
        ),
        ("name: dev2", 1),
        "devices[1]",
        "duplicate tag 'grid.voltage'",
    ),
    (
        "missing_device",
        lambda t: t.replace("source: grid.voltage", "source: meter.power"),
        ("source: meter.power", 1),
        "programs[1].params",
        "needs tag 'meter.power'",
    ),
    (
        "duplicate_component_name",
        lambda t: t.replace("name: permit", "name: follow"),
        ("name: follow", 2),
        "programs[1].name",
        "duplicate name 'follow'",
    ),
    (
        "bad_timezone",
        lambda t: t.replace("  nominal_frequency: 60\n", "  nominal_frequency: 60\n  timezone: Mars/Olympus\n"),
        ("timezone", 1),
        "site.timezone",
        "unknown IANA timezone",
    ),
    (
        "no_interlocks",
        lambda t: t[: t.index("safety:")] + "safety: []\n",
        ("safety:", 1),
        "safety",
        "at least one interlock",
    ),
    (
        "plant_unknown_key",
        lambda t: t + "plant:\n  type: virtual\n  params:\n    sceanrio: s.yaml\n    devices: []\n",
        ("sceanrio", 1),
        "plant.params.sceanrio",
        "unknown key",
    ),
    (
        "bad_device_tag_name",
        lambda t: t.replace("name: ev.soc", "name: EV-SoC"),
        ("EV-SoC", 1),
        "devices[0].params.tags[1].name",
        "device.quantity",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_site_names_file_line_and_key(tmp_path: Path, case) -> None:
    _, edit, (needle, nth), key, words = case
    text = edit(GOOD)
    assert text != GOOD
    site = write_site(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        build_site(site)
    issues = err.value.issues
    assert any(
        i.file == str(site) and i.line == line_of(text, needle, nth) and i.key == key and words in i.message
        for i in issues
    ), f"got: {err.value}"


def test_check_and_run_exit_2_and_start_nothing(tmp_path: Path) -> None:
    text = GOOD.replace("period_ms: 20", "period_ms: fast")
    site = write_site(tmp_path, text)
    for args in (("check", str(site)), ("run", str(site), "--for", "1")):
        res = cli(*args)
        assert res.returncode == 2, res.stderr
        assert f"{site}:{line_of(text, 'period_ms')}: scan.period_ms:" in res.stderr
    assert not (tmp_path / "journal.jsonl").exists()


def test_good_site_checks(tmp_path: Path) -> None:
    res = cli("check", str(write_site(tmp_path)))
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_unreadable_file(tmp_path: Path) -> None:
    res = cli("check", str(tmp_path / "absent.yaml"))
    assert res.returncode == 2 and "cannot read file" in res.stderr
