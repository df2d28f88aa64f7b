"""promptreg: a registry and lifecycle service for soft prompts.

The package import is kept light (no torch, transformers, mlflow) so the CLI starts fast;
``promptreg.Registry`` is imported on first access.
"""

from promptreg.version import __version__

__all__ = ["Registry", "__version__"]


def __getattr__(name: str):
    if name == "Registry":
        from promptreg.services.registry import Registry

        return Registry
    raise AttributeError(name)
