"""The report as one self-contained HTML page: inline CSS, inline SVG, no scripts.

Attached to an issue or mailed around, it must open offline and look the same
everywhere, so nothing is fetched: no fonts, no stylesheets, no JavaScript.
The sections and their wording follow the Markdown report (see fmt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from repro.report import fmt
from repro.report import rows as rows_mod
from repro.report.svg import bisect_chart, stress_chart
from repro.report.tsantext import (
    noise_module,
    noise_note,
    python_tsan,
    symptom_note,
)

CSS = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2328;
max-width:1000px;margin:24px auto;padding:0 16px}
h1{font-size:24px;border-bottom:1px solid #d0d7de;padding-bottom:8px}
h2{font-size:19px;margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:16px}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #d0d7de;padding:4px 10px;vertical-align:top;text-align:left}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.culprit td{background:#fff8c5}
tr.racy td:last-child{color:#d1242f;font-weight:600}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
pre{background:#f6f8fa;padding:12px;overflow-x:auto;border-radius:6px}
.note{border-left:4px solid #bf8700;background:#fff8c5;padding:8px 12px;margin:12px 0}
.stopgap{border-left:4px solid #d1242f;background:#ffebe9;padding:8px 12px}
details{margin:8px 0}summary{cursor:pointer}
figure{margin:12px 0}
.muted{color:#59636e;font-size:13px}
"""


def _e(value: Any) -> str:
    return escape("-" if value is None or value == "" else str(value))


def _code(value: Any) -> str:
    return f"<code>{_e(value)}</code>"


