"""Loading configs and presets: tables and flat keys, extends, errors, --set, writing."""

from __future__ import annotations

import copy
import pickle
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vqatune.engine import config, schema
from vqatune.engine.cmdline import format_value
from vqatune.engine.config import Config, ConfigError
from vqatune.engine.schema import BY_NAME, PARAMS

HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def error_of(source, sets=()) -> str:
    with pytest.raises(ConfigError) as e:
        config.load(source, sets)
    return str(e.value)


# ------------------------------------------------------------------------------------------
# Reading


def test_tables_flat_and_dotted_keys_give_the_same_config(isolated):
    tables = write(
        isolated / "t.toml",
        """
        [training]
        lr = 3e-4
        [model]
        AOA_layers = 8
        [optimisation]
        mixed_precision = true
    """,
    )
    flat = write(
        isolated / "f.toml",
        """
        lr = 3e-4
        AOA_layers = 8
        mixed_precision = true
    """,
    )
    dotted = write(
        isolated / "d.toml",
        """
        training.lr = 3e-4
        model.AOA_layers = 8
        optimisation = { mixed_precision = true }
    """,
    )
    expected = Config({"lr": 3e-4, "AOA_layers": 8, "mixed_precision": True})
    assert (
        config.load(str(tables)) == config.load(str(flat)) == config.load(str(dotted)) == expected
    )


def test_defaults_and_default_preset_are_the_guide_defaults(isolated):
    assert config.load() == Config() == config.load("default")
    assert Config().to_dict() == schema.DEFAULTS


def test_extends_preset_name_and_relative_path(isolated):
    sub = isolated / "configs"
    write(
        sub / "base.toml",
        """
        extends = "24gb"
        [model]
        dropout = 0.3
    """,
    )
    child = write(
        sub / "child.toml",
        """
        extends = "base.toml"
        [training]
        lr = 1e-4
    """,
    )
    absolute = write(isolated / "abs.toml", f'extends = "{sub / "base.toml"}"\n')
    assert config.load(str(absolute)) == config.load(str(sub / "base.toml"))
    write(Path.home() / "mine" / "home.toml", "seed = 11\n")
    tilde = write(isolated / "tilde.toml", 'extends = "~/mine/home.toml"\n')
    assert config.load(str(tilde)).seed == 11
    nested = write(
        isolated / "nested" / "deep.toml",
        """
        extends = "../configs/child.toml"
        seed = 7
    """,
    )
    cfg = config.load(str(child))  # the path is relative to the file, not to the cwd
    assert (cfg.batch_size, cfg.max_memory_usage, cfg.dropout, cfg.lr) == (48, 0.9, 0.3, 1e-4)
    assert config.load(str(nested)) == cfg.replace(seed=7)
    resolved = config.resolve(str(child))
    assert resolved.base == config.load(str(sub / "base.toml"))


def test_extends_without_suffix_finds_a_sibling_file(isolated):
    write(isolated / "mine.toml", "lr = 1e-4\n")
    child = write(isolated / "child.toml", 'extends = "mine"\nseed = 3\n')
    assert config.load(str(child)) == Config({"lr": 1e-4, "seed": 3})


def test_extends_cycles_are_errors(isolated):
    write(isolated / "a.toml", 'extends = "b.toml"\n')
    write(isolated / "b.toml", 'extends = "./a.toml"\n')
    write(isolated / "self.toml", 'extends = "self.toml"\n')
    assert "extends cycle" in error_of("a.toml")
    assert "extends cycle" in error_of("self.toml")


def test_extends_unknown_preset_names_the_line_and_suggests(isolated):
    f = write(isolated / "c.toml", '# comment\nextends = "24gbb"\n')
    assert error_of(str(f)) == f"{f}:2: extends: no such preset '24gbb'; did you mean '24gb'?"
    f = write(isolated / "d.toml", "extends = 3\n")
    assert error_of(str(f)).startswith(f"{f}:1: extends:")


