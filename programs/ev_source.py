"""The one writer of the EV's own data (``ev.*``): from the charger's Modbus map or from ISO 15118.

Why one program: a site learns the EV's SoC either from the charger's register map or from the EV itself
over ISO 15118-20 (the SECC device's ``secc.*`` tags). Two writers of ``ev.soc`` would race; a site setting
picks the source here, and everything downstream (modes, dispatch, the planner) reads ``ev.*`` only. A
site that selects ``secc`` renames the charger map's EV tags (the Modbus unit's ``rename``) to the
``charger_*`` names below, or leaves them out.

Units as the rest of the runtime uses them: SoC as a fraction 0-1 (ISO 15118 says percent), energy in Wh,
power in W (limits >= 0), departure as UTC epoch seconds. A source that is not good gives None: a
consumer treats an unknown SoC as unknown, never as 0.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from runtime.api import Cycle, Params, Program, SiteInfo, TagName, register_program
from runtime.tags import Direction, TagSpec, TagType

PREFIX = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"  # a tag prefix: one or more dotted lower-case names


class EvSourceParams(Params):
    source: Literal["charger", "secc"] = Field(description="where the EV's data comes from")
    secc_prefix: str = Field("secc", pattern=PREFIX, description="the SECC device's tag prefix")
    target_prefix: str = Field("ev", pattern=PREFIX, description="where the selected data goes (ev.soc, ...)")
    charger_soc_tag: TagName = Field("charger.ev_soc", description="the charger map's SoC (fraction 0-1)")
    charger_connected_tag: TagName | None = Field(None, description="the charger map's plug state, if any")


# target suffix -> (type, unit, the secc suffix it comes from, scale)
MAGNITUDES = frozenset({"max_charge_w", "max_discharge_w"})  # limits are W >= 0; some EVs sign the discharge one
FIELDS: dict[str, tuple[TagType, str, str, float]] = {
    "soc": (TagType.FLOAT, "", "soc", 0.01),  # ISO 15118 percent -> fraction
    "departure_time": (TagType.FLOAT, "s", "departure_time", 1.0),
    "energy_request_wh": (TagType.FLOAT, "Wh", "target_energy_wh", 1.0),
    "min_energy_wh": (TagType.FLOAT, "Wh", "min_energy_wh", 1.0),
    "max_charge_w": (TagType.FLOAT, "W", "ev_max_charge_w", 1.0),
    "max_discharge_w": (TagType.FLOAT, "W", "ev_max_discharge_w", 1.0),
    "in_session": (TagType.BOOL, "", "session", 1.0),
}


@register_program("ev_source")
class EvSource(Program):
    """Copies the selected source's EV data into ``ev.*``, every cycle, nothing else."""

    Params = EvSourceParams
    params: EvSourceParams

    def __init__(self, name: str, params: EvSourceParams, site: SiteInfo):
        super().__init__(name, params, site)
        p = params
        self.targets = {k: f"{p.target_prefix}.{k}" for k in FIELDS}

    def declare(self) -> list[TagSpec]:
        return [TagSpec(self.targets[k], t, u, Direction.MEMORY, None) for k, (t, u, _, _) in FIELDS.items()]

    def requires(self) -> list[str]:
        p = self.params
        if p.source == "secc":
            return [f"{p.secc_prefix}.{src}" for _, _, src, _ in FIELDS.values()]
        return [p.charger_soc_tag] + ([p.charger_connected_tag] if p.charger_connected_tag else [])

    def scan(self, cx: Cycle) -> None:
        p, out = self.params, cx.out
        if p.source == "secc":
            for key, (_, _, src, scale) in FIELDS.items():
                v: Any = cx.inputs.value(f"{p.secc_prefix}.{src}")
                if v is not None and not isinstance(v, bool):
                    v = float(v) * scale
                    if key in MAGNITUDES:
                        v = abs(v)
                out[self.targets[key]] = v
            return
        for key in FIELDS:
            out[self.targets[key]] = None
        out[self.targets["soc"]] = cx.inputs.value(p.charger_soc_tag)
        if p.charger_connected_tag:
            out[self.targets["in_session"]] = cx.inputs.value(p.charger_connected_tag)
