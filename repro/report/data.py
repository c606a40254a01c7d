"""The report as data: one document built from a run directory, rendered three ways.

Every number comes from what the run stored (the event log first, because it is
complete even when a run was killed and its summary never written), so a report
needs no rerun and describes interrupted runs as faithfully as finished ones.
Markdown, HTML and JSON are all renderings of this one document, which keeps them
in agreement; the document is redacted before any rendering sees it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repro import __version__
from repro.builds.cpython import DEFAULT_MIRROR
from repro.errors import ReproError
from repro.redact import redact
from repro.report import fmt, shell
from repro.report.near import MAX_SHOWN, near_misses_of, unmatched_race
from repro.report.runfiles import RunFiles, example_report, load_run
from repro.report.tsantext import (
    race_site,
    shorten_paths,
    suppression_lines,
    suppression_sites,
    symptom_flags,
    trim_report,
)
from repro.runlog import Counts, RunEvent, SignatureEvent
from repro.runlog.bisect_answer import blame, information, replayed
from repro.runlog.bisect_view import position_rows
from repro.runlog.store import RECIPE_FILES
from repro.strategy.terms import LIKELY_AT, Terms
from repro.tsan.outcome import INVALID, ORDER, Outcome, invalid_hint

SCHEMA_VERSION = 2
OUTCOME_ORDER = tuple(o.value for o in ORDER)
MAX_OTHER_RACES = 25
TIMELINE_BUCKETS = 48


# --- races -----------------------------------------------------------------------------


def _roots(files: RunFiles) -> list[str]:
    ctx = files.meta.get("context") or {}
    roots = [str(ctx.get("cwd") or "")]
    py = ctx.get("python") or {}
    if py.get("prefix"):
        roots.append(str(py["prefix"]))
    return [r for r in roots if r]


def _race_entry(entry: SignatureEvent, reports: int, runs: int) -> dict[str, Any]:
    return {
        "signature": entry.id,
        "kind": entry.kind or "race",
        "description": entry.description,
        "top_frames": [list(f) for f in entry.top_frames],
        "target": entry.target,
        "function": None,
        "file": None,
        "location": None,
        "reports": reports,
        "runs": runs,
        "example_log": entry.example,
        "report": None,
    }


def _add_report(files: RunFiles, race: dict[str, Any]) -> None:
    """Fill in what only the kept TSAN log tells: the site, location and trimmed text."""
    report, log = example_report(files, race["signature"], race.get("example_log"))
    function, file = race_site(report) if report is not None else (None, None)
    if function is None:
        tops = [f[0] for f in race["top_frames"] if f]
        function = tops[0] if tops else None
    race.update(function=function, file=file, example_log=log)
    if report is not None:
        sites = suppression_sites(report, files.drop)
        race["suppression_frames"] = sites.functions if sites is not None else None
        race["suppression_kind"] = sites.kind if sites is not None else "race_top"
    if report is not None:
        race["kind"] = race["kind"] if race["kind"] != "race" else report.kind
        race["location"] = (
            shorten_paths(report.location, _roots(files)) if report.location else None
        )
        race["report"] = trim_report(report.raw, _roots(files))


def _races(files: RunFiles) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    rec = files.record
    same = rec.same_races()
    entries = [
        {
            **_race_entry(st.entry, st.reports, st.runs),
            "same_race_as": same.get(sid),
            "runs_without_target": st.runs_without_target,
        }
        for sid, st in rec.signatures.items()
    ]
    entries.sort(key=lambda e: (not e["target"], -e["runs"], -e["reports"], e["signature"]))
    targets = [e for e in entries if e["target"]]
    target = targets[0] if targets else None
    others = [e for e in entries if not e["target"]]
    if target is not None and len(targets) > 1:
        # The target seen at other places (greenlet's vector: push_back against empty(),
        # against swap, ...): they were listed as other races, 9 of "17 other races",
        # and "Seen" counted the first signature's runs alone.
        target["variants"] = [
            {k: e[k] for k in ("signature", "top_frames", "reports", "runs")} for e in targets[1:]
        ]
        target["reports"] = sum(e["reports"] for e in targets)
        target["runs"] = max(rec.counts.hits, max(e["runs"] for e in targets))
    # Logs are parsed only for the races the report shows in full.
    for race in ([target] if target else []) + others[:MAX_OTHER_RACES]:
        _add_report(files, race)
    return target, others


def _recipe_target(files: RunFiles) -> dict[str, Any] | None:
    """The race as the recipe describes it, for runs that never saw it."""
    if files.recipe is None:
        return None
    t = files.recipe.target
    return {
        "signature": None,
        "kind": t.kind or "race",
        "description": None,
        "top_frames": [],
        "target": True,
        "function": t.functions[0] if t.functions else None,
        "file": t.files[0].rsplit("/", 1)[-1] if t.files else None,
        "location": None,
        "reports": 0,
        "runs": 0,
        "example_log": None,
        "report": None,
    }


# GitHub refuses an issue title longer than 256 characters; a C++ function's name with
# its template arguments can be thousands.
TITLE_LIMIT = 256
_FUNCTION_IN_TITLE = 100


def _short_function(name: str) -> str:
    """A function's name for a title: template and argument lists elided, then cut."""
    short = fmt.elide_lists(name)
    return short if len(short) <= _FUNCTION_IN_TITLE else short[: _FUNCTION_IN_TITLE - 3] + "..."