def test_unknown_keys_suggest_the_nearest_parameter(isolated):
    f = write(
        isolated / "c.toml",
        """
        [training]
        lr = 1e-4
        learning_rat = 3
    """,
    )
    assert error_of(str(f)) == f"{f}:3: unknown parameter 'learning_rat'"
    f = write(isolated / "d.toml", "aoa_layers = 4\n")
    assert error_of(str(f)) == f"{f}:1: unknown parameter 'aoa_layers'; did you mean 'AOA_layers'?"
    f = write(isolated / "e.toml", "seed = 1\n[trainig]\nlr = 1\n")
    assert error_of(str(f)) == f"{f}:2: unknown table [trainig]; did you mean [training]?"
    f = write(isolated / "t.toml", "[lr]\nx = 1\n")
    assert error_of(str(f)) == f"{f}:1: lr: expected a value, got a table"
    f = write(isolated / "g.toml", "[model]\nlr = 1e-4\n")
    assert error_of(str(f)) == f"{f}:2: lr belongs in [training], not [model]"
    f = write(isolated / "h.toml", "lr = 1e-4\n[training]\nlr = 2e-4\n")
    assert "lr is given twice" in error_of(str(f))
    assert "did you mean 'lr'" in error_of("default", ["lrr=1"])


@pytest.mark.parametrize(
    "body,line,message",
    [
        ("[training]\nepochs = 10\nlr = -1e-4\n", 3, "lr: must be > 0.0, got -1e-4"),
        ("# c\n[model]\ndropout = 1.0\n", 3, "dropout: must be >= 0.0 and < 1.0, got 1.0"),
        ("[model]\nAOA_layers = 0\n", 2, "AOA_layers: must be >= 1, got 0"),
        (
            '[training]\nbatch_size = "32"\n',
            2,
            "batch_size: expected a number, got the string '32'",
        ),
        ("[training]\nbatch_size = 3.5\n", 2, "batch_size: expected an integer, got 3.5"),
        ('tfidf = "false"\n', 1, "tfidf: expected true or false, got 'false'"),
        ("tfidf = 0\n", 1, "tfidf: expected true or false, got 0"),
        ("[isubgvqa]\nuse_mgat = 2\n", 2, "use_mgat: expected 0/1 or true/false, got 2"),
        ('[isubgvqa]\nuse_mgat = "1"\n', 2, "use_mgat: expected 0/1 or true/false, got '1'"),
        (
            '[isubgvqa]\nsampler_type = "topk"\n',
            2,
            "sampler_type: expected one of imle, gumbel, got 'topk'",
        ),
        (
            "[optimisation]\nmax_memory_usage = 0\n",
            2,
            "max_memory_usage: must be > 0.0 and <= 1.0, got 0.0",
        ),
        (
            "[optimisation]\nmax_memory_usage = nan\n",
            2,
            "max_memory_usage: expected a finite number, got nan",
        ),
        ("training = { lr = 0 }\n", 1, "lr: must be > 0.0, got 0.0"),
        ("lr = 1" + "0" * 400 + "\n", 1, "lr: expected a finite number, got 1" + "0" * 56 + "..."),
        ('name = "a\\nb"\n', 1, "name: must not contain control characters"),
        (
            "sampler_type = '" + "x" * 100 + "'\n",
            1,
            "sampler_type: expected one of imle, gumbel, got '" + "x" * 56 + "...",
        ),
    ],
)
def test_wrong_type_or_bound_is_file_line_param_message(isolated, body, line, message):
    f = write(isolated / "bad.toml", body)
    assert error_of(str(f)) == f"{f}:{line}: {message}"


def test_malformed_toml_gives_line_and_column(isolated):
    f = write(isolated / "bad.toml", "[training]\nlr = 3e-4\nbatch_size = = 3\n")
    msg = error_of(str(f))
    assert msg.startswith(f"{f}:3:14: invalid TOML: ")
    assert "\n" not in msg
    f = write(isolated / "open.toml", "lr = 3e-4\nx = [1,\n")
    assert error_of(str(f)) == f"{f}:3:1: invalid TOML: Invalid value at end of file"
    assert error_of("missing.toml") == "missing.toml: no such file"
    assert error_of("nopreset").startswith("nopreset: no such preset or file")


