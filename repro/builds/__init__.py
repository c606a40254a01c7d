"""Building the things a race is reproduced with: CPython and the extension under test."""

from repro.builds.cache import BuildCache, BuildError, cache_key
from repro.builds.cpython import PythonBuild, ensure_cpython
from repro.builds.progress import BuildProgress, NullProgress, RichBuildProgress

__all__ = [
    "BuildCache",
    "BuildError",
    "BuildProgress",
    "NullProgress",
    "PythonBuild",
    "RichBuildProgress",
    "cache_key",
    "ensure_cpython",
]
