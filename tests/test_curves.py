"""Curve smoothing (TensorBoard's debiased EMA, moving window), x axes and per-curve stats, and
the same options in `vqatune compare --plot`."""

from __future__ import annotations

import pytest
from tui_fixtures import make_store
from typer.testing import CliRunner
from vqatune.engine import curves
from vqatune.tui.cli import app


def test_debiased_ema_is_not_pulled_towards_zero_or_the_first_point():
    assert curves.ema([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)  # biased: 0.2, 0.38, ...
    # First point as is; then the weighted mean of what was seen, weights w**age.
    w = 0.6
    ys = [1.0, 3.0]
    expected = (w * 1.0 + 3.0) / (w + 1)
    assert curves.ema(ys, w) == pytest.approx([1.0, expected])
    assert curves.ema([1.0, float("nan"), 1.0], 0.5)[2] == pytest.approx(1.0)


def test_moving_window_and_factor_steps():
    assert curves.moving_mean([1, 2, 3, 4], 2) == [1.0, 1.5, 2.5, 3.5]
    assert curves.smooth([1, 2, 3], "none") == [1.0, 2.0, 3.0]
    assert curves.next_factor("ema", 0.6) == 0.8 and curves.next_factor("ema", 0.6, up=False) == 0.3
    assert curves.next_factor("window", 101) == 101
    with pytest.raises(ValueError, match="--factor: the EMA weight"):
        curves.smooth([1.0], "ema", 1.0)
    with pytest.raises(ValueError, match="--smooth: must be one of"):
        curves.smooth([1.0], "gauss")


def test_stats_take_raw_points_and_best_by_direction():
    s = curves.stats([1, 2, 3], [0.5, 0.2, 0.4], higher_better=False)
    assert (s.min, s.max, s.best, s.best_x, s.last) == (0.2, 0.5, 0.2, 2, 0.4)
    assert curves.stats([1, 2], [0.5, 0.7]).best_x == 2


def test_x_axes():
    assert curves.x_values("time", [1, 2], [100.0, 130.0], started=90.0) == [10.0, 40.0]
    assert curves.x_values("samples", [1, 2], samples_per_step=32) == [32.0, 64.0]
    with pytest.raises(ValueError, match="--x: must be one of"):
        curves.x_values("epoch", [1])


def test_compare_plot_options(tmp_path):
    runs = tmp_path / "runs"
    a, b, *_ = make_store(runs)
    args = ["compare", str(a), str(b), "--plot", "--runs-dir", str(runs)]
    result = CliRunner().invoke(
        app, [*args, "--smooth", "ema", "--factor", "0.9", "--x", "samples"]
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "EMA 0.9 (debiased)" in out and "samples seen" in out
    # smoke: batch 8 × 1 × 1 → the best accuracy, at step 40, is at 320 samples
    assert f"{a.name}  min 0.425  max 0.8  best 0.8 @ 320" in out
    bad = CliRunner().invoke(app, [*args, "--smooth", "window", "--factor", "2.5"])
    assert bad.exit_code == 2 and "--factor: the window must be a whole number" in bad.stderr
