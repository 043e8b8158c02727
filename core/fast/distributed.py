"""Importance beyond one machine: ``torchrun`` processes each take a share of D's batches.

    torchrun --standalone --nproc_per_node=K -m core importance --forget class:3 --output maps.safetensors

Batches are formed exactly as in one process and dealt out whole (batch i to process i mod K), so
batch mode sees identical batches; each process sums |g| (or g²) over its own, the sums and the
counts are all-reduced (gloo on CPU, NCCL on GPUs), and every process divides by the global
count. The result equals the one-process importance up to the order of float additions, and is
cached under the same key in the same format, so the app loads it like any other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator

import torch
from torch import nn


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    local_rank: int
    backend: str  # "gloo" or "nccl"
    device: torch.device

    def shard(self, loader) -> "ShardedLoader":
        return ShardedLoader(loader, self.rank, self.world)

    def reduce(self, totals: list[torch.Tensor], count: int) -> int:
        """Sum ``totals`` (in place) and ``count`` over every process; returns the global count."""
        import torch.distributed as dist

        if totals:
            flat = torch.cat([t.reshape(-1) for t in totals])  # one collective, not one per tensor
            dist.all_reduce(flat)
            offset = 0
            for t in totals:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
        counter = torch.tensor([float(count)], dtype=torch.float64, device=self.device)
        dist.all_reduce(counter)
        return int(counter.item())

    def all_agree(self, flag: bool) -> bool:
        """True only when ``flag`` is true in every process."""
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def same_model(self, load: Callable[[], tuple[nn.Module, bool]]) -> tuple[nn.Module, bool]:
        """The baseline model in every process, on this process's device: the first process loads
        (or trains and caches) it first, the others then load it, and the first process's weights
        are broadcast so every process holds exactly the same ones."""
        import torch.distributed as dist

        if self.rank == 0:
            model, hit = load()
        self.barrier()
        if self.rank != 0:
            model, hit = load()
        model = model.to(self.device)
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
        return model, hit

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def from_environment() -> Group | None:
    """The process group torchrun describes in the environment (``WORLD_SIZE`` > 1), or None."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if one_gpu_each(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)):
        backend, device = "nccl", torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        backend, device = "gloo", torch.device("cpu")
    if not dist.is_initialized():  # rank 0 may train the baseline first while the others wait
        dist.init_process_group(backend, timeout=timedelta(hours=4))
    return Group(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def one_gpu_each(local_processes: int) -> bool:
    """NCCL needs a GPU of its own for every process on this machine (it refuses two on one GPU);
    every process decides from the same counts, so all pick the same backend."""
    return torch.cuda.is_available() and torch.cuda.device_count() >= local_processes


class ShardedLoader:
    """Batches i ≡ rank (mod world) of ``loader``; the batches themselves are unchanged."""

    def __init__(self, loader, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world

    def __len__(self) -> int:
        return len(range(self.rank, len(self.loader), self.world))

    def __iter__(self) -> Iterator:
        if hasattr(self.loader, "batch") and hasattr(self.loader, "__len__"):
            for i in range(self.rank, len(self.loader), self.world):
                yield self.loader.batch(i)  # only this process's batches are even normalised
            return
        for i, batch in enumerate(self.loader):
            if i % self.world == self.rank:
                yield batch

    def content_key(self) -> str:
        return self.loader.content_key()
