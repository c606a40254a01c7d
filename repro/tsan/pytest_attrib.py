"""Which pytest test was running when TSAN wrote a report (the pytest reproducer).

The plugin in repro/standalone/repro_tsan_attrib.py prints a marked line after each
test during which TSAN's log files grew; this reads those lines back into a run's
detail, so a hit names its test.
"""

from __future__ import annotations

MARK = "repro-tsan-report-in: "  # the same text as the plugin's


def reported_tests(output: str) -> list[str]:
    """Node ids of the tests during which TSAN reported, in order, each once."""
    seen: list[str] = []
    for line in output.splitlines():
        if line.startswith(MARK):
            node = line[len(MARK) :].strip()
            if node and node not in seen:
                seen.append(node)
    return seen


def run_detail(output: str) -> str | None:
    tests = reported_tests(output)
    if not tests:
        return None
    more = f" (+{len(tests) - 1} more)" if len(tests) > 1 else ""
    return f"TSAN report in test {tests[0]}{more}"
