"""Moved to :mod:`promptreg.scheduling.cron` (re-exported here for callers of the old path)."""

from promptreg.scheduling.cron import *  # noqa: F403
from promptreg.scheduling.cron import __all__  # noqa: F401
