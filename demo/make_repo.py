#!/usr/bin/env python3
"""Create the demo repository: a small C job queue whose history has a race in it.

The history is generated, not shipped as a .git directory, so that it is reviewable
text and identical on every machine (fixed author dates give fixed commit shas).

  commit  3  "Publish results outside the lock"      introduces the race  (v1.0 is clean)
  commit 14  "Publish the result before unlocking"   fixes it             (v1.1 racy, v1.2 fixed)

A few commits in between do not build, as in real histories. The race is timing
dependent: under TSAN it shows in roughly a third to a half of the runs.

Usage: make_repo.py DEST [--force]
"""

from __future__ import annotations

import sys
from pathlib import Path

from history import main, write_history

HEADER = """\
#ifndef TICKETQ_H
#define TICKETQ_H
/* ticketq: hand results from a producer thread to a consumer thread. */
void tq_init(void);
void tq_publish(int job, long value);
int tq_poll(int last_seen, long *value);
void tq_heartbeat(void);
{extra_decls}#endif
"""

QUEUE_C = """\
#include <pthread.h>
#include "ticketq.h"

static pthread_mutex_t tq_lock = PTHREAD_MUTEX_INITIALIZER;
static int tq_ready;      /* last job published */
static long tq_result;    /* its value */
static long tq_beats;     /* producer liveness, for monitoring */
{extra_state}
void tq_init(void) {{
    pthread_mutex_lock(&tq_lock);
    tq_ready = 0;
    tq_result = 0;
    pthread_mutex_unlock(&tq_lock);
}}

{publish}

int tq_poll(int last_seen, long *value) {{
    pthread_mutex_lock(&tq_lock);
    int ready = tq_ready;
    if (ready != last_seen)
        *value = tq_result;
    pthread_mutex_unlock(&tq_lock);
    return ready;
}}

void tq_heartbeat(void) {{
    pthread_mutex_lock(&tq_lock);
    tq_beats++;
    pthread_mutex_unlock(&tq_lock);
}}
{extra_funcs}"""

PUBLISH_LOCKED = """\
void tq_publish(int job, long value) {
    pthread_mutex_lock(&tq_lock);
    tq_result = value;
    tq_ready = job;
    pthread_mutex_unlock(&tq_lock);
}"""

# The bug: the value is stored after the unlock, so a consumer that sees the new job
# number reads tq_result with no happens-before edge to this store.
PUBLISH_RACY = """\
void tq_publish(int job, long value) {
    /* Keep the critical section short: only the job number needs the lock. */
    pthread_mutex_lock(&tq_lock);
    tq_ready = job;
    pthread_mutex_unlock(&tq_lock);
    tq_result = value;
}"""

PUBLISH_FIXED = """\
void tq_publish(int job, long value) {
    /* The value must be stored before the job number is released (see v1.1). */
    pthread_mutex_lock(&tq_lock);
    tq_result = value;
    tq_ready = job;
    pthread_mutex_unlock(&tq_lock);
}"""

STRESS_C = """\
/* stress_test JOBS WORK_US POLL_US: one producer, one consumer, under TSAN. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "ticketq.h"

static int jobs = 2, work_us = 50, poll_us = 1500;
static void *producer(void *arg) {{
    (void)arg;
    /* A random phase against the consumer's polls for each job: on an idle machine both
       threads otherwise keep one rhythm, and a poll seldom lands between the unlock and
       the next lock (about 1% of runs, against 15-20% under load). */
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    for (int j = 1; j <= jobs; j++) {{
        usleep(rand_r(&seed) % (unsigned)poll_us);
        tq_publish(j, 2L * j);
        usleep(work_us);
        tq_heartbeat();
        usleep(work_us * 10);
    }}
    return NULL;
}}

static void *consumer(void *arg) {{
    long *sum = arg;
    int seen = 0;
    while (seen < jobs) {{
        long v = 0;
        int r = tq_poll(seen, &v);
        if (r != seen) {{
            seen = r;
            *sum += v;
        }}
        usleep(poll_us);
    }}
    return NULL;
}}

int main(int argc, char **argv) {{
    if (argc > 1) jobs = atoi(argv[1]);
    if (argc > 2) work_us = atoi(argv[2]);
    if (argc > 3) poll_us = atoi(argv[3]);
    tq_init();
    long sum = 0;
    pthread_t p, c;
    pthread_create(&p, NULL, producer, NULL);
    pthread_create(&c, NULL, consumer, &sum);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    printf("{banner} consumed sum=%ld\\n", sum);
    return 0;
}}
"""

MAKEFILE = """\
CC ?= cc
CFLAGS ?= -O2 -g
LDFLAGS ?=
OBJS = queue.o{extra_objs}

all: stress_test

stress_test: stress_test.o $(OBJS)
\t$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) -pthread

%.o: %.c ticketq.h
\t$(CC) $(CFLAGS) -c -o $@ $<

clean:
\trm -f *.o stress_test

.PHONY: all clean
"""

