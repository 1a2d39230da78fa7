"""The training loop: config -> data -> model -> optimise, evaluate, checkpoint, report.

One `Trainer` trains one run directory (see events.py for the files). The loop, flat:

    for each epoch:                       heads' lr set by ban-vqa's schedule (optim.py)
        order = the epoch's sample order   from data.make_loader (deterministic: seed + epoch)
        for each optimiser step:           `accumulation` micro-batches of `micro_batch` samples
            forward under autocast, backward (scaled), unscale, clip the global norm, step
            log a step event every log_every steps; evaluate + checkpoint every eval_every steps
        evaluate + checkpoint at the end of the epoch (when eval_every is 0)

The data position is (epoch, the epoch's order, samples done), so a resumed run continues with
exactly the batches, random numbers and optimiser state of an uninterrupted one.

Several processes (torchrun, see distributed.py): the model is wrapped in DDP; each rank takes
its shard of every global micro-batch; gradients are synchronised only on the micro-batch that
steps the optimiser (no_sync before); losses, evaluation sums, stop requests and out-of-memory
decisions are reduced across ranks so every rank takes the same decisions at the same step;
rank 0 alone writes the run's files (with every rank's memory and RNG state gathered to it).

Test hooks: VQATUNE_FAULTS="oom@3,nan@5,stop@4,crash@6,error@2:1" injects, at optimiser step N
(1-based, each once per process; ":R" only on rank R): a CUDA out-of-memory error in the forward
pass, a NaN loss, a stop request (as SIGTERM), a hard exit right after the step (as kill -9, no
final status), or a Python error in the forward pass.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import checkpoint, distributed, events, optim, precision, seeding
from .config import load as load_config

log = logging.getLogger("vqatune.train")

STATUS_EVERY_S = 2.0
EVAL_BATCH_FACTOR = 2  # evaluation batch / training micro-batch
BRANCHES = ("fused", "ban", "graph", "xvlm")
FAULTS_ENV = "VQATUNE_FAULTS"
EXIT_CODES = {"done": 0, "stopped": 130}  # anything else: 1


class RunEnd(Exception):
    """Ends the run in a final state (events.FINAL_STATES) with a one-line message."""

    def __init__(self, state: str, message: str | None = None):
        super().__init__(message or state)
        self.state = state
        self.message = message


class Faults:
    """Injected failures for tests, from VQATUNE_FAULTS ("kind@step,...")."""

    def __init__(self, spec: str, rank: int = 0):
        self.pending = set()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            kind, _, where = item.partition("@")
            step, _, only_rank = where.partition(":")
            if not only_rank or int(only_rank) == rank:
                self.pending.add((kind, int(step)))

    def fire(self, kind: str, step: int) -> bool:
        if (kind, step) in self.pending:
            self.pending.discard((kind, step))
            return True
        return False


class Status:
    """status.json: the fields of the contract, rewritten atomically every 2 s by a thread."""

    def __init__(self, path: Path, enabled: bool = True, **fields):
        self.path, self.enabled = path, enabled  # disabled on ranks other than 0
        self.fields = {
            "state": "running",
            "pid": os.getpid(),
            "pid_start_time": _process_start_time(),
            "heartbeat": time.time(),
            "step": 0,
            "total_steps": 0,
            "epoch": 0,
            "epochs": 0,
            "eta_s": None,
            "samples_per_s": None,
            "best_accuracy": None,
            "last_accuracy": None,
            "started": time.time(),
            "ended": None,
            "message": None,
            "world_size": 1,
            **fields,
        }
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.write()
        self.thread = threading.Thread(target=self._beat, name="status", daemon=True)
        if enabled:
            self.thread.start()

    def update(self, **fields) -> None:
        with self.lock:
            self.fields.update(fields)

    def write(self) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.fields["heartbeat"] = time.time()
            events.write_json_atomic(self.path, dict(self.fields))

    def _beat(self) -> None:
        while not self.stopped.wait(STATUS_EVERY_S):
            try:
                self.write()
            except OSError as exc:  # a full disk: keep training, try again at the next beat
                log.error("cannot write %s: %s", self.path.name, exc)

    def close(self, **final) -> None:
        self.stopped.set()
        if self.enabled:
            self.thread.join()
        self.update(**final)
        self.write()


class _NoMetrics:
    """Ranks other than 0 write no metrics.jsonl; the trainer's calls stay the same."""

    def write(self, event: str, **fields) -> dict:
        return {"event": event, **fields}

    def close(self) -> None:
        pass


