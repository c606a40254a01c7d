"""The recipe: one race, written down so that anyone can reproduce it.

The schema is strict (unknown keys are errors) because a typo in a recipe otherwise
silently changes what is measured, and a race measurement is too expensive to
repeat for a misspelt ``confidense``. Errors carry the file, line and field, since
recipes are edited by hand.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from repro.errors import ReproError

if TYPE_CHECKING:
    from repro.tsan.signature import TargetRule


class RecipeError(ReproError):
    """A recipe that cannot be used; the message is for the user, as is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    build: tuple[str, ...] = Field(default=(), description="shell commands run in the worktree")
    env: dict[str, str] = Field(default_factory=dict)
    env_ranges: tuple[EnvRange, ...] = ()
    sanitize: Literal["c", "rust", "none"] = Field(
        default="c", description="which TSAN flags the build gets (CFLAGS or RUSTFLAGS)"
    )
    build_timeout: float = 3600.0


class ReproducerSpec(_Strict):
    """What to run, again and again."""

    command: str = Field(description="shell command; {python} {worktree} {threads} expand")
    setup: tuple[str, ...] = Field(
        default=(),
        description="shell commands run once before the runs, in {work} (e.g. compile a "
        "reproducer against the Python under test)",
    )
    cwd: str | None = Field(default=None, description="default: the worktree, else recipe dir")
    timeout: float = Field(default=60.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    threads: int = Field(default=8, ge=1, description="passed as {threads}, REPRO_THREADS")


class AmplifySpec(_Strict):
    """Knobs that make a race show more often; each one can be measured on its own."""

    switch_interval: float | None = Field(
        default=None, description="exported as REPRO_SWITCH_INTERVAL for sys.setswitchinterval"
    )
    taskset: str | None = Field(default=None, description="CPU list for taskset -c, e.g. '0'")


class TsanSpec(_Strict):
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    suppressions: str | None = None


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

    @model_validator(mode="after")
    def _something(self) -> TargetSpec:
        if not self.functions and not self.files:
            raise ValueError("a target needs `functions` or `files` (never 'any race')")
        return self

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
    confidence: float = Field(default=0.99, gt=0.5, lt=1.0)
    max_calibration_runs: int = Field(default=400, ge=1)
    calibration_hits: int = Field(default=3, ge=1)

    @field_validator("confidence")
    @classmethod
    def _not_silly(cls, v: float) -> float:
        if v > 0.9999:
            raise ValueError("confidence above 0.9999 costs far more runs than it is worth")
        return v


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
        if "://" in repo or repo.startswith("git@"):
            return repo
        if repo.startswith("file:"):
            repo = repo[len("file:") :]
        return str(self.resolve(repo))


# --- loading with line numbers -------------------------------------------------------


def _line_map(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[Any, ...], int]
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
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
    if etype not in ("model_type",) and not isinstance(inp, dict | list) and inp is not None:
        msg += f" (got {inp!r})"
    return msg


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
        value = _set_value(raw)
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
    return data, touched


def _set_value(raw: str) -> Any:
    """YAML where it is YAML (`[]`, `0.9`, `{a: 1}`), else the text itself.

    Commands are full of braces (`{work}/prog`) that YAML would read as a mapping.
    """
    if not raw.strip():
        return ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict) and ":" not in raw:
        return raw
    return value


def parse_recipe(text: str, path: Path, sets: Sequence[str] = ()) -> Recipe:
    """Validate recipe text; every problem is reported, each with its line."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{where}: invalid YAML: {problem}") from None
    if node is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(node, yaml.MappingNode):
        raise RecipeError(f"{path}:1: a recipe is a mapping of keys (name, reproducer, target...)")
    lines: dict[tuple[Any, ...], int] = {}
    _line_map(node, (), lines)
    data, touched = apply_sets(yaml.safe_load(text), sets)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            line = None
            probe = loc
            while probe and line is None:
                line = lines.get(probe)
                probe = probe[:-1]
            where = f"{path}:{line}" if line else str(path)
            if any(loc[: len(t)] == t for t in touched):
                where = f"{path} (--set)"
            field = _field_name(loc) or "(top level)"
            problems.append(f"{where}: {field}: {_describe(err)}")
        raise RecipeError("\n".join(problems)) from None


def load_recipe(
    path: Path | str, sets: Sequence[str] = (), *, located_at: Path | str | None = None
) -> LoadedRecipe:
    """Load and check a recipe.

    `located_at` is where the recipe's relative paths are relative to, when the text
    comes from elsewhere: a run directory keeps a copy of the recipe as run, but its
    `../demo-work/...` paths still mean what they meant beside the original.
    """
    p = Path(path)
    if not p.exists():
        raise RecipeError(f"{p}: no such recipe file")
    if p.is_dir():
        raise RecipeError(f"{p}: is a directory, expected a recipe YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{p}: cannot read: {exc}") from None
    recipe = parse_recipe(text, p, sets)
    where = Path(located_at).resolve() if located_at is not None else p.resolve()
    loaded = LoadedRecipe(recipe=recipe, path=where, text=text, sets=tuple(sets))
    _check_files(loaded)
    return loaded


def _check_files(loaded: LoadedRecipe) -> None:
    """Files the recipe names must exist now, not half an hour into a build."""
    r = loaded.recipe
    lines: dict[tuple[Any, ...], int] = {}
    node = yaml.compose(loaded.text)
    if node is not None:
        _line_map(node, (), lines)

    def fail(loc: tuple[Any, ...], msg: str) -> None:
        line = lines.get(loc)
        where = f"{loaded.path}:{line}" if line else str(loaded.path)
        raise RecipeError(f"{where}: {_field_name(loc)}: {msg}")

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
    if r.extension and "://" not in r.extension.repo and not r.extension.repo.startswith("git@"):
        repo = Path(loaded.resolve_repo(r.extension.repo))
        if not repo.exists():
            fail(("extension", "repo"), f"repository not found: {repo}")
    try:
        shlex.split(r.reproducer.command)
    except ValueError as exc:
        fail(("reproducer", "command"), f"cannot be parsed as a shell command: {exc}")


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
