/*
 * End to end: coroutines in workers, and the I/O that user code does on
 * the worker's asyncio loop while the loop also serves the ring.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "e2e.h"

static pyproc_pool *pool; /* 2 workers */

/* ---- a tiny HTTP server on loopback, run by the test ---- */

static int http_fd = -1;
static int http_port;
static _Atomic int http_stop;
static _Atomic int http_served;
static pthread_t http_thread;

static void http_answer(int c)
{
    char req[2048], path[256] = "/", resp[512];
    size_t got = 0;
    ssize_t n;

    while (got < sizeof req - 1 && (n = read(c, req + got, sizeof req - 1 - got)) > 0) {
        got += (size_t)n;
        req[got] = 0;
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    req[got] = 0;
    sscanf(req, "GET %255s", path);
    int body = snprintf(resp, sizeof resp, "hello %s", path);
    char head[128];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n",
                      body);
    if (write(c, head, (size_t)hl) < 0 || write(c, resp, (size_t)body) < 0)
        return;
    atomic_fetch_add(&http_served, 1);
}

static void *http_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&http_stop)) {
        struct pollfd pfd = {.fd = http_fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int c = accept(http_fd, NULL, NULL);
        if (c < 0)
            continue;
        http_answer(c);
        close(c);
    }
    return NULL;
}

static void http_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;

    http_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(http_fd >= 0);
    assert_int_equal(bind(http_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(http_fd, 256), 0);
    assert_int_equal(getsockname(http_fd, (struct sockaddr *)&a, &len), 0);
    http_port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&http_thread, NULL, http_main, NULL), 0);
}

static void http_stop_now(void)
{
    atomic_store(&http_stop, 1);
    pthread_join(http_thread, NULL);
    close(http_fd);
}

static int setup(void **state)
{
    (void)state;
    pool = e2e_pool(2);
    http_start();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pyproc_pool_free(pool);
    http_stop_now();
    return 0;
}

/* Call and expect an int. */
static int call_int(const char *ref, const char *fmt, ...)
{
    pyproc_msg *m = NULL;
    va_list ap;
    int v = 0;

    va_start(ap, fmt);
    int rc = pyproc_funcv(pool, ref, &m, fmt, ap);
    va_end(ap);
    if (rc < 0 && m)
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    assert_int_equal(rc, 0);
    assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
    pyproc_msg_free(m);
    return v;
}

static void coroutines_answer(void **state)
{
    (void)state;
    assert_int_equal(call_int("t.aio.double", "i", 21), 42);
    assert_int_equal(call_int("t.aio.sync_returns_coro", NULL), 42);
    assert_int_equal(call_int("t.aio.nap", "di", 0.01, 5), 5);
    assert_int_equal(call_int("t.aio.call_later", "di", 0.02, 9), 9);
}

