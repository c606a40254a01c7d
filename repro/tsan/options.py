"""TSAN_OPTIONS as one merge, used by the runner and by the generated reproduce script.

TSAN reads ``key=value`` pairs separated by spaces or colons; a later key wins. The
order of precedence is repro's machine defaults (e.g. the symbolizer), then the user's
own TSAN_OPTIONS, then the recipe's options, then what the caller must own (the
runner's ``log_path``). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def parse(text: str | None) -> dict[str, str]:
    """The pairs of a TSAN_OPTIONS string (items without ``=`` are ignored, as TSAN does)."""
    opts: dict[str, str] = {}
    for item in (text or "").replace(":", " ").split():
        if "=" in item:
            key, value = item.split("=", 1)
            opts[key] = value
    return opts


def merge(
    defaults: Mapping[str, Any] | None,
    user: str | None,
    recipe: Mapping[str, Any],
    forced: Mapping[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, str]:
    opts = {k: format_value(v) for k, v in (defaults or {}).items()}
    opts.update(parse(user))
    opts.update({k: format_value(v) for k, v in recipe.items()})
    opts.update({k: format_value(v) for k, v in (forced or {}).items()})
    for key in drop:
        opts.pop(key, None)
    return opts


def to_string(opts: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in opts.items())
