"""Library chatter stays off a user's terminal unless --verbose (promptreg.quiet)."""

from __future__ import annotations

import subprocess
import sys

import pytest

EMIT = """
import logging, sys, warnings
from promptreg.quiet import quiet_libraries
quiet_libraries(sys.argv[1] == "verbose")
warnings.warn("library deprecation", FutureWarning)
import transformers
transformers.logging.get_logger("transformers.modeling_utils").warning("transformers warning")
import mlflow  # configures its own logger on import
logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
print("done")
"""


@pytest.mark.parametrize("mode", ["normal", "verbose"])
def test_library_output_only_in_verbose_mode(mode):
    proc = subprocess.run([sys.executable, "-c", EMIT, mode], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in __import__("os").environ.items()
                               if not k.startswith(("TRANSFORMERS_", "MLFLOW_LOGGING", "HF_HUB_"))})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    if mode == "normal":
        assert proc.stderr == ""
    else:
        for text in ("library deprecation", "transformers warning", "Creating initial MLflow database tables"):
            assert text in proc.stderr, proc.stderr