static void first_step_runs_in_a_task(void **state)
{
    pyproc_msg *m;
    int has_task, named;
    const char *s;

    (void)state;
    assert_int_equal(pyproc_func(pool, "t.aio.in_task", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[bb]", &has_task, &named), 0);
    assert_true(has_task && named);
    pyproc_msg_free(m);

    assert_int_equal(pyproc_func(pool, "t.aio.timeout_fires", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, "timed out");
    pyproc_msg_free(m);

    assert_int_equal(pyproc_func(pool, "t.aio.group", &m, "i", 5), 0);
    int v[5];
    assert_int_equal(pyproc_msg_read(m, "[iiiii]", &v[0], &v[1], &v[2], &v[3], &v[4]), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(v[i], 2 * i);
    pyproc_msg_free(m);
}

static void fifty_fetches_at_once(void **state)
{
    enum { N = 50 };
    pyproc_call *c[N];
    char path[32];

    (void)state;
    atomic_store(&http_served, 0);
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "/p%d", i);
        assert_int_equal(pyproc_track_func(pool, NULL, &c[i], "t.aio.fetch", "is", http_port, path),
                         0);
    }
    for (int i = 0; i < N; i++) {
        pyproc_msg *m = NULL;
        int status;
        const char *body;
        char want[32];
        int rc = pyproc_wait(c[i], &m, 10000);
        if (rc < 0 && m)
            fprintf(stderr, "%s\n", pyproc_msg_error(m));
        assert_int_equal(rc, 0);
        assert_int_equal(pyproc_msg_read(m, "[is]", &status, &body), 0);
        assert_int_equal(status, 200);
        snprintf(want, sizeof want, "hello /p%d", i);
        assert_string_equal(body, want);
        pyproc_msg_free(m);
        pyproc_call_free(c[i]);
    }
    assert_int_equal(atomic_load(&http_served), N);
}

static void aiohttp_client_works(void **state)
{
    pyproc_call *c[4];

    (void)state;
    for (int i = 0; i < 4; i++)
        assert_int_equal(pyproc_track_func(pool, NULL, &c[i], "t.aio.fetch_aiohttp", "is",
                                           http_port, "/aio"),
                         0);
    for (int i = 0; i < 4; i++) {
        pyproc_msg *m = NULL;
        int status;
        const char *body;
        int rc = pyproc_wait(c[i], &m, 10000);
        if (rc < 0 && m)
            fprintf(stderr, "%s\n", pyproc_msg_error(m));
        assert_int_equal(rc, 0);
        assert_int_equal(pyproc_msg_read(m, "[is]", &status, &body), 0);
        assert_int_equal(status, 200);
        assert_string_equal(body, "hello /aio");
        pyproc_msg_free(m);
        pyproc_call_free(c[i]);
    }
}

static void executor_and_subprocess(void **state)
{
    pyproc_msg *m;
    int x, other_thread, rc;
    const char *out;

    (void)state;
    assert_int_equal(pyproc_func(pool, "t.aio.in_executor", &m, "i", 11), 0);
    assert_int_equal(pyproc_msg_read(m, "[ib]", &x, &other_thread), 0);
    assert_int_equal(x, 11);
    assert_true(other_thread);
    pyproc_msg_free(m);

    assert_int_equal(pyproc_func(pool, "t.aio.subprocess_echo", &m, "s", "from a child"), 0);
    assert_int_equal(pyproc_msg_read(m, "[is]", &rc, &out), 0);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "from a child");
    pyproc_msg_free(m);
}

static void error_after_suspending(void **state)
{
    pyproc_msg *m = NULL;

    (void)state;
    assert_int_equal(pyproc_func(pool, "t.aio.raise_after", &m, "d", 0.01), PYPROC_EREMOTE);
    assert_int_equal(strncmp(pyproc_msg_error(m), "ValueError: raised after a sleep", 32), 0);
    assert_non_null(strstr(pyproc_msg_error(m), "in raise_after"));
    pyproc_msg_free(m);
}

static void five_hundred_sleepers_at_once(void **state)
{
    enum { N = 500 };
    pyproc_call **c = calloc(N, sizeof *c);
    double t0 = e2e_now();

    (void)state;
    for (int i = 0; i < N; i++)
        assert_int_equal(pyproc_track_func(pool, NULL, &c[i], "t.aio.nap", "di", 0.2, i), 0);
    for (int i = 0; i < N; i++) {
        pyproc_msg *m;
        int v;
        assert_int_equal(pyproc_wait(c[i], &m, -1), 0);
        assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
        assert_int_equal(v, i);
        pyproc_msg_free(m);
        pyproc_call_free(c[i]);
    }
    double took = e2e_now() - t0;
    printf("500 calls of asyncio.sleep(0.2) on 2 workers: %.3f s\n", took);
    /* One after another they would take 50 s per worker. */
    assert_true(took < 1.0);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(coroutines_answer),
        cmocka_unit_test(first_step_runs_in_a_task),
        cmocka_unit_test(fifty_fetches_at_once),
        cmocka_unit_test(aiohttp_client_works),
        cmocka_unit_test(executor_and_subprocess),
        cmocka_unit_test(error_after_suspending),
        cmocka_unit_test(five_hundred_sleepers_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
