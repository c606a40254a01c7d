/* A plain int incremented by two threads with no synchronisation.
 *
 * The second thread starts only after the first has finished its loop, but the
 * hand-off uses a relaxed atomic flag, which gives TSAN no happens-before edge.
 * That makes the report deterministic: thread T2's first access (a read)
 * races with T1's last access (a write) to the same counter.
 */
#include <pthread.h>
#include <stdio.h>

static int counter;
static int first_done;

__attribute__((noinline)) static void increment_counter(void) {
    counter += 1; /* RACE: counter */
}

__attribute__((noinline)) static void *worker(void *arg) {
    (void)arg;
    increment_counter();
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
    return 0;
}
