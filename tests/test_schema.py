"""The schema against the tuning guide's tables, written out here independently of schema.py."""

from __future__ import annotations

import math

import pytest
from vqatune.engine import schema
from vqatune.engine.schema import BY_NAME, GUIDE_PARAMS, PARAMS, ParamError, coerce

# The guide's section 1, copied by hand: flag, default, guide type, category, sub-category
# (group), recommended range (None where the guide gives advice but no range).
GUIDE = [
    ("epochs", 20, "int", "Training basics", "Training basics", (10, 50)),
    ("lr", 2.8e-4, "float", "Training basics", "Training basics", (1e-4, 5e-4)),
    ("xvlm_lr", 5e-5, "float", "Training basics", "Training basics", (1e-5, 1e-4)),
    ("batch_size", 32, "int", "Training basics", "Training basics", (16, 64)),
    ("update_freq", 4, "int", "Training basics", "Training basics", (2, 8)),
    ("seed", 1204, "int", "Training basics", "Training basics", None),
    ("gamma", 2, "int", "Model architecture", "BAN", (1, 4)),
    ("use_counter", False, "bool", "Model architecture", "BAN", None),
    ("counter_act", "zhang", "str", "Model architecture", "BAN", ("zhang",)),
    ("AOA_layers", 6, "int", "Model architecture", "AoA", (4, 8)),
    ("num_hid", 1024, "int", "Model architecture", "AoA", (512, 2048)),
    (
        "activation",
        "swish",
        "str",
        "Model architecture",
        "Activation and regularisation",
        ("relu", "swish"),
    ),
    ("dropout", 0.45, "float", "Model architecture", "Activation and regularisation", (0.3, 0.6)),
    ("question_len", 12, "int", "Data processing", "Data processing", (8, 20)),
    ("max_boxes", 50, "int", "Data processing", "Data processing", (30, 100)),
    ("num_stat_word", 30, "int", "Data processing", "Data processing", (20, 50)),
    ("tfidf", True, "bool", "Data processing", "Data processing", None),
    ("general_hidden_dim", 300, "int", "ISubGVQA", "ISubGVQA graph network", (256, 512)),
    ("mgat_layers", 4, "int", "ISubGVQA", "ISubGVQA graph network", (2, 6)),
    ("sampler_type", "imle", "str", "ISubGVQA", "ISubGVQA graph network", ("imle", "gumbel")),
    ("sample_k", 2, "int", "ISubGVQA", "ISubGVQA graph network", (1, 5)),
    ("nb_samples", 1, "int", "ISubGVQA", "ISubGVQA graph network", (1, 3)),
    ("alpha", 1.0, "float", "ISubGVQA", "ISubGVQA control", (0.5, 2.0)),
    ("beta", 10.0, "float", "ISubGVQA", "ISubGVQA control", (5.0, 20.0)),
    ("tau", 1.0, "float", "ISubGVQA", "ISubGVQA control", (0.5, 2.0)),
    ("use_instruction", 1, "int 0/1", "ISubGVQA", "ISubGVQA control", None),
    ("use_masking", 1, "int 0/1", "ISubGVQA", "ISubGVQA control", None),
    ("use_mgat", 0, "int 0/1", "ISubGVQA", "ISubGVQA control", None),
    ("clip_norm", 0.25, "float", "Optimisation", "Gradients", (0.1, 0.5)),
    ("gradient_accumulation_steps", 1, "int", "Optimisation", "Gradients", (1, 8)),
    ("dynamic_batch_size", False, "bool", "Optimisation", "Memory", None),
    ("max_memory_usage", 0.8, "float", "Optimisation", "Memory", (0.7, 0.9)),
    ("mixed_precision", False, "bool", "Optimisation", "Memory", None),
    ("memory_efficient_attention", False, "bool", "Optimisation", "Memory", None),
    ("omega_q", 0.1, "float", "Fine-tuning", "Fine-tuning", (0.05, 0.2)),
    ("omega_v", 0.01, "float", "Fine-tuning", "Fine-tuning", (0.005, 0.05)),
    ("fusion_ratio", 0.1, "float", "Fine-tuning", "Fine-tuning", (0.05, 0.2)),
    ("topk", 6, "int", "Fine-tuning", "Fine-tuning", (3, 10)),
]
# Guide type -> schema kinds that implement it ("str" with fixed values is a choice).
KINDS = {
    "int": {"int"},
    "float": {"float"},
    "bool": {"bool"},
    "int 0/1": {"int01"},
    "str": {"str", "choice"},
}
PY_TYPES = {"int": int, "float": float, "bool": bool, "int 0/1": int, "str": str}


