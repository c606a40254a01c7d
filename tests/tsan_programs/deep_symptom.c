/* The target race and a symptom of it through the same code. publish() stores an object
 * in `slot` with no barrier and consume() reads it (the target: publish | consume); then
 * consume() takes a reference to what it read, three calls down (count_use, incref,
 * bump), racing with publish()'s own initialisation of the count. That second race has
 * consume() at the fourth frame of an access: what an extension's half-published object
 * looks like when it later races in CPython's reference counts. */
#include <pthread.h>
#include <unistd.h>
struct obj {
  int refs;
};
static struct obj the_obj;
static struct obj *slot;
__attribute__((noinline)) static void publish(void) {
  the_obj.refs = 1;
  slot = &the_obj;
}
__attribute__((noinline)) static void bump(struct obj *o) { o->refs++; }
__attribute__((noinline)) static void incref(struct obj *o) { bump(o); }
__attribute__((noinline)) static void count_use(struct obj *o) { incref(o); }
__attribute__((noinline)) static struct obj *consume(void) {
  struct obj *o = slot;
  if (o)
    count_use(o);
  return o;
}
static void *producer(void *a) {
  (void)a;
  publish();
  return 0;
}
static void *consumer(void *a) {
  (void)a;
  usleep(100000); /* after the producer, with no ordering */
  return consume();
}
int main(void) {
  pthread_t t1, t2;
  pthread_create(&t1, 0, producer, 0);
  pthread_create(&t2, 0, consumer, 0);
  pthread_join(t1, 0);
  pthread_join(t2, 0);
  return 0;
}
