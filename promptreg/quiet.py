"""What third-party libraries may print on a user's terminal: nothing, unless ``--verbose``.

Invariants:
- The CLI's contract is its own output: results on stdout, one ``error: ...`` line on stderr for a
  failure, our own ``warning: ...`` lines. Library chatter (transformers/PEFT deprecation warnings,
  MLflow's and alembic's INFO logging, Hugging Face progress bars) never reaches a user's stderr in
  normal mode; ``--verbose`` (or ``PROMPTREG_VERBOSE=1``) shows all of it.
- Our own calls are written not to trigger library deprecations in the first place
  (``promptreg.transformers_compat``); this module is the second line, for whatever a library emits
  on its own, whatever the release.
- Only environment defaults, ``warnings`` filters and logger levels are touched: cheap, no heavy import,
  and an explicit user setting (e.g. ``TRANSFORMERS_VERBOSITY``) is kept.
"""

from __future__ import annotations

import logging
import os
import warnings

# loggers of libraries we call; their records below ERROR are not shown in normal mode
LIBRARY_LOGGERS = ("mlflow", "alembic", "transformers", "peft", "urllib3", "botocore", "boto3",
                   "great_expectations", "huggingface_hub", "accelerate", "httpx", "sqlalchemy")
# read by the libraries when they are first imported (after this runs: the CLI imports them lazily)
_ENV_DEFAULTS = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_LOGGING_LEVEL": "ERROR",
}


def quiet_libraries(verbose: bool) -> None:
    """Silence library warnings and logging below ERROR (normal mode); leave everything on when
    ``verbose``. Call once, before the command imports the libraries."""
    if verbose:
        return
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # Python warnings are never part of our output (we print our own `warning:` lines)
    warnings.simplefilter("ignore")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
