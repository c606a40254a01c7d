"""The report as GitHub-flavoured Markdown, to paste into an issue.

Long material (TSAN reports, the recipe, environment variables) goes into
``<details>`` blocks so that the issue opens on the answer: what races, how
often, where, and which commit changed it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from repro.report import fmt
from repro.report import rows as rows_mod
from repro.report.tsantext import (
    noise_module,
    noise_note,
    python_tsan,
    symptom_note,
)

PLAIN_MARKER = "<!-- repro:plain-shell -->"

# GitHub refuses issue bodies over 65,536 characters; the budget leaves room for what
# the reporter writes around the pasted report.
GITHUB_LIMIT = 65_536
BUDGET = 50_000
# The file of other races is a comment of its own, with nothing written around it.
OTHERS_BUDGET = GITHUB_LIMIT - 1_536
# Rows of the other-races table kept when even one line each is too much.
OTHER_ROWS = 10
# The top-frames column: Rust generics make one frame 150 characters long.
FRAMES_CELL = 160

# What is left out over budget, least useful first: (name, how the report says it).
CUTS: tuple[tuple[str, str], ...] = (
    ("other-rows", f"the other races after the {OTHER_ROWS} most frequent"),
    ("variables", "the environment variables"),
    ("suppressions", "the suggested suppression"),
    ("shell", "the plain shell commands"),
    ("steps", "the table of bisection steps"),
    ("recipe", "the recipe"),
    ("others", "the table of other races"),
)


@dataclass(frozen=True)
class _Opts:
    """How much of the document one rendering shows."""

    others_file: str | None = None
    budget: int = BUDGET
    cut: frozenset[str] = frozenset()
    target_lines: int | None = None


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_URL_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~:/?#@!$&'*+,;=%]")


def text(value: Any) -> str:
    """Outside data (a description, a function name, a commit subject) shown as written.

    Raw HTML (``<script>``, ``<img onerror>``) and link or image syntax would be
    rendered by a Markdown viewer, so ``<`` before a tag becomes ``&lt;``, brackets
    and backslashes and dollars are escaped, and control characters (a newline that would start
    a new block) become one space. ``std::vector<int>`` and ``a <- b`` still read the same.
    """
    if value is None:
        return ""
    s = _CONTROL.sub(" ", str(value)).replace("\\", "\\\\")
    s = _TAG_START.sub("&lt;", s)
    # `$` too: GitHub typesets `$...$` as math (clang's lambdas are `$_0`).
    return s.replace("[", "\\[").replace("]", "\\]").replace("$", "\\$")


def url(value: Any) -> str | None:
    """An http(s) address usable as a link target, or None: no ``javascript:``, no ``)``."""
    s = str(value or "")
    if not s.startswith(("https://", "http://")):
        return None
    return _URL_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), s)


def cell(value: Any) -> str:
    """Markdown (already escaped) safe inside a table cell: pipes escaped, one line."""
    s = "-" if value is None or value == "" else str(value)
    return _CONTROL.sub(" ", s).replace("|", "\\|")


def code(text: str, lang: str = "") -> str:
    """A fenced block whose fence cannot be closed by the content."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def inline(value: Any) -> str:
    """A code span: the content is shown literally, whatever backticks it holds."""
    s = _CONTROL.sub(" ", str(value))
    longest = max((len(run) for run in re.findall(r"`+", s)), default=0)
    tick = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or longest else ""
    return f"{tick}{pad}{s}{pad}{tick}"


def details(summary: str, body: str) -> str:
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"


def table(header: list[str], rows: list[list[Any]], align: str = "") -> str:
    aligns = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in aligns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_escape(s: str) -> str:
    s = _CONTROL.sub(" ", s)  # a blank line would end the HTML block and start Markdown
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _commit_link(c: Mapping[str, Any]) -> str:
    label = inline(c.get("label") or c.get("id"))
    link = url(c.get("url"))
    return f"[{label}]({link})" if link else label


def _part(part: rows_mod.Part) -> str:
    if isinstance(part, rows_mod.Code):
        return inline(part.text)
    if isinstance(part, rows_mod.Commit):
        return _commit_link({"label": part.label, "url": part.url})
    if isinstance(part, rows_mod.Link):
        return url(part.url) or text(part.url)
    return text(part.text)


