/*
 * gen: stream the items of Python generators into C.
 *
 * pyproc_gen() starts a generator (plain or async) in a worker and returns
 * a stream; pyproc_next() hands out its items one by one while the
 * generator is still running.  Freeing a stream early closes the generator
 * in the worker.  Run from examples/: ../build/examples/gen
 */
#include <stdio.h>

#include "pyproc.h"

int main(void)
{
    pyproc_opts opts = {.workers = 2, .python_path = "mods"};
    pyproc_pool *pool;
    pyproc_call *stream;
    pyproc_msg *item;
    const char *k1, *k2;
    int rc, i, square;

    if ((rc = pyproc_pool_new(&pool, "gen", &opts)) < 0 ||
        (rc = pyproc_add_sub(pool, "act", "act", 0)) < 0) {
        fprintf(stderr, "gen: %s\n", pyproc_strerror(rc));
        return 1;
    }

    /* A plain generator of maps. */
    pyproc_gen(pool, "act.test.iterate", &stream, "i", 5);
    while ((rc = pyproc_next(stream, &item)) == 1) {
        pyproc_msg_read(item, "{sisi}", &k1, &i, &k2, &square);
        printf("iterate: %s=%d %s=%d\n", k1, i, k2, square);
        pyproc_msg_free(item);
    }
    pyproc_call_free(stream);

    /* An async generator: items come as the worker makes them. */
    pyproc_gen(pool, "act.test.ticks", &stream, "id", 3, 0.1);
    while ((rc = pyproc_next(stream, &item)) == 1) {
        pyproc_msg_read(item, "i", &i);
        printf("tick %d\n", i);
        pyproc_msg_free(item);
    }
    if (rc < 0)
        printf("stream failed: %s\n", pyproc_msg_error(item));
    pyproc_call_free(stream);

    /* Stop reading early: the generator is closed in the worker. */
    pyproc_gen(pool, "act.test.iterate", &stream, "i", 1000000);
    pyproc_next(stream, &item);
    pyproc_msg_free(item);
    pyproc_call_free(stream);
    printf("stopped a long stream after one item\n");

    pyproc_pool_free(pool);
    return 0;
}
