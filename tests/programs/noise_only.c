/* Only an unrelated race: a stress run targeting another function must count 0 hits. */
#include <pthread.h>
#include <stdio.h>

static int noise_var __attribute__((aligned(64)));
static int go __attribute__((aligned(64)));

__attribute__((noinline)) static void noise_writer(void) { noise_var++; }

static void *t1(void *arg) {
    (void)arg;
    noise_writer();
    __atomic_store_n(&go, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void *t2(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&go, __ATOMIC_RELAXED)) {
    }
    noise_writer();
    return NULL;
}

int main(void) {
    pthread_t a, b;
    pthread_create(&a, NULL, t1, NULL);
    pthread_create(&b, NULL, t2, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("%d\n", noise_var);
    return 0;
}
