"""Data-parallel training under torchrun: process group set-up, model wrapping, reductions.

`torchrun --nproc_per_node N` (or several nodes with --nnodes/--rdzv-*) sets RANK, WORLD_SIZE and LOCAL_RANK; a
plain `python` run is one process with no process group. NCCL on CUDA, gloo on the CPU. DDP by default; FSDP
(full sharding of parameters, gradients and optimizer state) as an option for models that do not fit a device.
"""

from __future__ import annotations

import contextlib
import datetime
import os
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


def wrap_model(module: torch.nn.Module, env: DistEnv, strategy: str, device: torch.device) -> torch.nn.Module:
    """DDP or FSDP around `module` when running on several processes; the module itself otherwise."""
    if not env.enabled:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids, broadcast_buffers=False)
    if strategy == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP(module, device_id=device if device.type == "cuda" else None, use_orig_params=True)
    raise ValueError(f"distributed strategy {strategy!r} is not one of 'ddp', 'fsdp'")


def no_sync(wrapped: torch.nn.Module, skip: bool):
    """Skip the gradient all-reduce on accumulation micro-steps before the last one."""
    if skip and hasattr(wrapped, "no_sync"):
        return wrapped.no_sync()
    return contextlib.nullcontext()


def full_state_dict(wrapped: torch.nn.Module, inner: torch.nn.Module) -> dict | None:
    """The unsharded model state dict (on rank 0 for FSDP; every rank otherwise)."""
    try:
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:
        FSDP = None
    if FSDP is not None and isinstance(wrapped, FSDP):
        config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, config):
            return wrapped.state_dict()
    return inner.state_dict()
