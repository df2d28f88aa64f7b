"""Recurring drift checks: cron expressions, schedules and their exactly-once claims, the run-due loop
and daemon, and ready-made crontab / Kubernetes / GitHub Actions snippets."""
