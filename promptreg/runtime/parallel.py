"""Data-parallel scoring for ``eval``, ``gate``, ``drift`` and ``promote --suite`` under ``torchrun`` /
``accelerate launch``: rank 0 runs the command; the other ranks only score rows for it.

Invariants:
- rank 0 (the leader) is the only rank that opens the registry, reads suites and data, prints, and
  writes (eval runs, gate results, drift reports, audit events, MLflow, alias moves): the command runs
  exactly as in one process, so caching, policies and exit codes are unchanged. The other ranks
  (workers) never see the registry; they load the base model the leader names and answer its
  scoring requests until it says stop (:func:`serve`), then exit 0 without output;
- every message is a broadcast from rank 0 of an int64 header ``[op, payload bytes]`` and a uint8
  payload: JSON (texts, the manifest) and the version's ``soft_prompt.safetensors`` bytes as read from
  its verified folder. Nothing is pickled between ranks, and every rank applies byte-identical tensors;
- a worker loads the base model from the same path as the leader and must reach the same fingerprint
  (weights, config, tokenizer), or the load fails on every rank with one error naming the rank;
- a request's rows are split as training splits them (rank r takes rows r, r + W, ...;
  softprompt.distributed.shard) and the results are gathered back into input order
  (``gather_strided``), so a W-process evaluation gives the single-process numbers (up to the
  floating-point effect of different batch compositions) whatever W is;
- the leader always ends the session with STOP, also when its command fails, so no worker is left
  waiting for a request that never comes; after STOP every rank reports how many rows it scored
  (``ScoringGroup.rows_per_rank``, printed by the CLI as one note).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptreg.errors import IntegrityError, PromptregError

if TYPE_CHECKING:
    from promptreg.runtime.loader import LoadedPrompt
    from promptreg.softprompt.distributed import DistContext

STOP, LOAD, CLASSIFY, GENERATE = 0, 1, 2, 3
_ACTIVE: ScoringGroup | None = None


def active() -> ScoringGroup | None:
    """The leader's group while a data-parallel command runs (None otherwise, and on workers)."""
    return _ACTIVE


# ----- messages -------------------------------------------------------------------------------------
def _broadcast(ctx: DistContext, op: int, payload: bytes = b"") -> None:
    import torch
    import torch.distributed as dist

    dist.broadcast(torch.tensor([op, len(payload)], dtype=torch.int64, device=ctx.device), src=0)
    if payload:
        dist.broadcast(torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(ctx.device), src=0)


def _receive(ctx: DistContext) -> tuple[int, bytes]:
    import torch
    import torch.distributed as dist

    header = torch.zeros(2, dtype=torch.int64, device=ctx.device)
    dist.broadcast(header, src=0)
    op, size = (int(v) for v in header.cpu())
    payload = torch.empty(size, dtype=torch.uint8, device=ctx.device)
    if size:
        dist.broadcast(payload, src=0)
    return op, payload.cpu().numpy().tobytes()


def _pack(doc: dict, blob: bytes = b"") -> bytes:
    head = json.dumps(doc, sort_keys=True).encode("utf-8")
    return len(head).to_bytes(8, "little") + head + blob


