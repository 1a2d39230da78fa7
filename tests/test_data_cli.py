"""`vqatune data synth|inspect`: output, errors (exit 2, one line), and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner
from vqatune.tui.cli import app

runner = CliRunner()


def test_synth_then_inspect_json(tmp_path):
    out = tmp_path / "g"
    r = runner.invoke(
        app,
        [
            "data",
            "synth",
            "--format",
            "gqa",
            "--out",
            str(out),
            "--images",
            "10",
            "--seed",
            "4",
            "--feature-dim",
            "8",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    written = json.loads(r.output)
    assert "gqa_objects_0.h5" in written["files"] and "train_sceneGraphs.json" in written["files"]
    r = runner.invoke(
        app,
        [
            "data",
            "inspect",
            "--dataset",
            "gqa",
            "--data-root",
            str(out),
            "--split",
            "val",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["splits"]["train"]["questions"] == written["questions"]["train"]
    assert info["splits"]["eval"]["split"] == "val" and info["example"]["split"] == "val"
    assert info["example"]["question"] and info["example"]["nodes"]
    assert info["example"]["answer"] in info["example"]["candidates"]


def test_inspect_text_vqa(tmp_path):
    out = tmp_path / "v"
    assert (
        runner.invoke(
            app, ["data", "synth", "-f", "vqa", "-o", str(out), "-n", "10", "--feature-dim", "4"]
        ).exit_code
        == 0
    )
    r = runner.invoke(
        app,
        ["data", "inspect", "-d", "vqa", "--data-root", str(out), "--set", "min_answer_count=1"],
    )
    assert r.exit_code == 0, r.output
    assert "train (train2014)" in r.output and "soft targets" in r.output
    assert "question" in r.output and "candidates" in r.output


def test_errors_are_one_line(tmp_path):
    r = runner.invoke(app, ["data", "inspect", "-d", "gqa", "--data-root", str(tmp_path)])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "train_balanced_questions.json" in lines[0] and "Traceback" not in r.output
    r = runner.invoke(app, ["data", "inspect", "-d", "nope"])
    assert r.exit_code == 2 and "dataset" in r.output
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    r = runner.invoke(app, ["data", "synth", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not empty" in r.output


def test_data_commands_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from vqatune.tui.cli import app\n"
        f"for args in (['data','synth','-o',{str(tmp_path / 's')!r},'-n','4','--feature-dim','4'],"
        f" ['data','inspect','-d','synthetic','--data-root',{str(tmp_path / 's')!r}]):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'textual') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
