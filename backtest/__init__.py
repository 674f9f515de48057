"""The arbitrage backtest: an economic study of a strategy over a price series, in simulated time.

It lives beside the planner, not inside the runtime: nothing of the runtime depends on it. Parts:
``data`` (price and scenario files), ``market`` (what is visible when), ``strategies`` (the one table
of strategies), ``site`` (the site's programs and interlock on the cycle rig against a battery model),
``rig`` (the cycle rig the backtest and the program and safety tests share), ``run`` (one backtest),
``accounting`` (cost and violations, from the trace alone), ``output`` (trace, plot), ``cli``.
"""

from backtest.data import DataError, load_prices, load_scenario
from backtest.run import Run, backtest, simulate

__all__ = ["DataError", "Run", "backtest", "load_prices", "load_scenario", "simulate"]
