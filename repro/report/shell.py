"""How to reproduce, with repro and without it.

The plain shell script is the part of a report that must work for someone who
will never install repro: a CPython or PyO3 maintainer reading an issue. It is
derived from the same recipe and the same constants the builders use, so it
builds what repro built (TSAN flags, configure options, patches) and runs what
repro ran (command, directory, environment, TSAN options), then loops until the
race shows. Paths under the reporter's home become ``$HOME`` (they must stay
usable in a shell, where a quoted ``~`` is not expanded).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.builds.cpython import DEFAULT_MIRROR
from repro.builds.pypackage import INSTALL_TSAN_OPTIONS, STANDALONE
from repro.host.compilers import cxx_for
from repro.placeholders import expand_for_shell
from repro.recipe import Recipe
from repro.redact import home_dirs, looks_secret
from repro.strategy.stats import clean_runs_needed
from repro.tsan import options as tsan_options
from repro.tsan.signature import DEFAULT_DROP, normalise_function

PLAIN_OK = "race reproduced in run"
PLAIN_NOT = "race not reproduced in"
_SAFE = re.compile(r"[A-Za-z0-9_./:=@%+,-]+")
_MAX_EMBED = 64_000


def shq(value: str) -> str:
    """Quote for sh; the home directory becomes ``$HOME`` so the value stays valid."""
    homes = home_dirs()
    if _SAFE.fullmatch(value) and not any(value.startswith(h) for h in homes):
        return value
    esc = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    for home in homes:
        esc = re.sub(re.escape(home) + r"(?=/|$)", "$HOME", esc)
    return f'"{esc}"'


def shq_var(value: str) -> str:
    """Quote a value that deliberately refers to shell variables (``$WORK/x``)."""
    if _SAFE.fullmatch(value):
        return value
    esc = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return f'"{esc}"'


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def comment(text: str) -> str:
    """A comment line whatever the text holds: a newline in a name must not start a command."""
    return "# " + _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


# The plain loop runs on someone else's machine, under another load, where a race can
# show far less often than where it was measured (a run of the test suite on two busy
# cores missed in all of 41 runs allowed at the interval's low end): the loop allows
# enough runs at a quarter of that. It stops at the first hit, so this costs nothing
# where the race shows.
ELSEWHERE = 0.25


def loop_runs(hits: int, runs: int, rate_lo: float) -> int:
    """Runs the plain loop allows: enough to see the race with 99.9% at a quarter of the
    low end of the measured rate's interval."""
    if hits <= 0 or rate_lo <= 0.0:
        return max(100, runs)
    return max(10, min(100_000, clean_runs_needed(min(rate_lo * ELSEWHERE, 1.0), 0.999)))


def _glob_to_ere(pattern: str, star: str = "[^ ]*", one: str = "[^ ]") -> str:
    """A glob as the body of an awk ERE, ``[`` literal; ``*`` and ``?`` stay within a
    word by default (a pattern searched for in a frame line), or span anything
    (``.*``, ``.``) for a drop pattern matched against a whole name."""
    out = []
    for c in pattern:
        if c == "*":
            out.append(star)
        elif c == "?":
            out.append(one)
        else:
            out.append(re.escape(c) if c in ".^$+()[]{}|\\" else c)
    return "".join(out)


