/* A race TSAN reports, then a segfault: TSAN's own handler catches the SIGSEGV,
 * prints "ERROR: ThreadSanitizer: SEGV on unknown address" and exits 66, the exit
 * status of a run that only reported races. The run was cut short, so it is no
 * evidence that the target is absent (sweep 15 counted such runs as misses).
 * The hand-off is as in racy_counter.c: a relaxed flag, no happens-before edge.
 */
#include <pthread.h>
#include <stdio.h>

static int counter __attribute__((aligned(64)));
static int first_done __attribute__((aligned(64)));
static int *volatile nowhere __attribute__((aligned(64)));

__attribute__((noinline)) static void bump_counter(void) {
    counter += 1; /* RACE: counter */
}

__attribute__((noinline)) static void *worker(void *arg) {
    (void)arg;
    bump_counter();
    return NULL;
}

__attribute__((noinline)) static void *first_worker(void *arg) {
    worker(arg);
    __atomic_store_n(&first_done, 1, __ATOMIC_RELAXED);
    return NULL;
}

int main(void) {
    pthread_t a, b;
    pthread_create(&a, NULL, first_worker, NULL);
    while (!__atomic_load_n(&first_done, __ATOMIC_RELAXED)) {
    }
    pthread_create(&b, NULL, worker, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("counter=%d\n", counter);
    fflush(stdout);
    return *nowhere; /* SIGSEGV: reading address 0 */
}
