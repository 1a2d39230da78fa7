"""Reading metrics.jsonl: tolerant, incremental, and fast on long histories.

- MetricsTail: new complete lines since a byte offset (for tailing a live run). A last line
  without its newline is being written (or was cut by a crash): it is left for the next read.
  Garbage lines are skipped.
- scan(): what compare/show need from a whole file (every eval event, the final events, a loss
  curve) without turning a million step lines into Python objects: eval lines are found with a
  byte search, the last events are read from the tail, and the loss curve of a long file is
  read from evenly spread windows.
- downsample(): min/max buckets for charts; the stored data is never changed.

Light module: no torch, no textual.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# MetricsWriter writes `{"event": "<kind>", ...}` with json.dumps' default separators.
EVENT_PREFIX = b'{"event": "'
_STEP_LOSS_RE = re.compile(
    rb'"event": "step", "time": ([0-9][0-9.eE+-]*),[^\n]*?"step": (\d+)[^\n]*?"loss": (-?[0-9][0-9.eE+-]*)'
)
READ_CHUNK = 8 << 20


def parse_line(line: bytes) -> dict | None:
    """One metrics line -> event dict, or None for garbage.

    A line killed mid-write and then appended to by a resumed run looks like
    `{"event": "st{"event": "resumed", ...}`: the complete event at its end is kept.
    """
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        start = line.rfind(EVENT_PREFIX)
        if start <= 0:
            return None
        try:
            obj = json.loads(line[start:])
        except ValueError:
            return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("event"), str) else None


def _needles(kinds: Iterable[str] | None) -> tuple[bytes, ...] | None:
    return None if kinds is None else tuple(b'"event": "%s"' % k.encode() for k in kinds)


class MetricsTail:
    """Incremental reader: each read() returns the events appended since the last one."""

    def __init__(self, path: str | Path, offset: int = 0):
        self.path = Path(path)
        self.offset = offset
        self._inode: int | None = None

    def read(self, kinds: Iterable[str] | None = None) -> list[dict]:
        kinds = None if kinds is None else tuple(kinds)
        needles = _needles(kinds)
        events: list[dict] = []
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return events
        with f:
            st = os.fstat(f.fileno())
            if st.st_size < self.offset or self._inode not in (None, st.st_ino):
                self.offset = 0  # the file was truncated or replaced: start over
            self._inode = st.st_ino
            f.seek(self.offset)
            pending = b""  # a partial line: completed by the next chunk or the next read()
            while True:
                chunk = f.read(READ_CHUNK)
                if not chunk:
                    break
                buf = pending + chunk
                end = buf.rfind(b"\n")
                if end < 0:
                    pending = buf
                    continue
                pending = buf[end + 1 :]
                self.offset += end + 1
                lines = (
                    buf[:end].split(b"\n") if needles is None else _lines_with(buf, end, needles)
                )
                for line in lines:
                    event = parse_line(line)
                    if event is not None and (kinds is None or event["event"] in kinds):
                        events.append(event)
        return events


def _lines_with(buf, end: int, needles: tuple[bytes, ...]) -> list[bytes]:
    """The lines of buf[:end] that contain a needle, in order, found by byte search (much
    faster than splitting when the needles are rare, as eval events are among steps)."""
    starts: set[int] = set()
    for needle in needles:
        pos = buf.find(needle, 0, end)
        while pos >= 0:
            starts.add(buf.rfind(b"\n", 0, pos) + 1)
            pos = buf.find(needle, pos + len(needle), end)
    out = []
    for start in sorted(starts):
        stop = buf.find(b"\n", start, end)
        out.append(buf[start : stop if stop >= 0 else end])
    return out


def read_events(path: str | Path, kinds: Iterable[str] | None = None) -> list[dict]:
    return MetricsTail(path).read(kinds)


# ----------------------------------------------------------------------------------------------
# Whole-file scan for compare and show


@dataclass
class Scan:
    evals: list[dict] = field(default_factory=list)  # every eval event, in file order
    last_step: dict | None = None
    end: dict | None = None  # the last end event
    loss_steps: list[int] = field(default_factory=list)  # training loss curve (x: step)
    loss: list[float] = field(default_factory=list)
    loss_times: list[float] = field(default_factory=list)  # unix time of each loss point
    loss_sampled: bool = False  # True: read from windows spread over a long file

    @property
    def accuracy_steps(self) -> list[int]:
        return [e.get("step", i) for i, e in enumerate(self.evals) if _num(e.get("accuracy"))]

    @property
    def accuracy_times(self) -> list[float]:
        return [float(e.get("time", 0.0)) for e in self.evals if _num(e.get("accuracy"))]

    @property
    def accuracy(self) -> list[float]:
        return [float(e["accuracy"]) for e in self.evals if _num(e.get("accuracy"))]

    @property
    def best_eval(self) -> dict | None:
        scored = [e for e in self.evals if _num(e.get("accuracy"))]
        return max(scored, key=lambda e: e["accuracy"]) if scored else None

    @property
    def final_eval(self) -> dict | None:
        scored = [e for e in self.evals if _num(e.get("accuracy"))]
        return scored[-1] if scored else None


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def scan(
    path: str | Path,
    *,
    curve_points: int = 1000,
    exact_below: int = 16 << 20,
    evals_only: bool = False,
) -> Scan:
    """Read what a comparison needs from metrics.jsonl; files under `exact_below` bytes are
    read whole, longer ones by byte search (evals), tail (last events) and windows (loss).
    `evals_only`: the eval events alone, by byte search whatever the size (a sweep's table)."""
    out = Scan()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return out
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return out
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            end = mm.rfind(b"\n") + 1  # complete lines only
            searchable = mm[: len(EVENT_PREFIX)] == EVENT_PREFIX  # our writer's spacing
            if not searchable or (size < exact_below and not evals_only):
                _scan_all(mm, end, out)
            elif evals_only:
                _scan_evals(mm, end, out)
            else:
                _scan_fast(mm, end, out, curve_points)
    return out


def _scan_all(mm: mmap.mmap, end: int, out: Scan) -> None:
    for line in mm[:end].split(b"\n"):
        event = parse_line(line)
        if event is None:
            continue
        _take(event, out)
        if event["event"] == "step" and _num(event.get("loss")):
            out.loss_steps.append(int(event.get("step", len(out.loss_steps))))
            out.loss.append(float(event["loss"]))
            out.loss_times.append(float(event.get("time", 0.0)))


def _take(event: dict, out: Scan) -> None:
    kind = event["event"]
    if kind == "eval":
        out.evals.append(event)
    elif kind == "step":
        out.last_step = event
    elif kind == "end":
        out.end = event


def _scan_evals(mm: mmap.mmap, end: int, out: Scan) -> None:
    for line in _lines_with(mm, end, (b'"event": "eval"',)):
        event = parse_line(line)
        if event is not None and event["event"] == "eval":
            out.evals.append(event)


def _scan_fast(mm: mmap.mmap, end: int, out: Scan, curve_points: int) -> None:
    _scan_evals(mm, end, out)
    # The last step and end events sit at the end of the file.
    tail_start = max(0, end - (256 << 10))
    for line in mm[tail_start:end].split(b"\n")[1 if tail_start else 0 :]:
        event = parse_line(line)
        if event is not None and event["event"] in ("step", "end"):
            _take(event, out)
    # Loss curve: the mean of the step losses in each of curve_points evenly spread windows.
    window = max(4096, min(16 << 10, end // (curve_points * 8)))  # ~40 step lines at most
    for i in range(curve_points):
        lo = end * i // curve_points
        start = 0 if lo == 0 else mm.find(b"\n", lo - 1, end) + 1
        if (lo and start == 0) or start >= end:
            continue
        stop = mm.rfind(b"\n", start, min(end, start + window))
        if stop <= start:
            continue
        found = _STEP_LOSS_RE.findall(mm[start:stop])
        losses = [float(v) for _, _, v in found]
        if losses:
            middle = found[len(found) // 2]
            out.loss_steps.append(int(middle[1]))
            out.loss_times.append(float(middle[0]))
            out.loss.append(sum(losses) / len(losses))
    out.loss_sampled = True


# ----------------------------------------------------------------------------------------------
# Downsampling for charts


def downsample(xs: Sequence[float], ys: Sequence[float], n: int) -> tuple[list, list]:
    """At most n points: the min and the max of each of n/2 equal buckets, in x order, so spikes
    (a diverging loss) survive. Shorter series come back unchanged."""
    size = len(ys)
    if size <= n or n < 2:
        return list(xs), list(ys)
    buckets = n // 2
    out_x: list = []
    out_y: list = []
    for b in range(buckets):
        lo, hi = size * b // buckets, size * (b + 1) // buckets
        if hi <= lo:
            continue
        seg = range(lo, hi)
        i_min = min(seg, key=ys.__getitem__)
        i_max = max(seg, key=ys.__getitem__)
        for i in sorted({i_min, i_max}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y
