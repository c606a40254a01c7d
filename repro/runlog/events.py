"""Every kind of event a run directory's log holds, typed, in one place.

The log (``events.jsonl``) is the record of a stress run or a bisect: one JSON line
per run, build, signature and decision, appended before anything acts on it. Each
event type here owns its JSON form both ways, so a field is named once; the fold
(``repro.runlog.fold``) is the only reader. Older logs stay readable: fields added
later have defaults, and lines of unknown types are kept out of the fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from repro.tsan.outcome import Outcome


def _opt_int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class RunEvent:
    """One run of the reproducer and its outcome."""

    TYPE: ClassVar[str] = "run"
    index: int
    outcome: Outcome
    exit_code: int | None = None
    duration: float = 0.0
    target_reports: int = 0
    signatures: tuple[str, ...] = ()
    fatal: tuple[str, ...] = ()
    detail: str | None = None  # why an invalid run is invalid
    log_dir: str | None = None  # relative to the run directory, when the log is kept
    started: float = 0.0  # wall clock
    elapsed: float = 0.0  # seconds into the session that ran it
    # Where it ran, in a bisect or an amplify sweep.
    pos: int | None = None
    id: str | None = None
    phase: str | None = None
    setting: str | None = None
    worker: str | None = None
    # Processes it started were still running LINGER seconds after it exited, and were
    # killed: a race of theirs after that is not in the run.
    lingered: bool = False
    # Reports TSAN's suppressions hid in this run, by suppression ("race:foo" -> hits).
    suppressed: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.TYPE,
            "index": self.index,
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "duration": round(self.duration, 4),
            "target_reports": self.target_reports,
            "signatures": list(self.signatures),
            "fatal": list(self.fatal),
            "log_dir": self.log_dir,
            "started": round(self.started, 3),
            "elapsed": round(self.elapsed, 3),
        }
        for key in ("detail", "pos", "id", "phase", "setting", "worker"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.lingered:
            out["lingered"] = True
        if self.suppressed:
            out["suppressed"] = dict(self.suppressed)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunEvent:
        return cls(
            index=int(d["index"]),
            outcome=Outcome(d["outcome"]),
            exit_code=_opt_int(d.get("exit_code")),
            duration=float(d.get("duration") or 0.0),
            target_reports=int(d.get("target_reports") or 0),
            signatures=tuple(str(s) for s in d.get("signatures") or ()),
            fatal=tuple(str(s) for s in d.get("fatal") or ()),
            detail=d.get("detail"),
            log_dir=d.get("log_dir"),
            started=float(d.get("started") or 0.0),
            elapsed=float(d.get("elapsed") or 0.0),
            pos=_opt_int(d.get("pos")),
            id=d.get("id"),
            phase=d.get("phase"),
            setting=d.get("setting"),
            worker=d.get("worker"),
            lingered=bool(d.get("lingered")),
            suppressed=_suppressed(d.get("suppressed")),
        )


@dataclass(frozen=True)
class SignatureEvent:
    """A race signature, logged the first time a run shows it."""

    TYPE: ClassVar[str] = "signature"
    id: str
    kind: str
    top_frames: tuple[tuple[str, ...], ...]
    description: str
    target: bool
    example: str | None = None  # the kept log of the run that showed it first
    # Each access's top frame is CPython's (signature.starts_inside_interpreter): such a
    # race that begins at a bisect's answer is no target in an extension renamed.
    inside_cpython: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.TYPE,
            "id": self.id,
            "kind": self.kind,
            "top_frames": [list(a) for a in self.top_frames],
            "description": self.description,
            "target": self.target,
            "example": self.example,
            "inside_cpython": self.inside_cpython,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SignatureEvent:
        return cls(
            id=str(d["id"]),
            kind=str(d.get("kind") or "race"),
            top_frames=tuple(tuple(str(f) for f in a) for a in d.get("top_frames") or ()),
            description=str(d.get("description") or ""),
            target=bool(d.get("target")),
            example=d.get("example"),
            inside_cpython=bool(d.get("inside_cpython")),
        )


@dataclass(frozen=True)
class BuildEvent:
    """A build (or cache hit) of one bisect position."""

    TYPE: ClassVar[str] = "build"
    pos: int
    id: str
    ok: bool
    seconds: float = 0.0
    error: str | None = None
    log: str | None = None
    # A Python package's build backend (meson-python, ...): the report's plain script
    # builds the package the way repro did.
    backend: str | None = None
    # Found built in the cache (by an earlier stress or bisect): no build was paid here.
    cached: bool = False
    # A Python package's extension modules, as its wheel held them (None: not a package).
    modules: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.TYPE,
            "pos": self.pos,
            "id": self.id,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
        }
        if self.cached:
            out["cached"] = True
        if self.error is not None:
            out["error"] = self.error
        if self.log is not None:
            out["log"] = self.log
        if self.backend is not None:
            out["backend"] = self.backend
        if self.modules is not None:
            out["modules"] = list(self.modules)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BuildEvent:
        return cls(
            pos=int(d["pos"]),
            id=str(d.get("id") or ""),
            ok=bool(d["ok"]),
            seconds=float(d.get("seconds") or 0.0),
            error=d.get("error"),
            log=d.get("log"),
            backend=d.get("backend") if isinstance(d.get("backend"), str) else None,
            cached=d.get("cached") is True,
            modules=(
                tuple(str(m) for m in d["modules"]) if isinstance(d.get("modules"), list) else None
            ),
        )


@dataclass(frozen=True)
class UnusableEvent:
    """A position the bisect gave up on (git bisect's exit 125), and why."""

    TYPE: ClassVar[str] = "unusable"
    pos: int
    id: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"event": self.TYPE, "pos": self.pos, "id": self.id, "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> UnusableEvent:
        return cls(pos=int(d["pos"]), id=str(d.get("id") or ""), reason=str(d.get("reason")))


@dataclass(frozen=True)
class StrategyEvent:
    """The settings the bisect strategy started with, after calibration."""

    TYPE: ClassVar[str] = "strategy"
    confidence: float
    calib_hits: int
    calib_runs: int
    build_cost: float
    run_cost: float
    batch: int
    anchors: tuple[int, ...] | None = None
    # Prior probability that the race shows at the clean end too (0: verified before the
    # search, as run directories from before this field did).
    clean_end_racy: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.TYPE,
            "clean_end_racy": self.clean_end_racy,
            "confidence": self.confidence,
            "calib_hits": self.calib_hits,
            "calib_runs": self.calib_runs,
            "build_cost": round(self.build_cost, 3),
            "run_cost": round(self.run_cost, 4),
            "batch": self.batch,
            "anchors": list(self.anchors) if self.anchors is not None else None,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StrategyEvent:
        anchors = d.get("anchors")
        return cls(
            confidence=float(d["confidence"]),
            calib_hits=int(d["calib_hits"]),
            calib_runs=int(d["calib_runs"]),
            build_cost=float(d["build_cost"]),
            run_cost=float(d["run_cost"]),
            batch=int(d.get("batch") or 1),
            anchors=tuple(int(a) for a in anchors) if anchors is not None else None,
            clean_end_racy=float(d.get("clean_end_racy") or 0.0),
        )


Event = RunEvent | SignatureEvent | BuildEvent | UnusableEvent | StrategyEvent

_TYPES: dict[str, Any] = {
    t.TYPE: t for t in (RunEvent, SignatureEvent, BuildEvent, UnusableEvent, StrategyEvent)
}


class BadEvent(ValueError):
    """A line of the log that is JSON but not an event this version can read."""


def event_from_json(d: Any) -> Event | None:
    """The typed event of one decoded line; None for a type this version does not know
    (a newer repro's), BadEvent for a known type with missing or wrong fields."""
    if not isinstance(d, dict):
        raise BadEvent("not a JSON object")
    kind = d.get("event")
    cls = _TYPES.get(str(kind))
    if cls is None:
        return None
    try:
        event: Event = cls.from_json(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadEvent(f"{kind} event: {type(exc).__name__}: {exc}") from None
    return event


__all__ = [
    "BadEvent",
    "BuildEvent",
    "Event",
    "RunEvent",
    "SignatureEvent",
    "StrategyEvent",
    "UnusableEvent",
    "event_from_json",
]


def _suppressed(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for k, v in value.items():
        try:
            out[str(k)] = int(v)
        except (TypeError, ValueError):
            continue
    return out
