"""Moved to :mod:`promptreg.scheduling` (re-exported here for callers of the old path; the verbs are
also methods of ``promptreg.Registry``)."""

from promptreg.scheduling import *  # noqa: F403
from promptreg.scheduling import __all__  # noqa: F401