def _summary(doc: Mapping[str, Any], opts: _Opts) -> list[str]:
    b = doc.get("bisect")
    rows: list[list[str]] = [
        [f"**{r.label}**" if r.strong else r.label, "".join(_part(p) for p in r.parts).strip()]
        for r in rows_mod.summary_rows(doc)
    ]
    out = ["## Summary", "", table(["", ""], rows)]
    if b is not None and b.get("steps") and "steps" not in opts.cut:
        out += ["", f"### Bisection steps (oldest first, {len(b['steps'])} tested)", ""]
        step_rows = []
        for st in b["steps"]:
            mark = " **culprit**" if st.get("culprit") else ""
            end = f" ({st['end']})" if st.get("end") else ""
            step_rows.append(
                [
                    _commit_link(st) + end,
                    text(st.get("subject")),
                    fmt.build_cell(st),
                    st.get("runs"),
                    st.get("hits"),
                    st.get("other_races"),
                    fmt.not_counted(st),
                    text(fmt.step_verdict(st)) + mark,
                ]
            )
        out.append(table(list(fmt.STEP_COLUMNS), step_rows, "lllrrrrl"))
    return out


def _race(doc: Mapping[str, Any], opts: _Opts) -> list[str]:
    t = doc.get("target")
    out = ["## The race", ""]
    if t is None:
        return [*out, "No target race is known for this run."]
    if not doc.get("target_seen"):
        out.append(
            f"The target ({text(t.get('kind'))} in {inline(t.get('function'))}, as the recipe "
            "describes it) was not seen in this run."
        )
        return out + _nearest(doc)
    rows = [
        ["Kind", text(t.get("kind"))],
        [
            "Where",
            f"{inline(t.get('function'))}" + (f" in {inline(t['file'])}" if t.get("file") else ""),
        ],
        [
            "Signature",
            f"{inline(t.get('signature'))}: {text(fmt.top_frames(t.get('top_frames') or []))}",
        ],
        *([["Location", text(t["location"])]] if t.get("location") else []),
        ["Seen", fmt.seen(t.get("reports"), t.get("runs"))],
        *(
            [["Also seen as", fmt.variants(t["variants"], inline, text)]]
            if t.get("variants")
            else []
        ),
    ]
    out.append(table(["", ""], rows))
    if t.get("report"):
        module = noise_module(str(t["report"]), python_tsan(doc))
        if module:
            out += ["", f"> {noise_note(module)}"]
        report = str(t["report"])
        if opts.target_lines is not None:
            lines = report.splitlines()
            if len(lines) > opts.target_lines:
                cut = len(lines) - opts.target_lines
                report = "\n".join(
                    [*lines[: opts.target_lines], f"... ({cut} more lines in the HTML report)"]
                )
        out += [
            "",
            details("TSAN report (runtime frames hidden, paths shortened)", code(report)),
        ]
    return out


def _nearest(doc: Mapping[str, Any]) -> list[str]:
    """What nearly matched the target that no run hit (the console says it too)."""
    out: list[str] = []
    misses = doc.get("near_misses") or []
    if misses:
        out += ["", "Races that nearly match it (each fix alone makes that race the target):", ""]
    for m in misses:
        out.append(
            f"- race {inline(m.get('signature'))} ({text(m.get('race'))}), in "
            f"{m.get('runs')} of {m.get('of_runs')} runs"
        )
        out += [f"  - {text(line)}" for line in m.get("lines") or []]
    more = int(doc.get("near_misses_total") or 0) - len(misses)
    if more > 0:
        out.append(f"- ... and {more} more near misses")
    u = doc.get("unmatched_race")
    if u:
        names = ", ".join(inline(n) for n in u.get("names") or [])
        lacking = text(fmt.lacking_text(u.get("lacking") or []))
        out += [
            "",
            f"No race seen has all of the target's names; race {inline(u.get('signature'))} "
            f"has {names}{lacking} (`repro stress RECIPE --suggest-target` prints a target "
            "for it).",
        ]
    return out


