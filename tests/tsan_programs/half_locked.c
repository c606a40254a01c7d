/* A counter written under a mutex by one thread and read without it by another:
 * the report names the mutex held by the writer ("mutexes: write M0") and shows
 * where that mutex was created. */
#include <pthread.h>
#include <stdio.h>

static int balance __attribute__((aligned(64)));
static int deposited __attribute__((aligned(64)));
static pthread_mutex_t balance_lock;

__attribute__((noinline)) static void deposit(void) {
    pthread_mutex_lock(&balance_lock);
    balance += 10; /* LOCKED: write */
    pthread_mutex_unlock(&balance_lock);
}

static void *depositor(void *arg) {
    (void)arg;
    deposit();
    __atomic_store_n(&deposited, 1, __ATOMIC_RELAXED);
    return NULL;
}

__attribute__((noinline)) static int peek_balance(void) {
    return balance; /* UNLOCKED: read */
}

static void *auditor(void *arg) {
    (void)arg;
    printf("balance=%d\n", peek_balance());
    return NULL;
}

int main(void) {
    pthread_t a, b;
    pthread_mutex_init(&balance_lock, NULL); /* MUTEX: init */
    pthread_create(&a, NULL, depositor, NULL);
    while (!__atomic_load_n(&deposited, __ATOMIC_RELAXED)) {
    }
    pthread_create(&b, NULL, auditor, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}
