"""The routes of the API, one module per family; :func:`register` adds them all to an app's router."""

from __future__ import annotations


def register(router) -> None:
    from promptreg.server.routes import admin, drift, events, lifecycle, registry, schedules, tokens

    for module in (tokens, registry, lifecycle, drift, schedules, admin, events):
        module.register(router)
