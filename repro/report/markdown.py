"""The report as GitHub-flavoured Markdown, to paste into an issue.

Long material (TSAN reports, the recipe, environment variables) goes into
``<details>`` blocks so that the issue opens on the answer: what races, how
often, where, and which commit changed it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from repro.report import fmt

PLAIN_MARKER = "<!-- repro:plain-shell -->"


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_URL_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~:/?#@!$&'*+,;=%]")


def text(value: Any) -> str:
    """Outside data (a description, a function name, a commit subject) shown as written.

    Raw HTML (``<script>``, ``<img onerror>``) and link or image syntax would be
    rendered by a Markdown viewer, so ``<`` before a tag becomes ``&lt;``, brackets
    and backslashes are escaped, and control characters (a newline that would start
    a new block) become one space. ``std::vector<int>`` and ``a <- b`` still read the same.
    """
    if value is None:
        return ""
    s = _CONTROL.sub(" ", str(value)).replace("\\", "\\\\")
    s = _TAG_START.sub("&lt;", s)
    return s.replace("[", "\\[").replace("]", "\\]")


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


def _summary(doc: Mapping[str, Any]) -> list[str]:
    s = doc["summary"]
    b = doc.get("bisect")
    rows: list[list[str]] = []
    if b is not None:
        c = b.get("culprit")
        if c:
            rows.append(
                [
                    f"**{fmt.culprit_label(b)}**",
                    f"{_commit_link(c)} {text(c.get('subject'))}".strip(),
                ]
            )
            rng = b.get("culprit_range") or []
            if len(rng) > 1:
                rows.append(
                    [
                        "Candidates",
                        ", ".join(inline(x.get("label")) for x in rng)
                        + " (the commits between could not be tested)",
                    ]
                )
            rows.append(["Author", text(c.get("author"))])
            rows.append(["Date", text(c.get("date"))])
            link = url(c.get("url"))
            if link:
                rows.append(["Link", link])
            rows.append(["Confidence", fmt.confidence(b)])
        elif b.get("failure"):
            rows.append(["**Bisect failed**", text(b["failure"])])
        else:
            rows.append(["Culprit", "not found yet"])
        rows.append(["Rate at the racy end", fmt.rate(s)])
        ce = b.get("clean_end") or {}
        rows.append(
            [
                f"{'Fixed' if b.get('direction') == 'fix' else 'Clean'} end",
                f"{ce.get('hits', 0)} hits in {ce.get('runs', 0)} runs",
            ]
        )
        rows.append(["Time to first hit", fmt.first_hit(s)])
        rows.append(
            [
                "Range",
                f"{inline(b.get('racy'))} (racy) .. {inline(b.get('clean'))} "
                f"({'fixed' if b.get('direction') == 'fix' else 'clean'}), "
                f"{b.get('positions')} {fmt.commit_word(b)}s",
            ]
        )
        rows.append(
            [
                "Cost",
                fmt.cost(b),
            ]
        )
    else:
        rows.append(["**Reproduction rate**", fmt.rate(s)])
        rows.append(["Outcomes", fmt.outcomes(s.get("outcomes") or {})])
        rows.append(["Time to first hit", fmt.first_hit(s)])
        tested = (doc.get("run") or {}).get("tested")
        if tested:
            rows.append(["Tested commit", inline(tested.get("sha"))])
        rows.append(
            [
                "Run time",
                f"{fmt.seconds(s.get('elapsed_seconds'))} with {s.get('jobs') or 1} jobs, "
                f"{fmt.seconds(s.get('mean_run_seconds'))} per run",
            ]
        )
    out = ["## Summary", "", table(["", ""], rows)]
    if b is not None and b.get("steps"):
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
                    text(st.get("verdict")) + mark,
                ]
            )
        out.append(
            table(
                ["commit", "subject", "build", "runs", "hits", "other races", "verdict"],
                step_rows,
                "lllrrrl",
            )
        )
    return out


def _race(doc: Mapping[str, Any]) -> list[str]:
    t = doc.get("target")
    out = ["## The race", ""]
    if t is None:
        return [*out, "No target race is known for this run."]
    if not doc.get("target_seen"):
        out.append(
            f"The target ({text(t.get('kind'))} in {inline(t.get('function'))}, as the recipe "
            "describes it) was not seen in this run."
        )
        return out
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
        ["Seen", f"{t.get('reports')} reports in {t.get('runs')} runs"],
    ]
    out.append(table(["", ""], rows))
    if t.get("report"):
        out += [
            "",
            details(
                "TSAN report (runtime frames hidden, paths shortened)",
                code(str(t["report"])),
            ),
        ]
    return out


def _others(doc: Mapping[str, Any]) -> list[str]:
    others = doc.get("other_races") or []
    total = doc.get("other_races_total", len(others))
    out = [f"## Other races ({total})", ""]
    if not others:
        return [*out, "No other race was reported."]
    rows = [
        [
            inline(o["signature"]),
            text(o.get("kind")),
            text(fmt.top_frames(o.get("top_frames") or [])),
            o.get("reports"),
            o.get("runs"),
        ]
        for o in others
    ]
    out.append(table(["signature", "kind", "top frames", "reports", "runs"], rows, "lllrr"))
    for o in others:
        if o.get("report"):
            label = _html_escape(f"{o['signature']}: {fmt.top_frames(o.get('top_frames') or [])}")
            out += ["", details(f"{label} ({o.get('runs')} runs)", code(str(o["report"])))]
    if total > len(others):
        out += ["", f"... and {total - len(others)} more (see the run directory)."]
    if doc.get("size_note"):
        out += ["", f"_Note: {doc['size_note']} (see the run directory's logs)._"]
    return out


def _environment(doc: Mapping[str, Any]) -> list[str]:
    env = doc["environment"]
    out = ["## Environment", ""]
    if not env.get("recorded"):
        out += ["_The run did not record its environment; what the recipe says:_", ""]
    out.append(table(["", ""], [[text(r[0]), text(r[1])] for r in env.get("rows") or []]))
    variables = env.get("variables") or {}
    if variables:
        rows = [[inline(k), inline(v)] for k, v in variables.items()]
        out += [
            "",
            details("Environment variables (secrets redacted)", table(["name", "value"], rows)),
        ]
    return out


def _reproduce(doc: Mapping[str, Any]) -> list[str]:
    r = doc["reproduce"]
    out = ["## How to reproduce", ""]
    if r.get("repro"):
        out += ["With repro, and the recipe below saved as `recipe.yaml`:", ""]
        out.append(code("\n".join(f"{c['command']}    # {c['what']}" for c in r["repro"]), "sh"))
    if r.get("shell"):
        out += [
            "",
            "Without repro: build everything with TSAN and run the reproducer in a loop "
            f"(up to {r.get('loop_runs')} runs, enough to see the race with 99.9% "
            "probability at the measured rate):",
            "",
            PLAIN_MARKER,
            code(str(r["shell"]), "sh"),
        ]
    elif r.get("shell_problem"):
        out += ["", f"_No plain shell commands: {text(r['shell_problem'])}._"]
    if r.get("recipe"):
        out += ["", details("recipe.yaml", code(str(r["recipe"]), "yaml"))]
    return out


def _suppressions(doc: Mapping[str, Any]) -> list[str]:
    sup = doc.get("suppressions")
    if not sup:
        return []
    return [
        "## Suggested TSAN suppression (stop-gap only)",
        "",
        f"> {text(sup['note'])}",
        "",
        code(str(sup["text"])),
    ]


# GitHub refuses issue bodies over 65536 characters.
GITHUB_LIMIT = 65_000


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The Markdown report; too long for an issue, the other races lose their reports."""
    text = _render(doc)
    if len(text) <= GITHUB_LIMIT or not doc.get("other_races"):
        return text
    others = [{**o, "report": None} for o in doc["other_races"]]
    note = "the other races' TSAN reports were left out to fit a GitHub issue"
    return _render({**doc, "other_races": others, "size_note": note})


def _render(doc: Mapping[str, Any]) -> str:
    out = [f"# {text(doc['title'])}", ""]
    status = doc["status"]
    if status.get("message"):
        label = "Partial results." if status.get("partial") else "No answer."
        out += [f"> **{label}** {text(status['message'])}", ""]
    run = doc.get("run") or {}
    if run.get("description"):
        out += [f"_{text(run['description'])}_", ""]
    for section in (_summary, _race, _others, _environment, _reproduce, _suppressions):
        lines = section(doc)
        if lines:
            out += [*lines, ""]
    out += [
        "---",
        f"<sub>Generated by {text(doc['generator'])} from the {text(doc['kind'])} run directory "
        f"{inline(run.get('name'))} (report schema {text(doc['schema_version'])}).</sub>",
    ]
    return "\n".join(out) + "\n"