def _others(doc: Mapping[str, Any], opts: _Opts) -> list[str]:
    """Other races one line each: a reader pastes the report for the target race, and
    seven full Rust stacks of std's thread machinery (75% of a 62,000-character PyO3
    report) buried it. The full reports go to a file beside the report instead."""
    others = list(doc.get("other_races") or [])
    total = int(doc.get("other_races_total", len(others)))
    distinct = int(doc.get("other_races_distinct", total))
    out = [f"## Other races ({distinct})", ""]
    if not others:
        return [*out, "No other race was reported."]
    if "others" in opts.cut:
        return [*out, f"{distinct} other races; {_where_full(doc, opts)}"]
    out += [f"Most frequent first, one line each. {_where_full(doc, opts)}", ""]
    if total > distinct:
        out += [f"> {fmt.lost_stack_note(total - distinct)}", ""]
    py_tsan = python_tsan(doc)
    noise: dict[str, int] = {}
    shown = others[:OTHER_ROWS] if "other-rows" in opts.cut else others
    symptoms = [bool(o.get("inside_cpython")) for o in others]
    rows = []
    for o, symptom in zip(others, symptoms, strict=True):
        module = noise_module(str(o["report"]), py_tsan) if o.get("report") else None
        if module:
            noise[module] = noise.get(module, 0) + 1
        if o not in shown:
            continue
        note = fmt.same_race_note(o.get("same_race_as")) or (
            f"noise ({_SHORT_MODULE.get(module, module)})" if module else ""
        )
        row = [
            inline(o["signature"]),
            text(o.get("kind")),
            _frames_cell(o.get("top_frames") or []),
            o.get("reports"),
            o.get("runs"),
            note or ("inside CPython" if symptom else ""),
        ]
        if not opts.others_file:
            row.append(inline(o["example_log"]) if o.get("example_log") else "")
        rows.append(row)
    header = ["signature", "kind", "top frames", "reports", "runs", "note"]
    if not opts.others_file:
        header.append("log")
    out.append(table(header, rows, "lllrrll"[: len(header)]))
    in_reports = len(others) - len(shown)
    if in_reports:
        where = inline(opts.others_file) if opts.others_file else "the JSON and HTML reports"
        out += ["", f"... and {in_reports} more in {where}."]
    if total > len(others):
        out += ["", f"... and {total - len(others)} less frequent ones, in the run directory."]
    for module, count in noise.items():
        out += ["", f"> {noise_note(module, count)}"]
    if any(symptoms):
        out += ["", f"> {symptom_note(sum(symptoms))}"]
    return out


def _frames_cell(frames: list[list[str]]) -> str:
    """Top frames in one cell; each access gets its share, so both stay visible."""
    if not any(frames):
        return "?"
    width = FRAMES_CELL // len(frames)
    text = " | ".join(fmt.truncate(" <- ".join(side), width) or "?" for side in frames)
    # GitHub would take <alloc::alloc::Global> for an HTML tag and drop it; "<-" is safe.
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


_SHORT_MODULE = {
    "Rust's standard library (std, core, alloc, test)": "Rust std",
    "CPython (libpython), built without TSAN": "libpython",
}


def _where_full(doc: Mapping[str, Any], opts: _Opts) -> str:
    if opts.others_file:
        return (
            f"Their full TSAN reports are in {inline(opts.others_file)} beside this report "
            "(and in the JSON and HTML reports)."
        )
    run = (doc.get("run") or {}).get("name") or "RUN_DIR"
    return (
        "Their full TSAN reports are in the JSON and HTML reports "
        f"({inline(f'repro report {run} --format html')}) and in the run directory's logs "
        f"(the log column, under {inline(run)})."
    )


def _environment(doc: Mapping[str, Any], opts: _Opts) -> list[str]:
    env = doc["environment"]
    out = ["## Environment", ""]
    if not env.get("recorded"):
        out += ["_The run did not record its environment; what the recipe says:_", ""]
    out.append(table(["", ""], [[text(r[0]), text(r[1])] for r in env.get("rows") or []]))
    variables = env.get("variables") or {}
    if variables and "variables" not in opts.cut:
        rows = [[inline(k), inline(v)] for k, v in variables.items()]
        out += [
            "",
            details("Environment variables (secrets redacted)", table(["name", "value"], rows)),
        ]
    return out


