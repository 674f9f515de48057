"""The published JSON Schema of a plan (``plan.schema.json`` beside this module).

Generated from the :class:`~programs.planner.model.Plan` model itself, so it cannot drift from what the
planner emits; ``python -m programs.planner.schema`` rewrites the file, and a test fails when the
committed file differs from the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("plan.schema.json")


def plan_schema() -> dict[str, Any]:
    from programs.planner.model import Plan

    schema = Plan.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://v2g-plc.invalid/schemas/plan.schema.json",
        **schema,
    }


def render() -> str:
    return json.dumps(plan_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    SCHEMA_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
