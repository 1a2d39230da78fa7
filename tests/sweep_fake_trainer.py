"""A stand-in for `python -m vqatune.engine.train RUN_DIR [--resume]` in the sweep tests that
check scheduling, pruning and resuming exactly: it keeps the run directory contract
(status.json, metrics.jsonl eval/checkpoint/end events, checkpoints/last.pt, summary.json,
SIGTERM -> checkpoint and `stopped`) in a fraction of a second, and its accuracy is a known
function of the config: accuracy after step s = min(1, lr * 1000 * s / max_steps).

It also records CUDA_VISIBLE_DEVICES in train.log, so tests can check GPU pinning.
"""

import json
import os
import signal
import sys
import time

import psutil
import tomllib

run_dir = sys.argv[1]
resume = "--resume" in sys.argv
with open(os.path.join(run_dir, "config.toml"), "rb") as f:
    tables = [t for t in tomllib.load(f).values() if isinstance(t, dict)]  # not the given list
    cfg = {k: v for table in tables for k, v in table.items()}
total = cfg["max_steps"] or 6
eval_every = cfg["eval_every"] or total
delay = float(os.environ.get("FAKE_DELAY", "0.02"))
ckpt = os.path.join(run_dir, "checkpoints", "last.pt")
os.makedirs(os.path.dirname(ckpt), exist_ok=True)
metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a", buffering=1)
start_time = psutil.Process().create_time()
started = time.time()
step, best, last = 0, None, None
if resume and os.path.exists(ckpt):
    with open(ckpt) as f:
        step, best, last = json.load(f)
print(
    f"fake trainer {'resume' if resume else 'start'} at step {step} "
    f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}",
    flush=True,
)
stopping = []
signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))


def event(kind, **fields):
    metrics.write(json.dumps({"event": kind, "time": time.time(), **fields}) + "\n")


def status(state, **kw):
    data = {
        "state": state,
        "pid": os.getpid(),
        "pid_start_time": start_time,
        "heartbeat": time.time(),
        "step": step,
        "total_steps": total,
        "epoch": 1,
        "epochs": 1,
        "started": started,
        "ended": None,
        "best_accuracy": best,
        "last_accuracy": last,
        "message": None,
        "world_size": 1,
        **kw,
    }
    tmp = os.path.join(run_dir, ".status.json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(run_dir, "status.json"))


def checkpoint():
    with open(ckpt + ".tmp", "w") as f:
        json.dump([step, best, last], f)
    os.replace(ckpt + ".tmp", ckpt)


def end(state, code):
    event("end", state=state, step=step, best_accuracy=best, final_accuracy=last)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({"state": state, "best_accuracy": best, "final_accuracy": last, "step": step}, f)
    status(state, ended=time.time())
    sys.exit(code)


if resume:
    event("resumed", step=step, epoch=1, from_checkpoint=ckpt)
status("running")
while step < total:
    time.sleep(delay)
    step += 1
    event("step", step=step, epoch=1, loss=1.0 / step)
    if step % eval_every == 0 or step == total:
        last = round(min(1.0, cfg["lr"] * 1000 * step / total), 6)
        best = last if best is None else max(best, last)
        event("eval", step=step, epoch=1, accuracy=last)
        checkpoint()
    status("running")
    if stopping:
        checkpoint()
        end("stopped", 130)
end("done", 0)
