/* malloc() inside a signal handler: not async-signal-safe.
 * The volatile store keeps the compiler from removing the malloc/free pair. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile sig_atomic_t handled;

__attribute__((noinline)) static void on_signal(int sig) {
    (void)sig;
    volatile char *p = malloc(16); /* UNSAFE: malloc */
    p[0] = 1;
    free((void *)p);
    handled = 1;
}

int main(void) {
    struct sigaction act = {0};
    act.sa_handler = on_signal;
    sigaction(SIGPROF, &act, NULL);
    kill(getpid(), SIGPROF);
    while (!handled) {
        usleep(1000);
    }
    printf("handled=%d\n", (int)handled);
    return 0;
}