def race_name(race: Mapping[str, Any] | None) -> str:
    if race is None:
        return "race"
    name = str(race.get("kind") or "race")
    if race.get("function"):
        name += f" in {_short_function(str(race['function']))}"
    if race.get("file"):
        name += f" ({race['file']})"
    return name


# --- status ----------------------------------------------------------------------------


def _status(files: RunFiles) -> dict[str, Any]:
    meta = files.meta
    if files.kind == "stress":
        if meta.get("finished"):
            return {"state": "finished", "partial": False, "message": None}
        if meta.get("interrupted"):
            return {
                "state": "interrupted",
                "partial": True,
                "message": "The run was interrupted: these are partial results "
                "(everything measured before the interruption). Resume with "
                "`repro stress --resume RUN_DIR`.",
            }
        summary = files.summary or {}
        stopped = summary.get("stopped_by")
        if stopped in {o.value for o in INVALID}:
            hint = invalid_hint(Outcome(stopped), summary.get("invalid"))
            return {
                "state": "stopped",
                "partial": True,
                "message": f"The run stopped at a run that cannot count ({stopped}): "
                f"{hint}. These are the runs before it; "
                "`--keep-going` counts such runs apart and goes on.",
            }
        return {
            "state": "incomplete",
            "partial": True,
            "message": "The run did not finish (it was killed, or is still running): "
            "these are partial results from its event log.",
        }
    status = str((files.summary or {}).get("status") or meta.get("status") or "started")
    if status == "done":
        return {"state": "finished", "partial": False, "message": None}
    if status == "failed":
        return {
            "state": "failed",
            "partial": False,
            "message": "The bisect stopped without an answer: "
            + str(meta.get("failure") or (files.summary or {}).get("failure") or "see the log"),
        }
    if status == "planned":
        return {
            "state": "planned",
            "partial": True,
            "message": "The bisect was planned (`--plan`): it calibrated and stopped before "
            "the search. Run it with `repro bisect --resume RUN_DIR`.",
        }
    if status == "interrupted":
        msg = "The bisect was interrupted: these are partial results. "
    else:
        msg = "The bisect did not finish (it was killed, or is still running): partial results. "
    return {
        "state": "interrupted" if status == "interrupted" else "incomplete",
        "partial": True,
        "message": msg + "Resume with `repro bisect --resume RUN_DIR`.",
    }


# --- stress ----------------------------------------------------------------------------


