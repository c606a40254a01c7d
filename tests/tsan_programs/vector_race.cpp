// Two threads append to one std::vector without a lock: the race is inside libstdc++'s
// push_back (inlined from /usr/include/c++), called from the program's own functions.
#include <pthread.h>
#include <vector>
static std::vector<int> items;
__attribute__((noinline)) static void add_item(int v) { items.push_back(v); }
__attribute__((noinline)) static void add_other(int v) { items.push_back(v + 1); }
static void *first(void *) {
  for (int i = 0; i < 100; i++) add_item(i);
  return nullptr;
}
static void *second(void *) {
  for (int i = 0; i < 100; i++) add_other(i);
  return nullptr;
}
int main() {
  pthread_t a, b;
  pthread_create(&a, nullptr, first, nullptr);
  pthread_create(&b, nullptr, second, nullptr);
  pthread_join(a, nullptr);
  pthread_join(b, nullptr);
  return items.size() > 1000;
}
