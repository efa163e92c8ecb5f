/*
 * callback: Python in a worker asks the host a question.
 *
 * `await pyproc.ret(payload)` in a worker (also `hub.proc.worker.ret`)
 * calls the pool's callback on the host, and what the callback returns is
 * the value of that await.  Callbacks run on the pool's callback thread,
 * so they are answered while main() is blocked in pyproc_func().  Run from
 * examples/: ../build/examples/callback
 */
#include <stdio.h>
#include <string.h>

#include "pyproc.h"

static int answer(pyproc_pool *pool, int ind, pyproc_msg *payload, pyproc_msg **reply, void *data)
{
    const char *question;

    (void)pool;
    (void)data;
    if (pyproc_msg_read(payload, "s", &question) < 0)
        return -EBADMSG; /* becomes pyproc.CallbackError in the worker */
    printf("worker %d asks: %s\n", ind, question);
    return pyproc_msg_new(reply, "i", strcmp(question, "meaning of life?") == 0 ? 42 : 0);
}

int main(void)
{
    pyproc_opts opts = {.workers = 2, .python_path = "mods", .callback = answer};
    pyproc_pool *pool;
    pyproc_msg *m;
    const char *s;
    int rc;

    if ((rc = pyproc_pool_new(&pool, "callback", &opts)) < 0 ||
        (rc = pyproc_add_sub(pool, "act", "act", 0)) < 0) {
        fprintf(stderr, "callback: %s\n", pyproc_strerror(rc));
        return 1;
    }
    rc = pyproc_func(pool, "act.test.ask_host", &m, "s", "meaning of life?");
    if (rc == 0 && pyproc_msg_read(m, "s", &s) == 0)
        printf("%s\n", s);
    else
        printf("failed: %s\n", pyproc_strerror(rc));
    pyproc_msg_free(m);
    pyproc_pool_free(pool);
    return 0;
}