# Whether a log holds the target race, report by report, as repro's matcher decides it:
# every function and file pattern in a frame of the report's accesses ("Write of size 8
# at ... by thread T1:", "Previous atomic read ...", each stack up to its blank line; all
# its stacks when it has no access, as a lock-order inversion), and with `accesses: each`
# some function (and file) pattern in each of two accesses. The patterns come in the
# environment (tab-separated EREs), which awk does not unescape. Grepping the whole log
# once found a pattern in a mutex's creation stack, and the pasted loop said "race
# reproduced" where repro had counted another race. Only the top `depth` frames of each
# stack count, once the frames repro drops (the TSAN runtime, libc plumbing, the recipe's
# signature.drop: `dropped`, by function, module or file) are left out: the loop counted
# a match at frame #5 that repro, at depth 3, did not (sweep 15). A Rust frame
# `<crate::Type>::method` is also tried as `crate::Type::method` (signature.rust_path),
# and a frame of a generic type without its arguments, `Accumulator::add`
# (signature.without_template_args). Frames and
# patterns are normalised as signature.normalise_function does (`norm`: lambdas' and
# closures' numbers, Cython's numbers, Rust's crate disambiguators, `> >`), since a
# suggested target holds the normalised names: the loop missed a race in a C++ lambda
# (`$_0` in the log, `$_` in the target) that repro had counted.
TARGET_AWK = r"""
function judge(  i, ok) {
  if (!inrep) return
  ok = kindok
  for (i = 1; i <= nf; i++) if (!(na ? uf[i] : af0[i])) ok = 0
  for (i = 1; i <= nl; i++) if (!(na ? ul[i] : al0[i])) ok = 0
  if (each && na >= 2 && !eachok) ok = 0
  if (ok) found = 1
}
function endacc() {
  if (s && ((nf && !hitf) || (nl && !hitl))) eachok = 0
  s = 0
}
function norm(t,  m, sp, name, pre) {
  gsub(/[$]_[0-9]+/, "$_", t)
  gsub(/[)]#[0-9]+[}]/, ")}", t)
  while (match(t, /[{][A-Za-z_][A-Za-z0-9_:]*#[0-9]+[}]/)) {
    m = substr(t, RSTART, RLENGTH); sub(/#[0-9]+[}]$/, "}", m)
    t = substr(t, 1, RSTART - 1) m substr(t, RSTART + RLENGTH)
  }
  while (match(t, /[{][{][A-Za-z_][A-Za-z0-9_:]*[}][}]/))
    t = substr(t, 1, RSTART - 1) substr(t, RSTART + 1, RLENGTH - 2) substr(t, RSTART + RLENGTH)
  gsub(/[[][0-9a-f]+[]]::/, "::", t)
  while (match(t, /> +>/)) t = substr(t, 1, RSTART) substr(t, RSTART + RLENGTH - 1)
  if (match(t, /#[0-9]+ __pyx_[a-z]+_[^ ]*/)) {
    m = substr(t, RSTART, RLENGTH); sp = index(m, " ")
    name = substr(m, sp + 1); match(name, /^__pyx_[a-z]+_/)
    pre = substr(name, 1, RLENGTH); name = substr(name, RLENGTH + 1)
    if (match(name, /^[0-9]+[A-Za-z_]/)) name = substr(name, RLENGTH)
    while (match(name, /_[0-9]+[A-Za-z_]/))
      name = substr(name, 1, RSTART) substr(name, RSTART + RLENGTH - 1)
    t = substr(t, 1, RSTART - 1) substr(m, 1, sp) pre name substr(t, RSTART + RLENGTH)
  }
  return t
}
function dropped(r,  p, mod, fl, i) {
  mod = ""; fl = ""; p = r
  while (match(p, /[(][^()]+[+]0x[0-9a-fA-F]+[)]/)) {
    mod = substr(p, RSTART + 1, RLENGTH - 2); p = substr(p, RSTART + RLENGTH)
  }
  sub(/[+]0x[0-9a-fA-F]+$/, "", mod)
  if (match(r, / [(]Build[I]d:/)) r = substr(r, 1, RSTART - 1)
  if (mod != "") { i = index(r, " (" mod "+"); if (i) r = substr(r, 1, i - 1) }
  sub(/ +$/, "", r)
  if (match(r, / [^ ]+:[0-9]+(:[0-9]+)?$/)) {
    fl = substr(r, RSTART + 1, RLENGTH - 1); sub(/:[0-9]+(:[0-9]+)?$/, "", fl)
    r = substr(r, 1, RSTART - 1)
  }
  if (r == "" || r ~ /^<null>/) return 1
  for (i = 1; i <= nd; i++)
    if (r ~ D[i] || (mod != "" && mod ~ D[i]) || (fl != "" && fl ~ D[i])) return 1
  return 0
}
BEGIN {
  nf = split(ENVIRON["REPRO_FUNCTIONS"], F, "	"); nl = split(ENVIRON["REPRO_FILES"], L, "	")
  nd = split(ENVIRON["REPRO_DROP"], D, "\n"); depth = ENVIRON["REPRO_DEPTH"] + 0
  kind = ENVIRON["REPRO_KIND"]; each = ENVIRON["REPRO_EACH"] == "1"
}
/WARNING: ThreadSanitizer: / {
  endacc(); judge(); inrep = 1; na = 0; eachok = 1
  split("", uf); split("", ul); split("", af0); split("", al0)
  kindok = kind == "" || index($0, "WARNING: ThreadSanitizer: " kind) > 0
  next
}
/^[ 	]*(Previous )?([Aa]tomic )?([Rr]ead|[Ww]rite) of size/ {
  endacc(); s = 1; na++; hitf = 0; hitl = 0; next
}
/^[ 	]*$/ { endacc() }
/#[0-9]+ / {
  line = norm($0)
  match(line, /#[0-9]+ /)
  if (substr(line, RSTART, RLENGTH) == "#0 ") shown = 0
  if (dropped(substr(line, RSTART + RLENGTH))) next
  if (depth && ++shown > depth) next
  alt = line
  if (match(line, /#[0-9]+ <[^<> ]+>::/)) {
    m = substr(line, RSTART, RLENGTH); sp = index(m, " ")
    alt = substr(line, 1, RSTART - 1) substr(m, 1, sp) substr(m, sp + 2, RLENGTH - sp - 4)
    alt = alt "::" substr(line, RSTART + RLENGTH)
  }
  bare = line
  if (!index(line, "operator<") && !index(line, "operator>") && !index(line, "operator-"))
    while (match(bare, /<[^<>]*>/))
      bare = substr(bare, 1, RSTART - 1) substr(bare, RSTART + RLENGTH)
  for (i = 1; i <= nf; i++)
    if (line ~ F[i] || alt ~ F[i] || bare ~ F[i]) { af0[i] = 1; if (s) { uf[i] = 1; hitf = 1 } }
  for (i = 1; i <= nl; i++) if ($0 ~ L[i]) { al0[i] = 1; if (s) { ul[i] = 1; hitl = 1 } }
}
END { endacc(); judge(); exit !found }
"""


