/* gh-128133 as PyO3 met it: Py_CompileString from several threads at once.
 *
 * The compiler de-duplicates constants by hashing them. One-byte bytes objects are
 * process-wide singletons, so threads compiling `b'\xNN'` at the same moment hash the
 * same object, whose hash cache (ob_shash) is then written and read concurrently.
 * Each round uses another byte value: a singleton's hash is computed only once.
 *
 * Built against the CPython under test:
 *   cc compile_string.c $(python3-config --cflags --embed --ldflags) */
#include <Python.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static int nthreads = 8;
static int rounds = 50;
static int current_round;
static pthread_barrier_t barrier;

static void *compile_worker(void *arg) {
    (void)arg;
    char source[64];
    snprintf(source, sizeof source, "x = b'\\x%02x'\n", current_round);
    pthread_barrier_wait(&barrier);
    PyGILState_STATE st = PyGILState_Ensure();
    PyObject *code = Py_CompileString(source, "<repro>", Py_file_input);
    if (code == NULL)
        PyErr_Print();
    Py_XDECREF(code);
    PyGILState_Release(st);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) nthreads = atoi(argv[1]);
    if (getenv("REPRO_THREADS")) nthreads = atoi(getenv("REPRO_THREADS"));
    if (getenv("REPRO_ROUNDS")) rounds = atoi(getenv("REPRO_ROUNDS"));
    if (rounds > 255) rounds = 255;
    Py_Initialize();
    pthread_t *th = calloc((size_t)nthreads, sizeof(pthread_t));
    Py_BEGIN_ALLOW_THREADS
    for (int r = 1; r <= rounds; r++) {
        current_round = r;
        pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
        for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, compile_worker, NULL);
        for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&barrier);
    }
    Py_END_ALLOW_THREADS
    free(th);
    return Py_FinalizeEx() < 0 ? 1 : 0;
}
