"""The routes of the API, one module per family; :func:`register` adds them all to an app's router."""

from __future__ import annotations


def register(router) -> None:
    from promptreg.server.routes import tokens

    for module in (tokens,):
        module.register(router)
