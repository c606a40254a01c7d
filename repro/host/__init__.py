"""What this machine is and can do: probes that builds, runs and ``repro doctor`` share.

Each probe lives here once so that a build, a run and the doctor never reach different
answers about the same machine (which clang, whether setarch is needed, which
symbolizer reads which binaries).
"""
