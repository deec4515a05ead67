"""Data-parallel training under torchrun: process group set-up, model wrapping, reductions.

`torchrun --nproc_per_node N` (or several nodes with --nnodes/--rdzv-*) sets RANK, WORLD_SIZE and LOCAL_RANK; a
plain `python` run is one process with no process group. NCCL on CUDA, gloo on the CPU. DDP by default; FSDP
(PyTorch's fully_shard: parameters, gradients and optimizer state sharded over the ranks, each block of
`units` gathered only while it runs) as an option for models that do not fit a device.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistEnv:
    """Join the process group torchrun describes (nothing to do for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistEnv(rank, world_size, local_rank)


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, env: DistEnv):
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, env: DistEnv) -> list:
    """Every rank's `obj`, on every rank (rank order)."""
    if not env.enabled:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap_model(module: torch.nn.Module, env: DistEnv, strategy: str, device: torch.device,
               units: Sequence[torch.nn.Module] = ()) -> torch.nn.Module:
    """DDP or FSDP around `module` when running on several processes; the module itself otherwise.
    With FSDP each of `units` (the encoder layers) is sharded on its own, the rest with the root."""
    if not env.enabled:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids, broadcast_buffers=False)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (env.world_size,))
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(module, mesh=mesh)
        return module
    raise ValueError(f"distributed strategy {strategy!r} is not one of 'ddp', 'fsdp'")


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


@contextlib.contextmanager
def _fsdp_no_sync(module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def no_sync(wrapped: torch.nn.Module, skip: bool):
    """Skip the gradient reduction on accumulation micro-steps before the last one."""
    if not skip:
        return contextlib.nullcontext()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP
        return _fsdp_no_sync(wrapped)
    if hasattr(wrapped, "no_sync"):  # DDP
        return wrapped.no_sync()
    return contextlib.nullcontext()


def full_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter (tied ones once) as a whole CPU tensor, by its name in `module`. Collective when sharded:
    every rank must call it."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in module.named_parameters():
        full = p.full_tensor() if isinstance(p, DTensor) else p
        out[name] = full.detach().to("cpu", copy=True)
    return out


@torch.no_grad()
def load_full_parameters(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into (possibly sharded) parameters, each rank keeping its shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for name, p in module.named_parameters():
        value = state[name]
        if isinstance(p, DTensor):
            p.copy_(distribute_tensor(value.to(p.device_mesh.device_type), p.device_mesh, p.placements))
        else:
            p.copy_(value)


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Gradient clipping that also works on sharded (DTensor) gradients: the norm over all shards."""
    from torch.distributed.tensor import DTensor

    parameters = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm
