/* Two races on one counter: bump() against bump() in two writer threads, and, when
 * run as `bump_peek read`, bump() against peek() in a reader thread too.
 *
 * Each thread reaches its access through a caller (do_bump, do_peek), one frame
 * below the top. Each thread waits on a relaxed flag for the one before it, which
 * gives TSAN no happens-before edge, so each report shows in every run.
 */
#include <pthread.h>
#include <string.h>

static long counter __attribute__((aligned(64)));
static int done __attribute__((aligned(64)));

__attribute__((noinline)) static void bump(void) {
    counter += 1; /* RACE: counter */
}

__attribute__((noinline)) static long peek(void) {
    return counter; /* RACE: counter */
}

__attribute__((noinline)) static void do_bump(void) {
    bump();
    __asm__ volatile("" ::: "memory"); /* no tail call: do_bump stays on the stack */
}

__attribute__((noinline)) static long do_peek(void) {
    long n = peek();
    __asm__ volatile("" ::: "memory");
    return n;
}

static void wait_for(int n) {
    while (__atomic_load_n(&done, __ATOMIC_RELAXED) < n) {
    }
}

static void *writer(void *arg) {
    wait_for((int)(long)arg);
    do_bump();
    __atomic_fetch_add(&done, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void *reader(void *arg) {
    wait_for((int)(long)arg);
    (void)do_peek();
    __atomic_fetch_add(&done, 1, __ATOMIC_RELAXED);
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t t[3];
    int n = 0;
    pthread_create(&t[n++], NULL, writer, (void *)0L);
    pthread_create(&t[n++], NULL, writer, (void *)1L);
    if (argc > 1 && strcmp(argv[1], "read") == 0)
        pthread_create(&t[n++], NULL, reader, (void *)2L);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    return 0;
}
