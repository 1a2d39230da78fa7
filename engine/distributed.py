"""Several training processes, one run: torch.distributed (DDP) started by torchrun.

Launch (torch-free): `torchrun_command(run_dir, cfg)` is the command runstore.launch starts when
the run has nproc_per_node x nnodes > 1 processes:

    python -m torch.distributed.run --standalone --nproc_per_node N -m vqatune.engine.train RUN_DIR
    python -m torch.distributed.run --nnodes M --node_rank R --rdzv_endpoint HOST:PORT \\
        --nproc_per_node N -m vqatune.engine.train RUN_DIR              (one per server)

In the training process, `init(cfg)` joins the process group torchrun set up (nccl on CUDA,
gloo on CPU) and returns a `World`: rank, world size and the few collectives the trainer needs.
A process started without torchrun gets a world of one, whose collectives do nothing.

Data: `shard(order, micro_batch, world)` splits an epoch's global order (the same on every rank:
seed + epoch) into per-rank micro-batches, so that the ranks' k-th micro-batches together are the
k-th global micro-batch of micro_batch x world samples: DDP's averaged gradient is the gradient of
a single process with that batch.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .config import ConfigError

ERROR_FILE = ".rank-{rank}.error"  # a failing rank's one-line error, read by rank 0


def world_size_of(cfg) -> int:
    return cfg.nproc_per_node * cfg.nnodes


def torchrun_command(run_dir, cfg, resume: bool = False) -> list[str]:
    """The torchrun command line of a distributed run. Raises ConfigError on a bad combination."""
    if cfg.nnodes > 1 and not cfg.rdzv_endpoint:
        raise ConfigError(
            "rdzv_endpoint: nnodes > 1 needs the HOST:PORT of node 0 (--rdzv-endpoint)"
        )
    if cfg.node_rank >= cfg.nnodes:
        raise ConfigError(f"node_rank: {cfg.node_rank} is not below nnodes = {cfg.nnodes}")
    if cfg.rdzv_endpoint and not cfg.rdzv_endpoint.rpartition(":")[2].isdigit():
        raise ConfigError(f"rdzv_endpoint: {cfg.rdzv_endpoint!r} is not HOST:PORT")
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if cfg.nnodes == 1:
        cmd.append("--standalone")  # a free local port, no endpoint to configure
    else:
        # Static rendezvous: node ranks as given; the endpoint is node 0's master address.
        cmd += [
            "--nnodes",
            str(cfg.nnodes),
            "--node_rank",
            str(cfg.node_rank),
            "--rdzv_endpoint",
            cfg.rdzv_endpoint,
        ]
    cmd += ["--nproc_per_node", str(cfg.nproc_per_node), "-m", "vqatune.engine.train", str(run_dir)]
    return cmd + (["--resume"] if resume else [])


def shard(
    order: np.ndarray, micro_batch: int, world: int, rank: int, drop_last: bool
) -> tuple[list[np.ndarray], list[int]]:
    """This rank's micro-batches of `order`, and each global micro-batch's size (samples taken
    from the order, for the data position). Every rank gets the same number of micro-batches:
    a short last global batch is split evenly, padded from the order's start like
    DistributedSampler; with drop_last it is dropped."""
    size = micro_batch * world
    batches, sizes = [], []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]  # [<= micro_batch * world]
        if len(chunk) < size:
            if drop_last:
                break
            per_rank = -(-len(chunk) // world)
            pad = per_rank * world - len(chunk)
            chunk = np.concatenate([chunk, np.resize(order, pad)]) if pad else chunk
        per_rank = len(chunk) // world
        batches.append(chunk[rank * per_rank : (rank + 1) * per_rank])
        sizes.append(min(size, len(order) - start))
    return batches, sizes


@dataclass
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    node_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run's status, metrics, checkpoints and summary."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def any(self, flag: bool, device) -> bool:
        """True on every rank when the flag is set on any: stop, out-of-memory agreement."""
        return self.any_each([flag], device)[0]

    def any_each(self, flags: list[bool], device) -> list[bool]:
        """`any` of several flags in one collective (stop requested, checkpoint due)."""
        if not self.distributed:
            return [bool(f) for f in flags]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(x > 0) for x in t.tolist()]

    def sum(self, tensor):
        """All-reduce (sum) in place; returns the tensor."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def sum_each(self, tensors: list) -> list:
        """Every tensor summed over the ranks, in one collective (the evaluation's sums)."""
        if not self.distributed:
            return tensors
        import torch

        flat = self.sum(torch.cat([t.reshape(-1) for t in tensors]))
        return [
            part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)
        ]

    def gather(self, obj) -> list:
        """Every rank's obj, in rank order (on every rank)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's obj on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def init(cfg) -> World:
    """Join torchrun's process group (environment RANK, WORLD_SIZE, LOCAL_RANK), or a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # precision.pick_device takes the current device
    dist.init_process_group("nccl" if cuda else "gloo")
    return World(
        rank=dist.get_rank(),
        local_rank=local_rank,
        size=dist.get_world_size(),
        node_rank=int(os.environ.get("GROUP_RANK", "0")),
    )


def wrap(model, device):
    """The model in DDP. Buffers are constants here: no broadcast in forward, so a rank may skip
    forwards (out of memory) without desynchronising; branches unused by a data set (no graph)."""
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    with warnings.catch_warnings():  # broadcast_buffers: the spelling whose meaning we want
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=True,
        )


def average_gradients(params: list, world: World) -> None:
    """All-reduce the gradients in one flat buffer (DDP's job when it synchronises)."""
    import torch
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    for p in params:
        if p.grad is None:  # the same tensors on every rank
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = world.sum(_flatten_dense_tensors(grads)) / world.size
    for g, averaged in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(averaged)


def write_error(run_dir, rank: int, message: str, when: float) -> None:
    """A failing rank leaves its error for rank 0, whose status then names the first."""
    from .events import write_json_atomic

    write_json_atomic(
        run_dir / ERROR_FILE.format(rank=rank), {"rank": rank, "message": message, "time": when}
    )


def read_errors(run_dir) -> list[dict]:
    from .events import read_json

    found = [read_json(p) for p in sorted(run_dir.glob(ERROR_FILE.format(rank="*")))]
    return [e for e in found if e]


def eval_share(loader, world: World):
    """This rank's part of an evaluation loader: every world.size-th batch (the sums are then
    reduced with `World.sum_each`). The loader itself with one process."""
    if not world.distributed:
        return loader
    from torch.utils.data import DataLoader

    mine = [b for j, b in enumerate(loader.sampler) if j % world.size == world.rank]
    return DataLoader(
        loader.dataset,
        sampler=mine,
        batch_size=None,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
    )


def root_cause(run_dir, rank: int, message: str, started: float) -> str:
    """Under torchrun, the first rank to fail names the cause: the others fail after it (a peer
    gone from a collective). Each failing rank leaves its error; rank 0 reports the earliest
    since `started` (this process's start)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return message
    try:
        write_error(run_dir, rank, message, time.time())
    except OSError:
        pass
    if rank != 0:
        return message
    time.sleep(1.0)  # the failing rank wrote before its sockets closed; let late ones land
    errors = [e for e in read_errors(run_dir) if e["time"] >= started]
    first = min(errors, key=lambda e: e["time"], default=None)
    if first is None or first["rank"] == 0:
        if "by peer" in message:  # gloo: another rank died without a word (kill -9)
            return (
                "another training process ended abruptly (torchrun names it in "
                f"train.log): {message}"
            )
        return message
    return f"rank {first['rank']} failed: {first['message']}"
