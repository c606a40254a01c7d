"""What may be published: secrets replaced, the home directory shown as ``~``.

Reports are pasted into public issues, and a run directory holds text from anywhere
(the recipe, ``--set`` items, commands, logs, the environment). A secret is found
three ways: by its name (``GH_TOKEN``, ``API_KEY``), wherever a name is written next
to its value (``NAME=value``, ``NAME: value``, ``{NAME: value}``, ``"NAME": "value"``);
by its value, as the value of a secret-looking variable of this process; and by its
shape, for the credentials that announce themselves (``ghp_…``, ``AKIA…``, a PEM
private key), whatever name they hide under. Everything that leaves repro for a
reader goes through :func:`redact`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"

# Names containing one of these are secret wherever they appear (GITHUB_TOKEN,
# CARGO_REGISTRY_TOKEN, AWS_SECRET_ACCESS_KEY, PGPASSWORD, ...).
_SECRET_SUBSTRINGS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
# These only as a whole word of the name, so that PWD, AUTHOR or KEYBOARD are not
# caught, while API_KEY, SSH_KEY, DB_PASS and AUTH are.
_SECRET_PARTS = ("KEY", "PASS", "AUTH", "COOKIE", "SESSION", "PRIVATE")

# Credentials recognisable by their shape alone (the providers chose prefixes so
# that scanners can find them). Generous lengths: redacting a look-alike costs less
# than publishing a key.
_TOKEN_SHAPES = (
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained tokens
    r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab personal tokens
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}\b",  # AWS access key ids
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
    r"(?<![A-Za-z0-9_-])sk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"\bpypi-[A-Za-z0-9_-]{40,}",  # PyPI upload tokens
    r"\bnpm_[A-Za-z0-9]{30,}",  # npm tokens
    r"\bhf_[A-Za-z0-9]{30,}",  # Hugging Face tokens
    r"\bAIza[0-9A-Za-z_-]{35}",  # Google API keys
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JSON web tokens
    # A PEM private key, to its end line or, cut off, to the end of the text.
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|.*\Z)",
)
_TOKEN = re.compile("|".join(f"(?:{p})" for p in _TOKEN_SHAPES), re.DOTALL)

# A name followed by its separator: ``NAME=``, ``NAME: ``, ``"NAME": ``. Only the
# name and the separator are consumed, so ``env={GH_TOKEN: x}`` still finds GH_TOKEN.
_NAME_SEP = re.compile(r"(?<![A-Za-z0-9_])([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1(=|:[ \t]+)")
_QUOTED = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'")
# An unquoted value: after `=`, one shell word; after `: `, up to the end of a YAML
# flow item or of the line, or to the next `name: ` on it.
_WORD = re.compile(r"[^\s,}\]]+")
_YAML_PLAIN = re.compile(r"(?:(?!\s+[A-Za-z_][A-Za-z0-9_]*:[ \t])[^\n,{}\[\]#])*[^\s,{}\[\]#]")
# Where a `name: ` is a mapping's key rather than prose: at the start of a line (YAML
# block, list item) or of a flow item.
_KEY_START = re.compile(r"[ \t]*(?:-[ \t]+)?|.*[{,][ \t]*")
_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def looks_secret(name: str) -> bool:
    """Whether a variable or field name suggests its value is a credential."""
    upper = name.upper()
    if any(s in upper for s in _SECRET_SUBSTRINGS):
        return True
    parts = [p for p in re.split(r"[^A-Z0-9]+", upper) if p]
    return any(p in _SECRET_PARTS or (p.endswith("KEY") and len(p) > 3) for p in parts)


def looks_like_token(value: str) -> bool:
    """Whether the text holds a credential recognisable by its shape (``ghp_…``)."""
    return _TOKEN.search(value) is not None


def home_dirs() -> list[str]:
    """The home directory as written and as resolved, longest first."""
    homes = []
    for h in (os.environ.get("HOME"), str(Path.home())):
        if h and h != "/" and len(h) > 1:
            homes.append(h.rstrip("/"))
            real = os.path.realpath(h).rstrip("/")
            if real != h:
                homes.append(real)
    # Longest first, so /home/ada/link is not half-replaced by /home/ada.
    return sorted(set(homes), key=len, reverse=True)


def _secret_values() -> list[str]:
    """Values of secret-looking variables of this process, to scrub them from any text."""
    vals = {v for k, v in os.environ.items() if looks_secret(k) and len(v) >= 6}
    return sorted(vals, key=len, reverse=True)


def _named_values(text: str) -> str:
    """``NAME=value`` and ``NAME: value`` with a secret-looking NAME lose the value."""
    out: list[str] = []
    pos = 0
    for m in _NAME_SEP.finditer(text):
        if m.start() < pos:
            continue  # inside a value already redacted
        name, sep = m.group(2), m.group(3)
        if not looks_secret(name):
            continue
        if sep != "=" and not (
            name.isupper()
            or m.group(1)
            or _KEY_START.fullmatch(text, text.rfind("\n", 0, m.start()) + 1, m.start())
        ):
            continue  # `the password: see below` in prose
        start = m.end()
        value = _QUOTED.match(text, start) or (_WORD if sep == "=" else _YAML_PLAIN).match(
            text, start
        )
        if value is None:
            continue
        raw = value.group(0)
        if raw.strip("\"'").startswith("$") or raw.strip("\"'") == REDACTED:
            continue  # a reference to a variable (a shell script's), or done already
        out += [text[pos:start], REDACTED]
        pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def _redact_text(text: str, homes: Sequence[str], secrets: Sequence[str]) -> str:
    for value in secrets:
        text = text.replace(value, REDACTED)
    text = _TOKEN.sub(REDACTED, text)
    text = _named_values(text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    for home in homes:
        text = re.sub(re.escape(home) + r"(?=/|$|[\s\"'`:;,)\]}])", "~", text)
    return text


def redact(value: Any, *, keep_paths: bool = False) -> Any:
    """A copy safe to publish: secrets replaced, the home directory shown as ``~``.

    Strings are scrubbed of the values of this process's secret-looking variables,
    of credentials recognisable by their shape, of values written next to a
    secret-looking name and of credentials in URLs; mappings also lose the values of
    secret-looking keys. Applied to everything a report prints, since a run directory
    may hold text from anywhere (logs, recipes, ``--set`` items). ``keep_paths``
    leaves paths as they are, for output that programs read (``--json-out``).
    """
    return _redact(value, [] if keep_paths else home_dirs(), _secret_values())


def _redact(value: Any, homes: Sequence[str], secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return _redact_text(value, homes, secrets)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            key = _redact_text(k, homes, secrets) if isinstance(k, str) else k
            if isinstance(k, str) and looks_secret(k) and not isinstance(v, Mapping | list):
                out[key] = REDACTED if v not in (None, "") else v
            else:
                out[key] = _redact(v, homes, secrets)
        return out
    if isinstance(value, list | tuple):
        return [_redact(v, homes, secrets) for v in value]
    return value
