"""Data parallelism for soft-prompt training and scoring under ``torchrun`` / ``accelerate launch``.

Invariants:
- the process group comes from the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``): nccl when the device is CUDA, gloo otherwise. World size 1 means no
  group, and every helper here is then the identity (one code path for 1 and N processes);
- every rank builds the SAME global batch order (same seed, same data) and takes rows ``rank,
  rank + W, ...`` of each global batch (:func:`shard`): deterministic, balanced in length (batches are
  length-sorted), and the global batch is exactly the one a single process uses with the same
  ``--batch-size``;
- losses are SUMS over a rank's rows divided by the GLOBAL row (or target-token) count, which every
  rank knows without communicating; the trainable prompt's gradients are then summed across ranks
  in one flat all-reduce (DDP over the soft-prompt parameters only; the frozen base is never
  synchronised), so every rank applies the single-process update and stays identical;
- only rank 0 writes (checkpoints, MLflow, artifact, push); the checkpoint holds global state only
  (step, position in global batches, the replicated optimizer), so ``--resume`` works with any world
  size;
- scoring shards rows the same way and re-interleaves the gathered results into input order
  (:func:`gather_strided`); no object is pickled between ranks (tensors only);
- with ``--fsdp`` (FSDP2, :func:`shard_frozen_layers`) the frozen decoder layers are sharded, so every
  rank runs every forward together: scoring pads each rank's rows to the same count
  (:func:`shard_padded`) and a rank with no row of a global batch runs it on a stand-in row with zero
  weight. The result equals DDP's and a single process's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"   # where collectives run (cuda:N for nccl, cpu for gloo)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def launched() -> bool:
    """True when a launcher started this process as one of several (torchrun, accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's global rank as the launcher set it (0 without a launcher)."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def init_from_env(device: str = "auto") -> tuple[DistContext, str]:
    """Join the launcher's process group (once) and return the context and this rank's device."""
    import torch
    import torch.distributed as dist

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not launched():
        return SINGLE, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}" if device == "cuda" else device
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return current(device), device


def current(device: str = "cpu") -> DistContext:
    """The context of an already-initialised process group (SINGLE without one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SINGLE
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       device=device if str(device).startswith("cuda") else "cpu")


def shutdown(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard(ctx: DistContext, items: list) -> list:
    """This rank's part of a global batch (or of a scoring set): items rank, rank + W, ..."""
    return items[ctx.rank::ctx.world] if ctx.enabled else items


def shard_padded(ctx: DistContext, items: list) -> tuple[list, int]:
    """This rank's part of a scoring set padded to the same length on every rank (copies of its first
    item, or of the set's first item), and how many of them are real. Ranks whose frozen layers are
    sharded (FSDP2) must run every forward together, so each scores the same number of rows in the
    same number of batches; the padding's results are dropped."""
    local = shard(ctx, items)
    if not ctx.enabled or not items:
        return local, len(local)
    width = -(-len(items) // ctx.world)
    return local + [(local or items)[0]] * (width - len(local)), len(local)


def shard_frozen_layers(model, ctx: DistContext) -> int:
    """FSDP2: shard each decoder layer of the frozen base across the ranks (``fully_shard``, one
    all-gather per layer in forward, freed after it). The embedding table, final norm and LM head stay
    whole on every rank: the soft prompt is initialised from and mixed into the embeddings outside the
    layers, and they are a small part of a large model. The trainable prompt is never sharded (its
    gradient is all-reduced like DDP's). Each layer is its own FSDP root, so ``reshard_after_forward``
    is set explicitly (a root's default keeps its parameters gathered after forward, which would hold
    the whole model on every rank). A layer already sharded (a second run on the same model) is left
    as it is. Returns how many layers were sharded now."""
    if not ctx.enabled:
        return 0
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    from promptreg.errors import InputError

    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise InputError(f"--fsdp needs a decoder whose blocks are model.layers ({type(model).__name__} has none)")
    todo = [layer for layer in layers if not isinstance(layer, FSDPModule)]
    if todo:
        mesh = init_device_mesh("cuda" if ctx.device.startswith("cuda") else "cpu", (ctx.world,))
        for layer in todo:
            fully_shard(layer, mesh=mesh, reshard_after_forward=True)   # explicit: each layer is its own root
    return len(todo)


def all_reduce_grads(ctx: DistContext, params: list) -> None:
    """Sum the gradients of ``params`` across ranks (one flat buffer; a missing grad counts as zero)."""
    if not ctx.enabled:
        return
    import torch
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params]).to(ctx.device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def sum_floats(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sum of a few floats across ranks (float64)."""
    if not ctx.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def gather_strided(ctx: DistContext, local: Any, total: int) -> Any:
    """Reassemble per-rank results of :func:`shard` (a tensor [n_rank, ...] per rank, rows in shard
    order) into one [total, ...] tensor in the original order, on every rank."""
    if not ctx.enabled:
        return local
    import torch
    import torch.distributed as dist

    width = -(-total // ctx.world)
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=ctx.device)
    padded[: local.shape[0]] = local.to(ctx.device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded)
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        count = len(range(r, total, ctx.world))
        out[r::ctx.world] = part[:count].cpu()
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()
