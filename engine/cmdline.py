"""The tuning guide's `python main.py --flag value ...` command lines, both ways.

Every schema parameter is a flag named like the parameter (`--AOA_layers 6`). Booleans are bare
flags (`--mixed_precision`); an explicit value is accepted too (`--tfidf false`). The 0/1
switches take a value (`--use_mgat 1`). `--dataset GQA` is accepted in any case.

Light module: no torch, no textual.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from .config import Config, ConfigError, unknown_message
from .schema import BY_NAME, PARAMS, ParamError, coerce, format_float

_BOOL_WORDS = {"true", "false", "1", "0", "yes", "no", "on", "off"}
PROGRAM_WORDS = ("python", "python3", "main.py", "-m", "vqatune", "train")
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# A shell comment: `#` starting a word, to the end of the line, with no quote after it (so that
# `runs/#1` and `'#1'` stay values; shlex's own comment handling would cut `a#b`).
_COMMENT = re.compile(r"""(^|\s)#[^'"\n]*$""", re.MULTILINE)


def split(text: str) -> list[str]:
    """Shell words of a command line: backslash-newline continuations joined, `# ...` dropped."""
    text = _COMMENT.sub(r"\1", text.replace("\\\n", " "))
    try:
        return shlex.split(text)
    except ValueError as e:
        raise ConfigError(f"command line: {e}") from None


def strip_program(words: list[str]) -> list[str]:
    """Drop a leading `VAR=value ... python main.py` (or `python -m vqatune train`)."""
    i = 0
    while i < len(words) and _ENV_ASSIGNMENT.match(words[i]):
        i += 1
    while i < len(words) and (not words[i].startswith("-") or words[i] == "-m"):
        if words[i] not in PROGRAM_WORDS and not words[i].endswith(".py"):
            raise ConfigError(f"command line: unexpected word {words[i]!r} before the flags")
        i += 1
    return words[i:]


def parse_flags(words: list[str]) -> dict[str, Any]:
    """Flags -> {param: typed value}; unknown flags and bad values raise ConfigError."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            raise ConfigError(f"command line: unexpected argument {word!r}")
        name, eq, inline = word[2:].partition("=")
        if name.startswith("no-") and name[3:] in BY_NAME and BY_NAME[name[3:]].kind == "bool":
            values[name[3:]] = False
            i += 1
            continue
        param = BY_NAME.get(name) or BY_NAME.get(name.replace("-", "_"))
        if param is None:
            raise ConfigError(
                "command line: "
                + unknown_message(name).replace(f"parameter {name!r}", f"flag --{name}")
            )
        if eq:
            text = inline
            i += 1
        elif param.kind == "bool":
            following = words[i + 1] if i + 1 < len(words) else None
            if following is not None and following.lower() in _BOOL_WORDS:
                text = following
                i += 2
            else:
                text = "true"
                i += 1
        else:
            if i + 1 >= len(words):
                raise ConfigError(f"command line: --{param.name} needs a value")
            text = words[i + 1]
            i += 2
        try:
            values[param.name] = coerce(param, text)
        except ParamError as e:
            raise ConfigError(f"command line: --{e}") from None
    return values


def parse(text: str) -> dict[str, Any]:
    return parse_flags(strip_program(split(text)))


def config_from_cmdline(text: str, base: Config | None = None) -> Config:
    values = (base or Config()).to_dict()
    values.update(parse(text))
    return Config(values)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def to_flags(config: Config, base: Config | None = None, full: bool = False) -> list[str]:
    """Flags for the parameters that differ from `base` (the defaults), in schema order."""
    base = base or Config()
    words: list[str] = []
    for p in PARAMS:
        value = getattr(config, p.name)
        if not full and value == getattr(base, p.name):
            continue
        if p.kind == "bool":
            words += [p.flag] if value else [p.flag, "false"]
        else:
            words += [p.flag, format_value(value)]
    return words


def to_cmdline(
    config: Config, base: Config | None = None, full: bool = False, program: str = "python main.py"
) -> str:
    words = to_flags(config, base, full)
    return " ".join([program] + [shlex.quote(w) for w in words])
