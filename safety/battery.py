"""Battery limits: the SoC window and the state-of-health guardrail, as fractions of rating.

Why a taper band instead of a hard edge at the SoC limits: a hard edge makes the setpoint chatter between
full power and zero around the limit; a short linear band lands on it.
"""

from __future__ import annotations

from safety.settings import Battery


def soc_fractions(
    b: Battery, soc: float | None, soh: float | None, batt_temp: float | None
) -> tuple[float, float, str]:
    """(charge fraction, discharge fraction, reason) from the SoC window and the SoH guardrail.

    Unknown SoC: no discharge (we cannot know the reserve is kept); charging stays with the EV's own BMS.
    Unknown SoH counts as low: the guardrail only ever tightens.
    """
    if soc is None:
        return 1.0, 0.0, "EV state of charge unknown: no discharge"
    guarded = (soh is None or soh < b.soh_low) or (batt_temp is not None and batt_temp > b.hot_c)
    reserve = b.soc_reserve_guarded if guarded else b.soc_reserve
    band = b.soc_band
    if band > 0:
        dis = min(1.0, max(0.0, (soc - reserve) / band))
        chg = min(1.0, max(0.0, (b.soc_max - soc) / band))
    else:
        dis = 1.0 if soc > reserve else 0.0
        chg = 1.0 if soc < b.soc_max else 0.0
    if guarded:
        dis = min(dis, b.discharge_fraction_guarded)
    reasons = []
    if chg < 1.0:
        reasons.append(f"SoC {soc:.3f} near maximum {b.soc_max}")
    if dis < 1.0:
        why = "low SoH or hot battery" if guarded else "reserve"
        reasons.append(
            f"SoC {soc:.3f} / {why} (reserve {reserve})"
            if dis < b.discharge_fraction_guarded or not guarded
            else f"SoH guardrail ({why})"
        )
    return chg, dis, "; ".join(reasons)
