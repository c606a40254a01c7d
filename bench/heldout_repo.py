#!/usr/bin/env python3
"""Generate a C project shaped like issue 15's held-out case: ~200 commits, an intermittent race.

The project, ``sensord``, keeps the last reading of a sensor: a sampler thread publishes it and
a reporter thread polls for it. Early in the history (commit 2) the sampler starts storing the
value after releasing the lock, so a reporter that sees the new sequence number reads the value
with no happens-before edge to the store; the fix (at a commit chosen by the caller) moves the
store back under the lock. In between, ordinary commits (a version bump, a changelog line, a
small helper) and a few that do not build (a half-finished edit, repaired by the next commit).

Why the race is intermittent, and what sets its rate: the sampler publishes once, at a random
moment in the reporter's polling period (``./sensor_stress WINDOW_US POLL_US``), then takes the
lock again ``WINDOW_US`` later (a heartbeat), which orders its store before any later poll.
TSAN reports the race only when one of the reporter's polls falls in that window, so the rate
is about ``WINDOW_US / POLL_US`` (plus the scheduling noise of a loaded machine); the bench
measures it with ``repro stress`` rather than trusting the formula.

``make_history(dest, fix_at, broken, seed)``: the same arguments give the same commit shas
(fixed dates and author), so the method runs of one trial see one repository. Passing
``broken=()`` gives the same history with every commit buildable (for tools without a skip).
``inner_window=0.5``: the commit right after the racy tag sends the heartbeat after half the
window, so every racy commit inside the range shows the race at about half the tag's rate
(issue 15's item 3: a later commit made the window narrower).

Usage: heldout_repo.py DEST [--commits 205] [--fix-at 120] [--broken 30,77,140,181] [--seed 0]
                       [--inner-window 0.5]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INTRODUCED_AT = 2  # commit index (0-based) that introduces the race
RACY_TAG = "v2.0"  # tagged a few commits after the race is introduced
RACY_AT = 4
NARROWED_AT = RACY_AT + 1  # with inner_window < 1: the commit that shortens the window
HEARTBEAT = "usleep((useconds_t)window_us);"

HEADER = """\
#ifndef SENSOR_H
#define SENSOR_H
/* sensord: hand the last sensor reading from a sampler thread to a reporter thread. */
void sensor_init(void);
void sensor_publish(int seq, long value);
int sensor_poll(int last_seen, long *value);
void sensor_heartbeat(void);
const char *sensor_version(void);
{helpers}#endif
"""

SENSOR_C = """\
#include <pthread.h>
#include "sensor.h"
#include "version.h"

static pthread_mutex_t sensor_lock = PTHREAD_MUTEX_INITIALIZER;
static int sensor_seq;       /* sequence number of the last reading */
static long sensor_value;    /* the reading itself */
static long sensor_beats;    /* sampler liveness */

void sensor_init(void) {{
    pthread_mutex_lock(&sensor_lock);
    sensor_seq = 0;
    sensor_value = 0;
    pthread_mutex_unlock(&sensor_lock);
}}

{publish}

int sensor_poll(int last_seen, long *value) {{
    pthread_mutex_lock(&sensor_lock);
    int seq = sensor_seq;
    if (seq != last_seen)
        *value = sensor_value;
    pthread_mutex_unlock(&sensor_lock);
    return seq;
}}

void sensor_heartbeat(void) {{
    pthread_mutex_lock(&sensor_lock);
    sensor_beats++;
    pthread_mutex_unlock(&sensor_lock);
}}

