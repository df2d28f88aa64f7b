"""Commands that score rows (eval, gate, promote --suite, drift) under ``torchrun`` / ``accelerate
launch``: rank 0 runs the command as one process would, with its scoring split across the ranks; every
other rank serves that scoring and exits 0 without output (runtime/parallel.py holds the protocol).
Without a launcher the command runs unchanged."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from promptreg.cli.output import note


def data_parallel(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from promptreg.softprompt import distributed as dist

        if not dist.launched():
            return command(*args, **kwargs)
        from promptreg.runtime import parallel

        ctx, device = dist.init_from_env(kwargs.get("device") or "auto")
        try:
            if not ctx.is_main:
                parallel.serve(ctx, device)
                return 0
            if "device" in kwargs:
                kwargs["device"] = device
            with parallel.leading(ctx) as group:
                code = command(*args, **kwargs)
            if any(group.rows_per_rank):
                note(f"data-parallel scoring on {ctx.world} ranks: "
                     f"{', '.join(map(str, group.rows_per_rank))} rows")
            return code
        finally:
            dist.shutdown(ctx)

    return run
