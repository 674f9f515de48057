"""``python -m backtest`` is ``v2g-plc backtest``."""

import sys

from backtest.cli import cli

raise SystemExit(cli(sys.argv[1:]))
