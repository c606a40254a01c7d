/* A heap block freed by one thread and then written by the main thread.
 * The relaxed flag orders nothing for TSAN, so the use races with the free. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static int *buffer;
static int released;

__attribute__((noinline)) static void release_buffer(void) {
    free(buffer); /* UAF: free */
}

static void *releaser(void *arg) {
    (void)arg;
    release_buffer();
    __atomic_store_n(&released, 1, __ATOMIC_RELAXED);
    return NULL;
}

__attribute__((noinline)) static void use_buffer(void) {
    buffer[0] = 42; /* UAF: use */
}

int main(void) {
    pthread_t t;
    buffer = malloc(sizeof(int) * 4);
    buffer[0] = 1;
    pthread_create(&t, NULL, releaser, NULL);
    while (!__atomic_load_n(&released, __ATOMIC_RELAXED)) {
    }
    use_buffer();
    pthread_join(t, NULL);
    puts("done");
    return 0;
}