def test_guide_has_38_flags_in_schema_order():
    assert len(GUIDE) == 38
    assert [p.name for p in GUIDE_PARAMS] == [row[0] for row in GUIDE]
    assert all(p.in_guide for p in GUIDE_PARAMS)


@pytest.mark.parametrize(
    "name,default,gtype,category,group,recommended", GUIDE, ids=[row[0] for row in GUIDE]
)
def test_guide_param(name, default, gtype, category, group, recommended):
    p = BY_NAME[name]
    assert p.flag == "--" + name
    assert p.kind in KINDS[gtype]
    assert type(p.default) is PY_TYPES[gtype]
    assert p.default == default
    assert p.category == category
    assert p.group == group
    assert p.recommended == recommended
    assert p.help and p.help[0].isupper() and p.help.isascii()
    # the default itself is valid and (where the guide gives a range) recommended
    assert coerce(p, p.default) == p.default
    assert schema.recommendation_warning(p, p.default) is None


def test_groups_are_the_guide_sub_categories_in_order():
    guide_groups = list(dict.fromkeys(row[4] for row in GUIDE))
    assert guide_groups == [
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
    ]
    assert list(schema.GROUPS[: len(guide_groups)]) == guide_groups
    assert [g for g, _ in schema.iter_groups()] == list(schema.GROUPS)
    # every parameter is in exactly one known group and table
    assert sum(len(ps) for _, ps in schema.iter_groups()) == len(PARAMS)
    assert {p.table for p in PARAMS} <= set(schema.TABLE_CATEGORIES)


def test_run_parameters_the_issue_asks_for():
    for name in (
        "dataset",
        "data_root",
        "checkpoint",
        "config",
        "output",
        "name",
        "device",
        "num_workers",
        "eval_every",
        "patience",
        "max_steps",
        "train_limit",
        "eval_limit",
        "image_res",
    ):
        assert name in BY_NAME and not BY_NAME[name].in_guide
    assert set(BY_NAME["dataset"].choices) == {"easy-vqa", "gqa", "vqa", "synthetic"}
    assert set(BY_NAME["device"].choices) == {"auto", "cpu", "cuda"}
    assert len(BY_NAME) == len(PARAMS)  # names are unique


@pytest.mark.parametrize(
    "name,value",
    [
        ("lr", 0),
        ("lr", -1e-4),
        ("xvlm_lr", -1e-5),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("AOA_layers", 0),
        ("mgat_layers", 0),
        ("epochs", 0),
        ("batch_size", 0),
        ("max_memory_usage", 0.0),
        ("max_memory_usage", 1.01),
        ("tau", 0.0),
        ("sampler_type", "topk"),
        ("activation", "softmax"),
        ("counter_act", "nope"),
        ("dataset", "coco"),
        ("device", "tpu"),
    ],
)
def test_hard_bounds_are_errors(name, value):
    with pytest.raises(ParamError) as e:
        coerce(BY_NAME[name], value)
    assert e.value.param == name
    assert str(e.value).startswith(f"{name}: ")


@pytest.mark.parametrize(
    "name,value,expected",
    [
        ("dropout", 0.0, 0.0),
        ("dropout", 0.99, 0.99),
        ("max_memory_usage", 1.0, 1.0),
        ("max_memory_usage", 1e-3, 1e-3),
        ("lr", 1e-9, 1e-9),
        ("xvlm_lr", 0.0, 0.0),
        ("AOA_layers", 1, 1),
        ("sampler_type", "gumbel", "gumbel"),
        ("sampler_type", "IMLE", "imle"),
        ("activation", "relu", "relu"),
        ("activation", "silu", "swish"),
        ("dataset", "GQA", "gqa"),
        ("dataset", "VQA", "vqa"),
    ],
)
def test_edges_inside_hard_bounds_are_accepted(name, value, expected):
    assert coerce(BY_NAME[name], value) == expected


