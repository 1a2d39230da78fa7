"""A one-machine stand-in for Slurm's sbatch, srun, sacct, scancel and scontrol, for tests.

Installed by the tests as links named after each command in a folder put first on PATH; the
command is chosen by the name it is called by. Jobs live in $FAKE_SLURM_DIR/jobs/<id>.json:
{state, script, pgid, restarts, requeue}. `sbatch` starts a runner process per job that runs the
batch script (bash, in its own process group, with the SLURM_* variables of a one-node job),
and again after `scontrol requeue`. With FAKE_SLURM_HOLD=1 a job stays PENDING until
jobs/<id>.release exists.

Job arrays (`#SBATCH --array=0-N%P`): one job file per task, <id>_<task>.json, each task run
by its own runner with SLURM_ARRAY_JOB_ID / SLURM_ARRAY_TASK_ID set, at most P RUNNING at
once; sacct -j <id> lists the tasks (those not started yet as one `<id>_[a-b]` line, as Slurm
does), scancel <id> cancels every task, scancel <id>_<task> one.
"""

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(os.environ["FAKE_SLURM_DIR"])
JOBS = ROOT / "jobs"


def job_file(job_id: str) -> Path:
    return JOBS / f"{job_id}.json"


def load(job_id: str) -> dict:
    return json.loads(job_file(job_id).read_text())


