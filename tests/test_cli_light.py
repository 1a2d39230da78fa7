"""The light CLI: presets and config commands, exit codes, no heavy imports, the wheel's contents."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from vqatune.engine import config
from vqatune.engine.schema import PARAMS
from vqatune.tui.cli import app

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "textual")


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def files_in(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# ------------------------------------------------------------------------------------------
# No heavy imports


CHECK_IMPORTS = """
import sys
from vqatune.tui.cli import app
for argv in {argvs!r}:
    try:
        app(argv, standalone_mode=False)
    except SystemExit:
        pass
print(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}))
"""


def test_light_commands_import_no_torch_transformers_or_textual(isolated):
    (isolated / "a.toml").write_text('extends = "24gb"\nlr = 1e-4\n')
    argvs = [
        ["--help"],
        ["presets"],
        ["presets", "--json"],
        ["config", "show", "smoke"],
        ["config", "show", "8gb", "--format", "cmdline"],
        ["config", "validate", "a.toml"],
        ["config", "diff", "a.toml", "24gb"],
        ["config", "from-cmdline", "python main.py --lr 3e-4"],
    ]
    code = CHECK_IMPORTS.format(argvs=argvs, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_console_script_help_imports_nothing_heavy():
    script = Path(sys.executable).parent / "vqatune"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    out = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert "presets" in out.stdout and "config" in out.stdout
    imported = {
        line.split("|")[-1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert imported and not {m for m in imported if m.split(".")[0] in HEAVY}


# ------------------------------------------------------------------------------------------
# presets


def test_presets_table_and_json(isolated):
    r = cli("presets")
    assert r.exit_code == 0
    for name in config.BUILTIN_ORDER:
        assert name in r.stdout
    assert "24 GB GPU" in r.stdout
    r = cli("presets", "--json")
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows][:9] == list(config.BUILTIN_ORDER)
    assert set(rows[0]) == {"name", "title", "description", "path"}
    assert all(row["title"] and row["description"] for row in rows)


# ------------------------------------------------------------------------------------------
# config show / validate / diff / from-cmdline


def test_config_show_formats(isolated):
    r = cli("config", "show", "24gb", "--set", "lr=1e-2", "-s", "dataset=GQA")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("# resolved from 24gb with lr=1e-2, dataset=GQA\n")
    (isolated / "shown.toml").write_text(r.stdout)
    assert config.load("shown.toml") == config.load("24gb").replace(lr=1e-2, dataset="gqa")
    assert "lr = 0.01 is outside" in r.stderr  # a warning, not an error
    j = json.loads(cli("config", "show", "24gb", "--format", "json", "--set", "seed=1").stdout)
    assert j["config"]["batch_size"] == 48 and j["overrides"] == {"seed": 1}
    assert j["effective_batch_size"] == 48 * 4 and j["source"] == "24gb"
    line = cli("config", "show", "8gb", "-f", "cmdline").stdout.strip()
    assert line == (
        "python main.py --batch_size 16 --gradient_accumulation_steps 4 "
        "--max_memory_usage 0.7 --mixed_precision --vision_encoder swin"
    )  # the GPU presets build X-VLM's Swin vision encoder
    assert cli("config", "show", "-f", "cmdline").stdout.strip() == "python main.py"
    full = cli("config", "show", "--all", "-f", "cmdline").stdout
    assert full.count(" --") == len(config.Config().to_dict())


@pytest.mark.parametrize(
    "args,message",
    [
        (["config", "show", "24gbb"], "error: 24gbb: no such preset or file; did you mean '24gb'?"),
        (["config", "show", "--set", "lr=-1"], "error: --set: lr: must be > 0.0, got -1.0"),
        (
            ["config", "show", "--set", "dropuot=0.1"],
            "error: --set: unknown parameter 'dropuot'; did you mean 'dropout'?",
        ),
        (
            ["config", "from-cmdline", "python main.py --lr"],
            "error: command line: --lr needs a value",
        ),
        (["config", "diff", "24gb", "nope.toml"], "error: nope.toml: no such file"),
    ],
)
def test_user_errors_are_one_line_exit_2_nothing_written(isolated, args, message):
    before = files_in(isolated.parent)
    r = cli(*args)
    assert r.exit_code == 2
    assert r.stderr == message + "\n"
    assert r.stdout == ""
    assert files_in(isolated.parent) == before


def test_validate_several_files(isolated):
    (isolated / "good.toml").write_text('extends = "8gb"\nlr = 1e-4\n')
    (isolated / "warn.toml").write_text("lr = 0.1\n")
    (isolated / "bad.toml").write_text("[model]\ndropout = 1.5\n")
    r = cli("config", "validate", "good.toml", "warn.toml", "vqa")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["good.toml: ok", "warn.toml: ok (1 warning)", "vqa: ok"]
    assert "warning: warn.toml: lr = 0.1 is outside" in r.stderr
    (isolated / "broken.toml").write_text("[model]\ndropout = = 0.3\n")
    r = cli("config", "validate", "good.toml", "bad.toml", "broken.toml", "missing.toml")
    assert r.exit_code == 2
    assert r.stdout.splitlines() == ["good.toml: ok"]
    assert r.stderr.splitlines() == [
        "error: bad.toml:2: dropout: must be >= 0.0 and < 1.0, got 1.5",
        "error: broken.toml:2:11: invalid TOML: Invalid value",
        "error: missing.toml: no such file",
    ]
    assert "Traceback" not in r.stderr


THREE_ERRORS = 'extends = "smoke"\n[training]\nlr = -1\nlerning_rate = 3\n[model]\nAOA_layers = 0\n'


@pytest.mark.parametrize("command", [["config", "validate"], ["run"]])
def test_every_error_of_a_file_at_once(isolated, command):
    (isolated / "three.toml").write_text(THREE_ERRORS)
    r = cli(*command, "three.toml")
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert [line.split(": ")[:3] for line in lines] == [
        ["error", "three.toml:3", "lr"],
        ["error", "three.toml:4", "unknown parameter 'lerning_rate'"],
        ["error", "three.toml:6", "AOA_layers"],
    ], r.stderr
    assert not (isolated.parent / "runs").exists()  # nothing created


def test_diff_shows_only_differing_parameters(isolated):
    r = cli("config", "diff", "8gb", "24gb", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == [
        {"param": "batch_size", "a": 16, "b": 48},
        {"param": "gradient_accumulation_steps", "a": 4, "b": 1},
        {"param": "max_memory_usage", "a": 0.7, "b": 0.9},
        {"param": "mixed_precision", "a": True, "b": False},
    ]
    table = cli("config", "diff", "8gb", "24gb").stdout
    rows = [line.split()[0] for line in table.splitlines()[1:]]
    assert rows == [
        "batch_size",
        "gradient_accumulation_steps",
        "max_memory_usage",
        "mixed_precision",
    ]
    # The GPU presets (gqa among them) build X-VLM's Swin; default keeps the ViT.
    assert cli("config", "diff", "default", "gqa").stdout.split() == [
        "parameter",
        "default",
        "gqa",
        "vision_encoder",
        "vit",
        "swin",
        "dataset",
        "easy-vqa",
        "gqa",
    ]
    assert cli("config", "diff", "smoke", "smoke").stdout == "smoke and smoke are identical\n"


def test_from_cmdline_prints_toml_and_extends(isolated):
    r = cli("config", "from-cmdline", "python main.py --lr 3e-4 --mixed_precision --dataset VQA")
    assert r.exit_code == 0
    assert r.stdout == (
        "[training]\nlr = 0.0003\n\n[optimisation]\nmixed_precision = true\n\n"
        '[run]\ndataset = "vqa"\n'
    )
    r = cli(
        "config",
        "from-cmdline",
        "--extends",
        "8gb",
        "python main.py --batch_size 16 --seed 3 --max_memory_usage 0.7",
    )
    assert r.stdout == 'extends = "8gb"\n\n[training]\nseed = 3\n'
    assert (
        cli("config", "from-cmdline", "python main.py").stdout
        == "# every parameter at its default\n"
    )


# ------------------------------------------------------------------------------------------
# Packaging: a real (non-editable) wheel ships every package and the presets. ~3 s.


def test_wheel_ships_all_packages_and_presets(tmp_path):
    # Build from a clean copy: setuptools reuses ./build, whose stale files could hide a
    # package missing from pyproject; and the test must not write into the repository.
    # Only what the build reads: copying the whole checkout once copied tmp_path into itself.
    source = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "__snapshots__")
    for top in ("engine", "tui", "presets"):
        shutil.copytree(REPO / top, source / top, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    # The build backend of this environment when it meets pyproject's build-system (a fresh
    # isolated one costs seconds of installing setuptools); the wheel is the same.
    from vqatune.engine.config import tomllib  # tomli before Python 3.11

    (requirement,) = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"][
        "requires"
    ]
    name, minimum = requirement.split(">=")
    try:
        have = tuple(int(x) for x in metadata.version(name).split(".")[:2])
        isolation = ["--no-build-isolation"] if have >= tuple(map(int, minimum.split("."))) else []
    except metadata.PackageNotFoundError:
        isolation = []
    out = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation),
            *("-w", str(tmp_path), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("vqatune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for top, package in (
        ("engine", "vqatune/engine"),
        ("tui", "vqatune/tui"),
        ("presets", "vqatune/presets"),
    ):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.relative_to(REPO / top).as_posix()
            assert f"{package}/{rel}" in names, f"{init.parent} is missing from pyproject packages"
        for data in list((REPO / top).rglob("*.toml")) + list((REPO / top).rglob("*.tcss")):
            assert f"{package}/{data.relative_to(REPO / top).as_posix()}" in names
    assert {f"vqatune/presets/{name}.toml" for name in config.BUILTIN_ORDER} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vqatune = vqatune.tui.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([p.name for p in PARAMS]) | st.text(max_size=8), st.text(max_size=12))
def test_random_set_never_tracebacks(name, value):
    r = cli("config", "show", "--format", "json", "--set", f"{name}={value}")
    assert r.exit_code in (0, 2)
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)
    if r.exit_code == 2:
        assert r.stdout == "" and r.stderr.startswith("error: --set")
    else:
        assert json.loads(r.stdout)["overrides"]