def test_booleans_are_real(isolated):
    f = write(
        isolated / "b.toml",
        """
        [data]
        tfidf = false
        [isubgvqa]
        use_instruction = false
        use_masking = 0
        use_mgat = true
    """,
    )
    cfg = config.load(str(f))
    assert cfg.tfidf is False
    assert (cfg.use_instruction, cfg.use_masking, cfg.use_mgat) == (0, 0, 1)
    assert type(cfg.use_mgat) is int
    for text, expected in (("0", 0), ("1", 1), ("true", 1), ("false", 0)):
        assert config.load(None, [f"use_mgat={text}"]).use_mgat == expected
    assert config.load(None, ["tfidf=false"]).tfidf is False
    assert config.load(None, ["tfidf=0"]).tfidf is False


# ------------------------------------------------------------------------------------------
# --set


def test_set_overrides_are_typed_and_applied_last(isolated):
    r = config.resolve(
        "24gb", ["lr=3e-4", "training.batch_size=12", "--dataset=GQA", "name=my run"]
    )
    assert (r.config.lr, r.config.batch_size, r.config.dataset, r.config.name) == (
        3e-4,
        12,
        "gqa",
        "my run",
    )
    assert r.config.max_memory_usage == 0.9  # from the preset
    assert r.overrides == {"lr": 3e-4, "batch_size": 12, "dataset": "gqa", "name": "my run"}
    assert r.source == "24gb" and r.title == "24 GB GPU"


@pytest.mark.parametrize(
    "item,message",
    [
        ("lr", "--set 'lr': expected name=value"),
        ("lr=", "--set: lr: expected a number, got ''"),
        ("lr=-1", "--set: lr: must be > 0.0, got -1.0"),
        (
            "nope=1",
            "--set: unknown parameter 'nope'; did you mean 'nnodes'?",
        ),  # a close name: suggested
        ("xyzzy=1", "--set: unknown parameter 'xyzzy'"),
        ("batch_sise=1", "--set: unknown parameter 'batch_sise'; did you mean 'batch_size'?"),
        ("model.lr=1e-4", "--set 'model.lr=1e-4': lr belongs in [training]"),
        ("trainig.lr=1e-4", "--set 'trainig.lr=1e-4': unknown table 'trainig'"),
    ],
)
def test_set_errors(item, message):
    with pytest.raises(ConfigError) as e:
        config.parse_set(item)
    assert str(e.value) == message


def _valid(p: schema.Param) -> st.SearchStrategy:
    if p.kind == "bool":
        return st.booleans()
    if p.kind == "int01":
        return st.sampled_from([0, 1])
    if p.kind == "choice":
        return st.sampled_from(p.choices)
    if p.kind == "int":
        return st.integers(int(p.low) if p.low is not None else -(10**6), 10**7)
    if p.kind == "float":
        hi = p.high if p.high is not None else 1e9
        return st.floats(
            p.low if p.low is not None else -1e9,
            hi,
            allow_nan=False,
            exclude_min=p.low_open,
            exclude_max=p.high_open,
        )
    # str / path: no control characters the schema refuses; no edge whitespace (--set strips it)
    return st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20).filter(
        lambda s: s == s.strip()
    )


VALID_VALUES = st.sampled_from(PARAMS).flatmap(lambda p: st.tuples(st.just(p), _valid(p)))
RANDOM_CONFIGS = st.dictionaries(
    st.sampled_from([p.name for p in PARAMS]), st.none(), max_size=12
).flatmap(lambda names: st.fixed_dictionaries({n: _valid(BY_NAME[n]) for n in names}))


