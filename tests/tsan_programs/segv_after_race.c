/* racy_counter.c's race, then a segfault: TSAN's own handler catches the SIGSEGV,
 * prints "ERROR: ThreadSanitizer: SEGV on unknown address" and exits 66, the exit
 * status of a run that only reported races. The run was cut short, so it is no
 * evidence that the target is absent (sweep 15 counted such runs as misses).
 */
#include <stdio.h>

#define main racy_counter_main
#include "racy_counter.c"
#undef main

static int *volatile nowhere;

int main(void) {
    racy_counter_main();
    fflush(stdout);
    return *nowhere; /* SIGSEGV: reading address 0 */
}
