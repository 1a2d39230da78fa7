"""The one declaration of every parameter vqatune knows.

Each parameter is declared once, here: name (spelled as the tuning guide's `main.py` flag), type,
default, category (the guide's section, which is also the TOML table), group (the guide's
sub-table, which is a TUI panel), help, the guide's recommended range, and hard bounds or
choices. TUI panels, TOML presets, CLI flags and validation are all derived from this list.

This module must stay light: no torch, no textual.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Kinds of value. "int01" is the guide's 0/1 switches (use_instruction, ...): stored as int 0/1,
# accepted as 0/1 or true/false.
KINDS = ("int", "float", "bool", "int01", "str", "choice", "path")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    default: Any
    category: str  # guide section; also the TOML table (see CATEGORY_TABLES)
    group: str  # guide sub-table; a TUI panel
    help: str
    recommended: tuple | None = None  # (low, high) for numbers, allowed-by-advice choices for str
    low: float | None = None  # hard lower bound
    high: float | None = None  # hard upper bound
    low_open: bool = False  # low is exclusive
    high_open: bool = False  # high is exclusive
    choices: tuple[str, ...] | None = None
    in_guide: bool = False  # one of the 38 parameters of the guide's tables
    aliases: dict[str, str] = field(default_factory=dict)  # accepted spellings of choices
    list_of: bool = False  # a "str" holding a comma-separated list; a TOML list is joined

    @property
    def table(self) -> str:
        return CATEGORY_TABLES[self.category]

    @property
    def flag(self) -> str:
        return "--" + self.name

    def bounds_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_fmt(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_fmt(self.high)}")
        return " and ".join(parts)

    def recommended_text(self) -> str:
        if self.recommended is None:
            return ""
        if self.kind in ("str", "choice"):
            return " or ".join(self.recommended)
        lo, hi = self.recommended
        return f"{_fmt(lo)} to {_fmt(hi)}"


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return format_float(x)
    return str(x)


def format_float(x: float) -> str:
    """Shortest text that reads back as x; scientific for small learning rates (2.8e-4)."""
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
        mantissa, exp = f"{x:e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        short = f"{mantissa}e{int(exp)}"
        return short if float(short) == x else repr(x)
    return repr(float(x))


# Guide section -> TOML table.
CATEGORY_TABLES = {
    "Training basics": "training",
    "Model architecture": "model",
    "X-VLM backbone": "backbone",
    "Data processing": "data",
    "ISubGVQA": "isubgvqa",
    "Optimisation": "optimisation",
    "Fine-tuning": "finetuning",
    "Run": "run",
}
TABLE_CATEGORIES = {table: category for category, table in CATEGORY_TABLES.items()}

# TUI panels, in display order.
GROUPS = (
    "Training basics",
    "BAN",
    "AoA",
    "Activation and regularisation",
    "Data processing",
    "ISubGVQA graph network",
    "ISubGVQA control",
    "Gradients",
    "Memory",
    "Fine-tuning",
    "X-VLM backbone",
    "Run",
)


def _p(name, kind, default, category, group, help, guide=True, **kw) -> Param:
    return Param(name, kind, default, category, group, help, in_guide=guide, **kw)


TB, MA, DP, IS, OP, FT, RUN, BB = (
    "Training basics",
    "Model architecture",
    "Data processing",
    "ISubGVQA",
    "Optimisation",
    "Fine-tuning",
    "Run",
    "X-VLM backbone",
)

PARAMS: tuple[Param, ...] = (
    # 1.1 Training basics
    _p("epochs", "int", 20, TB, "Training basics", "Training epochs.", recommended=(10, 50), low=1),
    _p(
        "lr",
        "float",
        2.8e-4,
        TB,
        "Training basics",
        "Main learning rate: the heads (BAN, AoA, ISubGVQA, classifier).",
        recommended=(1e-4, 5e-4),
        low=0.0,
        low_open=True,
    ),
    _p(
        "xvlm_lr",
        "float",
        5e-5,
        TB,
        "Training basics",
        "Learning rate of the X-VLM backbone (0 freezes it).",
        recommended=(1e-5, 1e-4),
        low=0.0,
    ),
    _p(
        "batch_size",
        "int",
        32,
        TB,
        "Training basics",
        "Batch size (per micro-batch).",
        recommended=(16, 64),
        low=1,
    ),
    _p(
        "update_freq",
        "int",
        4,
        TB,
        "Training basics",
        "Micro-batches per optimiser update; multiplies the effective batch size.",
        recommended=(2, 8),
        low=1,
    ),
    _p(
        "seed",
        "int",
        1204,
        TB,
        "Training basics",
        "Random seed (python, numpy, torch); keep fixed for reproducibility.",
        low=0,
    ),
    # 1.2 Model architecture: BAN
    _p(
        "gamma",
        "int",
        2,
        MA,
        "BAN",
        "Number of bilinear attention glimpses.",
        recommended=(1, 4),
        low=1,
    ),
    _p(
        "use_counter",
        "bool",
        False,
        MA,
        "BAN",
        "Use the counting module (Zhang et al. 2018).",
        recommended=None,
    ),
    _p(
        "counter_act",
        "choice",
        "zhang",
        MA,
        "BAN",
        "Activation of the counting module: 'zhang' is the paper's piecewise-linear one.",
        recommended=("zhang",),
        choices=("zhang", "sigmoid", "relu"),
    ),
    # AoA
    _p(
        "AOA_layers",
        "int",
        6,
        MA,
        "AoA",
        "Number of attention-on-attention layers.",
        recommended=(4, 8),
        low=1,
    ),
    _p(
        "num_hid",
        "int",
        1024,
        MA,
        "AoA",
        "Joint representation size (BAN, AoA, classifier).",
        recommended=(512, 2048),
        low=8,
    ),
    # Activation and regularisation
    _p(
        "activation",
        "choice",
        "swish",
        MA,
        "Activation and regularisation",
        "Activation function of the classifier and AoA feed-forward layers.",
        recommended=("relu", "swish"),
        choices=("swish", "relu", "gelu", "elu", "leaky_relu", "tanh"),
        aliases={"silu": "swish"},
    ),
    _p(
        "dropout",
        "float",
        0.45,
        MA,
        "Activation and regularisation",
        "Dropout rate.",
        recommended=(0.3, 0.6),
        low=0.0,
        high=1.0,
        high_open=True,
    ),
    # 1.3 Data processing
    _p(
        "question_len",
        "int",
        12,
        DP,
        "Data processing",
        "Maximum question length in tokens (longer questions are truncated).",
        recommended=(8, 20),
        low=1,
    ),
    _p(
        "max_boxes",
        "int",
        50,
        DP,
        "Data processing",
        "Maximum number of regions (bounding boxes) per image.",
        recommended=(30, 100),
        low=1,
    ),
    _p(
        "num_stat_word",
        "int",
        30,
        DP,
        "Data processing",
        "Statistics words per image (MGHR's files, else from the scene graph or detector classes;"
        " inactive when the data has none: see `data inspect`).",
        recommended=(20, 50),
        low=0,
    ),
    _p(
        "tfidf",
        "bool",
        True,
        DP,
        "Data processing",
        "Initialise word embeddings with TF-IDF weighted co-occurrence (as ban-vqa).",
        recommended=None,
    ),
    # 1.4 ISubGVQA: graph network
    _p(
        "general_hidden_dim",
        "int",
        300,
        IS,
        "ISubGVQA graph network",
        "Hidden size of the graph network.",
        recommended=(256, 512),
        low=2,
    ),
    _p(
        "mgat_layers",
        "int",
        4,
        IS,
        "ISubGVQA graph network",
        "Number of message-passing (MGAT) layers.",
        recommended=(2, 6),
        low=1,
    ),
    _p(
        "sampler_type",
        "choice",
        "imle",
        IS,
        "ISubGVQA graph network",
        "Subgraph sampler: I-MLE or Gumbel top-k.",
        recommended=("imle", "gumbel"),
        choices=("imle", "gumbel"),
    ),
    _p(
        "sample_k",
        "int",
        2,
        IS,
        "ISubGVQA graph network",
        "K of the top-k subgraph sampler (nodes kept).",
        recommended=(1, 5),
        low=1,
    ),
    _p(
        "nb_samples",
        "int",
        1,
        IS,
        "ISubGVQA graph network",
        "Number of samples drawn by the sampler.",
        recommended=(1, 3),
        low=1,
    ),
    # ISubGVQA: control
    _p(
        "alpha",
        "float",
        1.0,
        IS,
        "ISubGVQA control",
        "I-MLE target: weight of the scores (alpha * theta).",
        recommended=(0.5, 2.0),
        low=0.0,
    ),
    _p(
        "beta",
        "float",
        10.0,
        IS,
        "ISubGVQA control",
        "I-MLE target: step along the downstream gradient (- beta * dL/dz).",
        recommended=(5.0, 20.0),
        low=0.0,
    ),
    _p(
        "tau",
        "float",
        1.0,
        IS,
        "ISubGVQA control",
        "Sampler temperature (Gumbel noise scale / relaxation temperature).",
        recommended=(0.5, 2.0),
        low=0.0,
        low_open=True,
    ),
    _p(
        "use_instruction",
        "int01",
        1,
        IS,
        "ISubGVQA control",
        "Gate node states by the question's per-layer instructions (0/1).",
        recommended=None,
    ),
    _p(
        "use_masking",
        "int01",
        1,
        IS,
        "ISubGVQA control",
        "Keep only the sampled top-k subgraph in the last layer (0/1).",
        recommended=None,
    ),
    _p(
        "use_mgat",
        "int01",
        0,
        IS,
        "ISubGVQA control",
        "Use masked GATv2-style layers (MGAT) instead of plain graph attention (0/1).",
        recommended=None,
    ),
    # 1.5 Optimisation: gradients
    _p(
        "clip_norm",
        "float",
        0.25,
        OP,
        "Gradients",
        "Gradient clipping threshold on the global norm (0 disables clipping).",
        recommended=(0.1, 0.5),
        low=0.0,
    ),
    _p(
        "lr_schedule",
        "choice",
        "ban-vqa",
        OP,
        "Gradients",
        "Schedule of the heads' lr: ban-vqa's per-epoch warm-up (0.5, 1, 1.5, 2 x lr, then "
        "x 0.25 every 2 epochs from epoch 10), or linear: per-step warm-up to lr over the first "
        "10% of the steps, then linear decay to 0 (runs of a few epochs).",
        guide=False,
        recommended=("ban-vqa", "linear"),
        choices=("ban-vqa", "linear"),
    ),
    _p(
        "gradient_accumulation_steps",
        "int",
        1,
        OP,
        "Gradients",
        "Gradient accumulation steps; simulates a larger batch.",
        recommended=(1, 8),
        low=1,
    ),
    # Memory
    _p(
        "dynamic_batch_size",
        "bool",
        False,
        OP,
        "Memory",
        "On CUDA out-of-memory, halve the micro-batch and raise accumulation to keep the "
        "effective batch.",
        recommended=None,
    ),
    _p(
        "max_memory_usage",
        "float",
        0.8,
        OP,
        "Memory",
        "Highest fraction of GPU memory this process may use.",
        recommended=(0.7, 0.9),
        low=0.0,
        low_open=True,
        high=1.0,
    ),
    _p(
        "mixed_precision",
        "bool",
        False,
        OP,
        "Memory",
        "Mixed-precision training (fp16 + loss scaling on CUDA, bf16 where supported).",
        recommended=None,
    ),
    _p(
        "memory_efficient_attention",
        "bool",
        False,
        OP,
        "Memory",
        "Fused SDPA attention and activation checkpointing in the backbone.",
        recommended=None,
    ),
    _p(
        "compile",
        "bool",
        False,
        OP,
        "Memory",
        "torch.compile the training forward (inductor; CPU or GPU). Compiling takes tens of "
        "seconds at the start of the run; it pays on long runs.",
        guide=False,
        recommended=None,
    ),
    # 1.6 Fine-tuning
    _p(
        "omega_q",
        "float",
        0.1,
        FT,
        "Fine-tuning",
        "Weight of the question-instruction (question-entity) fusion.",
        recommended=(0.05, 0.2),
        low=0.0,
    ),
    _p(
        "omega_v",
        "float",
        0.01,
        FT,
        "Fine-tuning",
        "Weight of the image-semantics (statistics words-visual) fusion (inactive when the data"
        " has no statistics words).",
        recommended=(0.005, 0.05),
        low=0.0,
    ),
    _p(
        "fusion_ratio",
        "float",
        0.1,
        FT,
        "Fine-tuning",
        "Weight of the fused prediction's loss beside the branch losses.",
        recommended=(0.05, 0.2),
        low=0.0,
    ),
    _p(
        "topk",
        "int",
        6,
        FT,
        "Fine-tuning",
        "Top-K image predicates that feed the statistics words (GQA: also names the file"
        " {split}_{topk}_stats_words.json; inactive without statistics words).",
        recommended=(3, 10),
        low=1,
    ),
    # X-VLM backbone sizes (overridden by the X-VLM YAML given as `config`)
    _p(
        "vision_encoder",
        "choice",
        "vit",
        BB,
        "X-VLM backbone",
        "X-VLM's vision encoder: swin (Swin-B at image_res, X-VLM's published encoder; sizes "
        "from the YAML's vision_config) or vit (a small ViT sized by the knobs below).",
        guide=False,
        choices=("swin", "vit"),
    ),
    _p(
        "image_res",
        "int",
        384,
        BB,
        "X-VLM backbone",
        "Image resolution the vision encoder sees (images are resized to it).",
        guide=False,
        low=8,
    ),
    _p(
        "patch_size",
        "int",
        16,
        BB,
        "X-VLM backbone",
        "Vision patch size in pixels.",
        guide=False,
        low=1,
    ),
    _p(
        "vision_width",
        "int",
        768,
        BB,
        "X-VLM backbone",
        "Width of the vision encoder.",
        guide=False,
        low=8,
    ),
    _p(
        "vision_layers",
        "int",
        12,
        BB,
        "X-VLM backbone",
        "Layers of the vision encoder.",
        guide=False,
        low=1,
    ),
    _p(
        "text_width",
        "int",
        768,
        BB,
        "X-VLM backbone",
        "Width of the text encoder and the cross-attention fusion.",
        guide=False,
        low=8,
    ),
    _p(
        "text_layers",
        "int",
        6,
        BB,
        "X-VLM backbone",
        "Layers of the BERT text encoder.",
        guide=False,
        low=1,
    ),
    _p(
        "fusion_layers",
        "int",
        6,
        BB,
        "X-VLM backbone",
        "Cross-attention fusion layers (text attends to the image).",
        guide=False,
        low=1,
    ),
    _p(
        "conv_stem",
        "bool",
        False,
        BB,
        "X-VLM backbone",
        "Convolutional patch embedding (hybrid ViT): 3x3 convolutions and 2x2 max pools instead "
        "of the linear patch projection; a ViT trained from scratch learns shapes far sooner.",
        guide=False,
    ),
    _p(
        "backbone_heads",
        "int",
        12,
        BB,
        "X-VLM backbone",
        "Attention heads in the backbone (must divide the widths).",
        guide=False,
        low=1,
    ),
    # Run: what the guide's command lines pass besides the tables, and what a user needs.
    _p(
        "dataset",
        "choice",
        "easy-vqa",
        RUN,
        "Run",
        "Data set: easy-vqa (built in), gqa or vqa (official files under data_root), synthetic.",
        guide=False,
        choices=("easy-vqa", "gqa", "vqa", "synthetic"),
        aliases={"easyvqa": "easy-vqa", "easy_vqa": "easy-vqa", "vqav2": "vqa", "vqa2": "vqa"},
    ),
    _p(
        "data_root",
        "path",
        "",
        RUN,
        "Run",
        "Folder with the data set's official files.",
        guide=False,
    ),
    _p(
        "image_dir",
        "path",
        "",
        RUN,
        "Run",
        "Folder of the official images for the X-VLM branch (GQA images/, COCO train2014/ "
        "val2014/ test2015/); default: images/ or the COCO folders under data_root.",
        guide=False,
    ),
    _p(
        "checkpoint",
        "path",
        "",
        RUN,
        "Run",
        "X-VLM checkpoint file (pre-training or VQA fine-tuned), vqatune checkpoint, or local "
        "transformers folder (text/, vision/).",
        guide=False,
    ),
    _p(
        "config",
        "path",
        "",
        RUN,
        "Run",
        "X-VLM's own YAML (e.g. xvlm/configs/VQA_480.yaml): Swin and BERT JSONs, text_encoder "
        "folder, image_res, max_tokens.",
        guide=False,
    ),
    _p(
        "output",
        "path",
        "",
        RUN,
        "Run",
        "Run directory to write (default: a new directory in the runs store).",
        guide=False,
    ),
    _p("name", "str", "", RUN, "Run", "Run name (part of the run id).", guide=False),
    _p(
        "device",
        "choice",
        "auto",
        RUN,
        "Run",
        "Where to train: auto picks CUDA when present.",
        guide=False,
        choices=("auto", "cpu", "cuda"),
    ),
    _p("num_workers", "int", 0, RUN, "Run", "DataLoader worker processes.", guide=False, low=0),
    _p(
        "eval_every",
        "int",
        0,
        RUN,
        "Run",
        "Evaluate every N optimiser steps (0: at the end of each epoch).",
        guide=False,
        low=0,
    ),
    _p(
        "checkpoint_every_min",
        "float",
        15.0,
        RUN,
        "Run",
        "Also write checkpoints/last.pt every N minutes between evaluations (0: only at "
        "evaluations); a crash loses at most that much training.",
        guide=False,
        low=0,
    ),
    _p(
        "patience",
        "int",
        0,
        RUN,
        "Run",
        "Early stopping: evaluations without a better validation accuracy (0: off).",
        guide=False,
        low=0,
    ),
    _p(
        "max_steps",
        "int",
        0,
        RUN,
        "Run",
        "Stop after N optimiser steps (0: no limit).",
        guide=False,
        low=0,
    ),
    _p(
        "train_splits",
        "str",
        "train",
        RUN,
        "Run",
        "Official splits to train on, comma-separated (GQA / VQA v2: train,val for test-dev);"
        " the evaluation split must not be among them.",
        guide=False,
        list_of=True,
    ),
    _p(
        "eval_split",
        "str",
        "",
        RUN,
        "Run",
        "Split to evaluate on (empty: the data set's default; GQA val, else testdev, test, the"
        " first not trained on; VQA v2 val).",
        guide=False,
    ),
    _p(
        "train_limit",
        "int",
        0,
        RUN,
        "Run",
        "Use only the first N training questions (0: all).",
        guide=False,
        low=0,
    ),
    _p(
        "eval_limit",
        "int",
        0,
        RUN,
        "Run",
        "Evaluate on only the first N validation questions (0: all).",
        guide=False,
        low=0,
    ),
    _p(
        "log_every",
        "int",
        10,
        RUN,
        "Run",
        "Write a step event every N optimiser steps.",
        guide=False,
        low=1,
    ),
    _p(
        "min_answer_count",
        "int",
        9,
        RUN,
        "Run",
        "VQA answer vocabulary: answers seen at least N times in training.",
        guide=False,
        low=1,
    ),
    _p(
        "allow_dropped",
        "bool",
        False,
        RUN,
        "Run",
        "Allow more than 1% of questions to be dropped (no graph or features for their image).",
        guide=False,
    ),
    _p(
        "nproc_per_node",
        "int",
        1,
        RUN,
        "Run",
        "Training processes on this server, one per GPU (torchrun --nproc_per_node; 1: no DDP).",
        guide=False,
        low=1,
    ),
    _p(
        "nnodes",
        "int",
        1,
        RUN,
        "Run",
        "Servers taking part in the run (torchrun --nnodes); each runs the same command.",
        guide=False,
        low=1,
    ),
    _p(
        "node_rank",
        "int",
        0,
        RUN,
        "Run",
        "This server's number among nnodes, 0 to nnodes-1; node 0 writes the run's records.",
        guide=False,
        low=0,
    ),
    _p(
        "rdzv_endpoint",
        "str",
        "",
        RUN,
        "Run",
        "HOST:PORT of node 0 where the servers meet (torchrun --rdzv_endpoint; nnodes > 1).",
        guide=False,
    ),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
GUIDE_PARAMS: tuple[Param, ...] = tuple(p for p in PARAMS if p.in_guide)
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMS}

assert len(GUIDE_PARAMS) == 38, len(GUIDE_PARAMS)


def params_in_group(group: str) -> list[Param]:
    return [p for p in PARAMS if p.group == group]


def params_in_table(table: str) -> list[Param]:
    return [p for p in PARAMS if p.table == table]


class ConfigError(Exception):
    """A user mistake in a config, preset, override or command line: one line, already formatted.

    Re-exported by vqatune.engine.config, where callers import it from.
    """


class ParamError(ConfigError, ValueError):
    """A value that breaks a parameter's type or hard bounds (a ConfigError, so CLI error
    handlers that catch ConfigError turn it into one line too)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def coerce(param: Param, value: Any) -> Any:
    """Turn a TOML value or a command-line string into the parameter's type, or raise ParamError.

    Strings are parsed (as from `--set` or a command line); TOML values must already have the
    right type, except that ints are accepted for floats.
    """
    kind = param.kind
    if kind in ("bool", "int01"):
        if isinstance(value, bool):
            out = value
        elif isinstance(value, int) and value in (0, 1):
            out = bool(value)
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            out = value.strip().lower() in _TRUE
        else:
            allowed = "0/1 or true/false" if kind == "int01" else "true or false"
            raise ParamError(param.name, f"expected {allowed}, got {_show(value)}")
        return int(out) if kind == "int01" else out
    if kind == "int":
        if isinstance(value, bool):
            raise ParamError(param.name, f"expected an integer, got {_show(value)}")
        if isinstance(value, int):
            out = value
        elif isinstance(value, float) and value.is_integer():
            out = int(value)
        elif isinstance(value, str):
            try:
                out = int(value.strip().replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    f = math.nan
                if not f.is_integer():
                    raise ParamError(
                        param.name, f"expected an integer, got {_show(value)}"
                    ) from None
                out = int(f)
        else:
            raise ParamError(param.name, f"expected an integer, got {_show(value)}")
        return check_bounds(param, out)
    if kind == "float":
        if isinstance(value, bool):
            raise ParamError(param.name, f"expected a number, got {_show(value)}")
        if isinstance(value, (int, float)):
            try:
                out = float(value)
            except OverflowError:  # a TOML integer beyond any float
                out = math.inf
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise ParamError(param.name, f"expected a number, got {_show(value)}") from None
        else:
            raise ParamError(param.name, f"expected a number, got {_show(value)}")
        if not math.isfinite(out):
            raise ParamError(param.name, f"expected a finite number, got {_show(value)}")
        return check_bounds(param, out)
    if kind == "choice":
        if not isinstance(value, str):
            raise ParamError(
                param.name, f"expected one of {', '.join(param.choices)}, got {_show(value)}"
            )
        key = value.strip().lower()
        key = param.aliases.get(key, key)
        if key not in param.choices:
            raise ParamError(
                param.name, f"expected one of {', '.join(param.choices)}, got {_show(value)}"
            )
        return key
    # str and path
    if param.list_of and isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(v.strip() for v in value)
    if not isinstance(value, str):
        raise ParamError(param.name, f"expected a string, got {_show(value)}")
    if "\x00" in value or "\n" in value:
        raise ParamError(param.name, "must not contain control characters")
    return value


def _show(value: Any) -> str:
    """A value for an error message: its repr, cut short (one line stays readable)."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit
        return "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def check_bounds(param: Param, value: float) -> Any:
    if param.low is not None:
        if value < param.low or (param.low_open and value == param.low):
            raise ParamError(param.name, f"must be {param.bounds_text()}, got {_fmt(value)}")
    if param.high is not None:
        if value > param.high or (param.high_open and value == param.high):
            raise ParamError(param.name, f"must be {param.bounds_text()}, got {_fmt(value)}")
    return value


def recommendation_warning(param: Param, value: Any) -> str | None:
    """A one-line warning when a valid value is outside the guide's recommended range."""
    rec = param.recommended
    if rec is None:
        return None
    if param.kind == "choice":
        if value not in rec:
            return f"{param.name} = {_show(value)} is valid but the guide recommends {param.recommended_text()}"
        return None
    lo, hi = rec
    if not lo <= value <= hi:
        return (
            f"{param.name} = {_fmt(value)} is outside the guide's recommended range "
            f"{param.recommended_text()}"
        )
    return None


def iter_groups() -> Iterator[tuple[str, list[Param]]]:
    for group in GROUPS:
        yield group, params_in_group(group)
