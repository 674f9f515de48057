"""JSON Schema of the site file, with every registered component's params, for editors and the docs.

Built from the same pydantic models that validate a site at load, so the schema cannot drift from what
the runtime accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model

from runtime.api import Params
from runtime.config import SiteConfig, TaskComponent
from runtime.registry import SECTIONS

_NAME: Any = (str | None, None)  # every component's optional ``name``
_TASK_FIELDS = {"process": (str | None, TaskComponent.model_fields["process"])}  # a task's process group


def _literal(value: str) -> Any:
    """``Literal[value]`` for a value known only at run time (the type names of the registries)."""
    return Literal.__getitem__(value)


def _union(section: str, reg: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Any:
    variants = []
    for type_name, cls in sorted(reg.items()):
        model = create_model(
            f"{section}_{type_name}",
            __base__=Params,
            __doc__=(cls.__doc__ or "").strip().split("\n\n")[0] or None,
            type=(_literal(type_name), ...),
            name=_NAME,
            **(extra or {}),
            params=(
                cls.Params,
                Field(default_factory=dict)
                if not cls.Params.model_fields or all(not f.is_required() for f in cls.Params.model_fields.values())
                else ...,
            ),
        )
        variants.append(model)
    if not variants:
        return dict
    if len(variants) == 1:
        return variants[0]
    return Annotated[Union[tuple(variants)], Field(discriminator="type")]  # noqa: UP007


def _plant() -> Any:
    from runtime.sim.server import VirtualPlantParams

    return create_model(
        "plant_virtual",
        __base__=Params,
        __doc__="The virtual plant started beside the runtime (simulated sites).",
        type=(_literal("virtual"), ...),
        name=_NAME,
        params=(VirtualPlantParams, ...),
    )


def site_model() -> type[Params]:
    sections: dict[str, Any] = {
        reg.section: (
            list[_union(reg.kind, reg, _TASK_FIELDS if reg.section == "tasks" else None)],  # type: ignore[misc]
            ... if reg.section == "safety" else Field(default_factory=list),
        )
        for reg in SECTIONS
    }
    return create_model(
        "SiteFile",
        __base__=SiteConfig,
        plant=(_plant() | None, Field(None, description="virtual plant started beside the runtime")),
        **sections,
    )


def site_schema() -> dict[str, Any]:
    schema = site_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "v2g-plc site file"
    return schema
