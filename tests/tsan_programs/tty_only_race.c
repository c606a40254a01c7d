/* Races only when its output is a terminal, as a REPL or a progress bar might: the
   second thread is started only if isatty(1). Says which case it was on stdout. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
int shared;
static void *writer(void *a) {
  (void)a;
  shared = 1; /* tty_write */
  return 0;
}
int main(void) {
  int tty = isatty(1);
  printf("isatty(1)=%d\n", tty);
  fflush(stdout);
  if (!tty) return 0;
  pthread_t t;
  pthread_create(&t, 0, writer, 0);
  int seen = shared; /* tty_read */
  pthread_join(t, 0);
  return seen > 1;
}