def _process_start_time() -> float:
    import psutil

    return psutil.Process().create_time()


def _finite(x: float) -> float | None:
    """JSON has no NaN: non-finite numbers are written as null."""
    return x if x is not None and math.isfinite(x) else None


class Trainer:
    def __init__(self, run_dir: Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.rank = int(os.environ.get("RANK", "0"))  # set by torchrun; 0 for a single process
        self.faults = Faults(os.environ.get(FAULTS_ENV, ""), self.rank)
        self.world = distributed.World()  # until setup joins torchrun's process group
        self.stop_requested = False
        self.started = time.time()

    # ------------------------------------------------------------------------------------------
    # Entry

    def run(self) -> int:
        """Train to the end; returns the exit code (0 done, 1 failed/diverged/oom, 130 stopped)."""
        _setup_logging(self.run_dir / events.LOG_FILE, self.rank)
        main = self.rank == 0
        self.metrics = (
            events.MetricsWriter(self.run_dir / events.METRICS_FILE) if main else _NoMetrics()
        )
        self.status = Status(self.run_dir / events.STATUS_FILE, enabled=main)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        state, message = "done", None
        try:
            self.cfg = load_config(str(self.run_dir / events.CONFIG_FILE))
            self.status.update(epochs=self.cfg.epochs)
            self.setup()
            self.fit()
        except RunEnd as end:
            state, message = end.state, end.message
        except Exception as exc:  # noqa: BLE001 - any error ends the run as failed, with its cause
            if precision.is_oom(exc):
                state, message = self._oom_end(exc)
            else:
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                state, message = "failed", self._root_cause(message)
                log.error("training failed:\n%s", traceback.format_exc())
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.finish(state, message)
        return EXIT_CODES.get(state, 1)

    def _root_cause(self, message: str) -> str:
        """Under torchrun, the first rank to fail names the cause: the others fail after it
        (a peer gone from a collective). Each failing rank leaves its error; rank 0 reports
        the earliest."""
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return message
        failed_at = time.time()
        try:
            distributed.write_error(self.run_dir, self.rank, message, failed_at)
        except OSError:
            pass
        if self.rank != 0:
            return message
        time.sleep(1.0)  # the failing rank wrote before its sockets closed; let late ones land
        errors = [e for e in distributed.read_errors(self.run_dir) if e["time"] >= self.started]
        first = min(errors, key=lambda e: e["time"], default=None)
        if first is None or first["rank"] == 0:
            if "by peer" in message:  # gloo: another rank died without a word (kill -9)
                return (
                    "another training process ended abruptly (torchrun names it in "
                    f"train.log): {message}"
                )
            return message
        return f"rank {first['rank']} failed: {first['message']}"

    def _on_signal(self, signum, frame) -> None:
        log.info(
            "received %s: finishing the current step, then stopping", signal.Signals(signum).name
        )
        self.stop_requested = True

    # ------------------------------------------------------------------------------------------
    # Setup: config -> data -> model -> optimisers

    def setup(self) -> None:
        from . import data
        from . import model as model_lib

        cfg = self.cfg
        self.world = world = distributed.init(cfg)
        seeding.seed_everything(cfg.seed)
        self.device = precision.pick_device(cfg)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RunEnd("failed", "device = cuda but no CUDA device is available")
        precision.limit_memory(cfg, self.device)
        self.precision = precision.precision_for(cfg, self.device)
        self.scaler = self.precision.scaler()

        bundle = data.build(cfg)
        self.meta = bundle.meta
        self.train_set, self.eval_set = bundle.train, bundle.eval  # train/eval_limit applied

        self.model = model_lib.build_model(cfg, self.meta).to(self.device)
        self.ddp = self.model  # what the training forward goes through
        if world.distributed:
            # Buffers are constants here: no broadcast in forward, so a rank may skip forwards
            # (out of memory) without desynchronising; branches unused by a data set (no graph).
            import warnings

            from torch.nn.parallel import DistributedDataParallel

            with warnings.catch_warnings():  # broadcast_buffers: the spelling whose meaning we want
                warnings.simplefilter("ignore", FutureWarning)
                self.ddp = DistributedDataParallel(
                    self.model,
                    device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    broadcast_buffers=False,
                    find_unused_parameters=True,
                )
            if world.rank:  # own dropout noise; rank 0 draws as a single process would
                seeding.seed_everything(cfg.seed + world.rank)
        if cfg.compile:  # the training forward only: checkpoints and evaluation use the module
            self.ddp = torch.compile(self.ddp)

        # Micro-batch and accumulation: dynamic_batch_size may change them (not their product).
        self.micro_batch = cfg.batch_size
        self.accumulation = cfg.update_freq * cfg.gradient_accumulation_steps
        # Workers, collation and pinning of the data module's loader (the order is per epoch).
        self.loader_template = data.make_loader(
            self.train_set, cfg, train=True, seed=cfg.seed, epoch=0, batch_size=self.micro_batch
        )
        self.drop_last = self.loader_template.drop_last
        self.batch_sizes, self.micro_done = [], 0  # global micro-batch sizes of the loader
        self.steps_per_epoch = self._steps_in(len(self.train_set))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.opt = optim.build(self.model.param_groups(), cfg, self.total_steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]  # after freezing

        # Position and progress (what a checkpoint restores).
        self.step, self.epoch, self.sample, self.order = 0, 0, 0, None
        self.best_accuracy, self.best_step, self.last_accuracy = None, None, None
        self.evals_since_best, self.last_eval_step = 0, None
        self.window = _Window()

        last = self.run_dir / events.CHECKPOINT_DIR / checkpoint.LAST
        state = None
        if world.main and self.resume and last.exists():
            state = checkpoint.load(last, map_location="cpu" if world.distributed else self.device)
        state = world.broadcast(state)  # rank 0's checkpoint: other servers need no copy
        restored = state is not None
        if restored:
            self._restore(state)
        n_params = sum(p.numel() for p in self.model.parameters())
        common = dict(
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            epochs=cfg.epochs,
            device=str(self.device),
            precision=self.precision.name,
            batch_size=self.micro_batch,
            accumulation=self.accumulation,
            effective_batch_size=self.micro_batch * self.accumulation * world.size,
            world_size=world.size,
            dataset=self.meta.dataset,
            train_size=len(self.train_set),
            eval_size=len(self.eval_set),
            params=n_params,
            trainable_params=sum(p.numel() for p in self.params),
        )
        if restored:
            self.metrics.write(
                "resumed",
                step=self.step,
                epoch=self.epoch_label,
                from_checkpoint=str(last),
                **common,
            )
            log.info("resumed from %s at step %d", last, self.step)
        else:
            if self.resume:
                log.info("no checkpoint to resume from: starting from the beginning")
                self.metrics.write("resumed", step=0, epoch=1, from_checkpoint=None, **common)
            else:
                self.metrics.write("start", **common)
            log.info(
                "training %s parameters on %s (%s), %d steps, effective batch %d",
                f"{n_params:,}",
                self.device,
                self.precision.name,
                self.total_steps,
                self.micro_batch * self.accumulation * world.size,
            )
            if world.distributed:
                log.info(
                    "%d processes (%d per node, %d nodes), backend %s",
                    world.size,
                    cfg.nproc_per_node,
                    cfg.nnodes,
                    torch.distributed.get_backend(),
                )
        self.status.update(
            world_size=world.size,
            total_steps=self.total_steps,
            step=self.step,
            epoch=self.epoch_label,
            best_accuracy=self.best_accuracy,
            last_accuracy=self.last_accuracy,
        )
        self.train_started, self.steps_this_process = time.time(), 0

    @property
    def epoch_label(self) -> int:
        """1-based epoch in progress; after an epoch's last step, that epoch."""
        return self.epoch + (self.sample > 0)

    def _steps_in(self, n_samples: int) -> int:
        size = self.micro_batch * self.world.size  # a global micro-batch
        micro = n_samples // size if self.drop_last else -(-n_samples // size)
        return max(1, -(-micro // self.accumulation))

    # ------------------------------------------------------------------------------------------
    # The loop

    def fit(self) -> None:
        cfg = self.cfg
        self.model.train()
        while self.epoch < cfg.epochs:
            if self.order is None:
                self.order = self._epoch_order(self.epoch)
            self.opt.start_epoch(self.epoch, cfg.lr)
            self.train_epoch()
            self.epoch, self.sample, self.order = self.epoch + 1, 0, None
            if cfg.eval_every == 0:
                self.evaluate_and_checkpoint()
                if self.world.any(self.stop_requested, self.device):  # a signal during evaluation
                    raise RunEnd("stopped", f"stopped at step {self.step}")
        if self.last_eval_step != self.step:
            self.evaluate_and_checkpoint()

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The sample order of an epoch, as the data module's loader would draw it."""
        from . import data

        loader = data.make_loader(
            self.train_set,
            self.cfg,
            train=True,
            seed=self.cfg.seed,
            epoch=epoch,
            batch_size=self.micro_batch,
        )
        batches = loader.sampler if loader.batch_size is None else loader.batch_sampler
        return np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])

    def _loader_from(self, start: int) -> DataLoader:
        """Micro-batches of the current epoch's order from sample `start` on."""
        order, size = self.order, self.micro_batch
        if self.world.distributed:  # this rank's part of each global micro-batch
            batches, self.batch_sizes = distributed.shard(
                order[start:], size, self.world.size, self.world.rank, self.drop_last
            )
        else:
            batches = [order[i : i + size] for i in range(start, len(order), size)]
            if self.drop_last and batches and len(batches[-1]) < size:
                batches.pop()
            self.batch_sizes = [len(b) for b in batches]
        self.micro_done = 0
        t = self.loader_template
        if t.batch_size is None:  # the sampler yields whole batches (the data module's fast path)
            batching = {"sampler": batches, "batch_size": None}
        else:
            batching = {"batch_sampler": batches}
        # Our own generator: iterating never draws from the global RNG (exact resume).
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.epoch)
        return DataLoader(
            t.dataset,
            collate_fn=t.collate_fn,
            num_workers=t.num_workers,
            pin_memory=t.pin_memory,
            worker_init_fn=t.worker_init_fn,
            generator=generator,
            prefetch_factor=t.prefetch_factor if t.num_workers else None,
            **batching,
        )

    def train_epoch(self) -> None:
        while True:
            loader = self._loader_from(self.sample)
            remaining = len(loader)  # micro-batches left in the epoch
            if remaining == 0:
                return
            batches = iter(loader)
            try:
                while remaining:
                    n_micro = min(self.accumulation, remaining)
                    self.train_step(batches, n_micro)
                    remaining -= n_micro
                    self.after_step()
                return
            except Exception as exc:
                if not precision.is_oom(exc):
                    raise
                del batches
                self._handle_oom(exc)  # retries the step with smaller micro-batches, or ends

    def train_step(self, batches, n_micro: int) -> None:
        """One optimiser step over n_micro micro-batches (on every rank)."""
        model, world, step = self.model, self.world, self.step + 1
        self.opt.zero_grad()
        losses = torch.zeros(
            1 + len(BRANCHES), device=self.device
        )  # total, fused, ban, graph, xvlm
        oom = None
        # DDP all-reduces gradients in the backward of a micro-batch run outside no_sync: the
        # last one. With dynamic_batch_size every micro-batch runs under no_sync and the
        # gradients are all-reduced after the ranks agree that none ran out of memory (DDP's
        # reducer cannot take back a synchronising forward whose backward never comes).
        manual_sync = world.distributed and self.cfg.dynamic_batch_size
        for i in range(n_micro):
            ddp_sync = world.distributed and i == n_micro - 1 and not manual_sync
            try:
                batch = _to_device(next(batches), self.device)
                if i == 0 and self.faults.fire("oom", step):
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected for a test)")
                if i == 0 and self.faults.fire("error", step):
                    raise RuntimeError(f"injected failure at step {step} (a test)")
                with self.ddp.no_sync() if world.distributed and not ddp_sync else nullcontext():
                    with self.precision.autocast():
                        out = self.ddp(batch)
                        loss, parts = model.loss(out, batch)
                    if i == 0 and self.faults.fire("nan", step):
                        loss = loss * float("nan")
                    if not ddp_sync:
                        self.scaler.scale(loss / n_micro).backward()
            except Exception as exc:
                if not (world.distributed and precision.is_oom(exc)):
                    raise
                oom = exc  # agreed on below, before any gradient is synchronised
                break
            losses += torch.stack(
                [loss.detach().float()] + [parts[b].detach().float() for b in BRANCHES]
            )
        if world.distributed and world.any(oom is not None, self.device):
            raise oom or torch.cuda.OutOfMemoryError("CUDA out of memory on another rank")
        if ddp_sync:
            self.scaler.scale(loss / n_micro).backward()
        elif manual_sync:
            self._average_gradients()
        samples = sum(self.batch_sizes[self.micro_done : self.micro_done + n_micro])  # all ranks
        self.micro_done += n_micro
        # Every rank sees the global mean losses: the same divergence decision everywhere.
        losses = (world.sum(losses) / (n_micro * world.size)).tolist()
        if not math.isfinite(losses[0]):
            raise RunEnd(
                "diverged",
                f"loss became {losses[0]} at step {step}; "
                f"try a lower lr/xvlm_lr or a smaller clip_norm",
            )
        self.opt.unscale(self.scaler)
        max_norm = self.cfg.clip_norm if self.cfg.clip_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)  # norm before clipping
        self.opt.step(self.scaler)
        self.step, self.sample = step, self.sample + samples
        self.steps_this_process += 1
        self.window.add(losses, grad_norm, samples)

    def _average_gradients(self) -> None:
        """All-reduce the gradients in one flat buffer (DDP's job when it synchronises)."""
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        for p in self.params:
            if p.grad is None:  # the same tensors on every rank
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in self.params]
        flat = self.world.sum(_flatten_dense_tensors(grads)) / self.world.size
        for g, averaged in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(averaged)

    def after_step(self) -> None:
        cfg, step = self.cfg, self.step
        if step % cfg.log_every == 0:
            self._log_step()
        elapsed = time.time() - self.train_started
        eta = elapsed / self.steps_this_process * (self.total_steps - step)
        self.status.update(step=step, epoch=self.epoch_label, eta_s=round(eta, 1))
        if self.faults.fire("stop", step):
            self.stop_requested = True
        evaluated = False
        if cfg.eval_every and step % cfg.eval_every == 0:
            self.evaluate_and_checkpoint()
            evaluated = True
        if self.world.any(self.stop_requested, self.device):  # every rank stops at this step
            if not evaluated:
                self.save_checkpoint(best=False)
            raise RunEnd("stopped", f"stopped at step {step}")
        if cfg.max_steps and step >= cfg.max_steps:
            if not evaluated:
                self.evaluate_and_checkpoint()
            raise RunEnd("done", f"reached max_steps = {cfg.max_steps}")
        if self.faults.fire("crash", step):
            os._exit(3)

    def _log_step(self) -> None:
        w = self.window
        memory = self.world.gather(precision.memory_stats(self.device))  # every rank's
        per_rank = {"memory_ranks": memory} if self.world.distributed else {}
        record = self.metrics.write(
            "step",
            step=self.step,
            epoch=self.epoch_label,
            loss=_finite(w.mean(0)),
            losses={b: _finite(w.mean(i + 1)) for i, b in enumerate(BRANCHES)},
            lr=self.opt.lr("heads"),
            xvlm_lr=self.opt.lr("backbone"),
            grad_norm=_finite(w.grad_norm),
            batch_size=self.micro_batch,
            accumulation=self.accumulation,
            samples_per_s=round(w.samples_per_s(), 2),
            memory=memory[0],
            **per_rank,
        )
        self.status.update(samples_per_s=record["samples_per_s"])
        log.info(
            "step %d/%d epoch %d: loss %s, lr %.3g, xvlm_lr %.3g, %.0f samples/s",
            self.step,
            self.total_steps,
            self.epoch_label,
            record["loss"],
            record["lr"],
            record["xvlm_lr"],
            record["samples_per_s"],
        )
        self.window = _Window()

    # ------------------------------------------------------------------------------------------
    # Evaluation, early stopping, checkpoints

    @torch.inference_mode()
    def evaluate(self) -> dict:
        from . import data

        started = time.time()
        self.model.eval()
        loader = data.make_loader(
            self.eval_set,
            self.cfg,
            train=False,
            seed=self.cfg.seed,
            epoch=0,
            batch_size=EVAL_BATCH_FACTOR * self.micro_batch,  # no activations kept for backward
        )
        world = self.world
        if world.distributed:  # every world.size-th batch; the sums are reduced below
            t = loader
            mine = [b for j, b in enumerate(t.sampler) if j % world.size == world.rank]
            loader = DataLoader(
                t.dataset,
                sampler=mine,
                batch_size=None,
                collate_fn=t.collate_fn,
                num_workers=t.num_workers,
                pin_memory=t.pin_memory,
                prefetch_factor=t.prefetch_factor if t.num_workers else None,
            )
        n_types = len(self.meta.answer_types)
        correct = torch.zeros(len(BRANCHES), device=self.device, dtype=torch.float64)
        type_correct = torch.zeros(n_types, device=self.device, dtype=torch.float64)
        type_count = torch.zeros(n_types, device=self.device, dtype=torch.float64)
        loss_sum, n = torch.zeros((), device=self.device, dtype=torch.float64), 0
        for batch in loader:
            batch = _to_device(batch, self.device)
            with self.precision.autocast():
                out = self.model(batch)
                loss, _ = self.model.loss(out, batch)
            size = batch["q_tokens"].shape[0]
            for i, branch in enumerate(BRANCHES):
                pred = out["logits"][branch].argmax(-1, keepdim=True)
                score = batch["score"].gather(1, pred).squeeze(1).double()  # official accuracy
                correct[i] += score.sum()
                if branch == "fused":
                    type_correct.index_add_(0, batch["answer_type"], score)
                    type_count.index_add_(0, batch["answer_type"], torch.ones_like(score))
            loss_sum += loss.detach().double() * size
            n += size
        self.model.train()
        if world.distributed:
            sums = world.sum(
                torch.cat(
                    [
                        correct,
                        type_correct,
                        type_count,
                        loss_sum.view(1),
                        torch.tensor([float(n)], dtype=torch.float64, device=self.device),
                    ]
                )
            )
            k = len(BRANCHES)
            correct, type_correct = sums[:k], sums[k : k + n_types]
            type_count, loss_sum = sums[k + n_types : k + 2 * n_types], sums[-2]
            n = int(sums[-1].item())
        accuracy = (correct / max(n, 1)).tolist()
        result = {
            "accuracy": accuracy[0],
            "accuracy_branch": dict(zip(BRANCHES, accuracy)),
            "loss": _finite(loss_sum.item() / max(n, 1)),
            "questions": n,
        }
        if n_types > 1:
            result["accuracy_type"] = {
                name: (c / k if k else None)
                for name, c, k in zip(
                    self.meta.answer_types, type_correct.tolist(), type_count.tolist()
                )
            }
        result["duration_s"] = round(time.time() - started, 3)
        return result

    def evaluate_and_checkpoint(self) -> None:
        result = self.evaluate()
        accuracy = result["accuracy"]
        best = self.best_accuracy is None or accuracy > self.best_accuracy
        if best:
            self.best_accuracy, self.best_step, self.evals_since_best = accuracy, self.step, 0
        else:
            self.evals_since_best += 1
        self.last_accuracy, self.last_eval_step = accuracy, self.step
        self.metrics.write("eval", step=self.step, epoch=self.epoch_label, **result)
        log.info(
            "step %d: accuracy %.4f (best %.4f at step %d)",
            self.step,
            accuracy,
            self.best_accuracy,
            self.best_step,
        )
        self.status.update(last_accuracy=accuracy, best_accuracy=self.best_accuracy)
        self.save_checkpoint(best=best)
        patience = self.cfg.patience
        if patience and self.evals_since_best >= patience:
            self.metrics.write(
                "early_stop",
                step=self.step,
                epoch=self.epoch_label,
                best_accuracy=self.best_accuracy,
                best_step=self.best_step,
                patience=patience,
            )
            raise RunEnd("done", f"early stop: no better accuracy in {patience} evaluations")

    def save_checkpoint(self, best: bool) -> None:
        rngs = self.world.gather(seeding.rng_state())  # exact resume needs every rank's
        if not self.world.main:
            return
        folder = self.run_dir / events.CHECKPOINT_DIR
        path = folder / checkpoint.LAST
        checkpoint.save(
            {
                "step": self.step,
                "epoch": self.epoch,
                "config": self.cfg.to_dict(),
                "model": self.model.state_dict(),
                "optimisation": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rngs[0],
                "rng_ranks": rngs,
                "world_size": self.world.size,
                "data": {
                    "epoch": self.epoch,
                    "sample": self.sample,
                    "order": self.order,
                    "batch_size": self.micro_batch,
                    "accumulation": self.accumulation,
                },
                "progress": {
                    "best_accuracy": self.best_accuracy,
                    "best_step": self.best_step,
                    "last_accuracy": self.last_accuracy,
                    "last_eval_step": self.last_eval_step,
                    "evals_since_best": self.evals_since_best,
                    "window": self.window.state(),
                },
            },
            path,
        )
        if best:
            checkpoint.link(path, folder / checkpoint.BEST)
        self.metrics.write(
            "checkpoint",
            step=self.step,
            epoch=self.epoch_label,
            path=str(path.relative_to(self.run_dir)),
            best=best,
        )

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        d = state["data"]
        self.epoch, self.sample, self.step = d["epoch"], d["sample"], state["step"]
        self.order = d["order"]
        if (d["batch_size"], d["accumulation"]) != (self.micro_batch, self.accumulation):
            self.micro_batch, self.accumulation = d["batch_size"], d["accumulation"]
        self.opt.load_state_dict(state["optimisation"])
        self.scaler.load_state_dict(state["scaler"])
        p = state["progress"]
        self.best_accuracy, self.best_step = p["best_accuracy"], p["best_step"]
        self.last_accuracy, self.last_eval_step = p["last_accuracy"], p["last_eval_step"]
        self.evals_since_best = p["evals_since_best"]
        self.window = _Window.from_state(p["window"])
        rngs = state.get("rng_ranks") or [state["rng"]]
        if len(rngs) == self.world.size:
            seeding.set_rng_state(rngs[self.world.rank])
        else:  # another world size: the data position is exact, the random numbers are not
            log.warning("checkpoint of %d processes resumed with %d", len(rngs), self.world.size)
            if self.world.main:
                seeding.set_rng_state(state["rng"])

    # ------------------------------------------------------------------------------------------
    # Out of memory

    def _handle_oom(self, exc: BaseException) -> None:
        self.opt.zero_grad()
        precision.free_memory(self.device)
        old = self.micro_batch
        if not self.cfg.dynamic_batch_size or old == 1:
            raise RunEnd(*self._oom_end(exc))
        self.micro_batch, self.accumulation = old // 2, self.accumulation * 2
        self.metrics.write(
            "batch_resized",
            step=self.step + 1,
            old_batch_size=old,
            new_batch_size=self.micro_batch,
            accumulation=self.accumulation,
        )
        log.warning(
            "out of memory at step %d: micro-batch %d -> %d, accumulation %d",
            self.step + 1,
            old,
            self.micro_batch,
            self.accumulation,
        )

    def _oom_end(self, exc: BaseException) -> tuple[str, str]:
        advice = precision.oom_advice(self.cfg)
        batch = getattr(self, "micro_batch", self.cfg.batch_size)
        self.metrics.write(
            "oom",
            step=getattr(self, "step", 0) + 1,
            batch_size=batch,
            message=str(exc).splitlines()[0],
            advice=advice,
        )
        return "oom", f"out of memory at batch size {batch}: {advice}"

    # ------------------------------------------------------------------------------------------
    # End

    def finish(self, state: str, message: str | None) -> None:
        step = getattr(self, "step", 0)
        ended = time.time()
        summary = {
            "state": state,
            "message": message,
            "step": step,
            "total_steps": getattr(self, "total_steps", None),
            "epoch": self.epoch_label if hasattr(self, "sample") else 0,
            "epochs": self.status.fields["epochs"],
            "best_accuracy": getattr(self, "best_accuracy", None),
            "best_step": getattr(self, "best_step", None),
            "final_accuracy": getattr(self, "last_accuracy", None),
            "duration_s": round(ended - self.started, 3),
        }
        # Each record on its own: one failing (a full disk) must not cost the others.
        writes = (
            lambda: self.metrics.write("end", **summary),
            self.metrics.close,
            lambda: events.write_json_atomic(self.run_dir / events.SUMMARY_FILE, summary),
            lambda: self.status.close(
                state=state, ended=ended, message=message, step=step, eta_s=0
            ),
        )
        for write in writes if self.rank == 0 else writes[3:]:  # status: a no-op off rank 0
            try:
                write()
            except OSError as exc:
                log.error("cannot write the end of the run: %s", exc)
        try:
            self.world.close()
        except Exception as exc:  # noqa: BLE001 - a peer already gone; the run has ended anyway
            log.warning("leaving the process group: %s", exc)
        (log.info if state == "done" else log.warning)(
            "run %s%s", state, f": {message}" if message else ""
        )