const char *sensor_version(void) {{ return SENSORD_VERSION; }}
{broken}"""

PUBLISH_LOCKED = """\
void sensor_publish(int seq, long value) {
    pthread_mutex_lock(&sensor_lock);
    sensor_value = value;
    sensor_seq = seq;
    pthread_mutex_unlock(&sensor_lock);
}"""

# The bug: the value is stored after the unlock.
PUBLISH_RACY = """\
void sensor_publish(int seq, long value) {
    /* Only the sequence number needs the lock; keep the critical section short. */
    pthread_mutex_lock(&sensor_lock);
    sensor_seq = seq;
    pthread_mutex_unlock(&sensor_lock);
    sensor_value = value;
}"""

PUBLISH_FIXED = """\
void sensor_publish(int seq, long value) {
    /* The value must be stored before the sequence number is released. */
    pthread_mutex_lock(&sensor_lock);
    sensor_value = value;
    sensor_seq = seq;
    pthread_mutex_unlock(&sensor_lock);
}"""

BROKEN = "\nint sensor_unfinished(void) {\n    return sensor_seq +\n}\n"

STRESS_C = """\
/* sensor_stress WINDOW_US POLL_US: one reading published at a random moment of a polling
   period; the sampler's heartbeat comes WINDOW_US after the publish. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "sensor.h"

static int window_us = 500, poll_us = 5000;
static unsigned seed;

static void *sampler(void *arg) {
    (void)arg;
    usleep((useconds_t)(rand_r(&seed) % (unsigned)poll_us));
    sensor_publish(1, 42);
    usleep((useconds_t)window_us);
    sensor_heartbeat();
    return NULL;
}

static void *reporter(void *arg) {
    long *sum = arg;
    int seen = 0;
    while (seen < 1) {
        long v = 0;
        int s = sensor_poll(seen, &v);
        if (s != seen) {
            seen = s;
            *sum += v;
        }
        usleep((useconds_t)poll_us);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) window_us = atoi(argv[1]);
    if (argc > 2) poll_us = atoi(argv[2]);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    seed = (unsigned)ts.tv_nsec ^ (unsigned)getpid();
    sensor_init();
    long sum = 0;
    pthread_t s, r;
    pthread_create(&s, NULL, sampler, NULL);
    pthread_create(&r, NULL, reporter, &sum);
    pthread_join(s, NULL);
    pthread_join(r, NULL);
    printf("sensord %s: reported %ld\\n", sensor_version(), sum);
    return 0;
}
"""

MAKEFILE = """\
CC ?= cc
CFLAGS ?= -O1 -g
LDFLAGS ?=
OBJS = sensor.o util.o

all: sensor_stress

sensor_stress: sensor_stress.o $(OBJS)
\t$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) -pthread

%.o: %.c sensor.h version.h
\t$(CC) $(CFLAGS) -c -o $@ $<

clean:
\trm -f *.o sensor_stress

.PHONY: all clean
"""

UTIL_C = """\
#include "sensor.h"

/* Small helpers, one added now and then. */
{helpers}"""

README = """\
# sensord