@HYPOTHESIS
@given(VALID_VALUES)
def test_valid_values_round_trip_through_set(pv):
    p, value = pv
    name, parsed = config.parse_set(f"{p.name}={format_value(value)}")
    assert name == p.name
    assert parsed == value and type(parsed) is type(schema.coerce(p, value))


@HYPOTHESIS
@given(RANDOM_CONFIGS, st.booleans(), st.sampled_from([None, "24gb", "smoke"]))
def test_random_configs_round_trip_through_toml(tmp_path, values, full, extends):
    base = config.load(extends) if extends else Config()
    cfg = Config({**base.to_dict(), **values})
    text = config.dumps(cfg, base=base, extends=extends, full=full)
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    assert config.load(str(path)) == cfg


@HYPOTHESIS
@given(RANDOM_CONFIGS, st.booleans())
def test_random_configs_round_trip_through_the_command_line(values, full):
    from vqatune.engine import cmdline

    cfg = Config(values)
    assert cmdline.config_from_cmdline(cmdline.to_cmdline(cfg, full=full)) == cfg


@HYPOTHESIS
@given(st.sampled_from(PARAMS), st.text(max_size=12))
def test_random_set_text_is_a_value_or_a_clean_error(p, text):
    try:
        name, value = config.parse_set(f"{p.name}={text}")
    except ConfigError as e:
        assert str(e).startswith("--set") and "\n" not in str(e).replace(text, "")
        return
    assert schema.coerce(p, value) == value  # accepted values obey the schema


TOML_VALUES = st.one_of(
    st.integers(),
    st.integers(10**300, 10**400),
    st.floats(),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "lr"]), st.integers(), max_size=1),
)


@HYPOTHESIS
@given(st.sampled_from(PARAMS), TOML_VALUES, st.booleans())
def test_random_toml_values_load_or_fail_cleanly(tmp_path, p, value, in_table):
    import tomli_w

    doc = {p.table: {p.name: value}} if in_table else {p.name: value}
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    try:
        cfg = config.load(str(path))
    except ConfigError as e:
        assert str(e).startswith(f"{path}:")
        return
    assert schema.coerce(p, value) == getattr(cfg, p.name)


# ------------------------------------------------------------------------------------------
# Writing


def test_dumps_writes_schema_order_and_only_differences(isolated):
    cfg = config.load("24gb").replace(dataset="gqa", lr=1e-4, tfidf=False, AOA_layers=4)
    text = config.dumps(cfg, base=config.load("24gb"), extends="24gb")
    assert text == textwrap.dedent("""\
        extends = "24gb"

        [training]
        lr = 0.0001

        [model]
        AOA_layers = 4

        [data]
        tfidf = false

        [run]
        dataset = "gqa"
    """)
    full = config.dumps(Config(), full=True)
    names = [line.split(" = ")[0] for line in full.splitlines() if " = " in line]
    assert names == [p.name for p in PARAMS]  # every parameter, in schema order
    assert config.dumps(Config()) == ""


# ------------------------------------------------------------------------------------------
# Presets


def test_builtin_presets_have_titles_and_load(isolated):
    found = {p.name: p for p in config.list_presets()}
    assert list(found)[:9] == list(config.BUILTIN_ORDER)
    for p in found.values():
        assert p.title and p.description and "\n" not in p.description
        config.load(p.name)
        assert config.find_preset(p.name) == p.path


def test_presets_dirs_later_wins(isolated, monkeypatch, tmp_path):
    home_dir = Path.home() / ".config" / "vqatune" / "presets"
    write(isolated / "presets" / "24gb.toml", 'title = "local"\nextends = "8gb"\nseed = 1\n')
    write(isolated / "presets" / "mine.toml", 'title = "local mine"\nseed = 2\n')
    assert config.load("24gb") == config.load("8gb").replace(seed=1)
    assert {p.name: p.title for p in config.list_presets()}["mine"] == "local mine"
    write(home_dir / "mine.toml", 'title = "user mine"\nseed = 3\n')
    assert config.load("mine").seed == 3
    write(home_dir / "broken.toml", "seed = = 1\n")
    broken = {p.name: p for p in config.list_presets()}["broken"]
    assert broken.description.startswith(f"(cannot be read: {home_dir / 'broken.toml'}:1:8:")
    assert config.preset_dirs()[1:] == [isolated / "presets", home_dir]
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    write(xdg / "vqatune" / "presets" / "mine.toml", "seed = 4\n")
    assert config.load("mine").seed == 4


