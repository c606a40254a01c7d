"""Race signatures and target matching.

A bisection must count only *its* race: a TSAN build of a large project reports
other races too (the Rust standard library is not instrumented, CPython has
known races), and these come and go between commits. So each report is reduced
to a signature that is stable across builds, runs and machines: its kind and the
top few meaningful frames of both racing accesses.

"Meaningful" drops the TSAN runtime, libc thread start-up and Rust's thread and
panic plumbing (ClusterFuzz's crash state does the same), because those frames
differ between compilers and runtime versions while the race does not. Both
accesses are used, not only the current one, because different races that share
the same top frames on one side were merged by one-stack signatures in practice.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from functools import lru_cache
from typing import Any

from repro.tsan.model import Frame, Report
from repro.tsan.parse import normalise_kind

__all__ = [
    "DEFAULT_DROP",
    "Signature",
    "TargetRule",
    "access_matches",
    "group_by_signature",
    "is_glibc_frame",
    "is_interpreter_frame",
    "is_library_frame",
    "is_runtime_frame",
    "is_rust_std_frame",
    "matches",
    "normalise_function",
    "signature_of",
    "signature_stacks",
    "significant_frames",
    "starts_outside_interpreter",
]

_RUNTIME_DROP: tuple[str, ...] = (
    # The TSAN runtime and the other sanitizers: by function name ...
    "__tsan_*",
    "__tsan::*",
    "__interceptor_*",
    "___interceptor_*",
    "__sanitizer*",
    "__asan*",
    "__ubsan*",
    # ... and by module or source file (gcc's libtsan.so, LLVM's runtime sources).
    "libtsan.so*",
    "*/libsanitizer/*",
    "*compiler-rt/lib/*",
    "*tsan_interceptors*",
    "*sanitizer_common_interceptors*",
)

DEFAULT_DROP: tuple[str, ...] = (
    *_RUNTIME_DROP,
    # Process and thread start-up.
    "_start",
    "__libc_start*",
    "start_thread",
    "clone",
    "clone3",
    "__clone*",
    "pthread_*",
    # libc functions the runtime intercepts. clang and rustc link the runtime into the
    # binary, where these frames have no file and no separate module to recognise them
    # by, so they go by name; this keeps gcc and clang signatures equal.
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "free",
    "cfree",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "operator new*",
    "operator delete*",
    "memcpy",
    "memmove",
    "memset",
    "memcmp",
    "bcmp",
    "memchr",
    "strlen",
    "strnlen",
    "strcmp",
    "strncmp",
    "strcpy",
    "strncpy",
    "strchr",
    "strrchr",
    "strdup",
    "strndup",
    # Rust std/core plumbing between a thread's start and the user's closure.
    "std::sys::*",
    "std::thread::*",
    "std::rt::*",
    "std::panicking::*",
    "std::panic::*",
    "core::ops::function::*",
    "<core::panic::unwind_safe::*",
    "<alloc::boxed::Box<*",
    "<* as core::ops::function::Fn*>::call*",
    "__rust_try*",
    "*__rust_begin_short_backtrace*",
    "<std::thread::*",
    "<std::sys::*",
)
"""Frames that say nothing about which race it is.