def _unpack(payload: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(payload[:8], "little")
    return json.loads(payload[8:8 + n].decode("utf-8")), payload[8 + n:]


def _all_ints(ctx: DistContext, value: int) -> list[int]:
    """Every rank's ``value`` (a success flag, a row count), on every rank."""
    import torch
    import torch.distributed as dist

    values = [torch.zeros(1, dtype=torch.int64, device=ctx.device) for _ in range(ctx.world)]
    dist.all_gather(values, torch.tensor([int(value)], dtype=torch.int64, device=ctx.device))
    return [int(v.item()) for v in values]


# ----- both sides: one request's share ------------------------------------------------------------------
def _classify_share(ctx: DistContext, prompt: LoadedPrompt, texts: list[str], batch_size: int, scored: list[int]):
    from promptreg.softprompt.distributed import gather_strided, shard

    mine = shard(ctx, texts)
    scored[0] += len(mine)
    return gather_strided(ctx, prompt.label_probs(mine, batch_size=batch_size), len(texts))


def _generate_share(ctx: DistContext, prompt: LoadedPrompt, texts: list[str], max_new_tokens: int,
                    batch_size: int, scored: list[int]) -> list[list[int]]:
    import torch

    from promptreg.softprompt.distributed import gather_strided, shard

    mine = shard(ctx, texts)
    scored[0] += len(mine)
    rows = prompt.generated_ids(mine, max_new_tokens=max_new_tokens, batch_size=batch_size)
    width = max(1, max_new_tokens)
    local = torch.full((len(rows), width), -1, dtype=torch.int64)
    for i, ids in enumerate(rows):
        local[i, :len(ids)] = torch.tensor(ids[:width], dtype=torch.int64)
    gathered = gather_strided(ctx, local, len(texts))
    return [[int(t) for t in row if t >= 0] for row in gathered]


# ----- leader -----------------------------------------------------------------------------------------
class ScoringGroup:
    """Rank 0's side: ships each version once, then splits every classify/generate across the ranks."""

    def __init__(self, ctx: DistContext):
        self.ctx = ctx
        self._ids: dict[tuple[str, str, str], int] = {}
        self._scored = [0]                       # rows this rank scored
        self.rows_per_rank: list[int] = []       # every rank's count, known after STOP

    def _ship(self, prompt: LoadedPrompt) -> int:
        from promptreg.artifact.manifest import TENSORS_FILE

        key = (prompt.sha256, prompt.base.fingerprint, str(prompt.base.folder))
        if key in self._ids:
            return self._ids[key]
        if prompt.folder is None:
            raise PromptregError(f"{prompt.label}: no artifact folder to share with the other ranks")
        pid = len(self._ids)
        doc = {"id": pid, "label": prompt.label, "sha256": prompt.sha256, "manifest": prompt.manifest,
               "model": str(prompt.base.folder), "fingerprint": prompt.base.fingerprint}
        _broadcast(self.ctx, LOAD, _pack(doc, (prompt.folder / TENSORS_FILE).read_bytes()))
        failed = [rank for rank, ok in enumerate(_all_ints(self.ctx, 1)) if not ok]
        if failed:
            raise IntegrityError(f"data-parallel scoring: rank(s) {', '.join(map(str, failed))} could not load "
                                 f"{prompt.label} on base model {prompt.base.folder} (their error is on their stderr)")
        self._ids[key] = pid
        return pid

    def classify(self, prompt: LoadedPrompt, texts: list[str], *, batch_size: int = 32):
        pid = self._ship(prompt)
        _broadcast(self.ctx, CLASSIFY, _pack({"id": pid, "texts": list(texts), "batch_size": batch_size}))
        return _classify_share(self.ctx, prompt, list(texts), batch_size, self._scored).numpy()

    def generate(self, prompt: LoadedPrompt, texts: list[str], *, max_new_tokens: int = 64,
                 batch_size: int = 16) -> list[list[int]]:
        pid = self._ship(prompt)
        _broadcast(self.ctx, GENERATE, _pack({"id": pid, "texts": list(texts), "max_new_tokens": max_new_tokens,
                                              "batch_size": batch_size}))
        return _generate_share(self.ctx, prompt, list(texts), max_new_tokens, batch_size, self._scored)


@contextmanager
def leading(ctx: DistContext) -> Iterator[ScoringGroup]:
    """Rank 0: route every LoadedPrompt's scoring through the ranks while the block runs; STOP at the end."""
    global _ACTIVE
    group = ScoringGroup(ctx)
    _ACTIVE = group
    try:
        yield group
    finally:
        _ACTIVE = None
        _broadcast(ctx, STOP)
        group.rows_per_rank = _all_ints(ctx, group._scored[0])


# ----- workers ----------------------------------------------------------------------------------------
def serve(ctx: DistContext, device: str) -> None:
    """A worker rank: load what the leader ships, score its share of each request, return at STOP."""
    import sys

    from promptreg.artifact.manifest import TENSORS_FILE
    from promptreg.runtime.loader import load_base_model, load_soft_prompt

    bases: dict[str, Any] = {}
    prompts: dict[int, LoadedPrompt] = {}
    scored = [0]
    with tempfile.TemporaryDirectory(prefix=f"promptreg-rank{ctx.rank}-") as tmp:
        while True:
            op, payload = _receive(ctx)
            if op == STOP:
                _all_ints(ctx, scored[0])
                return
            doc, blob = _unpack(payload)
            if op == LOAD:
                ok = True
                try:
                    base = bases.get(doc["model"]) or load_base_model(doc["model"], device=device)
                    bases[doc["model"]] = base
                    if base.fingerprint != doc["fingerprint"]:
                        raise IntegrityError(f"base model {doc['model']} has fingerprint {base.fingerprint[:12]} "
                                             f"on rank {ctx.rank}, {doc['fingerprint'][:12]} on rank 0")
                    folder = Path(tmp) / str(doc["id"])
                    folder.mkdir()
                    (folder / TENSORS_FILE).write_bytes(blob)
                    # rank 0 already checked the version against its base model (or, for drift on a new
                    # base, chose not to): this rank only has to hold the same weights
                    prompts[doc["id"]] = load_soft_prompt(folder, doc["manifest"], base, label=doc["label"],
                                                          sha256=doc["sha256"], check_base=False)
                except (PromptregError, OSError) as exc:
                    print(f"promptreg rank {ctx.rank}: {exc}", file=sys.stderr)
                    ok = False
                _all_ints(ctx, int(ok))
            elif op == CLASSIFY:
                _classify_share(ctx, prompts[doc["id"]], doc["texts"], doc["batch_size"], scored)
            elif op == GENERATE:
                _generate_share(ctx, prompts[doc["id"]], doc["texts"], doc["max_new_tokens"], doc["batch_size"],
                                scored)
