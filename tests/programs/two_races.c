/* Two different races in one program: the target (in `target_writer`) and an
 * unrelated one (in `noise_writer`), so a test can check they are counted apart. */
#include <pthread.h>
#include <stdio.h>

static int target_var __attribute__((aligned(64)));
static int noise_var __attribute__((aligned(64)));
static int go __attribute__((aligned(64)));

__attribute__((noinline)) static void target_writer(void) { target_var++; }
__attribute__((noinline)) static void noise_writer(void) { noise_var++; }

static void *t1(void *arg) {
    (void)arg;
    target_writer();
    noise_writer();
    __atomic_store_n(&go, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void *t2(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&go, __ATOMIC_RELAXED)) {
    }
    target_writer();
    noise_writer();
    return NULL;
}

int main(void) {
    pthread_t a, b;
    pthread_create(&a, NULL, t1, NULL);
    pthread_create(&b, NULL, t2, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("%d %d\n", target_var, noise_var);
    return 0;
}