def test_user_preset_can_extend_the_builtin_it_shadows(isolated):
    write(
        Path.home() / ".config" / "vqatune" / "presets" / "24gb.toml",
        'extends = "24gb"\nseed = 5\n',
    )
    cfg = config.load("24gb")
    assert (cfg.batch_size, cfg.seed) == (48, 5)


# ------------------------------------------------------------------------------------------
# Config objects


def test_config_objects():
    cfg = Config({"batch_size": 16, "update_freq": 2, "gradient_accumulation_steps": 3})
    assert cfg.effective_batch_size == 96
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg) == cfg and copy.copy(cfg) == cfg
    with pytest.raises(AttributeError):
        cfg.lr = 1
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        cfg.replace(lrr=1)
    with pytest.raises(ConfigError, match="dropout: must be"):
        cfg.replace(dropout=1.5)
    with pytest.raises(ConfigError, match="lr: must be"):
        Config({"lr": -1.0})
    assert cfg.replace(lr="1e-3").lr == 1e-3
    assert cfg.changed_from(Config()) == {
        "batch_size": 16,
        "update_freq": 2,
        "gradient_accumulation_steps": 3,
    }
    assert config.diff(Config(), cfg) == [
        ("batch_size", 32, 16),
        ("update_freq", 4, 2),
        ("gradient_accumulation_steps", 1, 3),
    ]
    assert "lr = 1.0 is outside" in Config({"lr": 1.0}).warnings()[0]


# ------------------------------------------------------------------------------------------
# Where values came from; which were given on the command line


def test_origins_name_the_file_line_preset_or_set(isolated):
    write(Path("base.toml"), 'extends = "24gb"\n[training]\nlr = 1e-4\n')
    child = write(Path("child.toml"), 'extends = "base.toml"\n[model]\ndropout = 0.3\n')
    r = config.resolve(str(child), ["seed=7"])
    assert r.origins["dropout"] == f"{child}:3"
    assert r.origins["lr"] == "base.toml:3"  # from the file it extends
    assert r.origins["batch_size"].startswith("preset 24gb:")
    assert r.origins["seed"] == "--set" and "epochs" not in r.origins  # a default
    assert r.config.given == {"seed"}


def test_given_values_are_written_and_read_back(isolated):
    cfg, _ = config.apply_sets(config.load("smoke").override(vision_width=64), ["seed=3"])
    assert cfg.given == {"vision_width", "seed"}
    assert cfg.replace(lr=1e-3).given == cfg.given  # replace() keeps them; it gives nothing
    assert pickle.loads(pickle.dumps(cfg)).given == cfg.given
    saved = Path("run.toml")
    saved.write_text(config.dumps(cfg, full=True))
    loaded = config.load(str(saved))
    assert loaded == cfg and loaded.given == {"vision_width", "seed"}
    # a file extending it keeps what it was given, except what the file sets itself
    write(Path("more.toml"), 'extends = "run.toml"\n[training]\nseed = 4\n')
    assert config.load("more.toml").given == {"vision_width"}


def test_a_bad_given_list_is_a_file_line_error(isolated):
    write(Path("bad.toml"), 'given_on_command_line = ["vision_widht"]\n')
    assert error_of("bad.toml") == (
        "bad.toml:1: unknown parameter 'vision_widht'; did you mean 'vision_width'?"
    )
    write(Path("bad2.toml"), 'given_on_command_line = "lr"\n[training]\nlr = 1e-3\n')
    assert error_of("bad2.toml") == ("bad2.toml:1: given_on_command_line: expected a list of names")
