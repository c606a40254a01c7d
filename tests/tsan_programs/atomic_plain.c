/* One thread stores a flag atomically, another reads it with a plain load. */
#include <pthread.h>
#include <stdio.h>

static int flag __attribute__((aligned(64)));
static int stored __attribute__((aligned(64)));

__attribute__((noinline)) static void atomic_writer(void) {
    __atomic_store_n(&flag, 1, __ATOMIC_RELAXED); /* MIXED: atomic store */
}

static void *writer_thread(void *arg) {
    (void)arg;
    atomic_writer();
    __atomic_store_n(&stored, 1, __ATOMIC_RELAXED);
    return NULL;
}

__attribute__((noinline)) static int plain_reader(void) {
    return flag; /* MIXED: plain load */
}

static void *reader_thread(void *arg) {
    (void)arg;
    printf("flag=%d\n", plain_reader());
    return NULL;
}

int main(void) {
    pthread_t a, b;
    pthread_create(&a, NULL, writer_thread, NULL);
    while (!__atomic_load_n(&stored, __ATOMIC_RELAXED)) {
    }
    pthread_create(&b, NULL, reader_thread, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}