def _reproduce(doc: Mapping[str, Any], opts: _Opts) -> list[str]:
    r = doc["reproduce"]
    out = ["## How to reproduce", ""]
    if r.get("repro"):
        where = "below" if r.get("recipe") and "recipe" not in opts.cut else "of the run"
        out += [f"With repro, and the recipe {where} saved as `recipe.yaml`:", ""]
        out.append(code("\n".join(f"{c['command']}    # {c['what']}" for c in r["repro"]), "sh"))
        if r.get("beside_recipe"):
            out += ["", text(fmt.beside_recipe_text(list(r["beside_recipe"])))]
    if r.get("shell") and "shell" in opts.cut:
        out += ["", "_The plain shell commands are in the HTML report._"]
    elif r.get("shell"):
        out += [
            "",
            "Without repro: build everything with TSAN and run the reproducer in a loop "
            f"(up to {r.get('loop_runs')} runs, {fmt.LOOP_RUNS_WHY}):",
            "",
            PLAIN_MARKER,
            code(str(r["shell"]), "sh"),
        ]
    elif r.get("shell_problem"):
        out += ["", f"_No plain shell commands: {text(r['shell_problem'])}._"]
    if r.get("recipe") and "recipe" not in opts.cut:
        out += ["", details("recipe.yaml", code(str(r["recipe"]), "yaml"))]
    return out


def _suppressions(doc: Mapping[str, Any], opts: _Opts) -> list[str]:
    sup = doc.get("suppressions")
    if not sup or "suppressions" in opts.cut:
        return []
    return [
        "## Suggested TSAN suppression (stop-gap only)",
        "",
        f"> {text(sup['note'])}",
        "",
        code(str(sup["text"])),
    ]


