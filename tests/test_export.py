"""`vqatune export`: CSV columns from the event schema, TensorBoard files read back with
TensorBoard's own event reader, and a self-contained HTML report."""

from __future__ import annotations

import csv

import pytest
from analysis_fixtures import make_search_store
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from typer.testing import CliRunner
from vqatune.engine import events as ev
from vqatune.engine.metrics import read_events
from vqatune.tui.cli import app


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    runs = tmp_path_factory.mktemp("export") / "runs"
    make_search_store(runs, n=4)
    return runs


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_csv_one_file_per_run_and_kind(store, tmp_path):
    run = sorted(store.iterdir())[0]
    code, out, err = cli("export", run, "--format", "csv", "--out", tmp_path, "--runs-dir", store)
    assert code == 0, err
    folder = tmp_path / run.name
    assert sorted(p.name for p in folder.iterdir()) == [
        "end.csv",
        "eval.csv",
        "start.csv",
        "step.csv",
    ]
    with open(folder / "step.csv") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[:5] == ["event", "time", "step", "epoch", "loss"]
    assert "losses.ban" in header and "memory.rss_mb" in header
    steps = read_events(run / ev.METRICS_FILE, kinds=("step",))
    assert len(rows) == len(steps)
    assert float(rows[-1]["loss"]) == pytest.approx(steps[-1]["loss"])


def test_tensorboard_files_read_back_with_tensorboard(store, tmp_path):
    run = sorted(store.iterdir())[1]
    code, _, err = cli(
        "export", run, "--format", "tensorboard", "--out", tmp_path, "--runs-dir", store
    )
    assert code == 0, err
    acc = EventAccumulator(str(tmp_path / run.name))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/loss/graph", "val/accuracy", "val/accuracy/ban"} <= set(tags)
    evals = read_events(run / ev.METRICS_FILE, kinds=("eval",))
    got = acc.Scalars("val/accuracy")
    assert [s.step for s in got] == [e["step"] for e in evals]
    assert got[-1].value == pytest.approx(evals[-1]["accuracy"], rel=1e-6)
    assert got[0].wall_time == pytest.approx(evals[0]["time"])
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    config = (run / ev.CONFIG_FILE).read_text()
    assert f"{hp['lr'].number_value:g}" in config.replace("e-0", "e-")
    assert hp["activation"].string_value in ("relu", "swish")
    assert "hparam/best_accuracy" in tags


def test_html_report_is_self_contained(store, tmp_path):
    code, out, err = cli(
        "export",
        *sorted(store.iterdir()),
        "--format",
        "html",
        "--out",
        tmp_path,
        "--runs-dir",
        store,
    )
    assert code == 0, err
    page = (tmp_path / "report.html").read_text()
    assert "<script src" not in page and "<link" not in page  # nothing fetched to view it
    assert page.count("Plotly.newPlot") == 3  # importance, curves (one figure), parcoords
    for section in ("parameters that differ", "Seed statistics", "Parameter importance"):
        assert section in page
    assert "dropout" in page and '"type":"parcoords"' in page.replace(" ", "")


def test_bad_format_and_no_runs(store, tmp_path):
    code, _, err = cli(
        "export", "--sweep", "x", "--format", "pdf", "--out", tmp_path, "--runs-dir", store
    )
    assert (
        code == 2 and err.strip() == "error: --format 'pdf': must be one of csv, tensorboard, html"
    )
    code, _, err = cli("export", "--format", "csv", "--out", tmp_path, "--runs-dir", store)
    assert code == 2 and "give runs or --sweep" in err
