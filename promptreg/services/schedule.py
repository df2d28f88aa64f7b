"""Moved to :mod:`promptreg.scheduling.schedules` (re-exported here for callers of the old path;
the verbs are also methods of ``promptreg.Registry``)."""

from promptreg.scheduling.schedules import *  # noqa: F403
from promptreg.scheduling.schedules import __all__  # noqa: F401