def render_markdown(
    doc: Mapping[str, Any], others_file: str | None = None, budget: int = BUDGET
) -> str:
    """The Markdown report, at most ``budget`` characters, the most useful parts first.

    ``others_file`` names the file beside the report that holds the other races' full
    reports (see render_other_races). Over budget, parts are left out from the least
    useful end (CUTS) until it fits, and then put back, most useful first, where they
    fit after all (a huge recipe should not cost the environment variables too). If
    that is not enough the target's TSAN report loses lines from its end; the report
    says what it left out, and a last hard cut keeps the promise for any document.
    """
    opts = _Opts(others_file=others_file, budget=budget)
    text = _render(doc, opts)
    if len(text) <= budget:
        return text
    for name, _ in CUTS:
        if _has(doc, name):
            opts = replace(opts, cut=opts.cut | {name})
            text = _render(doc, opts)
            if len(text) <= budget:
                break
    for name, _ in reversed(CUTS):
        if name in opts.cut:
            trial = replace(opts, cut=opts.cut - {name})
            trial_text = _render(doc, trial)
            if len(trial_text) <= budget:
                opts, text = trial, trial_text
    report = str((doc.get("target") or {}).get("report") or "")
    lines = len(report.splitlines())
    while len(text) > budget and lines > 10:
        over = len(text) - budget
        per_line = max(1, len(report) // max(1, lines))
        lines = max(10, lines - max(1, -(-over // per_line)))
        opts = replace(opts, target_lines=lines)
        text = _render(doc, opts)
    if len(text) > budget:
        note = f"\n\n_... cut here to fit {budget:,} characters; see the HTML report._\n"
        text = text[: max(0, budget - len(note))] + note
    return text


def _has(doc: Mapping[str, Any], name: str) -> bool:
    """Whether the document has the part that cut ``name`` leaves out."""
    reproduce = doc.get("reproduce") or {}
    if name == "other-rows":
        return len(doc.get("other_races") or []) > OTHER_ROWS
    if name == "variables":
        return bool((doc.get("environment") or {}).get("variables"))
    if name == "suppressions":
        return bool(doc.get("suppressions"))
    if name in ("shell", "recipe"):
        return bool(reproduce.get(name))
    if name == "steps":
        return bool((doc.get("bisect") or {}).get("steps"))
    return bool(doc.get("other_races"))


def render_other_races(doc: Mapping[str, Any]) -> str | None:
    """The file beside the report: every other race with its full TSAN report.

    None when there is nothing to put in it (no other race has a kept report). It is
    pasted as a comment of its own, so it keeps to the same budget as the report: a
    report that does not fit is cut to its first lines, and once not even those fit,
    the rest of the races are named, one line each, with where their reports are.
    """
    others = [o for o in doc.get("other_races") or [] if o.get("report")]
    if not others:
        return None
    total = int(doc.get("other_races_total", len(doc.get("other_races") or [])))
    run = (doc.get("run") or {}).get("name")
    py_tsan = python_tsan(doc)
    out = [
        f"# Other races: {text(doc['title'])}",
        "",
        f"The TSAN reports of {len(others)} of the {total} races other than the target, "
        f"most frequent first, from the run directory {inline(run)} (runtime frames hidden, "
        "paths shortened).",
    ]
    size = sum(len(x) + 1 for x in out)
    left_out: list[Mapping[str, Any]] = []
    for i, o in enumerate(others):
        top = fmt.top_frames(o.get("top_frames") or [])
        log = f"; log {inline(o['example_log'])}" if o.get("example_log") else ""
        head = [
            "",
            f"## {inline(o['signature'])} {text(o.get('kind'))}",
            "",
            f"{_html_escape(top)}; {fmt.seen(o.get('reports'), o.get('runs'))}{log}.",
        ]
        module = noise_module(str(o["report"]), py_tsan)
        if module:
            head += ["", f"> {noise_note(module)}"]
        # Room for this race, and a line each for those after it should they not fit.
        room = OTHERS_BUDGET - size - sum(len(x) + 1 for x in head) - 200 * (len(others) - i)
        report = _cut_report(str(o["report"]), room)
        if report is None:
            left_out = others[i:]
            break
        section = [*head, "", code(report)]
        out += section
        size += sum(len(x) + 1 for x in section)
    if left_out:
        out += [
            "",
            f"## {len(left_out)} more (their full reports are in the JSON and HTML reports "
            "and in the run directory's logs)",
            "",
        ]
        out += [
            f"- {inline(o['signature'])} {text(o.get('kind'))}: "
            f"{text(fmt.truncate(fmt.top_frames(o.get('top_frames') or []), FRAMES_CELL))}"
            + (f"; log {inline(o['example_log'])}" if o.get("example_log") else "")
            for o in left_out
        ]
    return "\n".join(out) + "\n"


def _cut_report(report: str, room: int) -> str | None:
    """The report within ``room`` characters: whole, or its first lines with a note of
    what is left out; None when not even a useful part of it fits."""
    if len(report) + 10 <= room:
        return report
    if room < 1_000:
        return None
    kept: list[str] = []
    used = 100  # the note below and the code fence
    lines = report.splitlines()
    for line in lines:
        if used + len(line) + 1 > room:
            break
        kept.append(line)
        used += len(line) + 1
    cut = len(lines) - len(kept)
    return "\n".join([*kept, f"... ({cut} more lines in the JSON and HTML reports)"])


def _render(doc: Mapping[str, Any], opts: _Opts) -> str:
    out = [f"# {text(doc['title'])}", ""]
    status = doc["status"]
    if status.get("message"):
        label = "Partial results." if status.get("partial") else "No answer."
        out += [f"> **{label}** {text(status['message'])}", ""]
    if opts.cut or opts.target_lines is not None:
        cut = opts.cut - {"other-rows"} if "others" in opts.cut else opts.cut
        what = [said for name, said in CUTS if name in cut]
        if opts.target_lines is not None:
            what.append(f"the target's TSAN report after {opts.target_lines} lines")
        out += [
            f"_To stay under {opts.budget:,} characters this report leaves out {', '.join(what)}: "
            "see the HTML and JSON reports._",
            "",
        ]
    run = doc.get("run") or {}
    if run.get("description"):
        out += [f"_{text(run['description'])}_", ""]
    for section in (_summary, _race, _others, _environment, _reproduce, _suppressions):
        lines = section(doc, opts)
        if lines:
            out += [*lines, ""]
    out += [
        "---",
        f"<sub>Generated by {text(doc['generator'])} from the {text(doc['kind'])} run directory "
        f"{inline(run.get('name'))} (report schema {text(doc['schema_version'])}).</sub>",
    ]
    return "\n".join(out) + "\n"