def _summary(files: RunFiles, counts: Counts, scope: str) -> dict[str, Any]:
    """The counts the report states: the fold's, as the console and summary.json state them.

    Every figure is of one scope: a bisect's summary is its racy end's (the rate the
    search assumed), and what covers the whole bisect is under ``all_*`` keys."""
    out = counts.to_json()
    rec = files.record
    runs = files.runs
    elapsed = files.meta.get("elapsed") if files.kind == "stress" else None
    if files.kind == "stress" and elapsed is None and rec.counts.runs:
        elapsed = rec.last_elapsed  # a run still going (or killed): its record so far
    other_races = rec.other_races_json()
    invalid = dict(rec.invalid_details)
    mean_run = rec.mean_run_seconds() if rec.counts.runs else None
    if files.kind == "bisect":
        racy_end = rec.positions.get(0)
        other_races = {
            "runs": racy_end.runs_with_other if racy_end else 0,
            "distinct": rec.distinct_races(racy_end.other_signatures) if racy_end else 0,
        }
        invalid = dict(racy_end.invalid_details) if racy_end else {}
        mean_run = (
            racy_end.run_seconds / racy_end.counts.runs
            if racy_end and racy_end.counts.runs
            else None
        )
        out.update(
            {
                "all_runs": rec.counts.runs,
                "all_run_seconds": round(rec.run_seconds, 1),
                "all_other_races": rec.other_races_json(),
            }
        )
    first_hit_run = rec.first_hit_run if files.kind == "stress" else None
    first_hit_time = rec.first_hit_elapsed if files.kind == "stress" else None
    if files.kind == "bisect":
        at_end = [e for e in runs if e.pos == 0]
        hits = [e for e in at_end if e.outcome.value == "target"]
        if hits:
            # The hit that ended first, named by its run number as for a stress; its
            # time from the start of the racy end's first run, wall clock.
            first = min(hits, key=lambda e: e.started + e.duration)
            first_hit_run = first.index + 1
            t0 = min(e.started for e in at_end)
            first_hit_time = round(first.started + first.duration - t0, 3)
    out.update(
        {
            "scope": scope,
            "time_to_first_hit": first_hit_time,
            "first_hit_run": first_hit_run,
            "mean_run_seconds": round(mean_run, 4) if mean_run is not None else None,
            "elapsed_seconds": round(float(elapsed), 3) if elapsed is not None else None,
            "jobs": files.meta.get("jobs"),
            "other_races": other_races,
            "invalid": invalid,
            # over the whole record, as the console says it
            "suppressed": rec.suppressed_json(),
        }
    )
    return out


