"""Resolved configurations: TOML files and presets with `extends`, `--set` overrides, writing.

A config file has one table per category (`[training]`, `[model]`, ...; see
schema.CATEGORY_TABLES) with keys as in the schema; flat top-level keys are accepted too.
`extends = "24gb"` (a preset name or a path relative to the file) inherits; `title` and
`description` describe presets.

Light module: no torch, no textual.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import schema
from .schema import BY_NAME, DEFAULTS, PARAMS, ConfigError, ParamError, coerce

# Run directories record the parameters given on the command line (--set, `vqatune train` flags)
# under GIVEN_KEY: those win over an X-VLM YAML (cfg.config), which wins over files and defaults.
GIVEN_KEY = "given_on_command_line"
META_KEYS = ("extends", "title", "description", GIVEN_KEY)
PRESET_SUFFIX = ".toml"


class Config:
    """A fully resolved set of parameter values, read as attributes (cfg.lr).

    `given` names the parameters given on the command line: where an X-VLM YAML sets one of
    them, the given value wins (xvlm_files.yaml_values). It is where values came from, not a
    value: equality compares the values only.
    """

    __slots__ = ("_values", "_given")

    def __init__(self, values: Mapping[str, Any] | None = None, given: Iterable[str] = ()):
        merged = dict(DEFAULTS)
        for name, value in (values or {}).items():
            if name not in BY_NAME:
                raise ConfigError(unknown_message(name))
            # Typed values pass through unchanged; a wrong type or bound raises ParamError.
            merged[name] = coerce(BY_NAME[name], value)
        for name in given:
            if name not in BY_NAME:
                raise ConfigError(unknown_message(name, f"{GIVEN_KEY}: "))
        object.__setattr__(self, "_values", merged)
        object.__setattr__(self, "_given", frozenset(given))

    def __reduce__(self):
        # Pickle/copy through __init__: the default protocol would set the slot through the
        # blocked __setattr__ (DataLoader workers and multiprocessing pickle configs).
        return (Config, (self._values, self._given))

    def __getattr__(self, name: str) -> Any:
        if name in self.__slots__:  # not set yet (mid-unpickling): no recursion
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is immutable; use replace()")

    def __eq__(self, other) -> bool:
        return isinstance(other, Config) and self._values == other._values

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if v != DEFAULTS[k]}
        given = f", given={sorted(self._given)}" if self._given else ""
        return f"Config({changed}{given})"

    @property
    def given(self) -> frozenset[str]:
        return self._given

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **changes: Any) -> Config:
        """New values; which were given on the command line stays as it was."""
        values = self.to_dict()
        for name, value in changes.items():
            if name not in BY_NAME:
                raise ConfigError(unknown_message(name))
            values[name] = coerce(BY_NAME[name], value)
        return Config(values, self._given)

    def override(self, **changes: Any) -> Config:
        """Values given on the command line (--set, flags, a sweep's variant): replaced and
        marked given, so that they win over an X-VLM YAML."""
        return Config({**self._values, **changes}, self._given.union(changes))

    def changed_from(self, base: Config) -> dict[str, Any]:
        return {
            p.name: self._values[p.name]
            for p in PARAMS
            if self._values[p.name] != base._values[p.name]
        }

    @property
    def effective_batch_size(self) -> int:
        """Samples per optimiser step on one process (multiply by the world size under DDP)."""
        return self.batch_size * self.update_freq * self.gradient_accumulation_steps

    def warnings(self) -> list[str]:
        """Valid values outside the guide's recommended ranges."""
        out = []
        for p in PARAMS:
            w = schema.recommendation_warning(p, self._values[p.name])
            if w:
                out.append(w)
        return out


@dataclass
class Resolved:
    """A config with where it came from: for `config show`, diffs and run directories."""

    config: Config
    source: str  # preset name or file path ("" for defaults)
    base: Config  # what the source extends (defaults when it extends nothing)
    title: str = ""
    description: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    # the files read, base first, each with {parameter: its table} of the values it sets
    layers: list[tuple[Path, dict[str, str | None]]] = field(default_factory=list, repr=False)

    @property
    def origins(self) -> dict[str, str]:
        """Where each value that is not a default came from: "FILE:LINE", "preset NAME:LINE"
        or "--set" (worked out when asked: loading a config does not pay for it)."""
        out = {}
        for path, tables in self.layers:
            in_presets = path.resolve().parent in {d.resolve() for d in preset_dirs()}
            where = f"preset {path.stem}" if in_presets else str(path)
            lines = _key_lines(path)
            for name, table in tables.items():
                line = lines.get((table, name)) or lines.get((None, table))  # or inline table
                out[name] = f"{where}:{line}" if line else where
        out.update(dict.fromkeys(self.overrides, "--set"))
        return out


def unknown_message(key: str, where: str = "") -> str:
    lowered = {n.lower(): n for n in BY_NAME}
    near = (
        [lowered[key.lower()]]
        if key.lower() in lowered  # aoa_layers -> AOA_layers
        else difflib.get_close_matches(key, list(BY_NAME), n=1, cutoff=0.6)
    )
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"{where}unknown parameter {key!r}{hint}"


# ----------------------------------------------------------------------------------------------
# Presets


def package_presets_dir() -> Path:
    from vqatune import presets

    return Path(presets.__file__).parent


def user_presets_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "vqatune" / "presets"


def preset_dirs() -> list[Path]:
    """Where presets are found; a later directory wins for the same name."""
    return [package_presets_dir(), Path.cwd() / "presets", user_presets_dir()]


def preset_paths() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        if d.is_dir():
            for path in sorted(d.glob("*" + PRESET_SUFFIX)):
                found[path.stem] = path
    return found


def find_preset(name: str) -> Path | None:
    return preset_paths().get(name)


@dataclass
class PresetInfo:
    name: str
    title: str
    description: str
    path: Path


def list_presets() -> list[PresetInfo]:
    out = []
    for name, path in preset_paths().items():
        try:
            data = parse_toml(path)
        except ConfigError as e:  # still listed, so that the user sees why it does not load
            data = {"description": f"(cannot be read: {e})"}
        out.append(
            PresetInfo(name, str(data.get("title", "")), str(data.get("description", "")), path)
        )
    order = {n: i for i, n in enumerate(BUILTIN_ORDER)}
    out.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    return out


BUILTIN_ORDER = (
    "default",
    "cpu-quick",
    "smoke",
    "8gb",
    "24gb",
    "high-performance",
    "memory-optimized",
    "gqa",
    "vqa",
)


# ----------------------------------------------------------------------------------------------
# Loading


def parse_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        return tomllib.loads(text)
    except ValueError as e:  # TOMLDecodeError, or an integer past Python's digit limit
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            reason = msg[: m.start()].strip()
            raise ConfigError(f"{path}:{m.group(1)}:{m.group(2)}: invalid TOML: {reason}") from None
        if msg.endswith("(at end of document)"):  # an unclosed array or string: point at the end
            line, col = text.count("\n") + 1, len(text.rsplit("\n", 1)[-1]) + 1
            reason = msg[: -len("(at end of document)")].strip()
            raise ConfigError(
                f"{path}:{line}:{col}: invalid TOML: {reason} at end of file"
            ) from None
        raise ConfigError(f"{path}: invalid TOML: {msg}") from None


def key_line(path: Path, table: str | None, key: str) -> int | None:
    """The line of `key = ...` in [table] (or at top level), for error messages."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    current = None
    key_re = re.compile(r"""^\s*(?:"%s"|'%s'|%s)\s*=""" % ((re.escape(key),) * 3))
    header_re = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    dotted_re = re.compile(
        r"""^\s*%s\s*\.\s*(?:"%s"|'%s'|%s)\s*="""
        % ((re.escape(table or ""),) + (re.escape(key),) * 3)
    )
    for number, line in enumerate(lines, 1):
        h = header_re.match(line)
        if h:
            current = h.group(1).strip().strip('"')
            if table is None and current == key:  # `[key]`: a table where a value was expected
                return number
            continue
        if current == table and key_re.match(line):
            return number
        if table and current is None and dotted_re.match(line):
            return number
    if table:  # an inline table (`training = { lr = 1 }`): point at the table's line
        return key_line(path, None, table)
    return None


_HEADER = re.compile(r"""^\s*\[\s*["']?([^\]"']+?)["']?\s*\]""")
_KEY = re.compile(r"""^\s*(?:["']?([\w-]+)["']?\s*\.\s*)?["']?([\w-]+)["']?\s*=""")


def _key_lines(path: Path) -> dict[tuple[str | None, str], int]:
    """{(table, key): line} of every `key = ...` of a file in one pass (key_line finds one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    found: dict[tuple[str | None, str], int] = {}
    table = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("["):
            if h := _HEADER.match(line):
                table = h.group(1).strip()
        elif k := _KEY.match(line):
            found.setdefault((k.group(1) or table, k.group(2)), number)
    return found


def file_line(path: Path | None, table: str | None, key: str) -> str:
    """The `FILE:LINE: ` prefix of an error about `key` in [table] ("" when there is no file)."""
    if path is None:
        return ""
    line = key_line(path, table, key)
    return f"{path}:{line}: " if line else f"{path}: "


def _flatten(path: Path, data: dict, errors: list[str]) -> dict[str, tuple[Any, str | None]]:
    """Table-or-flat TOML -> {param: (value, table)}; unknown keys and tables are appended to
    errors (every one of the file, not only the first)."""
    flat: dict[str, tuple[Any, str | None]] = {}
    for key, value in data.items():
        if key in META_KEYS:
            continue
        if isinstance(value, dict):
            if key not in schema.TABLE_CATEGORIES:
                if key in BY_NAME:
                    errors.append(
                        f"{file_line(path, None, key)}{key}: expected a value, got a table"
                    )
                    continue
                tables = ", ".join(schema.TABLE_CATEGORIES)
                near = difflib.get_close_matches(key, list(schema.TABLE_CATEGORIES), n=1)
                hint = f"; did you mean [{near[0]}]?" if near else f" (tables: {tables})"
                errors.append(f"{file_line(path, None, key)}unknown table [{key}]{hint}")
                continue
            for name, v in value.items():
                if name not in BY_NAME:
                    errors.append(unknown_message(name, file_line(path, key, name)))
                elif BY_NAME[name].table != key:
                    errors.append(
                        f"{file_line(path, key, name)}{name} belongs in "
                        f"[{BY_NAME[name].table}], not [{key}]"
                    )
                elif name in flat:
                    errors.append(f"{file_line(path, key, name)}{name} is given twice")
                else:
                    flat[name] = (v, key)
        elif key not in BY_NAME:
            errors.append(unknown_message(key, file_line(path, None, key)))
        elif key in flat:
            errors.append(f"{file_line(path, None, key)}{key} is given twice")
        else:
            flat[key] = (value, None)
    return flat


def _resolve_source(source: str) -> Path:
    """A preset name or a file path -> the file."""
    looks_like_path = source.endswith(PRESET_SUFFIX) or "/" in source or os.sep in source
    if looks_like_path:
        path = Path(source).expanduser()
        if not path.exists():
            raise ConfigError(f"{source}: no such file")
        return path
    preset = find_preset(source)
    if preset is not None:
        return preset
    path = Path(source)
    if path.is_file():
        return path
    names = list(preset_paths())
    near = difflib.get_close_matches(source, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f" (presets: {', '.join(names)})"
    raise ConfigError(f"{source}: no such preset or file{hint}")


def _load_file(
    path: Path, chain: tuple[Path, ...] = ()
) -> tuple[Config, Config, dict, dict[str, str]]:
    """Load one file with its extends chain -> (config, base it extends, raw meta, layers)."""
    resolved_path = path.resolve()
    if resolved_path in chain:
        cycle = " -> ".join(str(p) for p in chain + (resolved_path,))
        raise ConfigError(f"{path}: extends cycle: {cycle}")
    data = parse_toml(path)
    chain = chain + (resolved_path,)
    base, layers = Config(), []
    extends = data.get("extends")
    if extends is not None:
        if not isinstance(extends, str) or not extends:
            raise ConfigError(
                f"{file_line(path, None, 'extends')}extends: expected a preset name or path"
            )
        base_path = _resolve_extends(extends, path)
        base, _, _, layers = _load_file(base_path, chain)
    errors = [
        f"{file_line(path, None, meta)}{meta}: expected a string"
        for meta in ("title", "description")
        if meta in data and not isinstance(data[meta], str)
    ]
    values = base.to_dict()
    flat = _flatten(path, data, errors)
    for name, (raw, table) in flat.items():
        try:
            values[name] = coerce(BY_NAME[name], _toml_value(BY_NAME[name], raw))
        except ParamError as e:
            errors.append(f"{file_line(path, table, name)}{e}")
    # a value the file sets itself is the file's, whatever the file it extends was given
    given = base.given.difference(flat).union(_given_keys(path, data, errors))
    if errors:  # every mistake of the file at once, one line each, in file order
        raise ConfigError("\n".join(sorted(errors, key=_line_of)))
    layers = [*layers, (path, {name: table for name, (_, table) in flat.items()})]
    return Config(values, given), base, data, layers


def _given_keys(path: Path, data: dict, errors: list[str]) -> set[str]:
    """The file's GIVEN_KEY list (a run directory's config.toml writes one)."""
    names = data.get(GIVEN_KEY, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        errors.append(f"{file_line(path, None, GIVEN_KEY)}{GIVEN_KEY}: expected a list of names")
        return set()
    unknown = [n for n in names if n not in BY_NAME]
    errors.extend(unknown_message(n, file_line(path, None, GIVEN_KEY)) for n in unknown)
    return set(names).difference(unknown)


def _line_of(message: str) -> int:
    m = re.match(r"[^\n]*?:(\d+): ", message)
    return int(m.group(1)) if m else 0


def _resolve_extends(extends: str, path: Path) -> Path:
    candidate = path.parent / Path(extends).expanduser()  # an absolute path stays absolute
    if extends.endswith(PRESET_SUFFIX) or "/" in extends:
        if not candidate.exists():
            raise ConfigError(
                f"{file_line(path, None, 'extends')}extends: no such file {extends!r}"
            )
        return candidate
    preset = find_preset(extends)
    if preset is not None and preset.resolve() == path.resolve():
        # A user preset that overrides a built-in one of the same name and extends it.
        preset = _shadowed_preset(extends, path)
    if preset is None:
        if candidate.with_suffix(PRESET_SUFFIX).exists():
            return candidate.with_suffix(PRESET_SUFFIX)
        names = list(preset_paths())
        near = difflib.get_close_matches(extends, names, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(
            f"{file_line(path, None, 'extends')}extends: no such preset {extends!r}{hint}"
        )
    return preset


def _shadowed_preset(name: str, path: Path) -> Path | None:
    """The preset `name` in the directories before the one holding `path` (None if none)."""
    found = None
    for d in preset_dirs():
        candidate = d / (name + PRESET_SUFFIX)
        if candidate.resolve() == path.resolve():
            return found
        if candidate.is_file():
            found = candidate
    return None


def _toml_value(param: schema.Param, raw: Any) -> Any:
    """TOML values are typed already: a string for a number is an error, not a parse."""
    if param.kind in ("int", "float") and isinstance(raw, str):
        raise ParamError(param.name, f"expected a number, got the string {raw!r}")
    if param.kind == "bool" and not isinstance(raw, bool):
        raise ParamError(param.name, f"expected true or false, got {raw!r}")
    if param.kind == "int01" and not isinstance(raw, (bool, int)):
        raise ParamError(param.name, f"expected 0/1 or true/false, got {raw!r}")
    return raw


def parse_set(item: str) -> tuple[str, Any]:
    """`name=value` from --set -> (name, typed value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected name=value")
    name, _, text = item.partition("=")
    name = name.strip().lstrip("-")
    if "." in name:  # table.name is accepted
        table, _, name = name.rpartition(".")
        if table not in schema.TABLE_CATEGORIES:
            raise ConfigError(f"--set {item!r}: unknown table {table!r}")
        if name in BY_NAME and BY_NAME[name].table != table:
            raise ConfigError(f"--set {item!r}: {name} belongs in [{BY_NAME[name].table}]")
    if name not in BY_NAME:
        raise ConfigError("--set: " + unknown_message(name))
    try:
        return name, coerce(BY_NAME[name], text.strip())
    except ParamError as e:
        raise ConfigError(f"--set: {e}") from None


def apply_sets(config: Config, sets: Iterable[str]) -> tuple[Config, dict[str, Any]]:
    overrides = dict(parse_set(s) for s in sets)
    return (config.override(**overrides) if overrides else config), overrides


def resolve(source: str | None = None, sets: Iterable[str] = ()) -> Resolved:
    """A preset name or file (None: the defaults) plus `--set` overrides -> a resolved config."""
    if source:
        path = _resolve_source(source)
        config, base, data, layers = _load_file(path)
        label = source if find_preset(source) == path else str(path)
        title, description = data.get("title", ""), data.get("description", "")
    else:
        config, base, label, title, description, layers = Config(), Config(), "", "", "", []
    config, overrides = apply_sets(config, sets)
    return Resolved(config, label, base, title, description, overrides, layers)


def load(source: str | None = None, sets: Iterable[str] = ()) -> Config:
    return resolve(source, sets).config


# ----------------------------------------------------------------------------------------------
# Writing


def to_toml_dict(
    config: Config,
    base: Config | None = None,
    extends: str | None = None,
    title: str = "",
    description: str = "",
    full: bool = False,
) -> dict:
    """Schema-ordered tables; only values that differ from `base` unless full."""
    out: dict[str, Any] = {}
    if extends:
        out["extends"] = extends
    if title:
        out["title"] = title
    if description:
        out["description"] = description
    if config.given:
        out[GIVEN_KEY] = [p.name for p in PARAMS if p.name in config.given]
    base = base or Config()
    values = config.to_dict()
    for p in PARAMS:
        if full or values[p.name] != getattr(base, p.name):
            out.setdefault(p.table, {})[p.name] = values[p.name]
    return out


def dumps(config: Config, **kw) -> str:
    import tomli_w

    return tomli_w.dumps(to_toml_dict(config, **kw))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def diff(a: Config, b: Config) -> list[tuple[str, Any, Any]]:
    return [
        (p.name, getattr(a, p.name), getattr(b, p.name))
        for p in PARAMS
        if getattr(a, p.name) != getattr(b, p.name)
    ]