def update(job_id: str, **changes) -> dict:
    with open(ROOT / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job = {**load(job_id), **changes}
        tmp = job_file(job_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(job))
        os.replace(tmp, job_file(job_id))
        return job


def sbatch(args: list[str]) -> None:
    script = Path(args[-1]).absolute()
    array = re.search(r"^#SBATCH --array=0-(\d+)(?:%(\d+))?$", script.read_text(), re.M)
    JOBS.mkdir(parents=True, exist_ok=True)
    with open(ROOT / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = ROOT / "next_id"
        job_id = str(int(counter.read_text()) if counter.exists() else 1000)
        counter.write_text(str(int(job_id) + 1))
        if array:
            limit = int(array.group(2) or 0)
            keys = [f"{job_id}_{t}" for t in range(int(array.group(1)) + 1)]
        else:
            limit, keys = 0, [job_id]
        for key in keys:
            job_file(key).write_text(
                json.dumps(
                    {
                        "state": "PENDING",
                        "script": str(script),
                        "pgid": None,
                        "restarts": 0,
                        "limit": limit,
                    }
                )
            )
    for key in keys:
        subprocess.Popen(
            [sys.executable, __file__, "_run", key],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(ROOT / f"runner-{key}.log", "ab"),
            env={**os.environ, "FAKE_SLURM_COMMAND": "_run"},
        )
    print(f"Submitted batch job {job_id}")


def array_tasks(array_id: str) -> list[str]:
    keys = [p.stem for p in JOBS.glob(f"{array_id}_*.json")]
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def take_array_slot(key: str) -> bool:
    """Mark the task RUNNING if fewer than its array's limit are (always, without a limit)."""
    with open(ROOT / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job = load(key)
        if job["limit"] and "_" in key:
            running = [k for k in array_tasks(key.split("_")[0]) if load(k)["state"] == "RUNNING"]
            if len(running) >= job["limit"]:
                return False
        tmp = job_file(key).with_suffix(".tmp")
        tmp.write_text(json.dumps({**job, "state": "RUNNING"}))
        os.replace(tmp, job_file(key))
        return True


def run_job(job_id: str) -> None:
    if os.environ.get("FAKE_SLURM_HOLD"):
        while not (JOBS / f"{job_id}.release").exists():
            if load(job_id)["state"] == "CANCELLED":
                return
            time.sleep(0.05)
    while not take_array_slot(job_id):
        if load(job_id)["state"] == "CANCELLED":
            return
        time.sleep(0.05)
    while True:
        job = load(job_id)
        if job["state"] == "CANCELLED":
            return
        text = Path(job["script"]).read_text()
        out = re.search(r"^#SBATCH --output=(.+)$", text, re.M)
        array_id, _, task = job_id.partition("_")
        log = out.group(1) if out else os.devnull
        log = log.replace("%j", job_id).replace("%A", array_id).replace("%a", task)
        env = {
            **os.environ,
            "SLURM_JOB_ID": job_id,
            **({"SLURM_ARRAY_JOB_ID": array_id, "SLURM_ARRAY_TASK_ID": task} if task else {}),
            "SLURM_JOB_NUM_NODES": "1",
            "SLURM_NODEID": "0",
            "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0",
            "SLURM_NTASKS": "1",
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_RESTART_COUNT": str(job["restarts"]),
        }
        env.pop("FAKE_SLURM_COMMAND", None)
        with open(log, "ab") as f:
            proc = subprocess.Popen(
                ["bash", job["script"]], env=env, stdout=f, stderr=f, start_new_session=True
            )
        update(job_id, state="RUNNING", pgid=proc.pid)
        code = proc.wait()
        job = load(job_id)
        if job.get("requeue"):
            update(job_id, state="REQUEUED", requeue=False, restarts=job["restarts"] + 1)
            continue
        if job["state"] != "CANCELLED":
            update(job_id, state="COMPLETED" if code == 0 else "FAILED")
        return


def srun(args: list[str]) -> None:
    out = err = None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        flag = args[i]
        if flag in ("--output", "--error"):
            path = (
                args[i + 1]
                .replace("%j", os.environ["SLURM_JOB_ID"])
                .replace("%A", os.environ.get("SLURM_ARRAY_JOB_ID", ""))
                .replace("%a", os.environ.get("SLURM_ARRAY_TASK_ID", ""))
                .replace("%t", "0")
            )
            out, err = (path, err) if flag == "--output" else (out, path)
            i += 2
        else:
            i += 1
    update(os.environ["SLURM_JOB_ID"], step_pid=os.getpid())  # exec keeps the pid
    if out:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
    if err:
        fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 2)
    os.execvp(args[i], args[i:])


def sacct(args: list[str]) -> None:
    ids, fields, header = [], ["JobID", "State"], True
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-j":
            ids += args[i + 1].split(",")
            i += 1
        elif a == "-o":
            fields = args[i + 1].split(",")
            i += 1
        elif a in ("-n", "--noheader"):
            header = False
        i += 1
    if header:
        print("|".join(fields))
    rows = []
    for job_id in ids:
        if job_file(job_id).exists():
            rows.append((job_id, load(job_id)["state"]))
        elif "_" not in job_id:  # an array: its tasks, the ones not started yet collapsed
            tasks = [(k, load(k)["state"]) for k in array_tasks(job_id)]
            waiting = [k.split("_")[1] for k, st in tasks if st == "PENDING"]
            rows += [(k, st) for k, st in tasks if st != "PENDING"]
            if waiting:
                limit = load(tasks[0][0])["limit"]
                limit = f"%{limit}" if limit else ""
                rows.append((f"{job_id}_[{','.join(waiting)}{limit}]", "PENDING"))
    for job_id, st in rows:
        values = {"JobID": job_id, "State": st, "NodeList": "localhost"}
        print("|".join(values.get(f, "") for f in fields))


def scancel(args: list[str]) -> None:
    with open(ROOT / "scancel.log", "a") as log:  # one line per call, for the tests to count
        log.write(" ".join(args) + "\n")
    sig = None
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--signal="):
            sig = a.split("=", 1)[1]
        elif a == "--signal":
            sig = args[i + 1]
            i += 1
        else:
            rest.append(a)
        i += 1
    for job_id in [
        k for arg in rest for k in ([arg] if job_file(arg).exists() else array_tasks(arg))
    ]:
        job = load(job_id)
        name = sig or "TERM"
        signum = getattr(signal, name if name.startswith("SIG") else "SIG" + name)
        if sig is None or signum == signal.SIGKILL:
            # Cancelling ends the whole job, batch script included.
            update(job_id, state="CANCELLED")
            if job.get("pgid"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job["pgid"], signum)
        elif job.get("step_pid"):
            # --signal alone reaches the job step's processes, not the batch shell (as Slurm).
            with contextlib.suppress(psutil.Error):
                step = psutil.Process(job["step_pid"])
                for proc in [step, *step.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        proc.send_signal(signum)


def scontrol(args: list[str]) -> None:
    if args[:1] == ["requeue"]:
        for job_id in args[1:]:
            update(job_id, requeue=True)


if __name__ == "__main__":
    command = os.environ.get("FAKE_SLURM_COMMAND") or Path(sys.argv[0]).name
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        run_job(sys.argv[2])
    else:
        {"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel, "scontrol": scontrol}[
            command
        ](sys.argv[1:])
