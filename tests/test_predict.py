"""Official breakdowns in eval events, and `vqatune predict`: submission files of both formats
on synthetic GQA and VQA v2, round trip from training to the file, and its user errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vqatune.engine import config, events
from vqatune.engine.data import synth
from vqatune.engine.trainer import Trainer
from vqatune.tui.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def make_run(root: Path, name: str, sets: list[str]) -> Path:
    run_dir = root / name
    run_dir.mkdir()
    cfg = config.load("smoke", ["max_steps=2", "eval_limit=0", "train_limit=0", *sets])
    (run_dir / events.CONFIG_FILE).write_text(config.dumps(cfg, full=True), encoding="utf-8")
    return run_dir


def evals(run_dir: Path) -> list[dict]:
    lines = (run_dir / events.METRICS_FILE).read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "eval"]


@pytest.fixture(scope="module")
def gqa_run(tmp_path_factory):
    """A run trained on synthetic GQA with the official choices file; a testdev split."""
    root = tmp_path_factory.mktemp("gqa-data")
    synth.write(root, "gqa", images=12, seed=5, feature_dim=8, questions_per_image=3, boxes=4)
    val = json.loads((root / "val_balanced_questions.json").read_text())
    (root / "val_choices.json").write_text(
        json.dumps({qid: {"valid": [q["answer"]], "plausible": []} for qid, q in val.items()})
    )
    shutil.copy(root / "val_balanced_questions.json", root / "testdev_balanced_questions.json")
    shutil.copy(root / "val_sceneGraphs.json", root / "testdev_sceneGraphs.json")
    run_dir = make_run(tmp_path_factory.mktemp("runs"), "gqa", ["dataset=gqa", f"data_root={root}"])
    assert Trainer(run_dir).run() == 0
    return run_dir, root


def test_gqa_eval_events_carry_the_official_breakdowns(gqa_run):
    run_dir, _ = gqa_run
    ev = evals(run_dir)[-1]
    assert set(ev["accuracy_type"]) <= {"verify", "query", "choose", "logical", "compare"}
    assert set(ev["accuracy_semantic"]) <= {"attr", "rel"} and ev["accuracy_semantic"]
    assert ev["accuracy_official"] == pytest.approx(ev["accuracy"])
    # a prediction is valid exactly when it is the answer (the choices written above)
    assert ev["validity"] == pytest.approx(ev["accuracy"]) and ev["plausibility"] == 0.0
    assert "consistency" not in ev  # no entailments in synthetic questions


def predict(run_dir: Path, *args: str):
    return runner.invoke(app, ["predict", str(run_dir), *args], catch_exceptions=False)


def test_predict_gqa_writes_every_question_once(gqa_run, tmp_path):
    run_dir, root = gqa_run
    out = tmp_path / "gqa.json"
    result = predict(run_dir, "--split", "testdev", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    questions = json.loads((root / "testdev_balanced_questions.json").read_text())
    assert all(set(r) == {"questionId", "prediction"} for r in rows)
    assert all(isinstance(r["questionId"], str) and isinstance(r["prediction"], str) for r in rows)
    assert sorted(r["questionId"] for r in rows) == sorted(questions)
    train = json.loads((root / "train_balanced_questions.json").read_text())
    assert {r["prediction"] for r in rows} <= {q["answer"] for q in train.values()}
    assert f"{len(questions):,} predictions" in result.output


def test_predict_errors_are_one_line_exit_2(gqa_run, tmp_path):
    run_dir, _ = gqa_run
    result = predict(run_dir, "--split", "nosuch", "--out", str(tmp_path / "x.json"))
    assert result.exit_code == 2 and "nosuch_balanced_questions.json" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()
    # ... said before torch and the model code are imported (~10 s)
    probe = (
        "import sys; from vqatune.engine.predict import main; "
        f"code = main([{str(run_dir)!r}, '--split', 'nosuch', '--out', 'x.json']); "
        "sys.exit(code + 10 * ('torch' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 2
    empty = make_run(tmp_path, "untrained", ["dataset=gqa"])
    result = predict(empty, "--split", "val", "--out", str(tmp_path / "y.json"))
    assert result.exit_code == 2 and "no best checkpoint" in result.output
    assert "error:" in result.output and len(result.output.strip().splitlines()) == 1


def test_predict_vqa_test_dev_round_trip(tmp_path, capsys):
    """The prediction process's entry point, in this process (the CLI around it, its progress
    lines and its result line, are tested on GQA above: one process importing torch less)."""
    from vqatune.engine import predict as predicting

    root = tmp_path / "vqa"
    synth.write(root, "vqa", images=12, seed=6, feature_dim=8, questions_per_image=3, boxes=4)
    # test-dev: questions without annotations, features in test36.hdf5
    shutil.copy(
        root / "v2_OpenEnded_mscoco_val2014_questions.json",
        root / "v2_OpenEnded_mscoco_test-dev2015_questions.json",
    )
    shutil.copy(root / "val36.hdf5", root / "test36.hdf5")
    if (root / "val36_imgid2idx.json").exists():
        shutil.copy(root / "val36_imgid2idx.json", root / "test36_imgid2idx.json")
    run_dir = make_run(
        tmp_path, "vqa-run", ["dataset=vqa", f"data_root={root}", "min_answer_count=1"]
    )
    assert Trainer(run_dir).run() == 0
    ev = evals(run_dir)[-1]
    assert set(ev["accuracy_type"]) <= {"yes/no", "number", "other"} and ev["accuracy_type"]
    assert 0 <= ev["accuracy_official"] <= 1
    out = tmp_path / "vqa.json"
    capsys.readouterr()
    argv = [str(run_dir), "--split", "test-dev", "--out", str(out), "--checkpoint", "last"]
    assert predicting.main(argv) == 0
    progress = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = json.loads(out.read_text())
    questions = json.loads((root / "v2_OpenEnded_mscoco_test-dev2015_questions.json").read_text())
    ids = [q["question_id"] for q in questions["questions"]]
    assert progress[0] == {"total": len(ids)} and progress[-2] == {"done": len(ids)}
    assert progress[-1] == {"written": str(out), "questions": len(ids), "format": "vqa"}
    assert all(set(r) == {"question_id", "answer"} for r in rows)
    assert all(type(r["question_id"]) is int and isinstance(r["answer"], str) for r in rows)
    assert sorted(r["question_id"] for r in rows) == sorted(ids)


def test_show_and_compare_list_the_official_figures(gqa_run, tmp_path):
    run_dir, _ = gqa_run
    result = runner.invoke(app, ["show", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "best eval: accuracy attr (semantic)" in result.output
    assert "best eval: validity" in result.output
    twin = shutil.copytree(run_dir, tmp_path / "twin")
    result = runner.invoke(app, ["compare", str(run_dir), str(twin)])
    assert result.exit_code == 0, result.output
    assert "best eval: plausibility" in result.output