def timeline(runs: list[RunEvent], buckets: int = TIMELINE_BUCKETS) -> list[dict[str, Any]]:
    """Outcomes in run order, in at most ``buckets`` groups, with the rate so far."""
    if not runs:
        return []
    size = max(1, -(-len(runs) // buckets))
    out = []
    so_far = Counts()
    for start in range(0, len(runs), size):
        chunk = runs[start : start + size]
        counts = Counter(e.outcome.value for e in chunk)
        for e in chunk:
            so_far.add(e.outcome)
        out.append(
            {
                "first": start + 1,
                "last": start + len(chunk),
                "outcomes": {k: counts.get(k, 0) for k in OUTCOME_ORDER},
                "rate_so_far": so_far.rate if so_far.evidence else None,
                "positions": sorted({e.pos for e in chunk if e.pos is not None}),
            }
        )
    return out


# --- bisect ----------------------------------------------------------------------------


def _bisect(files: RunFiles) -> dict[str, Any]:
    """The bisect as its log makes it: the strategy is replayed from the log
    (``bisect_answer``), so the culprit, the confidence, the step verdicts and the bound
    are computed as the live bisect computed them, for a finished bisect and for one
    killed before it could write its summary."""
    meta = files.meta
    positions = list(meta.get("positions") or [])
    n = len(positions)
    terms = Terms.from_meta(meta)
    rec = files.record
    bis = replayed(rec, n)
    posterior = bis.posterior_b() if bis is not None else None
    done = bis.best_answer() if bis is not None else None
    finished = meta.get("status") == "done" and not meta.get("failure")
    named = blame(done, positions, terms, rec) if done is not None and done.lo < n else None
    culprit_ids = named.ids if named is not None and finished else frozenset()
    commits = position_rows(rec, positions, terms, posterior, culprit_ids)
    calib = rec.positions[0].counts if 0 in rec.positions else Counts()
    clean_end = rec.positions[n - 1].counts if (n - 1) in rec.positions else Counts()
    reused = meta.get("calibration_from") or {}
    return {
        "direction": terms.find.value,
        "side": terms.side.value,
        "racy": meta.get("racy"),
        "clean": meta.get("clean"),
        "repo": meta.get("repo"),
        "web_url": meta.get("web_url"),
        "requested_confidence": meta.get("confidence"),
        "confidence": done.confidence if finished and done is not None else None,
        "culprit": named.culprit if finished and named is not None else None,
        "culprit_range": named.culprit_range if finished and named is not None else None,
        # Where a bisect that did not finish stands: its most probable answer.
        "likely": (
            {
                "commits": [
                    str(p.get("label")) for p in positions if str(p.get("id")) in named.ids
                ],
                "subject": (named.culprit or {}).get("subject"),
                "confidence": done.confidence,
            }
            if not finished
            and named is not None
            and done is not None
            and done.confidence >= LIKELY_AT
            else None
        ),
        "failure": meta.get("failure") or (files.summary or {}).get("failure"),
        # A merge named as the culprit: what it brought (found in git when the bisect
        # ended, kept in meta.json), for the answer the log gives.
        "merged": (
            meta.get("merged")
            if finished
            and named is not None
            and named.culprit is not None
            and (meta.get("merged") or {}).get("commit") == named.culprit.get("id")
            else None
        ),
        # Other races that begin where the target ends: a renamed target reads so.
        "begun_at_answer": list(named.begun) if finished and named is not None else [],
        "positions": n,
        "builds": rec.builds,
        "builds_from_cache": rec.builds_from_cache,
        "runs": rec.counts.runs,
        "evidence_runs": rec.counts.evidence,
        "build_seconds": round(rec.build_seconds, 1),
        "run_seconds": round(rec.run_seconds, 1),
        "calibration": calib.to_json(),
        # the runs taken from a stress record, as the import recorded them
        "calibration_from": (
            {k: reused[k] for k in ("path", "runs", "hits")}
            if reused.get("status") == "imported"
            else None
        ),
        "clean_end": clean_end.to_json(),
        "information": (
            information(
                bis,
                rec,
                positions,
                terms,
                float(meta.get("confidence") or 0.99),
                done if finished else None,
            )
            if bis is not None
            else None
        ),
        "plan": meta.get("plan"),
        "commits": commits,
        "steps": [c for c in commits if c["tested"]],
    }


# --- environment -----------------------------------------------------------------------


def _env_rows(env: Mapping[str, Any], files: RunFiles) -> list[list[str]]:
    """Label/value rows for the environment table, the same in Markdown and HTML."""
    rows: list[list[str]] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            rows.append([label, str(value)])

    os_ = env.get("os") or {}
    add(
        "OS / kernel",
        ", ".join(
            x
            for x in (
                os_.get("distribution"),
                f"{os_.get('system', '')} {os_.get('kernel', '')}".strip(),
                os_.get("machine"),
            )
            if x
        ),
    )
    cpu = env.get("cpu") or {}
    if cpu:
        usable = cpu.get("usable")
        text = f"{cpu.get('count')}"
        if usable and usable != cpu.get("count"):
            text += f" ({usable} usable)"
        if cpu.get("model"):
            text += f", {cpu['model']}"
        add("CPUs", text)
    comp = env.get("compilers") or {}
    add("Compilers", "; ".join(str(v) for k, v in sorted(comp.items()) if k != "cc"))
    rts = []
    for name, rt in sorted((env.get("tsan_runtime") or {}).items()):
        parts = [str(rt.get("runtime") or name)]
        if rt.get("package"):
            parts.append(str(rt["package"]))
        elif rt.get("llvm"):
            parts.append(f"LLVM {rt['llvm']}")
        if rt.get("path"):
            parts.append(str(rt["path"]))
        rts.append(": ".join(parts[:1]) + (" " + ", ".join(parts[1:]) if parts[1:] else ""))
    add("TSAN runtime", "; ".join(rts))
    py = env.get("cpython")
    if py:
        text = f"{py.get('version')}"
        if py.get("origin") == "tarball":
            text += f", tarball sha256 {py.get('tarball_sha256')}"
        elif py.get("origin") == "git":
            text += f", commit {py.get('commit')}"
        elif py.get("executable"):
            text += f", existing interpreter {py.get('executable')}"
        flags = []
        if py.get("gil_disabled"):
            flags.append("free-threaded")
        if py.get("tsan"):
            flags.append("TSAN")
        if flags:
            text += f" ({', '.join(flags)})"
        add("CPython", text)
        if py.get("compiler_version"):
            add("CPython compiler", py.get("compiler_version"))
        add("configure", " ".join(py.get("configure_args") or []))
        add(
            "Patches",
            ", ".join(
                f"{p.get('name')} (sha256 {p.get('sha256')})" for p in py.get("patches") or []
            ),
        )
    elif env.get("interpreter"):
        add("Python", _interpreter_text(env["interpreter"]))
    elif files.recipe is not None and files.recipe.python is not None:
        spec = files.recipe.python
        if spec.executable:
            add("Python", f"{spec.executable} (an existing interpreter; not recorded)")
        else:
            # Per step only where the search is over CPython; over the extension's
            # history every step runs on the one CPython the recipe names.
            per_step = files.kind == "bisect" and files.meta.get("side") != "extension"
            how = "built per step" if per_step else "built"
            add("CPython", f"{how} from the recipe ({spec.version or spec.git})")
            add("Patches", ", ".join(spec.patches))
    else:
        add("Python", "not recorded (the recipe has no python: section)")
    ext = env.get("extension") or {}
    public = extension_public_repo(files)
    if ext:
        add("Extension", f"{public or ext.get('repo')} at {ext.get('sha')}")
    elif files.kind == "bisect" and files.meta.get("repo"):
        add("Extension", f"{public or files.meta.get('repo')} (bisected)")
    rust = env.get("rust") or {}
    if rust and _builds_rust(files, ext):
        add(
            "Rust toolchain",
            "; ".join(
                x for x in (rust.get("rustc"), rust.get("cargo"), rust.get("toolchain")) if x
            ),
        )
    run = env.get("run") or {}
    recipe_opts = run.get("tsan_options") or {}
    if not recipe_opts and files.recipe is not None:
        recipe_opts = {k: str(v) for k, v in files.recipe.tsan.options.items()}
    tsan = env.get("tsan_options") or "(not set)"
    if recipe_opts:
        tsan += "; recipe: " + " ".join(f"{k}={v}" for k, v in recipe_opts.items())
    add("TSAN_OPTIONS", tsan)
    workers = env.get("worker_env") or {}
    if workers:
        add(
            "Other workers' run variables",
            "; ".join(
                f"{w}: " + ", ".join(f"{k}={'(unset)' if v is None else v}" for k, v in d.items())
                for w, d in workers.items()
            ),
        )
    bits = env.get("vm_mmap_rnd_bits")
    add("vm.mmap_rnd_bits", bits if bits is not None else "unknown")
    if run.get("prefix"):
        add("Run prefix", " ".join(run["prefix"]))
    add("git", env.get("git"))
    return rows


def _builds_rust(files: RunFiles, ext: Mapping[str, Any]) -> bool:
    """Whether the toolchain bears on the run: a Rust extension (or one whose recipe is not
    at hand to tell). A C package's report listed rustc and its LLVM."""
    recipe = files.recipe
    if recipe is None or recipe.extension is None:
        return recipe is None
    spec = recipe.extension
    if spec.kind == "python-package":
        # by its backend, where the record says (unknown: kept)
        return ext.get("backend") not in ("setuptools", "meson-python", "scikit-build-core")
    return spec.sanitize == "rust" or any("cargo" in c or "maturin" in c for c in spec.build)


def _interpreter_text(interp: Mapping[str, Any]) -> str:
    """The Python that ran when repro built none, as it described itself."""
    where = interp.get("path") or interp.get("executable")
    if interp.get("error"):
        text = f"{interp.get('executable')}: could not be asked ({interp['error']})"
    else:
        gil = "free-threaded" if interp.get("gil_disabled") else "with the GIL"
        tsan = "TSAN" if interp.get("tsan") else "no TSAN"
        text = f"{interp.get('version')} at {where} ({gil}, {tsan})"
    source = interp.get("source")
    return f"{text}; not built by repro: {source}" if source else text


def _environment(files: RunFiles) -> dict[str, Any]:
    env = files.meta.get("environment")
    if not isinstance(env, Mapping):
        return {
            "recorded": False,
            "rows": _env_rows({}, files),
            "variables": {},
            "snapshot": None,
        }
    return {
        "recorded": True,
        "rows": _env_rows(env, files),
        "variables": dict(env.get("env") or {}),
        "snapshot": dict(env),
    }


# --- reproduce -------------------------------------------------------------------------


def _reproduce(
    files: RunFiles, title: str, summary: Mapping[str, Any], bisect: Mapping[str, Any] | None
) -> dict[str, Any]:
    meta = files.meta
    hits, runs = int(summary.get("hits") or 0), int(summary.get("evidence_runs") or 0)
    rate_lo = float((summary.get("rate_ci95") or [0.0, 0.0])[0])
    n = shell.loop_runs(hits, runs, rate_lo)
    limit_runs = (meta.get("limits") or {}).get("runs") if files.kind == "stress" else None
    commands = shell.repro_commands(
        files.kind, meta, int(limit_runs or max(runs, 100)), extension_public_repo(files)
    )
    script = None
    problem = None
    if files.recipe is None:
        problem = "the run directory has no readable recipe.yaml"
    else:
        try:
            script = shell.plain_script(_plain_inputs(files, title, n, bisect))
        except ReproError as exc:  # a recipe feature the script cannot express
            problem = str(exc)
    return {
        "repro": [{"what": w, "command": c} for w, c in commands],
        "shell": script,
        "shell_problem": problem,
        "loop_runs": n,
        "recipe": _portable_recipe(files),
        "beside_recipe": _files_beside_recipe(files),
    }


def _files_beside_recipe(files: RunFiles) -> list[str]:
    """The files the reproducer takes from the recipe's folder (``{recipe_dir}/x.py``):
    a reader who saved only the pasted recipe ran a command that named a file they did
    not have, and the report had not said so."""
    return files.recipe.recipe_dir_files() if files.recipe is not None else []


def _is_local_relative(value: str) -> bool:
    return not (
        "://" in value or value.startswith(("git@", "/", "~", "{")) or Path(value).is_absolute()
    )


def _is_release(source: str, version: str | None) -> bool:
    """Whether a local tarball is CPython's release of ``version`` by its name."""
    return bool(source and version) and Path(source).name.startswith(f"Python-{version}.tar")


def _public_sources(files: RunFiles) -> dict[str, str]:
    """Local places in the recipe that another machine can fetch from elsewhere: the
    extension's repository at its web URL, and a release tarball of CPython at
    python.org. A pasted recipe named the reporter's mirror and tarball, and `repro
    bisect recipe.yaml` failed for its reader."""
    r = files.recipe
    out: dict[str, str] = {}
    if r is None:
        return out
    public = extension_public_repo(files)
    if r.extension is not None and public and not shell.public_repo(r.extension.repo):
        out[r.extension.repo] = public
    py = r.python
    source = py.source if py is not None and py.version and py.source else ""
    if py is not None and "://" not in source and _is_release(source, py.version):
        out[source] = DEFAULT_MIRROR.format(v=py.version)
    return out


def _portable_recipe(files: RunFiles) -> str | None:
    """The recipe as run, with what another machine can fetch named where it can fetch
    it (``_public_sources``), and its other relative local paths (patch files, a local
    repository with no web URL) made absolute: saved anywhere else, a `repo: ../crate`
    named a directory that is not there."""
    text = files.recipe_text
    recipe_path = files.meta.get("recipe_path")
    if text is None or files.recipe is None or not recipe_path:
        return text
    base = Path(str(recipe_path)).parent
    r = files.recipe
    values = [r.extension.repo if r.extension is not None else None]
    if r.python is not None:
        values += [r.python.source, *r.python.patches]
    public = _public_sources(files)
    for value in {v for v in values if v and (v in public or _is_local_relative(v))}:
        absolute = public.get(value) or str((base / value.removeprefix("file:")).resolve())
        # The value as a YAML scalar after a key or in a flow list, bare or quoted.
        pattern = re.compile(
            r"(?P<pre>(?:[:\[,-])[ \t]*)(?P<q>[\"']?)"
            + re.escape(value)
            + r"(?P=q)(?=[ \t]*(?:[,\]}#]|$))",
            re.MULTILINE,
        )
        text = pattern.sub(lambda m: f"{m['pre']}{m['q']}{absolute}{m['q']}", text)  # noqa: B023
    return text


def extension_public_repo(files: RunFiles) -> str | None:
    """A URL of the extension that works on another machine, when the run knows one."""
    ext = files.recipe.extension if files.recipe is not None else None
    if ext is None:
        return None
    return shell.public_repo(files.meta.get("web_url"), ext.web_url, ext.repo)


def _plain_inputs(
    files: RunFiles, title: str, n: int, bisect: Mapping[str, Any] | None
) -> shell.PlainInputs:
    assert files.recipe is not None
    meta = files.meta
    env = meta.get("environment") or {}
    ctx = meta.get("context") or {}
    recipe_path = meta.get("recipe_path")
    kept = files.path / RECIPE_FILES
    # The files as they ran (a run keeps them), not as the recipe's folder holds them now
    recipe_dir = kept if kept.is_dir() else Path(recipe_path).parent if recipe_path else None
    inp = shell.PlainInputs(
        recipe=files.recipe,
        recipe_dir=recipe_dir,
        title=title,
        user_tsan_options=env.get("tsan_options"),
        tsan_options=dict(files.recipe.tsan.options),
        runs=n,
        rust_host=(env.get("rust") or {}).get("host"),
    )
    overrides = meta.get("overrides") or {}
    inp.threads = overrides.get("threads")
    inp.switch_interval = overrides.get("switch_interval", files.recipe.amplify.switch_interval)
    inp.timeout = overrides.get("timeout")
    if ctx.get("prefix"):
        inp.prefix = [str(p) for p in ctx["prefix"]]
    elif files.recipe.amplify.taskset or overrides.get("taskset"):
        inp.prefix = [
            "taskset",
            "-c",
            str(overrides.get("taskset") or files.recipe.amplify.taskset),
        ]
    ext = files.recipe.extension
    if ext is not None:
        repo = extension_public_repo(files) or overrides.get("extension_repo") or ext.repo
        if "://" not in repo and not repo.startswith("git@") and recipe_dir is not None:
            repo = str((recipe_dir / repo.removeprefix("file:")).resolve())
        inp.ext_repo = str(repo)
    py_env = env.get("cpython") or {}
    inp.patches = list(py_env.get("patches") or [])
    if not inp.patches and files.recipe.python is not None:
        from repro.builds.patches import describe_patches

        base = recipe_dir or files.path
        inp.patches = describe_patches(
            [str((base / p).resolve()) for p in files.recipe.python.patches]
        )
    inp.tarball_sha256 = py_env.get("tarball_sha256")
    inp.python_version = py_env.get("version") if py_env.get("origin") == "tarball" else None
    inp.python_commit = py_env.get("commit")
    ext_env = env.get("extension") or {}
    inp.build_env = ext_env.get("build_env")
    inp.ext_backend = ext_env.get("backend")
    if files.kind == "stress":
        inp.ext_sha = (ctx.get("extension") or {}).get("sha")
    elif bisect is not None and bisect.get("commits"):
        racy = next(c for c in bisect["commits"] if c.get("end") == "racy end")
        # A bisect builds per commit: the package's backend is what the racy end's build used.
        inp.ext_backend = inp.ext_backend or racy.get("backend")
        side = bisect.get("side")
        if side == "extension":
            inp.ext_sha, inp.ext_label = racy["id"], f"{racy['label']} (the racy end)"
        elif side == "python":
            inp.python_commit = racy["id"]
        elif side == "versions":
            inp.python_version = racy["id"]
            inp.tarball_sha256 = None
    return inp


# --- title -----------------------------------------------------------------------------


def _title(
    files: RunFiles,
    race: Mapping[str, Any] | None,
    summary: Mapping[str, Any],
    bisect: Mapping[str, Any] | None,
    status: Mapping[str, Any],
) -> str:
    name = race_name(race)
    if bisect is not None:
        culprit = bisect.get("culprit")
        rng = bisect.get("culprit_range") or []
        if not culprit and len(rng) > 1:
            verb = "fixed by" if bisect["direction"] == "fix" else "introduced by"
            labels = ", ".join(str(c.get("label")) for c in rng)
            return f"{name}, {verb} one of {labels} (no single commit: the others are untestable)"
        if culprit:
            verb = "fixed by" if bisect["direction"] == "fix" else "introduced by"
            rng = bisect.get("culprit_range") or []
            if len(rng) > 1:
                who = "one of " + ", ".join(str(c.get("label")) for c in rng)
            else:
                who = str(culprit.get("label") or culprit.get("id"))
            return f"{name}, {verb} {who}"
        if status["state"] == "failed":
            return f"{name}: bisect failed"
        return f"{name}: bisect {status['state']} (partial results)"
    runs, hits = int(summary.get("evidence_runs") or 0), int(summary.get("hits") or 0)
    if hits:
        text = f"{name}: reproduced in {hits} of {runs} runs ({hits / runs:.0%})"
    else:
        text = f"{name}: not reproduced in {fmt.plural(runs, 'run')}"
    if status["partial"]:
        text += f" ({status['state']}, partial results)"
    return text


# --- suppressions ----------------------------------------------------------------------


def _suppressions(race: Mapping[str, Any] | None, title: str) -> dict[str, Any] | None:
    if race is None or not race.get("top_frames"):
        return None
    comment = [
        f"Stop-gap, not a fix: hides the {race_name(race)}",
        f"(repro signature {race.get('signature')}) until the code is fixed.",
    ]
    sites = race.get("suppression_frames")
    lines = suppression_lines(
        [[s] for s in sites] if sites else race["top_frames"],
        comment,
        str(race.get("suppression_kind") or "race_top"),
    )
    return {
        "lines": lines,
        "text": "\n".join(lines) + "\n",
        "note": "Add these lines to a TSAN suppressions file (CPython keeps them in "
        "Tools/tsan/suppressions_free_threading.txt) and run with "
        "TSAN_OPTIONS=suppressions=FILE. They hide the report; the race stays.",
    }


def _nearest(files: RunFiles) -> dict[str, Any]:
    """What nearly matched a target that no run hit: the console's end says it, and a
    report pasted into an issue must say the same (one fold: ``report.near``)."""
    runs = files.record.counts.runs
    seen_misses = near_misses_of(files)
    misses = [
        {
            "signature": seen.miss.signature.id,
            "race": seen.miss.signature.describe(),
            "runs": seen.runs,
            "of_runs": runs,
            "unmatched": list(seen.miss.unmatched),
            "fixes": list(seen.miss.fixes),
            # The console's own wording (NearMiss.lines), for every format to quote.
            "lines": [line.strip() for line in seen.miss.lines()[1:]],
            "example_log": seen.log,
        }
        for seen in seen_misses
    ]
    unmatched = unmatched_race(files, seen_misses)
    return {
        "near_misses": misses[:MAX_SHOWN],
        "near_misses_total": len(misses),
        "unmatched_race": (
            {"signature": unmatched[0], "names": list(unmatched[1]), "lacking": list(unmatched[2])}
            if unmatched
            else None
        ),
    }


# --- the document ----------------------------------------------------------------------


def build_document(run_dir: Path) -> dict[str, Any]:
    """The redacted report document of a run directory (the JSON format, as is)."""
    files = load_run(run_dir)
    status = _status(files)
    bisect = _bisect(files) if files.kind == "bisect" else None
    if bisect is not None:
        racy_end = files.record.positions.get(0)
        summary = _summary(files, racy_end.counts if racy_end else Counts(), "racy end")
    else:
        summary = _summary(files, files.record.counts, "all runs")
    target, others = _races(files)
    race = target or _recipe_target(files)
    title = _title(files, race, summary, bisect, status)
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 3] + "..."
    ctx = files.meta.get("context") or {}
    tested = None
    if files.kind == "stress" and ctx.get("extension"):
        sha = str(ctx["extension"].get("sha") or "")
        tested = {"what": "extension", "sha": sha, "label": sha[:12]}
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generator": f"repro {__version__}",
        "kind": files.kind,
        "title": title,
        "status": status,
        "run": {
            "directory": str(files.path.resolve()),
            "name": files.path.name,
            "recipe": files.meta.get("recipe"),
            "description": files.recipe.description if files.recipe else None,
            "tested": tested,
            "limits": files.meta.get("limits"),
        },
        "summary": summary,
        "bisect": bisect,
        "target": race,
        "target_seen": target is not None,
        **(_nearest(files) if target is None else {}),
        "other_races": others[:MAX_OTHER_RACES],
        "other_races_total": len(others),
        "other_races_distinct": files.record.distinct_races(o["signature"] for o in others),
        "environment": _environment(files),
        "reproduce": _reproduce(files, title, summary, bisect),
        "suppressions": _suppressions(target, title),
        "timeline": timeline(files.runs),
        "problems": files.problems,
    }
    # Races inside CPython that the target, in an extension's code, may cause: said in
    # the JSON so that every format (and a machine) reads the same verdict.
    flags = symptom_flags(doc, doc["other_races"], files.drop)
    for o, inside in zip(doc["other_races"], flags, strict=True):
        # A report with a lost stack is its whole race once more (``same_race_as``): the
        # note listed it beside that race, as one more of them.
        o["inside_cpython"] = inside and not o.get("same_race_as")
    redacted: dict[str, Any] = redact(json.loads(json.dumps(doc)))
    return redacted
