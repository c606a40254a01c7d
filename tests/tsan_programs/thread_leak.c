/* A thread that finishes but is never joined (nor detached). */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static int finished;

static void *short_lived(void *arg) {
    (void)arg;
    __atomic_store_n(&finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

__attribute__((noinline)) static void spawn_and_forget(void) {
    pthread_t t;
    pthread_create(&t, NULL, short_lived, NULL); /* LEAK: create */
}

int main(void) {
    spawn_and_forget();
    while (!__atomic_load_n(&finished, __ATOMIC_ACQUIRE)) {
    }
    usleep(100 * 1000); /* let the thread exit completely */
    puts("done");
    return 0;
}
