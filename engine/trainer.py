"""The training loop: config -> data -> model -> optimise, evaluate, checkpoint, report.

One `Trainer` trains one run directory (see events.py for the files). The loop, flat (`fit`):

    for each epoch:                       heads' lr set by ban-vqa's schedule (optim.py)
        order = the epoch's sample order   from data.make_loader (deterministic: seed + epoch)
        for each optimiser step:           `accumulation` micro-batches of `micro_batch` samples
            forward under autocast, backward (scaled), unscale, clip the global norm, step
            log a step event every log_every steps; evaluate + checkpoint every eval_every steps;
            a checkpoint between evaluations every checkpoint_every_min minutes
        evaluate + checkpoint at the end of the epoch (when eval_every is 0)

Where the run stands is a `Progress` (progress.py): the data position (epoch, the epoch's order,
samples done) and the evaluations so far. A checkpoint holds it with the model, optimiser,
scaler and RNG states, so a resumed run continues with exactly the batches, random numbers and
optimiser state of an uninterrupted one, from any step.

Several processes (torchrun, see distributed.py): the model is wrapped in DDP; each rank takes
its shard of every global micro-batch; gradients are synchronised only on the micro-batch that
steps the optimiser (no_sync before); losses, evaluation sums, stop requests, checkpoint times
and out-of-memory decisions are reduced across ranks so every rank takes the same decisions at
the same step; rank 0 alone writes the run's files (with every rank's memory and RNG state
gathered to it).

Tests inject failures at named points (faults.py, VQATUNE_FAULTS).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import checkpoint, distributed, events, exitcodes, logs, optim, precision, seeding
from .config import load as load_config
from .data.statwords import inactive_params
from .faults import Faults
from .model.vqa_model import OUTPUTS
from .official import score_batches
from .progress import Progress, Window

log = logging.getLogger("vqatune.train")

EVAL_BATCH_FACTOR = 2  # evaluation batch / training micro-batch


class RunEnd(Exception):
    """Ends the run in a final state (events.FINAL_STATES) with a one-line message."""

    def __init__(self, state: str, message: str | None = None):
        super().__init__(message or state)
        self.state = state
        self.message = message


def _finite(x: float) -> float | None:
    """JSON has no NaN: non-finite numbers are written as null."""
    return x if x is not None and math.isfinite(x) else None


class Trainer:
    def __init__(self, run_dir: Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.rank = int(os.environ.get("RANK", "0"))  # set by torchrun; 0 for a single process
        self.faults = Faults.from_env(self.rank)
        self.world = distributed.World()  # until setup joins torchrun's process group
        self.progress = Progress()  # what a checkpoint restores (with the tensors)
        self.total_steps: int | None = None  # known once the data is loaded
        self.stop_requested = False
        self.started = time.time()

    # ------------------------------------------------------------------------------------------
    # Entry

    def run(self) -> int:
        """Train to the end; returns the exit code (0 done, 1 failed/diverged/oom, 130 stopped)."""
        logs.setup(self.run_dir / events.LOG_FILE, self.rank)
        main = self.rank == 0
        self.metrics = (
            events.MetricsWriter(self.run_dir / events.METRICS_FILE) if main else events.NoMetrics()
        )
        self.status = events.Status(self.run_dir / events.STATUS_FILE, enabled=main)
        # A signal only asks for a stop until the final state is written: torchrun answers a
        # peer's exit with SIGTERM, which must not cut rank 0's last writes short.
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            state, message = self._train()
            self.finish(state, message)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return exitcodes.for_state(state)

    def _train(self) -> tuple[str, str | None]:
        """Set up and train; the final state and its message."""
        try:
            self.cfg = load_config(str(self.run_dir / events.CONFIG_FILE))
            self.status.update(epochs=self.cfg.epochs)
            self.setup()
            self.fit()
        except RunEnd as end:
            return end.state, end.message
        except Exception as exc:  # noqa: BLE001 - any error ends the run as failed, with its cause
            if precision.is_oom(exc):
                return self._oom_end(exc)
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            message = distributed.root_cause(self.run_dir, self.rank, message, self.started)
            log.error("training failed:\n%s", traceback.format_exc())
            return "failed", message
        return "done", None

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

        cfg, p = self.cfg, self.progress
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
        self.forward_model = self.model  # what the training forward goes through (DDP or not)
        if world.distributed:
            self.forward_model = distributed.wrap(self.model, self.device)
            if world.rank:  # own dropout noise; rank 0 draws as a single process would
                seeding.seed_everything(cfg.seed + world.rank)
        if cfg.compile:  # the training forward only: checkpoints and evaluation use the module
            self.forward_model = torch.compile(self.forward_model)

        # Micro-batch and accumulation: dynamic_batch_size may change them (not their product).
        p.micro_batch = cfg.batch_size
        p.accumulation = cfg.update_freq * cfg.gradient_accumulation_steps
        # Workers, collation and pinning of the data module's loader (the order is per epoch).
        self.loader_template = data.make_loader(
            self.train_set, cfg, train=True, seed=cfg.seed, epoch=0, batch_size=p.micro_batch
        )
        self.drop_last = self.loader_template.drop_last
        self.batch_sizes, self.micro_done = [], 0  # global micro-batch sizes of the loader
        self.steps_per_epoch = self._steps_in(len(self.train_set))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.opt = optim.build(self.model.param_groups(), cfg, self.total_steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]  # after freezing

        last = self.run_dir / events.CHECKPOINT_DIR / checkpoint.LAST
        state = None
        if world.main and self.resume and last.exists():
            try:
                state = checkpoint.load(
                    last, map_location="cpu" if world.distributed else self.device
                )
            except checkpoint.CheckpointError as exc:
                raise RunEnd("failed", str(exc)) from None
        state = world.broadcast(state)  # rank 0's checkpoint: other servers need no copy
        if state is not None:
            self._restore(state)
        self._announce(restored_from=last if state is not None else None)
        self.train_started, self.steps_this_process = time.time(), 0
        self.checkpointed_at = self.train_started  # training since then is not in a checkpoint

    def _announce(self, restored_from: Path | None) -> None:
        """The start (or resumed) event, the log's first lines and the status's totals."""
        cfg, p, world = self.cfg, self.progress, self.world
        n_params = sum(x.numel() for x in self.model.parameters())
        common = dict(
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            epochs=cfg.epochs,
            device=str(self.device),
            precision=self.precision.name,
            batch_size=p.micro_batch,
            accumulation=p.accumulation,
            effective_batch_size=p.micro_batch * p.accumulation * world.size,
            world_size=world.size,
            dataset=self.meta.dataset,
            train_size=len(self.train_set),
            eval_size=len(self.eval_set),
            params=n_params,
            backbone_sizes=self.model.backbone.sizes.to_dict(),  # the YAML's or the given ones
            trainable_params=sum(x.numel() for x in self.params),
            statistics_words=self.meta.counts.get("sources", {}).get("statistics_words", "none"),
            inactive=inactive_params(self.meta),
        )
        if common["inactive"] and world.main:
            log.warning(
                "no statistics words for this data: %s do nothing in this run",
                ", ".join(common["inactive"]),
            )
        if restored_from is not None:
            self.metrics.write(
                "resumed",
                step=p.step,
                epoch=p.epoch_label,
                from_checkpoint=str(restored_from),
                **common,
            )
            log.info("resumed from %s at step %d", restored_from, p.step)
        else:
            if self.resume:
                log.info("no checkpoint to resume from: starting from the beginning")
                self.metrics.write("resumed", step=0, epoch=1, from_checkpoint=None, **common)
            else:
                # what initialised the model (X-VLM checkpoint report) and what X-VLM reads
                self.metrics.write(
                    "start",
                    **common,
                    checkpoint=self.model.checkpoint_report,
                    xvlm_input=self.model.backbone.xvlm_input,
                )
            log.info(
                "training %s parameters on %s (%s), %d steps, effective batch %d",
                f"{n_params:,}",
                self.device,
                self.precision.name,
                self.total_steps,
                p.micro_batch * p.accumulation * world.size,
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
            step=p.step,
            epoch=p.epoch_label,
            best_accuracy=p.best_accuracy,
            last_accuracy=p.last_accuracy,
        )

    def _steps_in(self, n_samples: int) -> int:
        p = self.progress
        size = p.micro_batch * self.world.size  # a global micro-batch
        micro = n_samples // size if self.drop_last else -(-n_samples // size)
        return max(1, -(-micro // p.accumulation))

    # ------------------------------------------------------------------------------------------
    # The loop

    def fit(self) -> None:
        cfg, p = self.cfg, self.progress
        self.model.train()
        while p.epoch < cfg.epochs:
            if p.order is None:
                p.order = self._epoch_order(p.epoch)
            self.opt.start_epoch(p.epoch, cfg.lr)
            self.train_epoch()
            p.epoch, p.epoch_samples_done, p.order = p.epoch + 1, 0, None
            if cfg.eval_every == 0:
                self.evaluate_and_checkpoint()
                if self.world.any(self.stop_requested, self.device):  # a signal during evaluation
                    raise RunEnd("stopped", f"stopped at step {p.step}")
        if p.last_eval_step != p.step:
            self.evaluate_and_checkpoint()

    def train_epoch(self) -> None:
        while True:
            loader = self._loader_from(self.progress.epoch_samples_done)
            remaining = len(loader)  # micro-batches left in the epoch
            if remaining == 0:
                return
            batches = iter(loader)
            try:
                while remaining:
                    n_micro = min(self.progress.accumulation, remaining)
                    self.train_step(batches, n_micro)
                    remaining -= n_micro
                    self.after_step(epoch_ends=remaining == 0)
                return
            except Exception as exc:
                if not precision.is_oom(exc):
                    raise
                del batches
                self._handle_oom(exc)  # retries the step with smaller micro-batches, or ends

    def train_step(self, batches, n_micro: int) -> None:
        """One optimiser step over n_micro micro-batches (on every rank)."""
        p, step = self.progress, self.progress.step + 1
        self.opt.zero_grad()
        losses, samples = self._forward_backward(batches, n_micro, step)
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
        p.step, p.epoch_samples_done = step, p.epoch_samples_done + samples
        self.steps_this_process += 1
        p.window.add(losses, grad_norm, samples)

    def after_step(self, epoch_ends: bool = False) -> None:
        cfg, step = self.cfg, self.progress.step
        self._report_step()
        if self.faults.stop_requested(step):
            self.stop_requested = True
        evaluated = bool(cfg.eval_every) and step % cfg.eval_every == 0
        if evaluated:
            self.evaluate_and_checkpoint()
        # Every rank takes both decisions at this step (one collective).
        stop, checkpoint_due = self.world.any_each(
            [self.stop_requested, self._checkpoint_due()], self.device
        )
        if stop:
            if not evaluated:
                self.save_checkpoint(best=False)
            raise RunEnd("stopped", f"stopped at step {step}")
        if cfg.max_steps and step >= cfg.max_steps:
            if not evaluated:
                self.evaluate_and_checkpoint()
            raise RunEnd("done", f"reached max_steps = {cfg.max_steps}")
        evaluates_next = epoch_ends and cfg.eval_every == 0  # fit evaluates and checkpoints
        if checkpoint_due and not (evaluated or evaluates_next):
            self.save_checkpoint(best=False)
        self.faults.at_step_end(step)

    # ------------------------------------------------------------------------------------------
    # One step's micro-batches

    def _forward_backward(self, batches, n_micro: int, step: int) -> tuple[list[float], int]:
        """Forward and backward of n_micro micro-batches, gradients synchronised across ranks.
        Returns the global mean losses (total, then each of OUTPUTS) and the samples taken."""
        model, world = self.model, self.world
        losses = torch.zeros(1 + len(OUTPUTS), device=self.device)
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
                if i == 0:
                    self.faults.at_forward(step)
                unsynced = world.distributed and not ddp_sync
                with self.forward_model.no_sync() if unsynced else nullcontext():
                    with self.precision.autocast():
                        out = self.forward_model(batch)
                        loss, parts = model.loss(out, batch)
                    if i == 0:
                        loss = self.faults.at_loss(loss, step)
                    if not ddp_sync:
                        self.scaler.scale(loss / n_micro).backward()
            except Exception as exc:
                if not (world.distributed and precision.is_oom(exc)):
                    raise
                oom = exc  # agreed on below, before any gradient is synchronised
                break
            losses += torch.stack(
                [loss.detach().float()] + [parts[b].detach().float() for b in OUTPUTS]
            )
        if world.distributed and world.any(oom is not None, self.device):
            raise oom or torch.cuda.OutOfMemoryError("CUDA out of memory on another rank")
        if ddp_sync:
            self.scaler.scale(loss / n_micro).backward()
        elif manual_sync:
            distributed.average_gradients(self.params, world)
        samples = sum(self.batch_sizes[self.micro_done : self.micro_done + n_micro])  # all ranks
        self.micro_done += n_micro
        # Every rank sees the global mean losses: the same divergence decision everywhere.
        return (world.sum(losses) / (n_micro * world.size)).tolist(), samples

    # ------------------------------------------------------------------------------------------
    # Data order

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The sample order of an epoch, as the data module's loader would draw it."""
        from . import data

        loader = data.make_loader(
            self.train_set,
            self.cfg,
            train=True,
            seed=self.cfg.seed,
            epoch=epoch,
            batch_size=self.progress.micro_batch,
        )
        batches = loader.sampler if loader.batch_size is None else loader.batch_sampler
        return np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])

    def _loader_from(self, start: int) -> DataLoader:
        """Micro-batches of the current epoch's order from sample `start` on."""
        order, size = self.progress.order, self.progress.micro_batch
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
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.progress.epoch)
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

    def _report_step(self) -> None:
        """A step event every log_every steps; the status's step, epoch and ETA every step."""
        p = self.progress
        if p.step % self.cfg.log_every == 0:
            self._log_step()
        elapsed = time.time() - self.train_started
        eta = elapsed / self.steps_this_process * (self.total_steps - p.step)
        self.status.update(step=p.step, epoch=p.epoch_label, eta_s=round(eta, 1))

    def _log_step(self) -> None:
        p = self.progress
        w = p.window
        memory = self.world.gather(precision.memory_stats(self.device))  # every rank's
        per_rank = {"memory_ranks": memory} if self.world.distributed else {}
        record = self.metrics.write(
            "step",
            step=p.step,
            epoch=p.epoch_label,
            loss=_finite(w.mean(0)),
            losses={b: _finite(w.mean(i + 1)) for i, b in enumerate(OUTPUTS)},
            lr=self.opt.lr("heads"),
            xvlm_lr=self.opt.lr("backbone"),
            grad_norm=_finite(w.grad_norm),
            batch_size=p.micro_batch,
            accumulation=p.accumulation,
            samples_per_s=round(w.samples_per_s(), 2),
            memory=memory[0],
            **per_rank,
        )
        self.status.update(samples_per_s=record["samples_per_s"])
        log.info(
            "step %d/%d epoch %d: loss %s, lr %.3g, xvlm_lr %.3g, %.0f samples/s",
            p.step,
            self.total_steps,
            p.epoch_label,
            record["loss"],
            record["lr"],
            record["xvlm_lr"],
            record["samples_per_s"],
        )
        p.window = Window()

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
            batch_size=EVAL_BATCH_FACTOR * self.progress.micro_batch,  # nothing kept for backward
        )
        n_types = len(self.meta.answer_types)
        sums = dict(  # float64 sums over this rank's questions, then over every rank
            correct=torch.zeros(len(OUTPUTS)),
            type_correct=torch.zeros(n_types),
            type_count=torch.zeros(n_types),
            loss=torch.zeros(()),
            questions=torch.zeros(()),
        )
        sums = {k: v.to(self.device, torch.float64) for k, v in sums.items()}
        official = getattr(self.eval_set, "official", None)
        predicted = []  # (question indices, fused answer ids) for the official evaluation
        mine = distributed.eval_share(loader, self.world)
        for indices, batch in zip(mine.sampler, mine):
            batch = _to_device(batch, self.device)
            with self.precision.autocast():
                out = self.model(batch)
                loss, _ = self.model.loss(out, batch)
            for i, name in enumerate(OUTPUTS):
                pred = out["logits"][name].argmax(-1, keepdim=True)
                score = batch["score"].gather(1, pred).squeeze(1).double()  # official accuracy
                sums["correct"][i] += score.sum()
                if name == "fused":
                    sums["type_correct"].index_add_(0, batch["answer_type"], score)
                    sums["type_count"].index_add_(0, batch["answer_type"], torch.ones_like(score))
                    predicted.append((indices, pred.squeeze(1).cpu().numpy()))
            size = batch["q_tokens"].shape[0]
            sums["loss"] += loss.detach().double() * size
            sums["questions"] += size
        self.model.train()
        sums = dict(zip(sums, self.world.sum_each(list(sums.values()))))
        n = int(sums["questions"].item())
        accuracy = (sums["correct"] / max(n, 1)).tolist()
        result = {
            "accuracy": accuracy[0],
            "accuracy_branch": dict(zip(OUTPUTS, accuracy)),
            "loss": _finite(sums["loss"].item() / max(n, 1)),
            "questions": n,
        }
        if n_types > 1:
            result["accuracy_type"] = {
                name: (c / k if k else None)
                for name, c, k in zip(
                    self.meta.answer_types,
                    sums["type_correct"].tolist(),
                    sums["type_count"].tolist(),
                )
            }
        if official is not None:  # per-type breakdowns, consistency, validity, plausibility
            every_rank = [b for part in self.world.gather(predicted) for b in part]
            result.update(score_batches(official, every_rank, self.meta.answers))
        result["duration_s"] = round(time.time() - started, 3)
        return result

    def evaluate_and_checkpoint(self) -> None:
        p = self.progress
        result = self.evaluate()
        accuracy = result["accuracy"]
        best = p.best_accuracy is None or accuracy > p.best_accuracy
        if best:
            p.best_accuracy, p.best_step, p.evals_since_best = accuracy, p.step, 0
        else:
            p.evals_since_best += 1
        p.last_accuracy, p.last_eval_step = accuracy, p.step
        self.metrics.write("eval", step=p.step, epoch=p.epoch_label, **result)
        log.info(
            "step %d: accuracy %.4f (best %.4f at step %d)",
            p.step,
            accuracy,
            p.best_accuracy,
            p.best_step,
        )
        self.status.update(last_accuracy=accuracy, best_accuracy=p.best_accuracy)
        self.save_checkpoint(best=best)
        patience = self.cfg.patience
        if patience and p.evals_since_best >= patience:
            self.metrics.write(
                "early_stop",
                step=p.step,
                epoch=p.epoch_label,
                best_accuracy=p.best_accuracy,
                best_step=p.best_step,
                patience=patience,
            )
            raise RunEnd("done", f"early stop: no better accuracy in {patience} evaluations")

    def _checkpoint_due(self) -> bool:
        """checkpoint_every_min has passed since the last checkpoint (or the start)."""
        every_s = self.cfg.checkpoint_every_min * 60
        return every_s > 0 and time.time() - self.checkpointed_at >= every_s

    def save_checkpoint(self, best: bool) -> None:
        rngs = self.world.gather(seeding.rng_state())  # exact resume needs every rank's
        if self.world.main:
            folder = self.run_dir / events.CHECKPOINT_DIR
            path = folder / checkpoint.LAST
            state = checkpoint.state_of(
                self.cfg, self.model, self.opt, self.scaler, self.progress, rngs
            )
            checkpoint.save(state, path)
            if best:
                checkpoint.link(path, folder / checkpoint.BEST)
            self.metrics.write(
                "checkpoint",
                step=self.progress.step,
                epoch=self.progress.epoch_label,
                path=str(path.relative_to(self.run_dir)),
                best=best,
            )
        self.checkpointed_at = time.time()

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimisation"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress.from_state(state)
        rngs = state["rng_ranks"]
        if len(rngs) == self.world.size:
            seeding.set_rng_state(rngs[self.world.rank])
        else:  # another world size: the data position is exact, the random numbers are not
            log.warning("checkpoint of %d processes resumed with %d", len(rngs), self.world.size)
            if self.world.main:
                seeding.set_rng_state(rngs[0])

    # ------------------------------------------------------------------------------------------
    # Out of memory

    def _handle_oom(self, exc: BaseException) -> None:
        p = self.progress
        self.opt.zero_grad()
        precision.free_memory(self.device)
        old = p.micro_batch
        if not self.cfg.dynamic_batch_size or old == 1:
            raise RunEnd(*self._oom_end(exc))
        p.micro_batch, p.accumulation = old // 2, p.accumulation * 2
        self.metrics.write(
            "batch_resized",
            step=p.step + 1,
            old_batch_size=old,
            new_batch_size=p.micro_batch,
            accumulation=p.accumulation,
        )
        log.warning(
            "out of memory at step %d: micro-batch %d -> %d, accumulation %d",
            p.step + 1,
            old,
            p.micro_batch,
            p.accumulation,
        )

    def _oom_end(self, exc: BaseException) -> tuple[str, str]:
        advice = precision.oom_advice(self.cfg)
        batch = self.progress.micro_batch or self.cfg.batch_size  # 0: before setup set it
        self.metrics.write(
            "oom",
            step=self.progress.step + 1,
            batch_size=batch,
            message=str(exc).splitlines()[0],
            advice=advice,
        )
        return "oom", f"out of memory at batch size {batch}: {advice}"

    # ------------------------------------------------------------------------------------------
    # End

    def finish(self, state: str, message: str | None) -> None:
        p = self.progress
        ended = time.time()
        summary = {
            "state": state,
            "message": message,
            "step": p.step,
            "total_steps": self.total_steps,
            "epoch": p.epoch_label,
            "epochs": self.status.fields["epochs"],
            "best_accuracy": p.best_accuracy,
            "best_step": p.best_step,
            "final_accuracy": p.last_accuracy,
            "duration_s": round(ended - self.started, 3),
        }
        # Each record on its own: one failing (a full disk) must not cost the others.
        writes = (
            lambda: self.metrics.write("end", **summary),
            self.metrics.close,
            lambda: events.write_json_atomic(self.run_dir / events.SUMMARY_FILE, summary),
            lambda: self.status.close(
                state=state, ended=ended, message=message, step=p.step, eta_s=0
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


def _to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