def target_function(recipe: Recipe) -> list[str]:
    """Lines of sh that define ``is_target LOG``: whether LOG holds the target race, as
    repro's matcher decides it (TARGET_AWK)."""
    t = recipe.target
    if any(_CONTROL.search(p) for p in (*t.functions, *t.files)):
        # No frame line holds a newline, so repro never matches such a pattern.
        return ["is_target() { false; }"]
    fn_res = ["#[0-9]+ [^ ]*" + _glob_to_ere(normalise_function(fn)) for fn in t.functions]
    file_res = ["#[0-9]+ .*" + _glob_to_ere(f.lstrip("/")) + ":[0-9]" for f in t.files]
    env = {
        "REPRO_FUNCTIONS": "\t".join(fn_res),
        "REPRO_FILES": "\t".join(file_res),
        "REPRO_KIND": t.kind or "",
        "REPRO_EACH": "1" if t.accesses == "each" else "0",
        "REPRO_DEPTH": str(t.depth),
    }
    # One pattern a line, in a variable of its own: on the awk's line they made one
    # line of 2,000 characters.
    drop = "\n".join(
        "^" + _glob_to_ere(p, ".*", ".") + "$"
        for p in (*DEFAULT_DROP, *recipe.signature.drop_frames)
    )
    program = TARGET_AWK.strip("\n").splitlines()
    assert not any("'" in line for line in program)
    return [
        "# The frames repro leaves out of a stack before it reads the top `depth` of them:",
        "# the TSAN runtime, thread start-up and libc plumbing (and the recipe's own).",
        *f"REPRO_DROP_FRAMES={shq(drop)}".split("\n"),
        "is_target() {",
        "  "
        + " ".join(f"{k}={shq(v)}" for k, v in env.items())
        + ' REPRO_DROP="$REPRO_DROP_FRAMES" awk \'',
        *program,
        '\' "$1"',
        "}",
    ]


@dataclass
class PlainInputs:
    """What the script needs, gathered by the report from the run directory."""

    recipe: Recipe
    recipe_dir: Path | None
    title: str
    ext_repo: str | None = None
    ext_sha: str | None = None
    ext_label: str | None = None
    python_version: str | None = None  # a release (tarball)
    python_commit: str | None = None  # a git commit (python.git)
    tarball_sha256: str | None = None
    patches: list[dict[str, Any]] = field(default_factory=list)
    build_env: Mapping[str, str] | None = None  # as recorded, to resolve env_ranges
    user_tsan_options: str | None = None
    tsan_options: Mapping[str, Any] = field(default_factory=dict)
    prefix: Sequence[str] = ()
    threads: int | None = None
    switch_interval: float | None = None
    timeout: float | None = None
    runs: int = 100
    rust_host: str | None = None
    ext_backend: str | None = None  # a Python package's build backend, as repro built it


