// A race inside a lambda (two threads add to one counter). Built with -DEARLIER, the
// program has one more lambda above it, as the next commit of a project might: clang
// then names the racing lambda main::$_2 instead of main::$_1.
#include <thread>
static int counter;
int main() {
#ifdef EARLIER
  auto twice = [](int v) { return 2 * v; };
#endif
  auto other = [](int v) { return v + 1; };
  auto bump = [](int v) {
    for (int i = 0; i < 1000; i++) counter += v;
  };
  std::thread a(bump, 1), b(bump, 2);
  a.join();
  b.join();
#ifdef EARLIER
  counter = twice(counter);
#endif
  return other(counter) == 0;
}
