"""The site file's ``plant:`` section: ``{type: virtual, params: {...}}``, validated with file:line: key."""

from __future__ import annotations

from pathlib import Path

from runtime.sim.server import VirtualPlant, VirtualPlantParams
from runtime.yamlload import ConfigError, load_yaml, validate


def plant_params(site: str | Path) -> tuple[VirtualPlantParams, Path]:
    site = Path(site)
    doc = load_yaml(site)
    data = doc.data if isinstance(doc.data, dict) else {}
    plant = data.get("plant")
    if not isinstance(plant, dict):
        raise ConfigError([doc.issue(("plant",), "the site has no plant: {type: virtual, params: ...} section")])
    if plant.get("type") != "virtual":
        raise ConfigError([doc.issue(("plant", "type"), f"unknown plant type {plant.get('type')!r} (known: virtual)")])
    extra = set(plant) - {"type", "name", "params"}
    if extra:
        raise ConfigError([doc.issue(("plant", sorted(extra)[0]), "unknown key")])
    params = validate(VirtualPlantParams, plant.get("params") or {}, doc, ("plant", "params"))
    return params, site.parent


def load_plant(site: str | Path) -> VirtualPlant:
    params, base = plant_params(site)
    return VirtualPlant(params, base)
