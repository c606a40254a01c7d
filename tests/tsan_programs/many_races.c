/* Thousands of reports of other races, the target race (write_shared against
   write_shared) once, then thousands more: with suppress_equal_stacks=0 and
   suppress_equal_addresses=0 the log is tens of megabytes and the target's report
   sits in its middle. argv[1]: rounds of noise on each side. */
#include <pthread.h>
#include <stdlib.h>
int noise[64];
int shared;
static void *noisy(void *a) {
  long rounds = (long)a;
  for (long r = 0; r < rounds; r++)
    for (int i = 0; i < 64; i++) noise[i]++;
  return 0;
}
__attribute__((noinline)) static void write_shared(void) { shared = 1; }
static void *target(void *a) {
  (void)a;
  write_shared();
  return 0;
}
static void pair(void *(*body)(void *), long arg) {
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], 0, body, (void *)arg);
  for (int i = 0; i < 2; i++) pthread_join(t[i], 0);
}
int main(int argc, char **argv) {
  long rounds = argc > 1 ? atol(argv[1]) : 100;
  pair(noisy, rounds);
  pair(target, 0);
  pair(noisy, rounds);
  return 0;
}