def _pre(text: str) -> str:
    return f"<pre>{escape(text.rstrip())}</pre>"


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table; values are HTML already."""
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _link(c: Mapping[str, Any]) -> str:
    label = _code(c.get("label") or c.get("id"))
    if c.get("url"):
        return f'<a href="{escape(str(c["url"]), quote=True)}">{label}</a>'
    return label


def _part(part: rows_mod.Part) -> str:
    if isinstance(part, rows_mod.Code):
        return _code(part.text)
    if isinstance(part, rows_mod.Commit):
        return _link({"label": part.label, "url": part.url})
    if isinstance(part, rows_mod.Link):
        return _link({"label": part.url, "url": part.url})
    return _e(part.text)


def _summary(doc: Mapping[str, Any]) -> str:
    s = doc["summary"]
    b = doc.get("bisect")
    rows: list[tuple[str, str]] = []
    for r in rows_mod.summary_rows(doc):
        value = "".join(_part(p) for p in r.parts).strip()
        rows.append((r.label, f"<strong>{value}</strong>" if r.strong else value))
    out = ["<h2>Summary</h2>", _kv(rows)]
    if b is not None:
        out.append(f"<figure>{bisect_chart(b)}</figure>")
        if b.get("steps"):
            out.append(f"<h3>Bisection steps (oldest first, {len(b['steps'])} tested)</h3>")
            head = "".join(f"<th>{h}</th>" for h in fmt.STEP_COLUMNS)
            rows_html = []
            for st in b["steps"]:
                classes = []
                if st.get("culprit"):
                    classes.append("culprit")
                if st.get("verdict") == "racy":
                    classes.append("racy")
                cls = f' class="{" ".join(classes)}"' if classes else ""
                end = f" ({_e(st['end'])})" if st.get("end") else ""
                mark = " <strong>culprit</strong>" if st.get("culprit") else ""
                rows_html.append(
                    f"<tr{cls}><td>{_link(st)}{end}</td><td>{_e(st.get('subject'))}</td>"
                    f"<td>{_e(fmt.build_cell(st))}</td><td class=num>{_e(st.get('runs'))}</td>"
                    f"<td class=num>{_e(st.get('hits'))}</td>"
                    f"<td class=num>{_e(st.get('other_races'))}</td>"
                    f"<td class=num>{fmt.not_counted(st)}</td>"
                    f"<td>{_e(fmt.step_verdict(st))}{mark}</td></tr>"
                )
            out.append(f"<table><tr>{head}</tr>{''.join(rows_html)}</table>")
    if doc.get("timeline"):
        if b is not None:
            chart = stress_chart(doc["timeline"], "runs of the bisect (all commits)", False)
        else:
            elapsed = s.get("elapsed_seconds")
            note = f"after {fmt.seconds(elapsed)}" if elapsed is not None else None
            chart = stress_chart(doc["timeline"], "runs", True, note)
        out.append(f"<figure>{chart}</figure>")
    return "\n".join(out)


def _nearest(doc: Mapping[str, Any]) -> list[str]:
    """What nearly matched the target that no run hit (the console says it too)."""
    out: list[str] = []
    misses = doc.get("near_misses") or []
    if misses:
        out.append("<p>Races that nearly match it (each fix alone makes that race the target):</p>")
        items = []
        for m in misses:
            sub = "".join(f"<li>{_e(line)}</li>" for line in m.get("lines") or [])
            items.append(
                f"<li>race {_code(m.get('signature'))} ({_e(m.get('race'))}), in "
                f"{_e(m.get('runs'))} of {_e(m.get('of_runs'))} runs<ul>{sub}</ul></li>"
            )
        more = int(doc.get("near_misses_total") or 0) - len(misses)
        if more > 0:
            items.append(f"<li>... and {more} more near misses</li>")
        out.append(f"<ul>{''.join(items)}</ul>")
    u = doc.get("unmatched_race")
    if u:
        names = ", ".join(_code(n) for n in u.get("names") or [])
        lacking = _e(fmt.lacking_text(u.get("lacking") or []))
        out.append(
            f"<p>No race seen has all of the target's names; race {_code(u.get('signature'))} "
            f"has {names}{lacking} (<code>repro stress RECIPE --suggest-target</code> prints "
            "a target for it).</p>"
        )
    return out


def _race(doc: Mapping[str, Any]) -> str:
    t = doc.get("target")
    out = ["<h2>The race</h2>"]
    if t is None:
        return out[0] + "<p>No target race is known for this run.</p>"
    if not doc.get("target_seen"):
        out.append(
            f"<p>The target ({_e(t.get('kind'))} in {_code(t.get('function'))}, as the recipe "
            "describes it) was not seen in this run.</p>"
        )
        return "\n".join(out + _nearest(doc))
    where = _code(t.get("function")) + (f" in {_code(t['file'])}" if t.get("file") else "")
    out.append(
        _kv(
            [
                ("Kind", _e(t.get("kind"))),
                ("Where", where),
                (
                    "Signature",
                    f"{_code(t.get('signature'))}: {_e(fmt.top_frames(t.get('top_frames') or []))}",
                ),
                *([("Location", _e(t["location"]))] if t.get("location") else []),
                (
                    "Seen",
                    _e(fmt.seen(t.get("reports"), t.get("runs"))),
                ),
                *(
                    [("Also seen as", fmt.variants(t["variants"], _code, _e))]
                    if t.get("variants")
                    else []
                ),
            ]
        )
    )
    module = noise_module(str(t["report"]), python_tsan(doc)) if t.get("report") else None
    if module:
        out.append(f"<p class=note>{_e(noise_note(module))}</p>")
    if t.get("report"):
        out.append(
            "<details><summary>TSAN report (runtime frames hidden, paths shortened)</summary>"
            f"{_pre(str(t['report']))}</details>"
        )
    return "\n".join(out)


def _others(doc: Mapping[str, Any]) -> str:
    others = doc.get("other_races") or []
    total = doc.get("other_races_total", len(others))
    distinct = doc.get("other_races_distinct", total)
    out = [f"<h2>Other races ({distinct})</h2>"]
    if not others:
        return out[0] + "<p>No other race was reported.</p>"
    if total > distinct:
        out.append(f"<p class=note>{_e(fmt.lost_stack_note(total - distinct))}</p>")
    head = (
        "<tr><th>signature</th><th>kind</th><th>top frames</th><th>reports</th><th>runs</th>"
        "<th>note</th></tr>"
    )
    py_tsan = python_tsan(doc)
    modules = [noise_module(str(o["report"]), py_tsan) if o.get("report") else None for o in others]
    symptoms = [bool(o.get("inside_cpython")) for o in others]
    notes = [
        fmt.same_race_note(o.get("same_race_as"))
        or ("expected noise" if m else "inside CPython" if s else "")
        for o, m, s in zip(others, modules, symptoms, strict=True)
    ]
    rows = "".join(
        f"<tr><td>{_code(o['signature'])}</td><td>{_e(o.get('kind'))}</td>"
        f"<td>{_e(fmt.top_frames(o.get('top_frames') or []))}</td>"
        f"<td class=num>{_e(o.get('reports'))}</td><td class=num>{_e(o.get('runs'))}</td>"
        f"<td>{_e(note)}</td></tr>"
        for o, note in zip(others, notes, strict=True)
    )
    out.append(f"<table>{head}{rows}</table>")
    for module in dict.fromkeys(m for m in modules if m):
        out.append(f"<p class=note>{_e(noise_note(module, modules.count(module)))}</p>")
    if any(symptoms):
        out.append(f"<p class=note>{_e(symptom_note(sum(symptoms)))}</p>")
    for o in others:
        if o.get("report"):
            label = f"{o['signature']}: {fmt.top_frames(o.get('top_frames') or [])}"
            out.append(
                f"<details><summary>{_e(label)} ({_e(o.get('runs'))} runs)</summary>"
                f"{_pre(str(o['report']))}</details>"
            )
    if total > len(others):
        out.append(f"<p>... and {total - len(others)} more (see the run directory).</p>")
    return "\n".join(out)


def _environment(doc: Mapping[str, Any]) -> str:
    env = doc["environment"]
    out = ["<h2>Environment</h2>"]
    if not env.get("recorded"):
        out.append(
            "<p class=muted>The run did not record its environment; what the recipe says:</p>"
        )
    out.append(_kv([(r[0], _e(r[1])) for r in env.get("rows") or []]))
    variables = env.get("variables") or {}
    if variables:
        rows = "".join(
            f"<tr><td>{_code(k)}</td><td>{_code(v)}</td></tr>" for k, v in variables.items()
        )
        out.append(
            "<details><summary>Environment variables (secrets redacted)</summary>"
            f"<table><tr><th>name</th><th>value</th></tr>{rows}</table></details>"
        )
    return "\n".join(out)


def _reproduce(doc: Mapping[str, Any]) -> str:
    r = doc["reproduce"]
    out = ["<h2>How to reproduce</h2>"]
    if r.get("repro"):
        out.append("<p>With repro, and the recipe below saved as <code>recipe.yaml</code>:</p>")
        out.append(_pre("\n".join(f"{c['command']}    # {c['what']}" for c in r["repro"])))
        if r.get("beside_recipe"):
            out.append(f"<p>{_e(fmt.beside_recipe_text(list(r['beside_recipe'])))}</p>")
    if r.get("shell"):
        out.append(
            "<p>Without repro: build everything with TSAN and run the reproducer in a loop "
            f"(up to {_e(r.get('loop_runs'))} runs, {_e(fmt.LOOP_RUNS_WHY)}):</p>"
        )
        out.append(_pre(str(r["shell"])))
    elif r.get("shell_problem"):
        out.append(f"<p class=muted>No plain shell commands: {_e(r['shell_problem'])}.</p>")
    if r.get("recipe"):
        out.append(f"<details><summary>recipe.yaml</summary>{_pre(str(r['recipe']))}</details>")
    return "\n".join(out)


def _suppressions(doc: Mapping[str, Any]) -> str:
    sup = doc.get("suppressions")
    if not sup:
        return ""
    return (
        "<h2>Suggested TSAN suppression (stop-gap only)</h2>"
        f"<p class=stopgap>{_e(sup['note'])}</p>{_pre(str(sup['text']))}"
    )


def render_html(doc: Mapping[str, Any]) -> str:
    status = doc["status"]
    run = doc.get("run") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(doc['title'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{_e(doc['title'])}</h1>",
    ]
    if status.get("message"):
        label = "Partial results." if status.get("partial") else "No answer."
        parts.append(f"<p class=note><strong>{label}</strong> {_e(status['message'])}</p>")
    if run.get("description"):
        parts.append(f"<p><em>{_e(run['description'])}</em></p>")
    for section in (_summary, _race, _others, _environment, _reproduce, _suppressions):
        html = section(doc)
        if html:
            parts.append(html)
    parts.append(
        f"<hr><p class=muted>Generated by {_e(doc['generator'])} from the {_e(doc['kind'])} run "
        f"directory <code>{_e(run.get('name'))}</code> (report schema "
        f"{_e(doc['schema_version'])}).</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
