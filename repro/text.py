"""Short text for people: one rule for cutting a line, used by the console, the build
progress and the reports."""

from __future__ import annotations


def truncate(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at a word boundary with an ellipsis.

    A commit subject cut mid-word (``Fix the flag (#4``) reads as a different
    subject, or a wrong PR number; cutting between words, and saying so with ``…``,
    keeps what is shown true. A single word longer than half the width is cut
    inside, since nothing else would fit.
    """
    s = " ".join(text.split())
    if len(s) <= width:
        return s
    if width <= 1:
        return "…"[:width]
    head = s[: width - 1]
    space = head.rfind(" ")
    if s[width - 1] != " " and space >= width // 2:
        head = head[:space]
    return head.rstrip(" ,;:-([{") + "…"
