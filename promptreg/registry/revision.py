"""The schema revision this promptreg needs (no imports: read by the CLI's SQLite fast path too).

Keep in step with migrations/versions/ (tests/test_migrations.py checks it against Alembic's head).
"""

#: The newest migration this promptreg knows.
HEAD_REVISION = "0005"
