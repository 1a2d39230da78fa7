"""The Configure screen's state without any widget: raw field values checked against the schema.

Every field holds what the user typed (text for numbers and paths, bool for switches, a choice for
selects). Each is coerced by `schema.coerce`, so the TUI accepts and rejects exactly what a TOML
file or `--set` would. Kept free of textual so it is tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vqatune.engine import schema
from vqatune.engine.config import Config, ConfigError
from vqatune.engine.schema import BY_NAME, PARAMS, ParamError

TEXT_KINDS = ("int", "float", "str", "path")
SWITCH_KINDS = ("bool", "int01")
BATCH_FIELDS = ("batch_size", "update_freq", "gradient_accumulation_steps")


def display(param: schema.Param, value: Any) -> Any:
    """A typed value -> what its widget holds."""
    if param.kind in SWITCH_KINDS:
        return bool(value)
    if param.kind == "float":
        return schema.format_float(value)
    return str(value)


@dataclass(frozen=True)
class FieldState:
    value: Any  # the coerced value, None when invalid
    error: str | None  # hard error: blocks launching
    warning: str | None  # valid but outside the guide's recommended range
    changed: bool  # differs from the base (preset or loaded file)


class FormState:
    """Raw values for every parameter, the base they are compared with, and where it came from."""

    def __init__(self, base: Config | None = None, source: str = "default"):
        self.base = base or Config()
        self.source = source
        self.raw: dict[str, Any] = {}
        self.reset(self.base, source)

    def reset(self, base: Config, source: str) -> None:
        """Adopt a new base (a preset was applied or a file loaded): every field takes its value."""
        self.base, self.source = base, source
        self.raw = {p.name: display(p, getattr(base, p.name)) for p in PARAMS}

    def set(self, name: str, raw: Any) -> FieldState:
        self.raw[name] = raw
        return self.field(name)

    def field(self, name: str) -> FieldState:
        param = BY_NAME[name]
        try:
            value = schema.coerce(param, self.raw[name])
        except ParamError as e:
            return FieldState(None, e.message, None, True)
        return FieldState(
            value,
            None,
            schema.recommendation_warning(param, value),
            value != getattr(self.base, name),
        )

    def errors(self) -> dict[str, str]:
        out = {}
        for p in PARAMS:
            state = self.field(p.name)
            if state.error:
                out[p.name] = state.error
        return out

    def config(self) -> Config:
        """The current values as a Config; ConfigError naming the first invalid parameter."""
        values = {}
        for p in PARAMS:
            state = self.field(p.name)
            if state.error:
                raise ConfigError(f"{p.name}: {state.error}")
            values[p.name] = state.value
        return Config(values)

    def changed(self) -> list[tuple[str, Any, Any]]:
        """(name, base value, current value) of the valid fields that differ from the base."""
        out = []
        for p in PARAMS:
            state = self.field(p.name)
            if state.changed and state.error is None:
                out.append((p.name, getattr(self.base, p.name), state.value))
        return out

    def effective_batch_size(self) -> int | None:
        """batch_size x update_freq x gradient_accumulation_steps, None while one is invalid."""
        product = 1
        for name in BATCH_FIELDS:
            state = self.field(name)
            if state.value is None:
                return None
            product *= state.value
        return product