def test_out_of_recommended_range_is_a_warning_not_an_error():
    p = BY_NAME["lr"]
    assert coerce(p, 1e-2) == 1e-2
    w = schema.recommendation_warning(p, 1e-2)
    assert w and "lr" in w and "1e-4 to 5e-4" in w
    assert schema.recommendation_warning(BY_NAME["activation"], "gelu")
    assert schema.recommendation_warning(BY_NAME["activation"], "relu") is None
    assert schema.recommendation_warning(BY_NAME["seed"], 7) is None


@pytest.mark.parametrize(
    "text,expected",
    [("true", True), ("False", False), ("1", True), ("0", False), ("on", True), ("no", False)],
)
def test_booleans_parse_text_strictly(text, expected):
    assert coerce(BY_NAME["tfidf"], text) is expected
    assert coerce(BY_NAME["use_mgat"], text) == int(expected)
    assert type(coerce(BY_NAME["use_mgat"], text)) is int


@pytest.mark.parametrize("value", ["maybe", "2", "", 2, -1, 0.5, None])
def test_booleans_reject_anything_else(value):
    # the original script turned any string (even "False") into True; here junk is an error
    with pytest.raises(ParamError):
        coerce(BY_NAME["tfidf"], value)
    with pytest.raises(ParamError):
        coerce(BY_NAME["use_instruction"], value)


def test_numbers_from_text():
    assert coerce(BY_NAME["batch_size"], "1_024") == 1024
    assert coerce(BY_NAME["batch_size"], "1e2") == 100
    assert coerce(BY_NAME["lr"], " 3e-4 ") == 3e-4
    for bad in ("1.5", "abc", "inf", "nan", True):
        with pytest.raises(ParamError):
            coerce(BY_NAME["batch_size"], bad)
    for bad in ("nan", "inf", "-inf", "x", True, None):
        with pytest.raises(ParamError):
            coerce(BY_NAME["lr"], bad)
    with pytest.raises(ParamError):
        coerce(BY_NAME["name"], "two\nlines")


@pytest.mark.parametrize(
    "x,text",
    [
        (2.8e-4, "2.8e-4"),
        (5e-5, "5e-5"),
        (0.45, "0.45"),
        (10.0, "10.0"),
        (1e-3, "0.001"),
        (1 / 3, repr(1 / 3)),
    ],
)
def test_format_float_is_short_and_exact(x, text):
    assert schema.format_float(x) == text
    assert float(schema.format_float(x)) == x


def test_bounds_and_recommended_text():
    assert BY_NAME["dropout"].bounds_text() == ">= 0.0 and < 1.0"
    assert BY_NAME["max_memory_usage"].bounds_text() == "> 0.0 and <= 1.0"
    assert BY_NAME["sampler_type"].bounds_text() == "one of imle, gumbel"
    assert BY_NAME["lr"].recommended_text() == "1e-4 to 5e-4"
    assert BY_NAME["activation"].recommended_text() == "relu or swish"
    assert math.isclose(BY_NAME["omega_v"].recommended[0], 0.005)


@pytest.mark.parametrize("p", PARAMS, ids=[p.name for p in PARAMS])
def test_every_declaration_is_consistent(p):
    assert p.kind in schema.KINDS
    assert p.help and p.help.endswith((".", ")"))
    assert coerce(p, p.default) == p.default  # the default obeys the hard bounds
    if p.kind == "choice":
        assert p.default in p.choices
        assert p.recommended is None or set(p.recommended) <= set(p.choices)
    elif p.recommended is not None:  # the advice lies inside what is allowed
        lo, hi = p.recommended
        assert lo <= hi
        coerce(p, lo)
        coerce(p, hi)
    if p.kind not in ("int", "float"):
        assert p.low is None and p.high is None