class _Window:
    """Sums between two step events: mean losses, last grad norm, throughput."""

    def __init__(self, sums=None, steps=0, samples=0, grad_norm=None):
        self.sums = sums or [0.0] * (1 + len(BRANCHES))
        self.steps, self.samples, self.grad_norm = steps, samples, grad_norm
        self.started = time.time()

    def add(self, losses: list[float], grad_norm: torch.Tensor, samples: int) -> None:
        self.sums = [s + x for s, x in zip(self.sums, losses)]
        self.steps += 1
        self.samples += samples
        self.grad_norm = float(grad_norm)

    def mean(self, i: int) -> float:
        return self.sums[i] / max(self.steps, 1)

    def samples_per_s(self) -> float:
        return self.samples / max(time.time() - self.started, 1e-9)

    def state(self) -> dict:
        return {
            "sums": self.sums,
            "steps": self.steps,
            "samples": self.samples,
            "grad_norm": self.grad_norm,
        }

    @classmethod
    def from_state(cls, s: dict) -> _Window:
        return cls(list(s["sums"]), s["steps"], s["samples"], s["grad_norm"])


def _to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _setup_logging(path: Path, rank: int = 0) -> None:
    """Log to train.log; echo to stdout too unless stdout already is train.log. Under torchrun,
    lines carry the rank, and ranks other than 0 log only warnings and errors."""
    tag = f"[rank {rank}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    try:
        same = os.path.exists(path) and os.path.samefile(
            path, f"/proc/self/fd/{sys.stdout.fileno()}"
        )
    except (OSError, ValueError, AttributeError):
        same = False
    if not same:
        handlers.append(logging.StreamHandler(sys.stdout))
    for h in handlers:
        h.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(message)s", "%H:%M:%S"))
    root = logging.getLogger("vqatune")
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.propagate = False
