"""Scripts that run under other interpreters (the Python under test, the host's -S).

They import nothing from repro, and this directory holds nothing else, because it
becomes ``sys.path[0]`` (or a PYTHONPATH entry) of the interpreter that runs them.
"""