The last reading of a sensor, handed from a sampler thread to a reporter thread.
`make`, then `./sensor_stress WINDOW_US POLL_US`.
"""


@dataclass(frozen=True)
class History:
    """What a generated repository holds: where the race is fixed and which commits break."""

    path: Path
    commits: int
    fix_at: int  # index of the first commit where the race is gone
    broken: tuple[int, ...]  # indices of the commits that do not build
    racy_ref: str
    fixed_ref: str

    def sha(self, index: int) -> str:
        return _git(self.path, "rev-parse", f"main~{self.commits - 1 - index}")


def pick_case(commits: int, seed: int, n_broken: int = 4) -> tuple[int, tuple[int, ...]]:
    """A fix position well inside the range and ``n_broken`` unbuildable commits away from it.

    The broken commits stay at least two commits from the fix, so that the answer is one
    commit for every method (a skipped neighbour of the fix would leave a range).
    """
    rng = random.Random(seed)
    lo, hi = RACY_AT + 10, commits - 5
    fix_at = rng.randint(lo, hi)
    pool = [i for i in range(RACY_AT + 2, commits - 2) if abs(i - fix_at) > 2]
    broken = tuple(sorted(rng.sample(pool, n_broken)))
    return fix_at, broken


def _git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _subject(i: int, rng: random.Random) -> str:
    return rng.choice(
        [
            f"Bump version to 2.{i // 10}.{i % 10}",
            f"Changelog: note {i}",
            f"util: add helper {i}",
            f"README: wording ({i})",
        ]
    )


def make_history(
    dest: Path,
    commits: int,
    fix_at: int,
    broken: Sequence[int],
    seed: int = 0,
    inner_window: float = 1.0,
) -> History:
    """Create the repository at ``dest`` (replacing it); fixed dates give fixed shas."""
    if not 0.0 < inner_window <= 1.0:
        raise ValueError(f"inner_window must be in (0, 1], got {inner_window}")
    if HEARTBEAT not in STRESS_C:
        raise ValueError("the stress program lost its heartbeat line; inner_window needs it")
    if not RACY_AT < fix_at < commits:
        raise ValueError(f"fix_at must be in ({RACY_AT}, {commits}), got {fix_at}")
    bad = set(broken)
    if bad & {0, RACY_AT, NARROWED_AT, fix_at, fix_at - 1, commits - 1}:
        raise ValueError("the ends, the fix and its parent must build")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Sam Sensor",
        "GIT_AUTHOR_EMAIL": "sam@example.org",
        "GIT_COMMITTER_NAME": "Sam Sensor",
        "GIT_COMMITTER_EMAIL": "sam@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_SYSTEM": "/dev/null",
    }
    _git(dest, "init", "-q", "-b", "main", env=env)
    rng = random.Random(seed)
    helpers: list[int] = []
    changelog: list[str] = []
    for i in range(commits):
        if i == 0:
            subject, publish = "Initial sensord: locked hand-off and a stress test", PUBLISH_LOCKED
        elif i < INTRODUCED_AT:
            subject, publish = "README: how to build", PUBLISH_LOCKED
        elif i == INTRODUCED_AT:
            subject, publish = "Store the reading outside the lock", PUBLISH_RACY
        elif i < fix_at:
            subject, publish = _subject(i, rng), PUBLISH_RACY
        elif i == fix_at:
            subject = "Store the reading before releasing the sequence number"
            publish = PUBLISH_FIXED
        else:
            subject, publish = _subject(i, rng), PUBLISH_FIXED
        narrowed = inner_window < 1.0 and i >= NARROWED_AT
        if narrowed and i == NARROWED_AT:
            subject = "sampler: send the heartbeat sooner"
        if i in bad:
            subject = f"WIP: rework sensor_poll ({i})"
        if subject.startswith("util:"):
            helpers.append(i)
        changelog.append(f"- {subject}")
        helper_decls = "".join(f"int sensor_helper_{h}(int x);\n" for h in helpers)
        helper_defs = "".join(
            f"int sensor_helper_{h}(int x) {{ return x * {h % 7 + 2} + {h}; }}\n" for h in helpers
        )
        (dest / "sensor.h").write_text(HEADER.format(helpers=helper_decls))
        (dest / "sensor.c").write_text(
            SENSOR_C.format(publish=publish, broken=BROKEN if i in bad else "")
        )
        (dest / "util.c").write_text(UTIL_C.format(helpers=helper_defs))
        (dest / "version.h").write_text(f'#define SENSORD_VERSION "2.{i // 10}.{i % 10}"\n')
        stress_c = STRESS_C
        if narrowed:
            stress_c = STRESS_C.replace(
                HEARTBEAT, f"usleep((useconds_t)(window_us * {inner_window!r}));"
            )
        (dest / "sensor_stress.c").write_text(stress_c)
        (dest / "Makefile").write_text(MAKEFILE)
        (dest / "README.md").write_text(README)
        (dest / "CHANGES").write_text("\n".join(changelog) + "\n")
        date = f"@{1_700_000_000 + 3600 * i} +0000"
        cenv = {**env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        _git(dest, "add", "-A", env=cenv)
        _git(dest, "commit", "-q", "-m", subject, env=cenv)
        if i == RACY_AT:
            _git(dest, "tag", RACY_TAG, env=cenv)
    return History(dest, commits, fix_at, tuple(sorted(bad)), RACY_TAG, "main")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--commits", type=int, default=205)
    ap.add_argument("--fix-at", type=int, default=None)
    ap.add_argument("--broken", default=None, help="comma-separated indices; '' for none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inner-window", type=float, default=1.0)
    args = ap.parse_args(argv)
    fix_at, broken = pick_case(args.commits, args.seed)
    if args.fix_at is not None:
        fix_at = args.fix_at
    if args.broken is not None:
        broken = tuple(int(b) for b in args.broken.split(",") if b)
    h = make_history(args.dest, args.commits, fix_at, broken, args.seed, args.inner_window)
    print(
        f"{h.path}: {h.commits} commits, racy {h.racy_ref} (index {RACY_AT}), "
        f"fixed at index {h.fix_at} ({h.sha(h.fix_at)[:10]}), broken {list(h.broken)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
