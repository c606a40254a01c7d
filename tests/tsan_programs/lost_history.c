#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
int shared;
volatile int sink[1 << 16];
pthread_barrier_t bar;
static void write_shared(void) { shared = 42; }
static void *first(void *a) {
  (void)a;
  write_shared();
  /* Enough other work after the write that TSAN's per-thread history (history_size)
     no longer holds its stack when the race is found. */
  for (int r = 0; r < 400; r++)
    for (int i = 0; i < (1 << 16); i++) sink[i] = i + r;
  return 0;
}
static int read_shared(void) { return shared; }
static void *second(void *a) {
  (void)a;
  usleep(300000); /* after the first thread's write and its work, without ordering */
  return (void *)(long)read_shared();
}
int main(void) {
  pthread_t t1, t2;
  pthread_barrier_init(&bar, 0, 2);
  pthread_create(&t1, 0, first, 0);
  pthread_create(&t2, 0, second, 0);
  pthread_join(t1, 0);
  pthread_join(t2, 0);
  return 0;
}
