"""`{name}` placeholders in recipe text: as plain text for paths, quoted for the shell.

Pure, and the one place placeholders expand: the runner's commands, setup steps and the
generated reproduce.sh all come through here, so a value (a path with a space or a `;`)
can never become shell code in one of them and not the others.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Collection, Mapping

from repro.errors import ReproError

# What a placeholder's name looks like. Any other `{...}` is the shell's own: a group
# `{ a; b; }`, brace expansion `{a,b}` or `{1..3}`, or `${VAR}`, and stays as written.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _placeholder_at(template: str, i: int) -> int:
    """The index of the `}` closing a placeholder that starts at ``template[i] == "{"``, or -1."""
    if i > 0 and template[i - 1] == "$":
        return -1
    m = _NAME.match(template, i + 1)
    if m is None or not template.startswith("}", m.end()):
        return -1
    return m.end()


def known_names(*, extension: bool, env: bool = False) -> frozenset[str]:
    """The placeholders a recipe's reproducer (command, cwd, setup, env) may use: what
    `context.prepare` fills in. ``{worktree}`` is the extension's checkout, so there is
    none without an extension; ``{work}`` is made by the setup, which runs with the
    reproducer's variables, so they cannot name it."""
    names = {"python", "recipe_dir", "threads"} | (set() if env else {"work"})
    return frozenset(names | {"worktree"} if extension else names)


def _unknown_message(key: str, known: Collection[str]) -> str:
    names = ", ".join("{" + k + "}" for k in sorted(known))
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {{{close[0]}}}?" if close else ""
    if key == "worktree" and key not in known:
        hint = " ({worktree} is the extension's checkout, and the recipe has no extension)"
    if key == "work" and key not in known:
        hint = " ({work} is made by reproducer.setup, which runs with these variables)"
    return f"unknown placeholder {{{key}}} (known: {names}){hint}"


def unknown_placeholder(template: str, known: Collection[str]) -> str | None:
    """What is wrong with ``template``'s placeholders, or None: for checking a recipe
    when it is read, not after a build."""
    try:
        _parts(template, known)
    except ReproError as exc:
        return str(exc)
    return None


def _parts(template: str, known: Collection[str]) -> list[tuple[bool, str]]:
    """The template cut into (is_placeholder, text) pieces; `{{` and `}}` are braces."""
    out: list[tuple[bool, str]] = []
    text: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c in "{}" and template.startswith(c * 2, i):
            text.append(c)
            i += 2
        elif c == "{" and (j := _placeholder_at(template, i)) >= 0:
            key = template[i + 1 : j]
            if key not in known:
                raise ReproError(_unknown_message(key, known))
            if text:
                out.append((False, "".join(text)))
                text = []
            out.append((True, key))
            i = j + 1
        else:
            text.append(c)
            i += 1
    if text:
        out.append((False, "".join(text)))
    return out


def expand(template: str, values: Mapping[str, str]) -> str:
    """`{name}` placeholders as plain text: for a path (``reproducer.cwd``), never a shell."""
    return "".join(values[t] if ph else t for ph, t in _parts(template, values))


def expand_for_shell(
    template: str,
    values: Mapping[str, str],
    quote: Callable[[str], str] = shlex.quote,
    literal: Callable[[str], str] | None = None,
) -> str:
    """`{name}` placeholders in shell code, each value quoted as one word.

    The template is the recipe's shell code; the values are data (paths, a number)
    that must never become code, whatever they contain: a recipe directory named
    ``a b;touch x`` stays one word. Only the value is quoted, so ``{work}/bin`` is
    still one word (``'/a b'/bin``). ``quote`` is how a value becomes a word (the
    generated script quotes its ``$VARIABLES`` with double quotes); ``literal``,
    when given, quotes the template's own text too, for a template that is data
    as well (a directory).
    """
    out = []
    for ph, text in _parts(template, values):
        if ph:
            out.append(quote(values[text]))
        else:
            out.append(literal(text) if literal is not None else text)
    return "".join(out)