def _export(
    name: str,
    value: str,
    refs: frozenset[str] = frozenset(),
    template: Mapping[str, str] | None = None,
) -> str:
    """One export line; secrets are left for the reader to provide.

    Values are literal (the runner does not expand them) except for the names in
    ``refs``, whose values are the script's own ``$VARIABLES``, and a ``template``'s
    placeholders (a recipe's `reproducer.env`), which are those variables too.
    """
    if not _NAME.fullmatch(name):
        return comment(f"not exported: {name!r} is not a shell variable name")
    if looks_secret(name):
        return f'export {name}="${{{name}:-}}"  # redacted from the report: set it yourself'
    if template is not None:
        return f"export {name}={expand_for_shell(value, template, quote=shq_var, literal=shq)}"
    return f"export {name}={shq_var(value) if name in refs else shq(value)}"


def _merge_tsan_options(user: str | None, recipe: Mapping[str, Any]) -> str:
    # Reports must go to the log the loop greps, not to a log_path of the user's.
    return tsan_options.to_string(tsan_options.merge(None, user, recipe, drop=("log_path",)))


def _heredoc(path: str, text: str) -> list[str]:
    marker = "REPRO_EOF"
    while marker in text:
        marker += "_"
    body = text if text.endswith("\n") else text + "\n"
    return [f"cat > {path} <<'{marker}'", *body.rstrip("\n").split("\n"), marker]


