/* An intermittent race: the publisher stores `result` after releasing the lock, and the
 * reader sees it without a happens-before edge only when its poll lands in a short
 * window. Under TSAN it shows in a fraction of the runs, like real races do. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int ready;
static long result;
static int jobs = 3, work_us = 100, poll_us = 1000;

__attribute__((noinline)) static void publish(int job) {
    pthread_mutex_lock(&lock);
    ready = job;
    pthread_mutex_unlock(&lock);
    result = 2L * job; /* the bug */
}

__attribute__((noinline)) static int poll_result(int seen, long *out) {
    pthread_mutex_lock(&lock);
    int r = ready;
    if (r != seen) *out = result;
    pthread_mutex_unlock(&lock);
    return r;
}

static void *producer(void *arg) {
    (void)arg;
    for (int j = 1; j <= jobs; j++) {
        publish(j);
        usleep(work_us);
        pthread_mutex_lock(&lock);
        pthread_mutex_unlock(&lock);
        usleep(work_us * 10);
    }
    return NULL;
}

static void *consumer(void *arg) {
    long *sum = arg;
    int seen = 0;
    while (seen < jobs) {
        long v = 0;
        int r = poll_result(seen, &v);
        if (r != seen) { seen = r; *sum += v; }
        usleep(poll_us);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) jobs = atoi(argv[1]);
    long sum = 0;
    pthread_t p, c;
    pthread_create(&p, NULL, producer, NULL);
    pthread_create(&c, NULL, consumer, &sum);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    printf("sum=%ld\n", sum);
    return 0;
}
