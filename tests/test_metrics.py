"""Metrics reader: truncated and garbage lines, byte offsets, fast scans, downsampling."""

from __future__ import annotations

import json
import math
import os

import pytest
from vqatune.engine import metrics
from vqatune.engine.events import MetricsWriter


def write_run(path, steps=50, eval_every=10, loss=lambda s: 10.0 / s):
    w = MetricsWriter(path)
    w.write("start", params=10)
    for s in range(1, steps + 1):
        w.write("step", step=s, epoch=s // 20, loss=loss(s), losses={"fused": 1.0}, lr=1e-3)
        if s % eval_every == 0:
            w.write(
                "eval",
                step=s,
                epoch=s // 20,
                accuracy=s / steps - (0.5 if s == 30 else 0),
                loss=1.0,
            )
    w.write("end", state="done", step=steps, best_accuracy=1.0)
    w.close()


def test_truncated_last_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"event": "step", "step": 1}\n{"event": "step", "st')
    tail = metrics.MetricsTail(path)
    assert [e["step"] for e in tail.read()] == [1]
    assert tail.offset == len(b'{"event": "step", "step": 1}\n')
    assert tail.read() == []
    with open(path, "ab") as f:
        f.write(b'ep": 2}\n')
    assert [e["step"] for e in tail.read()] == [2]


def test_garbage_lines_are_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(
        b'not json\n\n[1, 2]\n{"no_event": 1}\n\xff\xfe\n'
        b'{"event": "eval", "accuracy": 0.5}\n{"event": 3}\n'
    )
    assert metrics.read_events(path) == [{"event": "eval", "accuracy": 0.5}]


def test_line_cut_by_a_crash_then_appended_by_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(
        b'{"event": "step", "step": 1}\n{"event": "step", "ste'
        b'{"event": "resumed", "step": 1}\n{"event": "step", "step": 2}\n'
    )
    assert [e["event"] for e in metrics.read_events(path)] == ["step", "resumed", "step"]


def test_tail_resumes_from_offset_and_restarts_on_a_new_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(path)
    w.write("step", step=1)
    tail = metrics.MetricsTail(path)
    assert len(tail.read()) == 1
    w.write("step", step=2)
    w.write("eval", step=2, accuracy=0.1)
    assert [e["event"] for e in tail.read()] == ["step", "eval"]
    later = metrics.MetricsTail(path, offset=tail.offset)
    w.write("step", step=3)
    assert [e["step"] for e in later.read()] == [3]
    w.close()
    path.write_text('{"event": "start"}\n')  # truncated and rewritten, shorter
    assert [e["event"] for e in later.read()] == ["start"]
    other = path.with_name("other.jsonl")  # replaced by a new, longer file
    other.write_text("".join(f'{{"event": "step", "step": {i}}}\n' for i in range(10)))
    os.replace(other, path)
    assert [e["step"] for e in later.read(kinds=iter(["step"]))] == list(range(10))


def test_missing_and_empty_files(tmp_path):
    assert metrics.read_events(tmp_path / "none.jsonl") == []
    assert metrics.scan(tmp_path / "none.jsonl").evals == []
    (tmp_path / "empty.jsonl").write_text("")
    assert metrics.scan(tmp_path / "empty.jsonl").last_step is None


def test_kinds_filter(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_run(path)
    evals = metrics.read_events(path, kinds=["eval"])
    assert [e["step"] for e in evals] == [10, 20, 30, 40, 50]
    assert [e["event"] for e in metrics.read_events(path, kinds=["start", "end"])] == [
        "start",
        "end",
    ]
    assert len(metrics.read_events(path)) == 1 + 50 + 5 + 1


def test_tail_reads_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "READ_CHUNK", 100)  # lines straddle chunk borders
    path = tmp_path / "metrics.jsonl"
    write_run(path, steps=30)
    assert [e["step"] for e in metrics.read_events(path, kinds=["step"])] == list(range(1, 31))
    assert len(metrics.read_events(path, kinds=["eval"])) == 3


@pytest.mark.parametrize("exact_below", [1 << 30, 0])
def test_scan_exact_and_fast_paths(tmp_path, exact_below):
    path = tmp_path / "metrics.jsonl"
    write_run(path, steps=400, loss=lambda s: 1000.0 - s)
    with open(path, "ab") as f:
        f.write(b'{"event": "step", "step": 401, "lo')  # a torn last line
    s = metrics.scan(path, exact_below=exact_below, curve_points=40)
    assert [e["step"] for e in s.evals] == list(range(10, 401, 10))
    assert s.best_eval["step"] == 400 and s.final_eval["step"] == 400
    assert s.accuracy_steps[:3] == [10, 20, 30] and s.accuracy[2] == pytest.approx(-0.425)
    assert s.last_step["step"] == 400 and s.end["state"] == "done"
    assert s.loss_sampled == (exact_below == 0)
    if exact_below:
        assert s.loss_steps == list(range(1, 401)) and s.loss[0] == 999.0
    else:  # the mean of a window of a straight line is its value at the middle step
        assert 20 <= len(s.loss) <= 40
        assert s.loss == sorted(s.loss, reverse=True)
        for step, value in zip(s.loss_steps, s.loss):
            assert value == pytest.approx(1000.0 - step, abs=1.0)


def test_scan_fast_path_falls_back_for_other_writers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"event": "eval", "accuracy": 0.1 * i}, separators=(",", ":"))
            for i in range(5)
        )
        + "\n"
    )
    assert len(metrics.scan(path, exact_below=0).evals) == 5
    assert len(metrics.scan(path, evals_only=True).evals) == 5


def test_scan_evals_only_finds_the_same_evals(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_run(path, steps=400)
    whole, evals = metrics.scan(path), metrics.scan(path, evals_only=True)
    assert evals.evals == whole.evals and len(evals.evals) == 40
    assert evals.last_step is None and evals.loss == []  # nothing else is read


def test_downsample_keeps_spikes_and_bounds():
    xs = list(range(10_000))
    ys = [math.sin(x / 100) for x in xs]
    ys[7_777] = 50.0
    dx, dy = metrics.downsample(xs, ys, 200)
    assert len(dx) <= 200 and 50.0 in dy and dx == sorted(dx)
    assert max(dy) == 50.0 and min(dy) == pytest.approx(min(ys), abs=1e-6)
    assert metrics.downsample([1, 2], [3, 4], 200) == ([1, 2], [3, 4])
    assert ys[0] == 0.0 and len(ys) == 10_000  # the input is untouched


def test_writer_starts_a_fresh_line_after_a_torn_one(tmp_path):
    from vqatune.engine.events import MetricsWriter
    from vqatune.engine.metrics import read_events

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "step", "step": 1}\n{"event": "step", "st')  # killed mid-write
    writer = MetricsWriter(path)
    writer.write("resumed", step=1)
    writer.close()
    lines = path.read_text().splitlines()
    assert lines[-1].startswith('{"event": "resumed"')
    assert [e["event"] for e in read_events(path)] == ["step", "resumed"]
