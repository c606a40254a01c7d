/* A race between two functions named as Cython names a module's functions
 * (frozenlist's FrozenList.freeze and FrozenList._check_frozen): the name's parts
 * after their lengths, the method after its place in the module. */
#include <pthread.h>
#include <stdio.h>

static int frozen;

__attribute__((noinline)) void __pyx_pf_10frozenlist_11_frozenlist_10FrozenList_2freeze(void) {
    frozen = 1;
}

__attribute__((noinline)) int __pyx_f_10frozenlist_11_frozenlist_10FrozenList__check_frozen(void) {
    return frozen;
}

static void *freezer(void *arg) {
    (void)arg;
    __pyx_pf_10frozenlist_11_frozenlist_10FrozenList_2freeze();
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, freezer, NULL);
    int seen = __pyx_f_10frozenlist_11_frozenlist_10FrozenList__check_frozen();
    pthread_join(t, NULL);
    printf("%d\n", seen);
    return 0;
}
