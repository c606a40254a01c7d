"""gh-128133: threads hash one fresh bytes object at the same moment.

The hash of a bytes object is computed on first use and cached in ob_shash; on a
free-threaded build without the fix, that cache is read and written with plain loads
and stores, so the first concurrent hash() is a data race. Rounds repeat the race
with a new object each time (the cache is written only once per object).
"""

import os
import sys
import threading

THREADS = int(os.environ.get("REPRO_THREADS", "8"))
ROUNDS = int(os.environ.get("REPRO_ROUNDS", "20"))

if "REPRO_SWITCH_INTERVAL" in os.environ:
    sys.setswitchinterval(float(os.environ["REPRO_SWITCH_INTERVAL"]))


def main() -> None:
    for _ in range(ROUNDS):
        x = b"hi" * 100000
        barrier = threading.Barrier(THREADS)

        def work(obj: bytes = x, b: threading.Barrier = barrier) -> None:
            b.wait()
            obj.__hash__()

        threads = [threading.Thread(target=work) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    main()