def _read_small(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_EMBED:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# A recipe's `clang` may be installed only as clang-N (Debian's clang-19): the script looks
# for it as repro does (host.compilers.clang_candidates: clang, then the newest clang-N).
_FIND_CLANG = [
    "",
    comment("clang, or the newest clang-N where only a versioned one is installed"),
    "CLANG=\"$(command -v clang || command -v \"$(compgen -c clang- | grep -xE 'clang-[0-9]+'"
    ' | sort -t- -k2 -rn | head -n1)" || true)"',
    '[ -n "$CLANG" ] || { echo "reproduce.sh: needs clang (apt-get install clang)" >&2; exit 1; }',
    'CLANGXX="${CLANG%/*}/clang++${CLANG##*/clang}"',
]


def _compiler_refs(cc: str | None) -> frozenset[str]:
    """The exports whose values are the script's own variables (see ``_export``)."""
    return frozenset({"CC", "CXX"}) if cc == "$CLANG" else frozenset()


def _compilers(inp: PlainInputs) -> tuple[str | None, str | None]:
    """(CC, CXX) as the script names them: a bare ``clang`` is the script's ``$CLANG``."""
    compiler = inp.recipe.python.compiler if inp.recipe.python else None
    if not compiler:
        return None, None
    if compiler == "clang":
        return "$CLANG", "$CLANGXX"
    return compiler, cxx_for(compiler)


def _cpython_lines(inp: PlainInputs, out: list[str]) -> str | None:
    """Lines that build CPython; returns the python the rest of the script uses."""
    spec = inp.recipe.python
    if spec is None:
        return None
    if spec.executable:
        out += [
            "",
            "# CPython: the reporter used an existing interpreter; use a free-threaded build",
            "# with TSAN (./configure --disable-gil --with-thread-sanitizer) here.",
            f"PYTHON={shq(spec.executable)}",
        ]
        return "$PYTHON"
    from repro.builds.cpython import configure_command

    placeholder = "/REPRO-PREFIX"
    cmd = configure_command(spec, Path(placeholder), _compilers(inp)[0] or spec.compiler)
    configure = " ".join(
        shq_var(a.replace(placeholder, "$WORK/cpython"))
        if placeholder in a or a == "CC=$CLANG"
        else shq(a)
        for a in cmd
    )
    out.append("")
    if spec.git and inp.python_commit:
        what = f"CPython at commit {inp.python_commit[:12]}"
        src_dir = "cpython-src"
        fetch = [
            f"[ -d {src_dir} ] || git clone {shq(spec.git)} {src_dir}",
            f"cd {src_dir}",
            f"git checkout -q --detach {shq(inp.python_commit)}",
            "git clean -qfdx && git checkout -q .",
        ]
    else:
        version = inp.python_version or spec.version or "3.13.5"
        tarball = f"Python-{version}.tar.xz"
        what = f"CPython {version} from the release tarball"
        url = DEFAULT_MIRROR.format(v=version)
        fetch = [f"[ -f {shq(tarball)} ] || curl -fLO {shq(url)}"]
        if inp.tarball_sha256:
            fetch.append(f"echo {shq(f'{inp.tarball_sha256}  {tarball}')} | sha256sum -c -")
        src_dir = shq(f"Python-{version}")
        fetch += [f"rm -rf {src_dir} && tar xf {shq(tarball)}", f"cd {src_dir}"]
    flags = ["free-threaded" if spec.free_threading else "with the GIL"]
    if spec.tsan:
        flags.append("TSAN")
    if spec.debug:
        flags.append("debug")
    out.append(comment(f"1. {what} ({', '.join(flags)}), built with {spec.compiler}"))
    for patch in inp.patches:
        if patch.get("text"):
            out.append(comment(f"the patch applied to CPython (sha256 {patch.get('sha256')})"))
            out += _heredoc(shq_var(f"$WORK/{patch['name']}"), str(patch["text"]))
    out += fetch
    for patch in inp.patches:
        if patch.get("text"):
            out.append(f"patch -p1 < {shq_var('$WORK/' + str(patch['name']))}")
        else:
            out.append(
                comment(f"apply {patch.get('name')} (sha256 {patch.get('sha256')}) with patch -p1")
            )
    out += [
        configure,
        'make -j"$(nproc)"',
        "# PYTHON_FOR_BUILD=: skips byte-compiling the stdlib under TSAN (it takes an hour)",
        "make install PYTHON_FOR_BUILD=:",
        'cd "$WORK"',
        'export PATH="$WORK/cpython/bin:$PATH" PYTHON="$WORK/cpython/bin/python3"',
        'export LD_LIBRARY_PATH="$WORK/cpython/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"',
    ]
    return "$PYTHON"


def _extension_lines(inp: PlainInputs, out: list[str], python: str | None, step: int) -> str:
    """Lines that fetch and build the extension; returns its directory."""
    ext = inp.recipe.extension
    assert ext is not None
    from repro.builds.extension import TSAN_CFLAGS, TSAN_LDFLAGS, TSAN_RUSTFLAGS

    repo = inp.ext_repo or ext.repo
    name = re.sub(r"\.git$", "", repo.rstrip("/").rsplit("/", 1)[-1]) or "extension"
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", name)
    sha = inp.ext_sha or ext.ref
    out += [
        "",
        comment(f"{step}. {name} at {inp.ext_label or sha[:12]}, built with TSAN"),
    ]
    if "://" not in repo and not repo.startswith("git@"):
        out.append("#    (the reporter's local clone: use the project's public URL instead)")
    out += [
        f"[ -d {name} ] || git clone -q {shq(repo)} {name}",
        f"cd {name}",
        f"git checkout -q --detach {shq(sha)}",
    ]
    if ext.kind == "python-package":
        _package_lines(inp, out)
        return f"$WORK/{name}"
    env: dict[str, str] = {}
    if python is not None:
        env["PYO3_PYTHON"] = "$PYTHON"
    cc, cxx = _compilers(inp)
    if ext.sanitize == "c":
        env.update(CFLAGS=TSAN_CFLAGS, CXXFLAGS=TSAN_CFLAGS, LDFLAGS=TSAN_LDFLAGS)
        if cc and cxx:
            env.update(CC=cc, CXX=cxx)
    elif ext.sanitize == "rust":
        env.update(
            RUSTC_BOOTSTRAP="1",
            RUSTFLAGS=TSAN_RUSTFLAGS,
            RUSTDOCFLAGS=TSAN_RUSTFLAGS,
            CARGO_BUILD_TARGET=inp.rust_host or "x86_64-unknown-linux-gnu",
        )
        if cc:
            env["CC"] = cc
    env, conditional = _with_recipe_env(inp, env)
    refs = frozenset({"PYO3_PYTHON", *_compiler_refs(cc)} - set(ext.env))
    out += [_export(k, env[k], refs) for k in sorted(env)]
    out += conditional
    out += list(ext.build)
    out.append('cd "$WORK"')
    return f"$WORK/{name}"


def _with_recipe_env(inp: PlainInputs, ours: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """repro's build variables with the recipe's ``env`` (and its ``env_ranges`` that the
    build had) over them, joined as the build joined them (``with_recipe_env``): set
    over them, a recipe's `RUSTFLAGS: -Cstrip=none` left the script's build without TSAN,
    and the script did not reproduce the race. Ranges the record cannot settle become
    comments."""
    from repro.builds.extension import with_recipe_env

    ext = inp.recipe.extension
    assert ext is not None
    recipe_env = dict(ext.env)
    conditional: list[str] = []
    for rng in ext.env_ranges:
        recorded = inp.build_env
        merged = with_recipe_env(ours, {**recipe_env, **rng.env})
        if recorded is not None:
            if all(recorded.get(k) in (v, merged[k]) for k, v in rng.env.items()):
                recipe_env.update(rng.env)
            continue
        when = f"before {rng.before}" if rng.before else f"since {rng.since}"
        assigns = " ".join(f"{k}={shq(merged[k])}" for k in rng.env)
        conditional.append(comment(f"for commits {when} also: export {assigns}"))
    return with_recipe_env(ours, recipe_env), conditional


def _package_lines(inp: PlainInputs, out: list[str]) -> None:
    """A Python package: an environment of the Python under test, the package installed into
    it by pip with the TSAN settings repro built it with; ``$PYTHON`` becomes that
    environment's interpreter (what ``{python}`` means in the reproducer)."""
    from repro.builds.pypackage import PYTEST_TOOLS, tsan_settings

    ext = inp.recipe.extension
    assert ext is not None
    backend = inp.ext_backend or "setuptools"
    cc, cxx = _compilers(inp)
    env, settings = tsan_settings(
        backend,
        compiler=cc,
        rust_target=inp.rust_host or "x86_64-unknown-linux-gnu",
        config_settings=ext.config_settings,
    )
    if cxx:
        env["CXX"] = cxx
    env, conditional = _with_recipe_env(inp, env)
    refs = _compiler_refs(cc) - set(ext.env)
    requirements = list(ext.requirements)
    if inp.recipe.reproducer.pytest is not None:
        requirements += [t for t in PYTEST_TOOLS if t not in requirements]
    if inp.ext_backend is None:
        out.append(comment("(built as a C extension: meson-python and maturin need other flags)"))
    quiet = f"TSAN_OPTIONS={INSTALL_TSAN_OPTIONS}"  # as repro installs (pypackage)
    out += [
        comment(f"its {backend} build with TSAN, installed into an environment of that Python"),
        f'[ -x "$WORK/venv/bin/python" ] || {quiet} "$PYTHON" -m venv "$WORK/venv"',
    ]
    if requirements:
        out.append(
            f'{quiet} "$WORK/venv/bin/python" -m pip install -q '
            + " ".join(shq(r) for r in requirements)
        )
    out += [_export(k, env[k], refs) for k in sorted(env)]
    out += conditional
    config: list[str] = []
    for key, value in settings.items():
        for v in value if isinstance(value, list) else [value]:
            config.append(shq(f"--config-settings={key}={v}"))
    out.append(
        f'{quiet} "$WORK/venv/bin/python" -m pip install -q --force-reinstall '
        + " ".join([*config, "."])
    )
    out += ['PYTHON="$WORK/venv/bin/python"', 'cd "$WORK"']
    if inp.recipe.reproducer.pytest is not None:
        out += _site_first_lines()


def _site_first_lines() -> list[str]:
    """The pytest plugin repro runs tests with (repro/standalone/repro_site_first.py),
    for tests that live inside the package: pytest imported the package from the
    checkout beside them, without its compiled modules, and the loop said "not
    reproduced" of a race that repro reproduced."""
    plugin = (STANDALONE / "repro_site_first.py").read_text()
    site = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return [
        comment("tests inside the package: import it from the environment, not the checkout"),
        'mkdir -p "$WORK/plugins"',
        *_heredoc('"$WORK/plugins/repro_site_first.py"', plugin),
        'export PYTHONPATH="$WORK/plugins${PYTHONPATH:+:$PYTHONPATH}"',
        "export PYTEST_PLUGINS=repro_site_first",
        f'export REPRO_BUILT_SITE="$("$PYTHON" -c {shq(site)})"',
    ]


def plain_script(inp: PlainInputs) -> str:
    """A bash script that builds everything with TSAN and runs the reproducer in a loop."""
    r = inp.recipe
    out = [
        comment(f"Reproduce without repro: {inp.title}"),
        "# Needs git, make, a C compiler with TSAN (gcc or clang)"
        + (
            ", cargo"
            if r.extension and (r.extension.sanitize == "rust" or inp.ext_backend == "maturin")
            else ""
        )
        + ". Save as reproduce.sh, run: bash reproduce.sh",
        "set -e",
        # Every variable is exported: the reproducer runs in a shell of its own (below).
        "set -a",
        'WORK="$PWD/repro-work"',
        'mkdir -p "$WORK" && cd "$WORK"',
    ]
    if _compilers(inp)[0] == "$CLANG":
        out += _FIND_CLANG
    python = _cpython_lines(inp, out)
    step = 2 if python is not None and r.python and not r.python.executable else 1
    worktree = _extension_lines(inp, out, python, step) if r.extension else None

    # The values are the script's own variables; expand_for_shell quotes each as one word.
    values: dict[str, str] = {
        "python": python or "python3",
        "threads": str(inp.threads or r.reproducer.threads),
        "recipe_dir": "$RECIPE_DIR",
        "work": "$WORK/setup",
    }
    if worktree:
        values["worktree"] = worktree

    command = expand_for_shell(r.reproducer.command, values, quote=shq_var)
    setup = [expand_for_shell(c, values, quote=shq_var) for c in r.reproducer.setup]
    if r.reproducer.cwd:
        template = r.reproducer.cwd
        if not template.startswith(("/", "{")) or template.startswith("{{"):
            template = "{recipe_dir}/" + template  # relative to the recipe, as repro runs it
        # A directory is data throughout: its own text is quoted too.
        cwd = expand_for_shell(template, values, quote=shq_var, literal=shq)
    else:
        cwd = shq_var(worktree or "$RECIPE_DIR")
    run_env: dict[str, str] = {"REPRO_THREADS": values["threads"]}
    if inp.switch_interval is not None:
        run_env["REPRO_SWITCH_INTERVAL"] = repr(inp.switch_interval)
    run_env.update(r.reproducer.env)
    tsan = _merge_tsan_options(inp.user_tsan_options, inp.tsan_options)
    if tsan:
        run_env["TSAN_OPTIONS"] = tsan
    env_lines = ["", "# The reproducer's environment"]
    # The recipe's own variables are templates, as repro expands them (not the TSAN
    # options merged into them).
    own = {k for k in r.reproducer.env if k != "TSAN_OPTIONS"}
    env_lines += [_export(k, v, template=values if k in own else None) for k, v in run_env.items()]
    embeds = _embedded_files(inp, [command, *setup, *env_lines])
    uses_recipe_dir = any("$RECIPE_DIR" in c for c in [command, *setup, cwd, *env_lines])
    if embeds or uses_recipe_dir:
        out += ["", "# Files from the recipe's directory", 'RECIPE_DIR="$WORK/recipe"']
        dirs = sorted({str(Path(name).parent) for name, _ in embeds} - {"."})
        out.append(
            "mkdir -p "
            + " ".join(shq_var(d) for d in ["$RECIPE_DIR", *(f"$RECIPE_DIR/{d}" for d in dirs)])
        )
        for name, text in embeds:
            out += _heredoc(shq_var(f"$RECIPE_DIR/{name}"), text)
            if inp.recipe_dir is not None and os.access(inp.recipe_dir / name, os.X_OK):
                out.append(f"chmod +x {shq_var(f'$RECIPE_DIR/{name}')}")
    out += env_lines
    if setup:
        out += ["", "# Set up the reproducer (once)", 'mkdir -p "$WORK/setup" && cd "$WORK/setup"']
        out += setup
    n = inp.runs
    timeout = inp.timeout or r.reproducer.timeout
    prefix = " ".join(shq(p) for p in inp.prefix)
    # In a shell of its own, as repro runs it: `timeout` takes a leading `VAR=x` for the
    # program's name, and a `;`, `&&` or pipe would leave the rest outside the timeout.
    run = (
        f"timeout {math.ceil(timeout)} {prefix + ' ' if prefix else ''}sh -c {shlex.quote(command)}"
    )
    log = '"$WORK/run.log"'
    out += ["", "# Whether a run's output holds the target race (as repro matches it)"]
    out += target_function(r)
    out += [
        "",
        "# Run the reproducer until TSAN reports the race",
        f"cd {cwd}",
        "found=",
        f"for i in $(seq 1 {n}); do",
        f"  {run} > {log} 2>&1 || true",
        f"  if is_target {log}; then found=$i; break; fi",
        "done",
        'if [ -n "$found" ]; then',
        f'  echo "{PLAIN_OK} $found (TSAN report: $WORK/run.log)"',
        "else",
        f'  echo "{PLAIN_NOT} {n} runs"',
        "fi",
    ]
    return "\n".join(out) + "\n"


_RECIPE_REF = re.compile(r"\$RECIPE_DIR\"?/([^\s'\"`;|&()<>$]+)")


def _embedded_files(inp: PlainInputs, commands: Sequence[str]) -> list[tuple[str, str]]:
    """Small files of the recipe's directory that the commands name (a reproducer script).

    They travel inside the script, so a stranger gets the reproducer with the commands.
    """
    if inp.recipe_dir is None:
        return []
    names: list[str] = []
    for command in commands:
        names += _RECIPE_REF.findall(command)
    with contextlib.suppress(ValueError):
        names += shlex.split(commands[0]) if commands else []  # relative to the recipe dir
    found: list[tuple[str, str]] = []
    for rel in names:
        if not rel or rel.startswith(("/", "$", "-", "~")) or ".." in rel.split("/"):
            continue
        text = _read_small(inp.recipe_dir / rel)
        if text is not None and all(rel != f for f, _ in found):
            found.append((rel, text))
    return found


def public_repo(*candidates: str | None) -> str | None:
    """The first candidate that someone on another machine can clone (an http(s) URL).

    Candidates in order of trust: the web URL the run recorded (the recipe's
    ``web_url``, else the one derived from the mirror's ``origin``), then the recipe's
    own ``web_url`` and ``repo``. A local path or an ``ssh``/``git@`` address (it
    needs the reporter's keys) is never public.
    """
    for c in candidates:
        if c and re.match(r"https?://[^\s/]+/\S+$", c.strip()):
            return c.strip().rstrip("/")
    return None


def repro_commands(
    kind: str, meta: Mapping[str, Any], runs: int, public: str | None = None
) -> list[tuple[str, str]]:
    """(what it does, command) with repro, for a recipe saved as recipe.yaml.

    ``public``: a clonable URL of the extension, given instead of a ``--repo`` that
    names the reporter's local clone.
    """
    overrides = dict(meta.get("overrides") or {})
    local = overrides.get("extension_repo")
    if public and local and not public_repo(str(local)):
        overrides["extension_repo"] = public
    flags = []
    for key, flag in (
        ("threads", "--threads"),
        ("switch_interval", "--switch-interval"),
        ("taskset", "--taskset"),
        ("timeout", "--timeout"),
        ("extension_repo", "--repo"),
    ):
        if overrides.get(key) is not None:
            flags.append(f"{flag} {shq(str(overrides[key]))}")
    flags += [f"--set {shq(str(item))}" for item in meta.get("set") or []]
    extra = (" " + " ".join(flags)) if flags else ""
    cmds: list[tuple[str, str]] = []
    if kind == "stress":
        ctx = meta.get("context") or {}
        sha = (ctx.get("extension") or {}).get("sha")
        ref = f" --ref {shq(str(sha))}" if sha else ""
        cmds.append(("measure the rate", f"repro stress recipe.yaml{ref} --runs {runs}{extra}"))
        return cmds
    positions = meta.get("positions") or []
    if meta.get("side") == "versions":
        versions = meta.get("versions") or [p.get("id") for p in positions]
        rng = f"--versions {shq(','.join(str(v) for v in versions))}"
    else:
        other = "--fixed" if meta.get("find", "fix") == "fix" else "--clean"
        rng = f"--racy {shq(str(meta.get('racy')))} {other} {shq(str(meta.get('clean')))}"
    conf = meta.get("confidence")
    cmds.append(
        (
            "bisect again",
            f"repro bisect recipe.yaml {rng}"
            + (f" --find {meta.get('find')}" if meta.get("find") == "regression" else "")
            + (f" --confidence {conf:g}" if isinstance(conf, float | int) else "")
            + extra,
        )
    )
    if positions and meta.get("side") == "extension":
        racy = positions[0].get("id")
        cmds.append(
            (
                "measure the rate at the racy end",
                f"repro stress recipe.yaml --ref {shq(str(racy))} --runs {runs}{extra}",
            )
        )
    return cmds