STATS_C = """\
#include "ticketq.h"

static long published_total;

void tq_stats_add(long value) { published_total += value; }
long tq_stats_total(void) { return published_total; }
"""

README = """\
# ticketq

A tiny hand-off queue between a producer thread and a consumer thread.
Build with `make`; `./stress_test JOBS WORK_US POLL_US` exercises it.
"""


def commit_plan() -> list[tuple[str, dict[str, object]]]:
    """Each step: subject and the state of the tree after it."""
    steps: list[tuple[str, dict[str, object]]] = []
    st: dict[str, object] = {
        "publish": PUBLISH_LOCKED,
        "banner": "ticketq 1.0",
        "stats": False,
        "broken": False,
        "readme_extra": "",
        "tag": None,
    }

    def step(subject: str, **changes: object) -> None:
        st.update({"tag": None, **changes})
        steps.append((subject, dict(st)))

    step("Initial ticketq: locked hand-off and a stress test", tag="v1.0")
    step("Document the build in the README", readme_extra="\nSee stress_test.c for usage.\n")
    step("Publish results outside the lock", publish=PUBLISH_RACY, banner="ticketq 1.1")
    step(
        "Add a changelog line for 1.1",
        readme_extra="\n1.1: shorter critical section.\n",
        tag="v1.1",
    )
    step("WIP: stats module (does not build yet)", broken=True)
    step("Finish the stats module", broken=False, stats=True)
    step("Mention the stats module", readme_extra="\n1.1: stats module.\n")
    step("Bump banner to 1.1.1", banner="ticketq 1.1.1")
    step("Rework the stats API (does not build)", broken=True)
    step("Fix the stats build", broken=False)
    step("README: usage of stress_test", readme_extra="\nUsage: stress_test 2 50 1500\n")
    step("Bump banner to 1.1.2", banner="ticketq 1.1.2")
    step("README wording", readme_extra="\nThe consumer polls; the producer publishes.\n")
    step("Publish the result before unlocking", publish=PUBLISH_FIXED)
    step("Tag 1.2", banner="ticketq 1.2", tag="v1.2")
    step("README: changelog for 1.2", readme_extra="\n1.2: fixed a data race in tq_publish.\n")
    step("Temporarily break the build while renaming", broken=True)
    step("Finish the rename", broken=False)
    step("Bump banner to 1.2.1", banner="ticketq 1.2.1")
    return steps


def write_tree(root: Path, st: dict[str, object]) -> None:
    stats = bool(st["stats"])
    broken = bool(st["broken"])
    extra_decls = "void tq_stats_add(long value);\nlong tq_stats_total(void);\n" if stats else ""
    (root / "ticketq.h").write_text(HEADER.format(extra_decls=extra_decls))
    extra_funcs = ""
    if broken:
        # A syntax error, as a half-finished commit would have.
        extra_funcs = "\nint tq_unfinished(void) {\n    return tq_ready +\n}\n"
    (root / "queue.c").write_text(
        QUEUE_C.format(publish=st["publish"], extra_state="", extra_funcs=extra_funcs)
    )
    (root / "stress_test.c").write_text(STRESS_C.format(banner=st["banner"]))
    (root / "Makefile").write_text(MAKEFILE.format(extra_objs=" stats.o" if stats else ""))
    if stats:
        (root / "stats.c").write_text(STATS_C)
    elif (root / "stats.c").exists():
        (root / "stats.c").unlink()
    (root / "README.md").write_text(README + str(st["readme_extra"]))


def make_repo(dest: Path, force: bool = False) -> Path:
    return write_history(dest, commit_plan(), write_tree, month=1, force=force)


def make_demo_recipe(work: Path, confidence: float | None = None) -> Path:
    """The demo repository under ``work`` and a copy of recipes/demo.yaml that points at
    it (the recipe's own path is relative to the repository's demo-work/).

    ``confidence``: the bisect's, instead of the recipe's 0.99. A test that checks the
    answer of a bisect of this race is wrong in up to 1% of its runs at 0.99 (the
    guarantee), and more when the machine's load moves the race's rate while it runs;
    over a suite of such tests that adds up."""
    repo = make_repo(work / "ticketq")
    text = (Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml").read_text()
    text = text.replace("../demo-work/ticketq", str(repo))
    if confidence is not None:
        assert text.count("  confidence: 0.99\n") == 1
        text = text.replace("  confidence: 0.99\n", f"  confidence: {confidence}\n")
    recipe = work / "demo.yaml"
    recipe.write_text(text)
    return recipe


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], __doc__, make_repo, "demo repository"))