A frame is dropped when a pattern matches its normalised function name, its
module or its source file (fnmatch, case-sensitive, with ``*`` and ``?`` as the
only wildcards), or when its function is ``<null>``. Callers add their own with
``(*DEFAULT_DROP, "my_wrapper_*")``.
"""

# --- function-name normalisation ----------------------------------------------------------------

_BUILD_ID = re.compile(r"\s*\(BuildId:[^)]*\)")
_RUST_HASH = re.compile(r"::h[0-9a-f]{16}(?![0-9A-Za-z_])")
_RUST_CRATE_DISAMBIGUATOR = re.compile(r"(?<=\w)\[[0-9a-f]{1,16}\](?=::)")
_LEGACY_BRACES = re.compile(r"\{\{([A-Za-z_][\w:]*)\}\}")  # {{closure}}
_V0_BRACES = re.compile(r"\{([A-Za-z_][\w:]*)#\d+\}")  # {closure#0}, {shim:vtable#0}
_GCC_CLONE = re.compile(r"\s*\[clone [^\]]*\]")
_DOT_SUFFIX = re.compile(
    r"(?:\.(?:constprop|isra|part|cold|lto_priv|llvm|localalias|specialized|__uniq)(?:\.\d+)*)+$"
)
_TEMPLATE_CLOSE = re.compile(r">\s+>")
# Cython's C names: `__pyx_pf_7cycount_6_count_2get` (every part of the qualified name
# after its length, the function after its place among the module's functions).
_CYTHON_NAME = re.compile(r"^(__pyx_[a-z]+_)(.+)$")
_CYTHON_NUMBER = re.compile(r"(?:(?<=_)|^)\d+(?=[A-Za-z_])")
# C++ lambdas by their place in the enclosing function: `{lambda(int)#2}` (the Itanium
# demangler) and clang's `$_1`.
_CXX_LAMBDA = re.compile(r"\{lambda\(([^{}]*)\)#\d+\}")
_CLANG_LAMBDA = re.compile(r"\$_\d+")
_SPACE = re.compile(r"\s+")


@lru_cache(maxsize=65536)
def normalise_function(name: str) -> str:
    """The name of a function as it should compare across builds.

    Removed: Rust symbol hashes (``::h0123456789abcdef``) and crate disambiguators,
    ``(BuildId: ...)``, and the suffixes compilers give to cloned or split copies of
    a function (``.constprop.0``, ``.isra.0``, ``.part.0``, ``.cold``, ``.llvm.123``,
    ``[clone .constprop.0]``): which copy raced is an optimiser's decision.

    Rust closures are written ``{closure}``: the legacy mangling prints
    ``{{closure}}`` for every closure and v0 prints ``{closure#N}``, so the index
    cannot be kept without making the two disagree. Generic arguments are kept
    (they tell instantiations apart) with whitespace collapsed and ``> >`` written
    ``>>`` (gcc's and LLVM's demanglers differ there).

    Cython's numbers go (``__pyx_pf_7cycount_6_count_2get`` is
    ``__pyx_pf_cycount__count_get``): a function's number is its place in the module, so
    a function added above it renumbers it, and the same race would get another
    signature, and miss its target, at the next commit of a bisect. C++ lambdas' numbers
    go for the same reason (``main::$_1`` is ``main::$_``, ``{lambda(int)#2}`` is
    ``{lambda(int)}``), as Rust's closures' do.
    """
    name = _BUILD_ID.sub("", name)
    name = _SPACE.sub(" ", name).strip()
    name = _GCC_CLONE.sub("", name)
    name = _RUST_HASH.sub("", name)
    name = _RUST_CRATE_DISAMBIGUATOR.sub("", name)
    name = _LEGACY_BRACES.sub(r"{\1}", name)
    name = _V0_BRACES.sub(r"{\1}", name)
    name = _CXX_LAMBDA.sub(r"{lambda(\1)}", name)
    name = _CLANG_LAMBDA.sub("$_", name)
    name = _DOT_SUFFIX.sub("", name)
    cython = _CYTHON_NAME.match(name)
    if cython is not None:
        name = cython.group(1) + _CYTHON_NUMBER.sub("", cython.group(2))
    while True:
        collapsed = _TEMPLATE_CLOSE.sub(">>", name)
        if collapsed == name:
            break
        name = collapsed
    return name.strip()


def function_template(name: str) -> str:
    """A TSAN suppression template (``*`` for any text, a substring match) that matches
    the function as TSAN names it in this build and in the others that
    :func:`normalise_function` makes it equal to.

    Where normalising removes a part that is not at the end (a Cython function's
    numbers, a closure's index, a crate disambiguator), the template has ``*``:
    repro's normalised names are no substring of the real ones, and a suggested
    ``race_top:__pyx_f_frozenlist__frozenlist_FrozenList__check_frozen`` hid nothing of
    ``__pyx_f_10frozenlist_11_frozenlist_10FrozenList__check_frozen`` (sweep 18). A
    ``$`` (clang's lambdas) would end TSAN's template there, so it is a ``*`` too. A
    name already normalised gets a ``*`` wherever Cython's numbers may have been.
    """
    name = _BUILD_ID.sub("", name)
    name = _SPACE.sub(" ", name).strip()
    name = _GCC_CLONE.sub("", name)
    name = _RUST_HASH.sub("*", name)
    name = _RUST_CRATE_DISAMBIGUATOR.sub("*", name)
    name = _LEGACY_BRACES.sub("*", name)
    name = _V0_BRACES.sub("*", name)
    name = re.sub(r"\{[A-Za-z_][\w:]*\}", "*", name)  # a normalised closure, {closure}
    name = re.sub(r"(\{lambda\([^{}]*\))(?:#\d+)?\}", r"\1*", name)
    name = re.sub(r"\$_\d*", "*", name)  # clang's lambdas, $_1 (normalised: $_)
    name = _DOT_SUFFIX.sub("", name)
    cython = _CYTHON_NAME.match(name)
    if cython is not None:
        tail = cython.group(2)
        if _CYTHON_NUMBER.match(tail):
            tail = _CYTHON_NUMBER.sub("*", tail)
        else:  # normalised: a number may have stood first and after any "_"
            tail = "*" + tail.replace("_", "_*")
        name = cython.group(1) + tail
    name = _TEMPLATE_CLOSE.sub(">*>", name).replace(">>", ">*>")
    name = name.replace("$", "*").replace("^", "*")
    return re.sub(r"\*{2,}", "*", name).rstrip("*") or "*"


# --- pattern matching ---------------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    # "[" is literal: C++ and Rust names are full of brackets ("operator[]", "[u8]").
    return translate(pattern.replace("[", "[[]"))


@lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{_glob_regex(p)})" for p in patterns))


def _is_dropped(frame: Frame, regex: re.Pattern[str] | None) -> bool:
    function = normalise_function(frame.function)
    if function in ("<null>", ""):
        return True
    if regex is None:
        return False
    return any(
        value is not None and regex.match(value) is not None
        for value in (function, frame.module, frame.file)
    )


def significant_frames(
    stack: Sequence[Frame], drop: Sequence[str] = DEFAULT_DROP
) -> tuple[Frame, ...]:
    """The frames of ``stack`` that are not runtime or plumbing, in order.

    The frames are returned unchanged (not normalised), so callers can still show
    the file and line TSAN printed.
    """
    regex = _compiled(tuple(drop))
    return tuple(f for f in stack if not _is_dropped(f, regex))


# --- which stacks describe a report -------------------------------------------------------------


def _primary_other_stacks(report: Report) -> list[tuple[Frame, ...]]:
    labelled = report.other_stacks
    if report.kind == "lock-order-inversion":
        # One stack per edge of the cycle. The "previously acquired by the same thread"
        # stacks only exist with second_deadlock_stack=1, so they are left out to keep
        # the signature independent of that option.
        chosen = [frames for label, frames in labelled if " acquired here while holding " in label]
    elif report.kind == "thread leak":
        chosen = [frames for label, frames in labelled if label.startswith("Thread ")]
    else:
        chosen = [
            frames
            for label, frames in labelled
            if label == "stack" or (label.startswith("Signal ") and "handler" in label)
        ]
    if not chosen and labelled:
        chosen = [labelled[0][1]]
    return chosen


def signature_stacks(report: Report) -> list[tuple[Frame, ...]]:
    """The stacks that identify a report: both accesses if it has any, else its own.

    Reports without memory accesses use: lock-order-inversion, the stack of each
    edge of the cycle; thread leak, the creation stack of the leaked thread;
    signal-unsafe call and mutex misuse, the unnamed stack(s) printed right after
    the WARNING line (and the signal handler stack for errno spoiling).
    """
    accesses = report.access_stacks()
    if accesses:
        return accesses
    return _primary_other_stacks(report)


def _top_functions(stack: Sequence[Frame], depth: int, drop: Sequence[str]) -> tuple[str, ...]:
    frames = significant_frames(stack, drop)
    if not frames:
        # Everything was dropped (a race inside Rust's std, or in an interceptor called
        # from an uninstrumented library): keep all but the sanitizer runtime rather
        # than return an empty signature that every such race would share.
        frames = significant_frames(stack, _RUNTIME_DROP) or tuple(
            f for f in stack if normalise_function(f.function) not in ("<null>", "")
        )
    return tuple(normalise_function(f.function) for f in frames[:depth])


# --- signatures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """A race, as it compares across runs and builds.

    ``accesses`` holds the top frames (normalised function names) of each stack,
    sorted, because which of the two threads TSAN calls "current" depends on
    which one touched the memory second, and that varies from run to run.

    The access operations (read/write, atomic) are deliberately *not* part of the
    signature: for the same pair of functions TSAN reports "Read ... Previous
    write" in one run and "Write ... Previous read" (or write/write) in the next,
    depending on the interleaving. A race is the pair of code locations; the ops
    are shown in reports, not used to tell races apart.
    """

    kind: str
    accesses: tuple[tuple[str, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        canonical = tuple(sorted(tuple(a) for a in self.accesses))
        object.__setattr__(self, "accesses", canonical)

    def canonical_json(self) -> str:
        """The text the id is a hash of: key order, spacing and escaping fixed."""
        return json.dumps(
            {"kind": self.kind, "accesses": [list(a) for a in self.accesses]},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        )

    @property
    def id(self) -> str:
        """12 hex characters, equal for equal signatures on any machine."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()[:12]

    def describe(self) -> str:
        """One line for humans: ``kind: f0 <- f1 <- f2 | g0 <- g1``."""
        sides = " | ".join(" <- ".join(a) if a else "?" for a in self.accesses)
        return f"{self.kind}: {sides}" if sides else self.kind

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "accesses": [list(a) for a in self.accesses],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        """Inverse of to_json (the stored id is ignored: it is recomputed)."""
        return cls(
            kind=str(data["kind"]),
            accesses=tuple(tuple(str(f) for f in a) for a in data.get("accesses", ())),
        )


def signature_of(report: Report, depth: int = 3, drop: Sequence[str] = DEFAULT_DROP) -> Signature:
    """The signature of one report: its kind and the top ``depth`` significant
    frames of each stack that identifies it (see ``signature_stacks``)."""
    drop = tuple(drop)
    return Signature(
        kind=report.kind,
        accesses=tuple(_top_functions(s, depth, drop) for s in signature_stacks(report)),
    )


def group_by_signature(
    reports: Iterable[Report], depth: int = 3, drop: Sequence[str] = DEFAULT_DROP
) -> list[tuple[Signature, int, Report]]:
    """Distinct signatures with their count and first report, most frequent first
    (ties in order of first appearance)."""
    counts: dict[Signature, int] = {}
    first: dict[Signature, Report] = {}
    drop = tuple(drop)
    for report in reports:
        sig = signature_of(report, depth=depth, drop=drop)
        counts[sig] = counts.get(sig, 0) + 1
        first.setdefault(sig, report)
    order = {sig: i for i, sig in enumerate(counts)}
    ranked = sorted(counts, key=lambda s: (-counts[s], order[s]))
    return [(sig, counts[sig], first[sig]) for sig in ranked]


# --- target matching ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetRule:
    """Which reports are the race under study.

    ``functions``: every pattern must match a function among the top ``depth``
    significant frames of either access. ``files``: every pattern must match the
    source file of such a frame. A pattern with ``*`` or ``?`` is a glob
    (fnmatch, case-sensitive, ``[`` literal); a function pattern without them
    matches as a substring, a file pattern without them as a path suffix
    (``bytesobject.c``, ``Objects/bytesobject.c``). Function patterns are
    normalised like the frames, so a name copied from a report
    (``...::{closure#1}``) matches. ``kind=None`` accepts any kind.

    ``accesses="each"`` (the default) also demands that, for a report with two
    accesses, *each* access matches at least one function and one file pattern.
    A race is a pair: with a test harness whose std is not instrumented, TSAN
    pairs the test's own access with some unrelated write inside std, and that
    report must not count as the test's race. ``accesses="any"`` drops the
    per-access demand (the patterns may all sit on one side).
    """

    kind: str | None = "data race"
    functions: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    depth: int = 10
    accesses: str = "each"


def _has_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


@lru_cache(maxsize=1024)
def _single(pattern: str) -> re.Pattern[str]:
    return re.compile(_glob_regex(pattern))


# Rust prints a method of an inherent impl as `<crate::Type>::method`; its path, as a
# user writes it, is `crate::Type::method`. A pattern may name either.
_RUST_INHERENT = re.compile(r"^<([^<> ]+)>::")


def rust_path(function: str) -> str:
    """``<crate::Type>::method`` as ``crate::Type::method`` (anything else unchanged)."""
    return _RUST_INHERENT.sub(r"\1::", function)


_TEMPLATE_ARGS = re.compile(r"<[^<>]*>")


def without_template_args(function: str) -> str:
    """``Accumulator<long>::add(long)`` as ``Accumulator::add(long)``: a C++ (or Rust)
    user names a method of a generic type without its arguments, and a new user's
    ``Accumulator::add`` matched nothing. An operator whose name holds ``<`` or ``>``
    (``operator<<``, ``operator->``) is left whole: its brackets do not pair."""
    if "operator<" in function or "operator>" in function or "operator-" in function:
        return function
    while True:
        erased = _TEMPLATE_ARGS.sub("", function)
        if erased == function:
            return function
        function = erased


_QUALIFIERS = re.compile(r"(?:\s*(?:const|volatile|noexcept|&&|&))+\s*$")


def without_parameters(function: str) -> str:
    """``Counter::add(long) const`` as ``Counter::add``: the name a target should hold.

    A pattern matches a frame that contains it, so the shorter name matches the same
    frames and more: a commit that changed the parameter types (``Counter&`` to
    ``BasicCounter<long>&``, a rename of the class) without fixing the race kept racing
    under a target with parameters that no longer matched, and a bisect named that
    commit the fix. Only the final parameter list goes: ``operator()``'s own
    parentheses and a lambda's ``{lambda(int)}`` stay."""
    text = _QUALIFIERS.sub("", function)
    if not text.endswith(")"):
        return function
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            head = text[:i].rstrip()
            if not head or head.endswith(("::", "operator")):
                return function  # a bare `(...)` or `operator()` is a name, not a list
            return head
    return function


def _function_matches(pattern: str, functions: Sequence[str]) -> bool:
    pattern = normalise_function(pattern)
    alternates = {a for f in functions for a in (rust_path(f), without_template_args(f))}
    functions = [*functions, *sorted(alternates - set(functions))]
    if not _has_glob(pattern):
        return any(pattern in f for f in functions)
    regex = _single(pattern)
    return any(regex.match(f) is not None for f in functions)


def _file_matches(pattern: str, files: Sequence[str]) -> bool:
    pattern = pattern.strip()
    if not _has_glob(pattern):
        suffix = pattern.lstrip("/")
        return any(f in (pattern, suffix) or f.endswith("/" + suffix) for f in files)
    regex = _single(pattern)
    anywhere = _single("*/" + pattern.lstrip("/"))
    return any(regex.match(f) is not None or anywhere.match(f) is not None for f in files)


def matches(report: Report, rule: TargetRule, drop: Sequence[str] = DEFAULT_DROP) -> bool:
    """Whether ``report`` is the target race of ``rule``.

    Reports without memory accesses (lock-order-inversion, thread leak, ...) are
    matched against all their stacks.
    """
    if rule.kind is not None and report.kind != normalise_kind(rule.kind):
        return False
    stacks = report.access_stacks()
    if not stacks:
        stacks = [frames for _, frames in report.other_stacks]
    drop = tuple(drop)
    per_stack = [significant_frames(s, drop)[: rule.depth] for s in stacks]
    if (
        rule.accesses == "each"
        and report.current is not None
        and report.previous is not None
        and not all(access_matches(s, rule, drop) for s in stacks)
    ):
        return False
    frames = [f for fs in per_stack for f in fs]
    functions = [normalise_function(f.function) for f in frames]
    files = [f.file for f in frames if f.file]
    return all(_function_matches(p, functions) for p in rule.functions) and all(
        _file_matches(p, files) for p in rule.files
    )


def access_matches(stack: Sequence[Frame], rule: TargetRule, drop: Sequence[str]) -> bool:
    """One access against the per-access demand of an ``each`` rule: at least one
    function pattern and one file pattern among its top ``depth`` frames."""
    frames = significant_frames(stack, drop)[: rule.depth]
    fns = [normalise_function(f.function) for f in frames]
    fls = [f.file for f in frames if f.file]
    if rule.functions and not any(_function_matches(p, fns) for p in rule.functions):
        return False
    return not (rule.files and not any(_file_matches(p, fls) for p in rule.files))


# CPython itself: its executable or libpython by module (python3.13, python3.13t,
# libpython3.13t.so.1.0), else, for a frame TSAN printed without a module, its source tree.
_INTERPRETER_MODULE = re.compile(r"^(?:.*/)?(?:lib)?python3[\w.]*?(?:\.so[\d.]*)?$")
_INTERPRETER_FILE = re.compile(r"^(?:Objects|Python|Modules|Include|Parser)/")


def is_interpreter_frame(frame: Frame) -> bool:
    """A frame of CPython, not of the extension it runs.

    By module first: CPython's inline functions (``Py_INCREF``) compiled into an
    extension carry CPython's file names but are the extension's code.
    """
    if frame.module:
        return _INTERPRETER_MODULE.match(frame.module) is not None
    return _INTERPRETER_FILE.match(frame.file or "") is not None


def starts_outside_interpreter(report: Report, drop: Sequence[str] = DEFAULT_DROP) -> bool:
    """Whether an access of ``report`` has its top frame outside CPython.

    A racy extension makes races inside CPython too: an object it publishes without
    a barrier races later in the reference counts of whoever uses it (``Py_INCREF``
    in ``PyTuple_Pack``). Those show in as many runs as the extension's own race, and
    naming them would target the symptom; the race to name is the one whose top
    frame is the extension's.
    """
    for stack in report.access_stacks():
        frames = significant_frames(stack, tuple(drop))
        if frames and not is_interpreter_frame(frames[0]):
            return True
    return False


def names_interpreter_code(report: Report, rule: TargetRule, drop: Sequence[str]) -> bool:
    """Whether a pattern of ``rule`` names a frame of CPython in ``report``'s accesses:
    a target of CPython's code, not of an extension's."""
    frames = [
        f
        for stack in report.access_stacks()
        for f in significant_frames(stack, tuple(drop))
        if is_interpreter_frame(f)
    ]
    fns = [normalise_function(f.function) for f in frames]
    fls = [f.file for f in frames if f.file]
    return any(_function_matches(p, fns) for p in rule.functions) or any(
        _file_matches(p, fls) for p in rule.files
    )


def starts_inside_interpreter(report: Report, drop: Sequence[str] = DEFAULT_DROP) -> bool:
    """Whether each access of ``report`` has its top frame in CPython: a race of the
    interpreter's own code, which a target in an extension's code cannot become by a
    rename (a report with no access stack is neither)."""
    stacks = report.access_stacks()
    if not any(significant_frames(s, tuple(drop)) for s in stacks):
        return False
    return not starts_outside_interpreter(report, drop)


# The toolchain's libraries: Rust's (their sources under /rustc/<hash>/library/, or by
# path when a frame has no file), glibc (by module, or its source tree when inlined),
# and the C and C++ system headers (libstdc++'s containers, inlined into the project).
_RUST_LIBRARY = re.compile(r"/rustc/[0-9a-f]+/library/(?:std|core|alloc|test|panic_\w+)/")
_RUST_STD_FN = re.compile(r"^<*(?:std|core|alloc|test)::")
_GLIBC_FILE = re.compile(r"^(?:\.\.?/)+(?:nptl|sysdeps|stdlib|string|malloc|libio|elf)/")
_GLIBC_MODULE = re.compile(r"^(?:.*/)?(?:libc|libpthread|libm|libdl|ld-linux[\w.-]*)\.so")
_SYSTEM_HEADER = re.compile(r"^/usr/(?:local/)?include/|^/usr/lib/gcc/")


def is_rust_std_frame(frame: Frame) -> bool:
    """A frame of Rust's std, core, alloc or test: shipped precompiled without TSAN
    (unless rebuilt with -Zbuild-std), and inlined generics that are not the project's."""
    file = frame.file or ""
    return bool(_RUST_LIBRARY.search(file) or (not file and _RUST_STD_FN.match(frame.function)))


def is_glibc_frame(frame: Frame) -> bool:
    """A frame of glibc, which no TSAN build instruments."""
    return bool(_GLIBC_MODULE.match(frame.module or "") or _GLIBC_FILE.match(frame.file or ""))


# CPython's atomic wrappers (Include/cpython/pyatomic_gcc.h and its siblings): one line
# around a compiler builtin, inlined everywhere; "a race in _Py_atomic_store_ptr_release"
# names no code (sweep 15: a report's title, its suppression and a suggested target).
_PY_ATOMIC_FN = re.compile(r"^_Py_atomic_\w+$")
_PY_ATOMIC_FILE = re.compile(r"(?:^|/)pyatomic(?:_\w+)?\.h$")


def is_library_frame(frame: Frame) -> bool:
    """A frame of the toolchain's libraries, or a wrapper of CPython's that only forwards
    to one, rather than of code someone wrote: a target named after it (``core::ptr::
    read_volatile``, ``std::vector::push_back``, ``_Py_atomic_store_ptr_release``) would
    match the same call in every program."""
    return (
        is_rust_std_frame(frame)
        or is_glibc_frame(frame)
        or _SYSTEM_HEADER.match(frame.file or "") is not None
        or _PY_ATOMIC_FN.match(frame.function) is not None
        or _PY_ATOMIC_FILE.search(frame.file or "") is not None
    )


def is_runtime_frame(frame: Frame) -> bool:
    """A frame of the sanitizer runtime itself (by name, module or source file)."""
    regex = _compiled(_RUNTIME_DROP)
    name = normalise_function(frame.function)
    return regex is not None and any(
        v is not None and regex.match(v) is not None for v in (name, frame.module, frame.file)
    )
