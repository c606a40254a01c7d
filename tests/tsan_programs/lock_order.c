/* Two mutexes taken in opposite orders by two threads (one after the other, so
 * the program never actually deadlocks; TSAN still sees the cycle). */
#include <pthread.h>
#include <stdio.h>

static pthread_mutex_t mutex_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mutex_b = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) static void lock_a_then_b(void) {
    pthread_mutex_lock(&mutex_a);
    pthread_mutex_lock(&mutex_b); /* ORDER: b after a */
    pthread_mutex_unlock(&mutex_b);
    pthread_mutex_unlock(&mutex_a);
}

__attribute__((noinline)) static void lock_b_then_a(void) {
    pthread_mutex_lock(&mutex_b);
    pthread_mutex_lock(&mutex_a); /* ORDER: a after b */
    pthread_mutex_unlock(&mutex_a);
    pthread_mutex_unlock(&mutex_b);
}

static void *first(void *arg) {
    (void)arg;
    lock_a_then_b();
    return NULL;
}

static void *second(void *arg) {
    (void)arg;
    lock_b_then_a();
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, first, NULL);
    pthread_join(t, NULL);
    pthread_create(&t, NULL, second, NULL);
    pthread_join(t, NULL);
    puts("done");
    return 0;
}
