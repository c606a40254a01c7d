"""The run directory's record: typed events, the append-only log and its lock, and the
one fold from events to counts. Nothing else reads or writes ``events.jsonl``."""

from repro.runlog.events import (
    BuildEvent,
    Event,
    RunEvent,
    SignatureEvent,
    StrategyEvent,
    UnusableEvent,
)
from repro.runlog.fold import Counts, PositionRecord, Record, SignatureStats, fold
from repro.runlog.store import RunDir, RunLog, slug, write_json_atomic

__all__ = [
    "BuildEvent",
    "Counts",
    "Event",
    "PositionRecord",
    "Record",
    "RunDir",
    "RunEvent",
    "RunLog",
    "SignatureEvent",
    "SignatureStats",
    "StrategyEvent",
    "UnusableEvent",
    "fold",
    "slug",
    "write_json_atomic",
]
