"""`v2g-plc schema` and docs/configuration.md come from the models that validate site files."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from runtime.docgen import main as docgen
from runtime.site import bundled_site
from tests.runtime.helpers import BASE_SITE, cli


class EditorLoader(yaml.SafeLoader):
    """YAML as an editor's schema checker sees it: dates stay strings (JSON has no date type)."""


EditorLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@pytest.fixture(scope="module")
def schema() -> dict:
    res = cli("schema")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    jsonschema.Draft202012Validator.check_schema(s)
    return s


@pytest.mark.parametrize("text", [bundled_site().read_text(), BASE_SITE.format(period_ms=20)])
def test_shipped_and_test_sites_validate_against_the_schema(schema: dict, text: str) -> None:
    jsonschema.Draft202012Validator(schema).validate(yaml.load(text, EditorLoader))


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["scan"].update(period_ms=0),
        lambda d: d["programs"][0]["params"].update(gian=2),  # a typo in a component's params is caught too
        lambda d: d["programs"][0].update(type="nope"),
        lambda d: d.pop("safety"),
    ],
)
def test_schema_rejects_what_the_loader_rejects(schema: dict, edit) -> None:
    data = yaml.safe_load(BASE_SITE.format(period_ms=20))
    edit(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(data)


def test_configuration_reference_is_current() -> None:
    assert docgen(["--check"]) == 0, "docs/configuration.md is stale: run python -m runtime.docgen"
