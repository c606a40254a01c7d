"""The recipe: one race, written down so that anyone can reproduce it.

The schema is strict (unknown keys are errors) because a typo in a recipe otherwise
silently changes what is measured, and a race measurement is too expensive to
repeat for a misspelt ``confidense``. Errors carry the file, line and field, since
recipes are edited by hand.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from repro.errors import ReproError
from repro.placeholders import known_names, unknown_placeholder
from repro.recipe_yaml import RecipeYAMLError, compose_and_load
from repro.strategy.rate import CALIBRATION_HITS
from repro.tsan.parse import KNOWN_KINDS, normalise_kind

if TYPE_CHECKING:
    from repro.tsan.signature import TargetRule


# What `repro init` (and `repro parse --recipe-skeleton`) write where they could not
# find a value. Only the description and the target's functions may keep it: a stress
# run can find the target (`--suggest-target`); anything else would fail in every run.
FILL_ME = "FILL_ME"
# Far above any real recipe (the bundled ones are 1-4 KiB), far below what would take the
# YAML parser minutes and gigabytes.
MAX_RECIPE_BYTES = 1024 * 1024
_MAY_STAY_UNFILLED = (("description",), ("target", "functions"))


class RecipeError(ReproError):
    """A recipe that cannot be used; the message is for the user, as is."""


class _Strict(BaseModel):
    # No inf or nan anywhere: `timeout: .inf` would make a hang run forever.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- rules for single values -----------------------------------------------------------
# Each rule is part of a field's type, so that `check_option` can apply the very same
# rule to a value that comes from the command line instead of the recipe.

_CPU_ITEM = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


def cpu_set(text: str) -> frozenset[int]:
    """The CPUs of a `taskset -c` list (`0`, `0,2`, `0-3`, `0-7:2`); ValueError if bad."""
    cpus: set[int] = set()
    for item in text.split(","):
        m = _CPU_ITEM.fullmatch(item.strip())
        if m is None:
            raise ValueError(f"not a CPU list like 0 or 0,2 or 0-3: {text!r}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        step = int(m.group(3)) if m.group(3) else 1
        if last < first or step < 1 or last - first > 1 << 16:
            raise ValueError(f"not a CPU list like 0 or 0,2 or 0-3: {text!r}")
        cpus.update(range(first, last + 1, step))
    return frozenset(cpus)


def _cpu_list(text: str) -> str:
    cpu_set(text)
    return text


def _describe_cpus(cpus: Sequence[int]) -> str:
    """`0-3,6`: the compact form `taskset -c` reads."""
    parts: list[str] = []
    ordered = sorted(cpus)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def unavailable_cpus(text: str) -> str | None:
    """Why this CPU list cannot be used on this machine, or None.

    Not part of the schema: a recipe is valid on a machine with fewer CPUs (its report
    can be written anywhere); it only cannot be run there. Without the check, taskset
    fails in every run and every run counts as a crash.
    """
    allowed = os.sched_getaffinity(0)
    missing = sorted(cpu_set(text) - allowed)
    if not missing:
        return None
    return (
        f"CPU {_describe_cpus(missing)} not available here "
        f"(repro may use CPUs {_describe_cpus(sorted(allowed))})"
    )


def _sane_confidence(v: float) -> float:
    if v > 0.9999:
        raise ValueError("confidence above 0.9999 costs far more runs than it is worth")
    return v


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
CpuList = Annotated[str, AfterValidator(_cpu_list)]
Confidence = Annotated[
    float, Field(gt=0.5, lt=1.0, allow_inf_nan=False), AfterValidator(_sane_confidence)
]


class PythonSpec(_Strict):
    """Which CPython runs the reproducer (or that the extension is built against)."""

    executable: str | None = Field(
        default=None, description="use an existing interpreter instead of building one"
    )
    version: str | None = Field(default=None, description="release, e.g. 3.13.5 (from a tarball)")
    source: str | None = Field(
        default=None,
        description="tarball path, mirror directory or URL for `version`; default python.org",
    )
    git: str | None = Field(default=None, description="CPython git repository (URL or local path)")
    ref: str | None = Field(default=None, description="git ref to build when `git` is given")
    free_threading: bool = True
    tsan: bool = True
    debug: bool = False
    compiler: str = "gcc"
    configure_args: tuple[str, ...] = ()
    patches: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> PythonSpec:
        kinds = [k for k in ("executable", "version", "git") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("give exactly one of `executable`, `version` or `git`")
        if self.ref and not self.git:
            raise ValueError("`ref` needs `git`")
        if self.source and not self.version:
            raise ValueError("`source` goes with `version`")
        return self


class EnvRange(_Strict):
    """Environment that applies only to part of the history (e.g. an old opt-in flag)."""

    before: str | None = Field(
        default=None, description="applies to commits that do not contain this commit"
    )
    since: str | None = Field(default=None, description="applies to commits that contain this one")
    env: dict[str, str]


class ExtensionSpec(_Strict):
    """The project under test: a git repository and how to build it."""

    repo: str = Field(description="git URL or local path (a bare mirror works)")
    ref: str = Field(default="HEAD", description="commit used by `repro stress`")
    web_url: str | None = Field(
        default=None, description="where commits can be seen, for links in reports"
    )
    build: tuple[str, ...] = Field(
        default=(),
        description="shell commands run in the worktree (python-package: before its backend, "
        "for files the checkout lacks, e.g. `cython pkg/_x.pyx`)",
    )
    env: dict[str, str] = Field(default_factory=dict)
    env_ranges: tuple[EnvRange, ...] = ()
    sanitize: Literal["c", "rust", "none"] = Field(
        default="c", description="which TSAN flags the build gets (CFLAGS or RUSTFLAGS)"
    )
    build_timeout: Seconds = 3600.0
    # --- kind: python-package (see PYTHON PACKAGES below) ---
    kind: Literal["commands", "python-package"] = Field(
        default="commands",
        description="commands: run `build`; python-package: build a wheel with the package's "
        "own build backend, with TSAN, and install it into an environment of the Python under test",
    )
    requirements: tuple[str, ...] = Field(
        default=(), description="python-package: test requirements installed into the environment"
    )
    config_settings: dict[str, str | tuple[str, ...]] = Field(
        default_factory=dict, description="python-package: more PEP 517 config settings"
    )


# --- PYTHON PACKAGES: the pytest reproducer (with ExtensionSpec.kind above) ------------


class PytestSpec(_Strict):
    """Tests run under pytest-run-parallel: each in `threads` threads behind a barrier."""

    tests: tuple[str, ...] = Field(min_length=1, description="pytest node ids or paths")
    threads: int | None = Field(default=None, ge=1, description="default: reproducer.threads")
    iterations: int = Field(default=20, ge=1, description="--iterations of pytest-run-parallel")
    args: tuple[str, ...] = Field(default=(), description="more pytest arguments")


def _brace(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def pytest_command(spec: PytestSpec) -> str:
    """The command template a pytest reproducer stands for (``{python}`` is the env's).

    `-P` keeps the checkout's own source tree (without its compiled modules) from
    shadowing the installed package, and so does `--import-mode=importlib`: pytest's
    default mode puts the test file's root on sys.path, which for tests inside the
    package folder (bitarray/test_*.py) is the source tree again (for such tests, pytest
    still imports the package itself from beside the test file: the plugin
    repro/standalone/repro_site_first.py imports it from the wheel first). No cache provider,
    so runs do not write into the worktree and stay independent of each other.
    """
    words = [
        "-P",
        "-m",
        "pytest",
        "--import-mode=importlib",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",  # why a test was skipped: a run of skips only is no-test, and says why
        "--parallel-threads={threads}",
        f"--iterations={spec.iterations}",
    ]
    tail = [_brace(shlex.quote(w)) for w in (*spec.args, *spec.tests)]
    return " ".join(["{python}", *words, *tail])


# Words of the pytest reproducer's command that change what pytest prints, not what it
# runs: a record made by a repro that did not pass one is the same experiment.
PYTEST_REPORT_WORDS = frozenset({"-rs"})


def experiment_command(command: str) -> str:
    """``command`` as it bears on a race's rate (``PYTEST_REPORT_WORDS`` left out): a
    resume compares it with its record's, and refused every pytest record of the repro
    before `-rs`."""
    return " ".join(w for w in command.split(" ") if w not in PYTEST_REPORT_WORDS)


def _pytest_to_command(data: Any) -> Any:
    """`pytest:` is shorthand for a command; the rest of repro sees only the command."""
    if not isinstance(data, dict) or data.get("pytest") is None:
        return data
    if data.get("command"):
        raise ValueError("give either `command` or `pytest`, not both")
    out = dict(data)
    try:
        spec = PytestSpec.model_validate(data["pytest"])
    except ValidationError:
        # Left to the `pytest` field's own validation, whose errors name the field
        # (reproducer.pytest.threads) and its line; raised here they named
        # `reproducer.threads`, another field, at the line of `reproducer:`.
        out["command"] = "pytest"
        return out
    if spec.threads is not None:
        if "threads" in data and data["threads"] != spec.threads:
            raise ValueError("`threads` and `pytest.threads` differ: give one")
        out["threads"] = spec.threads
    out["command"] = pytest_command(spec)
    return out


class ReproducerSpec(_Strict):
    """What to run, again and again."""

    command: str = Field(description="shell command; {python} {worktree} {threads} expand")
    pytest: PytestSpec | None = Field(
        default=None, description="run tests under pytest-run-parallel instead of `command`"
    )

    @model_validator(mode="before")
    @classmethod
    def _pytest_command(cls, data: Any) -> Any:
        return _pytest_to_command(data)

    setup: tuple[str, ...] = Field(
        default=(),
        description="shell commands run once before the runs, in {work} (e.g. compile a "
        "reproducer against the Python under test)",
    )
    setup_timeout: Seconds = Field(
        default=1800.0, description="seconds each setup command may take before it is killed"
    )
    cwd: str | None = Field(default=None, description="default: the worktree, else recipe dir")
    timeout: Seconds = 60.0
    env: dict[str, str] = Field(default_factory=dict)
    threads: int = Field(default=8, ge=1, description="passed as {threads}, REPRO_THREADS")
    tty: bool = Field(
        default=False,
        description="run on a pseudo-terminal (for reproducers that misbehave only there); "
        "the output is still captured",
    )


class AmplifySpec(_Strict):
    """Knobs that make a race show more often; each one can be measured on its own."""

    switch_interval: Seconds | None = Field(
        default=None, description="exported as REPRO_SWITCH_INTERVAL for sys.setswitchinterval"
    )
    taskset: CpuList | None = Field(default=None, description="CPU list for taskset -c, e.g. '0'")


class TsanSpec(_Strict):
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    suppressions: str | None = None


ANY_RACE = "a target needs `functions` or `files` (never 'any race')"
_NAME_CHAR = re.compile(r"\w")


def names_something(pattern: str) -> bool:
    """Whether a target pattern can tell one race from another.

    Function patterns match as substrings (so `""` and `" "`, which normalise to
    nothing, are in every name) or as globs (`*`, `?*`, `**` match any name), and file
    patterns as globs or path suffixes (`*`, `*/*`, `*.*`). A pattern made only of
    wildcards, separators and blanks therefore matches every frame of every race, and
    in a list of patterns it turns the rule for one access into "any access". Every
    real function or file name has a letter, digit or underscore, so the rule is: a
    pattern must have one.
    """
    return _NAME_CHAR.search(pattern) is not None


class TargetSpec(_Strict):
    """How to recognise the target race among all the reports of a run."""

    kind: str | None = "data race"
    functions: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    depth: int = Field(default=10, ge=1)
    accesses: Literal["each", "any"] = Field(
        default="each",
        description="each: both accesses of a race must match (a race is a pair); "
        "any: the patterns may all match one side",
    )

    @field_validator("kind")
    @classmethod
    def _a_kind_tsan_reports(cls, kind: str | None) -> str | None:
        # A misspelt kind matches no report, and a stress would find out only after all
        # its runs; a kind this list does not know (a newer TSAN's) is taken as written.
        if kind is None or normalise_kind(kind) in KNOWN_KINDS:
            return kind
        close = difflib.get_close_matches(kind, sorted(KNOWN_KINDS), n=1, cutoff=0.75)
        if close:
            raise ValueError(f"no TSAN report is of kind {kind!r}; did you mean {close[0]!r}?")
        return kind

    @field_validator("functions", "files")
    @classmethod
    def _each_names_something(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            if not names_something(pattern):
                raise ValueError(f"{ANY_RACE}: {pattern!r} matches every race")
        return patterns

    @model_validator(mode="after")
    def _something(self) -> TargetSpec:
        if not self.functions and not self.files:
            raise ValueError(ANY_RACE)
        return self

    @property
    def unfilled(self) -> bool:
        """Still ``FILL_ME``: no race counts as the target until the user names one."""
        return any(FILL_ME in f for f in self.functions)

    def rule(self) -> TargetRule:
        from repro.tsan.signature import TargetRule

        return TargetRule(
            kind=self.kind,
            functions=self.functions,
            files=self.files,
            depth=self.depth,
            accesses=self.accesses,
        )


class SignatureSpec(_Strict):
    depth: int = Field(default=3, ge=1)
    drop_frames: tuple[str, ...] = ()


class BisectSpec(_Strict):
    """The range to search, and in which direction."""

    side: Literal["extension", "python"] = "extension"
    find: Literal["fix", "regression"] = "fix"
    racy: str | None = None
    fixed: str | None = Field(default=None, description="find=fix: a commit where it is gone")
    clean: str | None = Field(default=None, description="find=regression: a commit before the race")
    confidence: Confidence = 0.99
    max_calibration_runs: int = Field(default=400, ge=1)
    calibration_hits: int = Field(default=CALIBRATION_HITS, ge=1)

    @model_validator(mode="after")
    def _ends_fit_the_direction(self) -> BisectSpec:
        # A `clean:` in a fix search (or `fixed:` in a regression search) is never read:
        # the search would ask for an end the recipe seems to give.
        if self.find == "fix" and self.clean is not None and self.fixed is None:
            raise ValueError(
                "`clean:` is the end of a regression search; with `find: fix` give "
                "`fixed:` (a commit where the race is gone), or set `find: regression`"
            )
        if self.find == "regression" and self.fixed is not None and self.clean is None:
            raise ValueError(
                "`fixed:` is the end of a fix search; with `find: regression` give "
                "`clean:` (a commit before the race), or set `find: fix`"
            )
        return self


_RECIPE_FILE = re.compile(r"\{recipe_dir\}/([^\s'\"`;|&()<>${}]+)")


class Recipe(_Strict):
    name: str
    description: str = ""
    python: PythonSpec | None = None
    extension: ExtensionSpec | None = None
    reproducer: ReproducerSpec
    amplify: AmplifySpec = AmplifySpec()
    tsan: TsanSpec = TsanSpec()
    target: TargetSpec
    signature: SignatureSpec = SignatureSpec()
    bisect: BisectSpec | None = None

    def recipe_dir_files(self) -> list[str]:
        """The files its commands take from the recipe's folder (``{recipe_dir}/x.py``),
        relative to it: a run keeps a copy (``RunDir.keep_recipe``) and its report
        carries those, not the folder's files as they are by then."""
        texts = [self.reproducer.command, *self.reproducer.setup, self.reproducer.cwd or ""]
        texts += list(self.reproducer.env.values())
        if self.extension is not None:
            texts += [*self.extension.build, *self.extension.env.values()]
        names = (name for t in texts for name in _RECIPE_FILE.findall(t))
        return [n for n in dict.fromkeys(names) if ".." not in n.split("/")]

    def variables(self) -> frozenset[str]:
        """Every environment variable the recipe sets for a build or a run (the
        reproducer's, the extension's, and those of its commit ranges)."""
        names = set(self.reproducer.env)
        if self.extension is not None:
            names |= set(self.extension.env)
            for rng in self.extension.env_ranges:
                names |= set(rng.env)
        return frozenset(names)


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe plus where it came from (relative paths resolve against it)."""

    recipe: Recipe
    path: Path
    text: str
    sets: tuple[str, ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.base_dir / q).resolve()

    def resolve_repo(self, repo: str) -> str:
        """URLs stay as they are; anything else is a path relative to the recipe."""
        return repo_location(repo, self.base_dir)


def is_repo_url(repo: str) -> bool:
    """Whether git reads this as a URL (`https://`, `file:///`, `ssh://`, `git@host:`)."""
    from repro.gitrepo import is_url

    return is_url(repo)


def repo_location(repo: str, base_dir: Path) -> str:
    """A repository as given in a recipe or with `--repo`: a URL as it is, a path
    (also `file:path`) made absolute against `base_dir`."""
    if is_repo_url(repo):
        return repo
    if repo.startswith("file:"):
        repo = repo[len("file:") :]
    q = Path(repo).expanduser()
    return str(q if q.is_absolute() else (base_dir / q).resolve())


def check_option(model: type[BaseModel], field: str, value: Any, option: str) -> Any:
    """`value` checked by the rule of the recipe field `model.field`, for a command-line
    option that stands in for that field; ReproError naming `option` if it fails.

    The recipe schema owns each rule, so `--timeout -1` is refused exactly as
    `timeout: -1` is, with the same words.
    """
    info = model.model_fields[field]
    form: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(form, config=ConfigDict(allow_inf_nan=False))
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ReproError(f"{option}: {_describe(err)}") from None


# --- loading with line numbers -------------------------------------------------------


def _line_map(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[Any, ...], int]
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                continue  # a list or mapping as a key: the schema refuses it anyway
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _line_map(v, (*path, key), out)
            out[(*path, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, (*path, i), out)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose field list applies at a location, for did-you-mean."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if model is None or not isinstance(part, str):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return model
        ann = field.annotation
        model = _first_model(ann)
    return model


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        m = _first_model(arg)
        if m is not None:
            return m
    return None


# Fields of the type Seconds, named in errors as what they are.
_SECONDS_FIELDS = frozenset({"timeout", "build_timeout", "switch_interval"})


def _describe(err: Mapping[str, Any]) -> str:
    loc = tuple(err["loc"])
    etype = err["type"]
    if etype == "extra_forbidden" and loc and isinstance(loc[-1], str):
        parent = _model_at(loc[:-1])
        names = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(loc[-1], names, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        allowed = f"; expected one of: {', '.join(names)}" if names else ""
        return f"unknown key `{loc[-1]}`{hint}{allowed}"
    if etype == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    inp = err.get("input")
    # In the words of YAML, not of pydantic's types.
    if etype == "tuple_type":
        msg = "should be a list, e.g. [a, b]"
    elif etype in ("float_parsing", "float_type") and loc and loc[-1] in _SECONDS_FIELDS:
        msg = "should be a number of seconds, e.g. 60"
    elif etype == "string_type" and isinstance(inp, int | float) and not isinstance(inp, bool):
        # `version: 3.10` is the number 3.1 to YAML.
        return f"should be text: put it in quotes (YAML read the number {inp!r})"
    if etype not in ("model_type",) and not isinstance(inp, dict | list) and inp is not None:
        msg += f" (got {inp!r})"
    return msg


def _set_for(sets: Sequence[str], loc: tuple[Any, ...]) -> str | None:
    """The ``--set`` that gave the field at ``loc`` (its own key, or one above it)."""
    path = [str(p) for p in loc]
    for given in reversed(sets):
        key = given.split("=", 1)[0].strip().split(".")
        if key and path[: len(key)] == key:
            return given
    return None


def _field_name(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("function-after", "function-before"))


def apply_sets(data: Any, sets: Sequence[str]) -> tuple[Any, set[tuple[str, ...]]]:
    """`--set a.b=VALUE` overrides, VALUE read as YAML (`[]`, `0.9`, `"text"`).

    A variant of a recipe (the same race without its patch, another thread count) is
    then one flag, not a copied file that drifts from the original.
    """
    if not sets:
        return data, set()
    if not isinstance(data, dict):
        raise RecipeError("--set needs a recipe that is a mapping")
    touched: set[tuple[str, ...]] = set()
    for item in sets:
        key, sep, raw = item.partition("=")
        parts = tuple(k for k in key.strip().split(".") if k)
        if not sep or not parts:
            raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. python.patches=[]")
        value = _set_value(raw, item)
        node = data
        for k in parts[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"--set {item!r}: `{k}` is not a section")
            node = nxt
        node[parts[-1]] = value
        touched.add(parts)
    _one_python_source(data, touched)
    return data, touched


# Where the Python comes from, and the keys that only mean something with that source.
_PYTHON_SOURCES = {"executable": (), "version": ("source",), "git": ("ref",)}


def _one_python_source(data: dict[str, Any], touched: set[tuple[str, ...]]) -> None:
    """`--set python.executable=...` on a recipe that builds its Python replaces the source.

    The schema wants exactly one of executable, version and git; an override of one
    would otherwise need two more (`python.version=null python.source=null`) to be
    accepted. Keys set explicitly in the same command stay as given.
    """
    py = data.get("python")
    if not isinstance(py, dict):
        return
    chosen = [k for k in _PYTHON_SOURCES if ("python", k) in touched and py.get(k)]
    if len(chosen) != 1:
        return
    for other, dependents in _PYTHON_SOURCES.items():
        if other == chosen[0]:
            continue
        for key in (other, *dependents):
            if ("python", key) not in touched:
                py.pop(key, None)


def _set_value(raw: str, item: str) -> Any:
    """YAML where it is YAML (`[]`, `0.9`, `{a: 1}`), else the text itself.

    Commands are full of braces (`{work}/prog`) that YAML would read as a mapping.
    What the recipe reader refuses (alias bombs, duplicate keys) is refused here too.
    """
    if not raw.strip():
        return ""
    try:
        _node, value = compose_and_load(raw)
    except RecipeYAMLError as exc:
        raise RecipeError(f"--set {item!r}: {exc.message}") from None
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict) and value and ":" not in raw:
        return raw  # `{python}`: a placeholder, not a mapping; `{}` is the empty mapping
    return value


def _read_yaml(text: str, path: Path) -> tuple[yaml.Node | None, Any]:
    """The node tree and data of a recipe's text, or RecipeError with the line."""
    try:
        return compose_and_load(text)
    except RecipeYAMLError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise RecipeError(f"{where}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is None and isinstance(exc, yaml.reader.ReaderError):
            where = f"{path}: character {exc.position}"
        else:
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        opened = _unclosed(exc, mark)
        if opened is not None:
            # YAML notices an unclosed `[`, `{` or quote lines later, where the next key
            # is; the line to mend is the one that opened it (sweep 15: line 35 was named
            # for a `[` left open on line 32).
            line, what = opened
            raise RecipeError(
                f"{path}:{line}: invalid YAML: the {what} opened on this line is not closed "
                f"({problem}, at line {mark.line + 1 if mark is not None else '?'})"
            ) from None
        raise RecipeError(f"{where}: invalid YAML: {problem}") from None


def _unclosed(exc: yaml.YAMLError, problem: Any) -> tuple[int, str] | None:
    """(line, what) of a flow collection or quoted scalar that a YAML error was found
    inside, when it opened on an earlier line than the error; None otherwise."""
    context = str(getattr(exc, "context", None) or "")
    mark = getattr(exc, "context_mark", None)
    m = re.search(r"(flow sequence|flow mapping|quoted scalar)", context)
    if m is None or mark is None or problem is None or mark.line >= problem.line:
        return None
    what = {"flow sequence": "[ list", "flow mapping": "{ mapping", "quoted scalar": "quote"}
    return mark.line + 1, what[m.group(1)]


def parse_recipe(text: str, path: Path, sets: Sequence[str] = ()) -> Recipe:
    """Validate recipe text; every problem is reported, each with its line."""
    node, data = _read_yaml(text, path)
    if node is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(node, yaml.MappingNode):
        raise RecipeError(f"{path}:1: a recipe is a mapping of keys (name, reproducer, target...)")
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(node, (), lines)
    data, touched = apply_sets(data, sets)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = []
        errors = exc.errors()
        locs = [tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p)) for e in errors]
        for err, loc in zip(errors, locs, strict=True):
            if err["type"] == "too_short" and any(
                len(o) > len(loc) and o[: len(loc)] == loc for o in locs
            ):
                continue  # a list emptied by its own items' errors, which are said
            line = None
            probe = loc
            while probe and line is None:
                line = lines.get(probe)
                probe = probe[:-1]
            where = f"{path}:{line}" if line else str(path)
            # A key the file lacks that --set brought in (`--set nosuch.key=1`: the
            # error is on `nosuch`) is the command line's, not the file's.
            exact = line is not None and lines.get(loc) is not None
            if any(loc[: len(t)] == t for t in touched) or (
                not exact and any(t[: len(loc)] == loc for t in touched)
            ):
                where = f"{path} (--set)"
            field = _field_name(loc) or "(top level)"
            problems.append(f"{where}: {field}: {_describe(err)}")
        raise RecipeError("\n".join(problems)) from None


