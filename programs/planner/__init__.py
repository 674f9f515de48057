"""The arbitrage planner: a receding-horizon LP over visible prices (run as a task, never in the scan).

``plan(request) -> Plan`` and ``needs_replan(...)`` are pure functions; numpy and highspy are imported
only when a plan is actually computed, so importing this package costs the scan process nothing.
"""

from programs.planner.model import Battery, Charger, Plan, PlanInterval, PlanRequest, PlugWindow
from programs.planner.planner import plan

__all__ = ["Battery", "Charger", "Plan", "PlanInterval", "PlanRequest", "PlugWindow", "plan"]
