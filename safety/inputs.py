"""Which tags the safety layer reads, derived from its settings rather than listed by hand.

Why derive: every input the supervisor judges by is named by a setting (tag names are settings, so a site
whose maps name things differently can point it elsewhere). Collecting every tag name found anywhere in
the settings means a new input setting is judged (forced -> trip) the day it is added; a test records what
the supervisor actually reads through the image and checks it against this set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from runtime.tags import TAG_NAME

# The runtime's own diagnostics (engine.RUNTIME_TAGS): never evidence when forced, whatever the site trusts.
DIAGNOSTIC_PREFIX = "runtime."


def tag_names(value: Any) -> Iterator[str]:
    """Every string in a settings model (recursively: sub-models, lists, dict values) that is a tag name."""
    if isinstance(value, str):
        if TAG_NAME.match(value):
            yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from tag_names(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for x in value:
            yield from tag_names(x)
    elif isinstance(value, dict):
        for x in value.values():
            yield from tag_names(x)