def load_recipe(
    path: Path | str,
    sets: Sequence[str] = (),
    *,
    located_at: Path | str | None = None,
    unfilled_ok: bool = False,
    needs_target: bool = False,
) -> LoadedRecipe:
    """Load and check a recipe.

    `located_at` is where the recipe's relative paths are relative to, when the text
    comes from elsewhere: a run directory keeps a copy of the recipe as run, but its
    `../demo-work/...` paths still mean what they meant beside the original.
    `unfilled_ok`: `FILL_ME` may stay anywhere (`repro init` checks what it wrote);
    `needs_target`: not even in the target (bisect and amplify count the target's runs).
    """
    p = Path(path)
    if not p.exists():
        raise RecipeError(f"{p}: no such recipe file")
    if p.is_dir():
        raise RecipeError(f"{p}: is a directory, expected a recipe YAML file")
    try:
        size = p.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(
                f"{p}: {size // 1024} KiB is not a recipe (a recipe is a short YAML file; "
                f"at most {MAX_RECIPE_BYTES // 1024} KiB)"
            )
        raw = p.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecipeError(f"{p}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    except OSError as exc:
        raise RecipeError(f"{p}: cannot read: {exc.strerror or exc}") from None
    recipe = parse_recipe(text, p, sets)
    where = Path(located_at).resolve() if located_at is not None else p.resolve()
    loaded = LoadedRecipe(recipe=recipe, path=where, text=text, sets=tuple(sets))
    _check_files(loaded, unfilled_ok, needs_target)
    return loaded


def _unfilled(data: Any, loc: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Where a value still holds ``FILL_ME``, outside the fields that may keep it."""
    if any(loc[: len(ok)] == ok for ok in _MAY_STAY_UNFILLED):
        return
    if isinstance(data, str):
        if FILL_ME in data:
            yield loc
    elif isinstance(data, Mapping):
        for k, v in data.items():
            yield from _unfilled(v, (*loc, k))
    elif isinstance(data, list | tuple):
        for i, v in enumerate(data):
            yield from _unfilled(v, (*loc, i))


def _check_tsan_options(
    r: Recipe, loaded: LoadedRecipe, fail: Callable[[tuple[Any, ...], str], None]
) -> None:
    """Options the recipe gives TSAN must leave the target race printable: with
    ``report_bugs=0`` or a suppression of the target, every run reads clean."""
    from repro.tsan import options as tsan_options

    given: list[tuple[tuple[Any, ...], dict[str, str]]] = [
        (("tsan", "options"), {k: tsan_options.format_value(v) for k, v in r.tsan.options.items()}),
        (
            ("reproducer", "env", "TSAN_OPTIONS"),
            tsan_options.parse(r.reproducer.env.get("TSAN_OPTIONS")),
        ),
        (
            ("extension", "env", "TSAN_OPTIONS"),
            tsan_options.parse(r.extension.env.get("TSAN_OPTIONS") if r.extension else None),
        ),
    ]
    for loc, opts in given:
        for setting, why in tsan_options.defeats_counting(opts):
            key = setting.split("=", 1)[0]
            fail((*loc, key) if loc[0] == "tsan" else loc, f"{setting}: {why}; take it out")
    for loc, raw in (
        (("reproducer", "env", "TSAN_OPTIONS"), r.reproducer.env.get("TSAN_OPTIONS")),
        (
            ("extension", "env", "TSAN_OPTIONS"),
            r.extension.env.get("TSAN_OPTIONS") if r.extension else None,
        ),
    ):
        stray = tsan_options.stray_problem(raw)
        if stray:
            fail(loc, stray)
    if r.target.unfilled or not (r.target.functions or r.target.files):
        return
    named: list[tuple[tuple[Any, ...], str | None]] = [
        (("tsan", "suppressions"), r.tsan.suppressions),
        (("tsan", "options", "suppressions"), given[0][1].get("suppressions")),
        (("reproducer", "env", "TSAN_OPTIONS"), given[1][1].get("suppressions")),
    ]
    for loc, name in named:
        path = loaded.resolve(name) if name else None
        if path is None or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        hides = tsan_options.hidden_target(text, r.target.kind, r.target.functions, r.target.files)
        if hides:
            fail(loc, f"{path}: " + "; ".join(hides) + "; take that line out of the file")


def field_said(loaded: LoadedRecipe, loc: tuple[Any, ...], msg: str) -> str:
    """``file:line: field: msg``, as every recipe error is said (the line of the
    field's key; the file alone when the recipe does not hold it, a default)."""
    given = _set_for(loaded.sets, loc)
    if given is not None:
        # The value came from the command line: the file's line would point at another.
        return f"{loaded.path} with --set {given}: {_field_name(loc)}: {msg}"
    lines: dict[tuple[Any, ...], int] = {}
    node, _data = compose_and_load(loaded.text)  # already read once without error
    if node is not None:
        _line_map(node, (), lines)
    line = lines.get(loc)
    where = f"{loaded.path}:{line}" if line else str(loaded.path)
    return f"{where}: {_field_name(loc)}: {msg}"


def _check_files(
    loaded: LoadedRecipe, unfilled_ok: bool = False, needs_target: bool = False
) -> None:
    """Files the recipe names must exist now, not half an hour into a build; the
    CPUs it pins runs to must exist on this machine; nothing `repro init` left to
    fill in is still `FILL_ME` (a command that is would fail in every run)."""
    r = loaded.recipe

    def said(loc: tuple[Any, ...], msg: str) -> str:
        return field_said(loaded, loc, msg)

    def fail(loc: tuple[Any, ...], msg: str) -> None:
        raise RecipeError(said(loc, msg))

    if not unfilled_ok:
        # Every one at once: naming one per attempt made a user fix them one by one.
        left = [
            said(loc, f"still {FILL_ME}: replace it with the real value (repro init left it)")
            for loc in _unfilled(r.model_dump(exclude_defaults=True))
        ]
        if left:
            raise RecipeError("\n".join(left))
        if needs_target and r.target.unfilled:
            fail(
                ("target", "functions"),
                f"still {FILL_ME}: no run can count as the target race; name it first "
                f"(repro stress {loaded.path} --suggest-target prints a target)",
            )
    if r.python:
        for i, patch in enumerate(r.python.patches):
            if not loaded.resolve(patch).is_file():
                fail(("python", "patches", i), f"patch file not found: {loaded.resolve(patch)}")
        if r.python.executable:
            exe = r.python.executable
            if "/" in exe and not loaded.resolve(exe).exists():
                fail(("python", "executable"), f"no such interpreter: {loaded.resolve(exe)}")
    if r.tsan.suppressions and not loaded.resolve(r.tsan.suppressions).is_file():
        fail(("tsan", "suppressions"), f"file not found: {loaded.resolve(r.tsan.suppressions)}")
    _check_tsan_options(r, loaded, fail)
    if r.extension and not is_repo_url(r.extension.repo):
        repo = Path(loaded.resolve_repo(r.extension.repo))
        if not repo.exists():
            fail(("extension", "repo"), f"repository not found: {repo}")
        elif repo.is_dir() and not _is_git_repository(repo):
            fail(
                ("extension", "repo"),
                f"not a git repository: {repo} (give the top of a checkout, or a bare mirror)",
            )
    try:
        shlex.split(r.reproducer.command)
    except ValueError as exc:
        fail(("reproducer", "command"), f"cannot be parsed as a shell command: {exc}")
    known = known_names(extension=r.extension is not None)
    templates: list[tuple[tuple[Any, ...], str | None]] = [
        (("reproducer", "command"), r.reproducer.command),
        (("reproducer", "cwd"), r.reproducer.cwd),
        *((("reproducer", "setup", i), c) for i, c in enumerate(r.reproducer.setup)),
    ]
    for loc, template in templates:
        problem = unknown_placeholder(template, known) if template else None
        if problem:
            fail(loc, problem)
    known_env = known_names(extension=r.extension is not None, env=True)
    for name, value in r.reproducer.env.items():
        problem = unknown_placeholder(value, known_env) if value else None
        if problem:
            fail(("reproducer", "env", name), problem)
    if r.amplify.taskset:
        problem = unavailable_cpus(r.amplify.taskset)
        if problem:
            fail(("amplify", "taskset"), problem)


def _is_git_repository(path: Path) -> bool:
    """The top of a checkout (``.git``) or a bare repository (``HEAD`` beside ``objects``);
    a directory inside a checkout is neither (repro builds whole repositories)."""
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def edited_since(loaded: LoadedRecipe) -> bool:
    """Whether the recipe file a run was made from now says something else than the copy
    the run keeps (a resume runs the copy: what the run measured stays one experiment)."""
    try:
        return loaded.path.read_text(encoding="utf-8") != loaded.text
    except (OSError, UnicodeDecodeError):
        return True


def load_run_recipe(run_dir: Path, kind: str) -> tuple[LoadedRecipe, dict[str, Any]]:
    """The recipe a run directory was made with, as it was run, for --resume."""

    meta_path = run_dir / "meta.json"
    if not meta_path.is_file():
        raise RecipeError(f"{run_dir}: not a repro run directory (no meta.json)")
    from repro.runlog import RunDir  # the run directory's owner reads its meta

    meta = RunDir(run_dir).meta()
    if meta.get("kind") != kind:
        raise RecipeError(f"{run_dir}: not a {kind} run directory (it is {meta.get('kind')!r})")
    loaded = load_recipe(
        run_dir / "recipe.yaml", meta.get("set", []), located_at=meta.get("recipe_path")
    )
    return loaded, meta
