"""The few transformers calling conventions that changed inside the 5.x range we accept.

Invariants:
- transformers 5.24 renamed the key/value cache argument of every model, decoder layer and mask builder
  from ``past_key_values`` to ``cache`` (the old name still works until 5.40 but warns from inside our
  forward call), and model outputs carry it as ``cache``. We never pass the deprecated name to a
  callable that knows the new one, and never read the deprecated output property: no library
  deprecation warning is raised by our calls, on any version the range allows.
- The name is decided from the callable's own signature (``inspect.signature`` follows the
  ``functools.wraps`` of transformers' deprecation decorators), once per callable, so a model family
  that moves later than Llama keeps working.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.cache
def _cache_name(func: Any) -> str:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin or C callable: assume the current name
        return "cache"
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(module_or_func: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` with the name that ``module_or_func`` (an ``nn.Module`` whose ``forward`` is
    called, or a function such as ``create_causal_mask``) expects for its key/value cache."""
    func = getattr(type(module_or_func), "forward", None) if hasattr(module_or_func, "forward") else module_or_func
    return {_cache_name(func if func is not None else module_or_func): cache}


def output_cache(out: Any) -> Any:
    """The cache a model output carries (``cache`` since 5.24, ``past_key_values`` before), without
    touching the deprecated property; None when the output holds none."""
    if "cache" in out:
        return out["cache"]
    return out.get("past_key_values")
