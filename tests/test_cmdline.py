"""The guide's `python main.py ...` command lines: every one accepted, round trips, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner
from vqatune.engine import cmdline, config
from vqatune.engine.config import Config, ConfigError
from vqatune.tui.cli import app

# Every command line of /work/shared/tuning-guide.md, verbatim (continuations included).
GUIDE_LINES = {
    "step 1": "python main.py --lr 2.8e-4 --xvlm_lr 5e-5 --batch_size 32 --epochs 20",
    "step 2": "python main.py --AOA_layers 6 --num_hid 1024 --dropout 0.45",
    "step 3": "python main.py --general_hidden_dim 300 --mgat_layers 4 --alpha 1.0 --beta 10.0",
    "short of memory": """python main.py --batch_size 16 --gradient_accumulation_steps 2 --mixed_precision \\
  --memory_efficient_attention --max_memory_usage 0.7""",
    "throughput": "python main.py --batch_size 64 --update_freq 2 --dynamic_batch_size --max_memory_usage 0.9",
    "gqa": "python main.py --dataset GQA --lr 2.8e-4 --batch_size 32 --AOA_layers 6 --general_hidden_dim 300 --mgat_layers 4",
    "vqa": "python main.py --dataset VQA --lr 3e-4 --batch_size 24 --AOA_layers 8 --general_hidden_dim 512 --mgat_layers 6",
    "8gb": "python main.py --batch_size 16 --gradient_accumulation_steps 4 --mixed_precision --max_memory_usage 0.7",
    "24gb": "python main.py --batch_size 48 --gradient_accumulation_steps 1 --max_memory_usage 0.9",
    "lr base": "python main.py --lr 2.8e-4 --xvlm_lr 5e-5",
    "lr higher": "python main.py --lr 3.5e-4 --xvlm_lr 7e-5",
    "lr lower": "python main.py --lr 2e-4 --xvlm_lr 3e-5",
    "simple model": "python main.py --AOA_layers 4 --num_hid 512",
    "medium model": "python main.py --AOA_layers 6 --num_hid 1024",
    "complex model": "python main.py --AOA_layers 8 --num_hid 2048",
    "isubgvqa base": "python main.py --mgat_layers 4 --alpha 1.0 --beta 10.0",
    "isubgvqa stronger": "python main.py --mgat_layers 6 --alpha 1.5 --beta 15.0",
    "isubgvqa conservative": "python main.py --mgat_layers 3 --alpha 0.8 --beta 8.0",
    "high-performance": """python main.py --checkpoint pretrained/model --config xvlm/configs/VQA_480.yaml \\
  --output saved_models/high_performance --lr 3e-4 --xvlm_lr 6e-5 --batch_size 48 \\
  --AOA_layers 8 --num_hid 1536 --general_hidden_dim 512 --mgat_layers 6 --alpha 1.2 --beta 12.0 \\
  --mixed_precision --max_memory_usage 0.9""",
    "memory-optimized": """python main.py --checkpoint pretrained/model --config xvlm/configs/VQA_480.yaml \\
  --output saved_models/memory_optimized --lr 2.5e-4 --xvlm_lr 4e-5 --batch_size 16 \\
  --gradient_accumulation_steps 4 --AOA_layers 4 --num_hid 768 --general_hidden_dim 256 \\
  --mgat_layers 3 --alpha 0.8 --beta 8.0 --mixed_precision --memory_efficient_attention \\
  --max_memory_usage 0.7""",
}
# The example configurations' machine-local paths, left out of the presets on purpose.
PATH_FLAGS = ("checkpoint", "config", "output")
PRESET_LINES = ("8gb", "24gb", "high-performance", "memory-optimized", "gqa", "vqa")


def flag_count(line: str) -> int:
    return sum(word.startswith("--") for word in line.split())


def test_every_guide_line_is_copied_verbatim():
    guide_path = Path("/work/shared/tuning-guide.md")  # the source document, where present
    if not guide_path.exists():
        pytest.skip("the tuning guide is not on this machine")
    guide = guide_path.read_text(encoding="utf-8")
    for line in GUIDE_LINES.values():
        assert line in guide
    assert guide.count("python main.py") == len(GUIDE_LINES)  # none left out


@pytest.mark.parametrize("key", list(GUIDE_LINES))
def test_guide_line_round_trips_through_the_cli(key, isolated):
    line = GUIDE_LINES[key]
    values = cmdline.parse(line)
    assert len(values) == flag_count(line)  # every flag understood, none dropped
    runner = CliRunner()
    toml = runner.invoke(app, ["config", "from-cmdline", line])
    assert toml.exit_code == 0, toml.stderr
    (isolated / "c.toml").write_text(toml.stdout, encoding="utf-8")
    cfg = config.load("c.toml")
    assert cfg == Config(values)
    back = runner.invoke(app, ["config", "show", "c.toml", "--format", "cmdline"])
    assert back.exit_code == 0, back.stderr
    assert back.stdout.startswith("python main.py")
    assert cmdline.config_from_cmdline(back.stdout) == cfg


def test_guide_values_are_typed():
    v = cmdline.parse(GUIDE_LINES["short of memory"])
    assert v == {
        "batch_size": 16,
        "gradient_accumulation_steps": 2,
        "mixed_precision": True,
        "memory_efficient_attention": True,
        "max_memory_usage": 0.7,
    }
    v = cmdline.parse(GUIDE_LINES["high-performance"])
    assert (v["checkpoint"], v["config"], v["output"]) == (
        "pretrained/model",
        "xvlm/configs/VQA_480.yaml",
        "saved_models/high_performance",
    )
    assert cmdline.parse(GUIDE_LINES["gqa"])["dataset"] == "gqa"
    assert cmdline.parse(GUIDE_LINES["step 1"])["lr"] == 2.8e-4


@pytest.mark.parametrize("name", PRESET_LINES)
def test_presets_equal_the_guide_lines(name, isolated):
    from_guide = cmdline.config_from_cmdline(GUIDE_LINES[name])
    # the GPU presets add one thing the guide's lines get from their --config YAML (use_swin:
    # True in X-VLM's VQA_480.yaml): X-VLM's Swin vision encoder
    expected = from_guide.replace(**{p: "" for p in PATH_FLAGS}, vision_encoder="swin")
    assert config.load(name) == expected


@pytest.mark.parametrize(
    "line,expected",
    [
        ("python main.py --tfidf false --use_counter", {"tfidf": False, "use_counter": True}),
        ("python main.py --no-tfidf", {"tfidf": False}),
        ("python main.py --use_mgat 1 --use_masking false", {"use_mgat": 1, "use_masking": 0}),
        ("python main.py --lr=3e-4 --batch-size 8", {"lr": 3e-4, "batch_size": 8}),
        ("CUDA_VISIBLE_DEVICES=0 python -m vqatune train --seed 3  # a note", {"seed": 3}),
        ("--mixed_precision --name 'my run'", {"mixed_precision": True, "name": "my run"}),
        ("python main.py", {}),
        (
            "# step 1\npython main.py --output runs/#1 --name '# x' --seed 2 # note",
            {"output": "runs/#1", "name": "# x", "seed": 2},
        ),
    ],
)
def test_flag_forms(line, expected):
    assert cmdline.parse(line) == expected


@pytest.mark.parametrize(
    "line,message",
    [
        ("python main.py --lr", "command line: --lr needs a value"),
        ("python main.py --lr -1", "command line: --lr: must be > 0.0, got -1.0"),
        (
            "python main.py --aoa_layers 4",
            "command line: unknown flag --aoa_layers; did you mean 'AOA_layers'?",
        ),
        ("python main.py --lr 1e-4 extra", "command line: unexpected argument 'extra'"),
        ("rm -rf / --lr 1", "command line: unexpected word 'rm' before the flags"),
        ("python main.py --name 'open", "command line: No closing quotation"),
        (
            "python main.py --use_mgat 2",
            "command line: --use_mgat: expected 0/1 or true/false, got '2'",
        ),
    ],
)
def test_bad_command_lines(line, message):
    with pytest.raises(ConfigError) as e:
        cmdline.parse(line)
    assert str(e.value) == message


def test_to_cmdline_booleans_are_bare_flags_and_quoted():
    cfg = Config(
        {"mixed_precision": True, "tfidf": False, "lr": 3e-4, "name": "my run", "use_mgat": 1}
    )
    line = cmdline.to_cmdline(cfg)
    assert line == (
        "python main.py --lr 3e-4 --tfidf false --use_mgat 1 --mixed_precision --name 'my run'"
    )
    assert cmdline.config_from_cmdline(line) == cfg
    full = cmdline.to_flags(Config(), full=True)
    assert sum(w.startswith("--") for w in full) == len(Config().to_dict())
    assert cmdline.config_from_cmdline(cmdline.to_cmdline(Config(), full=True)) == Config()
    assert "--data_root ''" in cmdline.to_cmdline(Config(), full=True)
