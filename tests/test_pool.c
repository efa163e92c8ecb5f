/*
 * End to end: pools of real workers, plain Python functions, arguments,
 * results, errors and bad input.
 */
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <valgrind/valgrind.h>

#include "e2e.h"

static pyproc_pool *pool; /* 3 workers, shared by the tests of the group */

static int setup(void **state)
{
    (void)state;
    pool = e2e_pool(3);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pyproc_pool_free(pool);
    return 0;
}

static void round_robin_reaches_every_worker(void **state)
{
    int64_t pids[3] = {0};
    int seen = 0;

    (void)state;
    assert_int_equal(pyproc_workers(pool), 3);
    for (int i = 0; i < 20; i++) {
        int64_t pid = e2e_int(pool, "t.basic.pid");
        int known = 0;
        for (int j = 0; j < seen; j++)
            known |= pids[j] == pid;
        if (!known) {
            assert_true(seen < 3);
            pids[seen++] = pid;
        }
    }
    assert_int_equal(seen, 3);
    /* pyproc_ind_func reaches the worker it names. */
    for (int i = 0; i < 3; i++) {
        pyproc_msg *m;
        int index, pid;
        assert_int_equal(pyproc_ind_func(pool, i, "t.basic.where", &m, NULL), 0);
        assert_int_equal(pyproc_msg_read(m, "[ii]", &index, &pid), 0);
        assert_int_equal(index, i);
        pyproc_msg_free(m);
    }
}

static void positional_and_keyword_arguments(void **state)
{
    pyproc_msg *m;
    double d;
    int a, b, k;
    const char *s;

    (void)state;
    assert_int_equal(pyproc_func(pool, "t.basic.scale", &m, "ii|sd", 2, 3, "factor", 1.5), 0);
    assert_int_equal(pyproc_msg_read(m, "d", &d), 0);
    assert_true(d == 7.5);
    pyproc_msg_free(m);

    assert_int_equal(pyproc_func(pool, "t.basic.scale", &m, "ii", 2, 3), 0);
    assert_int_equal(pyproc_msg_read(m, "d", &d), 0);
    assert_true(d == 5.0);
    pyproc_msg_free(m);

    assert_int_equal(pyproc_func(pool, "t.basic.echo", &m, "ii|sb", 1, 2, "flag", 1), 0);
    assert_int_equal(pyproc_msg_read(m, "[[ii]{sb}]", &a, &b, &s, &k), 0);
    assert_int_equal(a, 1);
    assert_int_equal(b, 2);
    assert_string_equal(s, "flag");
    assert_int_equal(k, 1);
    pyproc_msg_free(m);
}

static pyproc_msg *echo1(const char *fmt, ...)
{
    pyproc_msg *arg, *m = NULL;
    const void *data;
    size_t len;
    va_list ap;

    va_start(ap, fmt);
    assert_int_equal(pyproc_msg_newv(&arg, fmt, ap), 0);
    va_end(ap);
    data = pyproc_msg_data(arg, &len);
    int rc = pyproc_func(pool, "t.basic.echo_one", &m, "m", data, len);
    if (rc < 0)
        fprintf(stderr, "%s\n", pyproc_msg_error(m));
    assert_int_equal(rc, 0);
    /* What came back is the very encoding that went out. */
    size_t got_len;
    const void *got = pyproc_msg_data(m, &got_len);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, data, len);
    pyproc_msg_free(arg);
    return m;
}

static void every_format_code_round_trips(void **state)
{
    pyproc_msg *m;
    int b, i;
    int64_t I;
    uint64_t u;
    double d;
    const char *s;
    const void *y;
    size_t n;

    (void)state;
    m = echo1("n");
    assert_int_equal(pyproc_msg_type(m), PYPROC_NIL);
    assert_int_equal(pyproc_msg_read(m, "n"), 0);
    pyproc_msg_free(m);

    m = echo1("[bb]", 1, 0);
    assert_int_equal(pyproc_msg_read(m, "[bb]", &b, &i), 0);
    assert_int_equal(b, 1);
    assert_int_equal(i, 0);
    pyproc_msg_free(m);

    m = echo1("[iiII]", INT32_MIN, -1, INT64_MIN, INT64_MAX);
    int i1, i2;
    int64_t I2;
    assert_int_equal(pyproc_msg_read(m, "[iiII]", &i1, &i2, &I, &I2), 0);
    assert_int_equal(i1, INT32_MIN);
    assert_int_equal(i2, -1);
    assert_true(I == INT64_MIN && I2 == INT64_MAX);
    pyproc_msg_free(m);

    m = echo1("u", UINT64_MAX);
    assert_int_equal(pyproc_msg_type(m), PYPROC_UINT);
    assert_int_equal(pyproc_msg_read(m, "u", &u), 0);
    assert_true(u == UINT64_MAX);
    pyproc_msg_free(m);

    m = echo1("[dd]", -2.5, 1e300);
    double d2;
    assert_int_equal(pyproc_msg_read(m, "[dd]", &d, &d2), 0);
    assert_true(d == -2.5 && d2 == 1e300);
    pyproc_msg_free(m);

    m = echo1("[ss]", "h\xc3\xa9llo \xe2\x9c\x93", "");
    const char *s2;
    assert_int_equal(pyproc_msg_read(m, "[ss]", &s, &s2), 0);
    assert_string_equal(s, "h\xc3\xa9llo \xe2\x9c\x93");
    assert_string_equal(s2, "");
    pyproc_msg_free(m);

    static const char bin[] = {'a', 0, 'b', 0, 0};
    m = echo1("[yy]", bin, sizeof bin, "", (size_t)0);
    const void *y2;
    size_t n2;
    assert_int_equal(pyproc_msg_read(m, "[yy]", &y, &n, &y2, &n2), 0);
    assert_int_equal(n, sizeof bin);
    assert_memory_equal(y, bin, sizeof bin);
    assert_int_equal(n2, 0);
    pyproc_msg_free(m);

    m = echo1("[i[s{si}]{s[n]}]", 1, "x", "k", 2, "list", NULL);
    int one, two;
    const char *x, *k, *l;
    assert_int_equal(pyproc_msg_read(m, "[i[s{si}]{s[n]}]", &one, &x, &k, &two, &l), 0);
    assert_int_equal(one, 1);
    assert_string_equal(x, "x");
    assert_string_equal(k, "k");
    assert_int_equal(two, 2);
    assert_string_equal(l, "list");
    pyproc_msg_free(m);

    /* m splices raw msgpack: [1, "x"] */
    static const char raw[] = {(char)0x92, 0x01, (char)0xa1, 'x'};
    m = echo1("m", raw, sizeof raw);
    assert_int_equal(pyproc_msg_read(m, "[is]", &one, &x), 0);
    assert_int_equal(one, 1);
    assert_string_equal(x, "x");
    pyproc_msg_free(m);

    /* Python saw the types the codes promise. */
    assert_int_equal(pyproc_func(pool, "t.basic.types_of", &m, "nbiIudsy[]{}m", 1, 2, (int64_t)3,
                                 (uint64_t)4, 5.0, "s", "y", (size_t)1, raw, sizeof raw),
                     0);
    const char *t[11];
    assert_int_equal(pyproc_msg_read(m, "[sssssssssss]", &t[0], &t[1], &t[2], &t[3], &t[4], &t[5],
                                     &t[6], &t[7], &t[8], &t[9], &t[10]),
                     0);
    const char *want[] = {"NoneType", "bool",  "int",  "int",  "int", "float",
                          "str",      "bytes", "list", "dict", "list"};
    for (int j = 0; j < 11; j++)
        assert_string_equal(t[j], want[j]);
    pyproc_msg_free(m);
}

static void exception_carries_type_message_traceback(void **state)
{
    pyproc_msg *m = NULL;
    const char *e;

    (void)state;
    assert_int_equal(pyproc_func(pool, "t.basic.fail", &m, "s", "boom"), PYPROC_EREMOTE);
    e = pyproc_msg_error(m);
    assert_non_null(e);
    assert_int_equal(strncmp(e, "KeyError: 'boom'\n", 17), 0);
    assert_non_null(strstr(e, "Traceback (most recent call last):"));
    assert_non_null(strstr(e, "e2e/basic.py"));
    assert_non_null(strstr(e, "in fail"));
    assert_null(pyproc_msg_data(m, NULL));
    pyproc_msg_free(m);

    assert_int_equal(pyproc_func(pool, "t.basic.fail_custom", &m, NULL), PYPROC_EREMOTE);
    assert_int_equal(strncmp(pyproc_msg_error(m), "e2e.basic.Custom: custom failure", 32), 0);
    pyproc_msg_free(m);

    /* A wrong number of arguments is Python's TypeError, and so on. */
    assert_int_equal(pyproc_func(pool, "t.basic.fail", &m, NULL), PYPROC_EREMOTE);
    assert_int_equal(strncmp(pyproc_msg_error(m), "TypeError", 9), 0);
    pyproc_msg_free(m);

    /* A result that cannot travel is an error, and the worker lives on. */
    assert_int_equal(pyproc_func(pool, "t.basic.unsendable", &m, NULL), PYPROC_EREMOTE);
    assert_non_null(strstr(pyproc_msg_error(m), "cannot send object of type"));
    pyproc_msg_free(m);
    assert_true(e2e_int(pool, "t.basic.pid") > 0);
}

static void unknown_reference_is_enoent(void **state)
{
    static const char *const refs[] = {"t.basic.nope", "t.nomodule.f", "nosub.basic.f", "t",
                                       "t..f"};
    (void)state;
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        pyproc_msg *m = NULL;
        assert_int_equal(pyproc_func(pool, refs[i], &m, NULL), -ENOENT);
        assert_non_null(strstr(pyproc_msg_error(m), "reference"));
        pyproc_msg_free(m);
    }
    assert_true(e2e_int(pool, "t.basic.pid") > 0);
}

static void list_of_unknown_length_walked(void **state)
{
    (void)state;
    for (int n = 0; n < 40; n += 13) {
        pyproc_msg *m, *item;
        int v;
        assert_int_equal(pyproc_func(pool, "t.basic.countdown", &m, "i", n), 0);
        assert_int_equal(pyproc_msg_type(m), PYPROC_LIST);
        assert_int_equal(pyproc_msg_len(m), n);
        for (int i = 0; i < n; i++) {
            assert_int_equal(pyproc_msg_at(m, (size_t)i, &item, NULL), 0);
            assert_int_equal(pyproc_msg_type(item), PYPROC_INT);
            assert_int_equal(pyproc_msg_read(item, "i", &v), 0);
            assert_int_equal(v, n - i);
            pyproc_msg_free(item);
        }
        assert_int_equal(pyproc_msg_at(m, (size_t)n, &item, NULL), -ERANGE);
        pyproc_msg_free(m);
    }

    pyproc_msg *m, *key, *val;
    const char *s;
    assert_int_equal(pyproc_func(pool, "t.basic.echo_one", &m, "{sisy}", "a", 1, "b", "zz",
                                 (size_t)2),
                     0);
    assert_int_equal(pyproc_msg_type(m), PYPROC_MAP);
    assert_int_equal(pyproc_msg_len(m), 2);
    assert_int_equal(pyproc_msg_at(m, 1, &key, &val), 0);
    assert_int_equal(pyproc_msg_read(key, "s", &s), 0);
    assert_string_equal(s, "b");
    assert_int_equal(pyproc_msg_type(val), PYPROC_BYTES);
    assert_int_equal(pyproc_msg_len(val), 2);
    pyproc_msg_free(key);
    pyproc_msg_free(val);
    pyproc_msg_free(m);
}

struct thread_arg {
    int tag;
    int failures;
};

static void *hammer(void *p)
{
    struct thread_arg *a = p;
    for (int n = 0; n < 2000; n++) {
        pyproc_msg *m = NULL;
        int tag = -1, got = -1;
        if (pyproc_func(pool, "t.basic.tagged", &m, "ii", a->tag, n) < 0 ||
            pyproc_msg_read(m, "[ii]", &tag, &got) < 0 || tag != a->tag || got != n)
            a->failures++;
        pyproc_msg_free(m);
    }
    return NULL;
}

static void threads_get_their_own_answers(void **state)
{
    pthread_t t[4];
    struct thread_arg a[4];

    (void)state;
    for (int i = 0; i < 4; i++) {
        a[i] = (struct thread_arg){.tag = 100 + i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].failures, 0);
    }
}

static void thousands_of_tracked_calls(void **state)
{
    enum { N = 5000 };
    pyproc_call **calls = calloc(N, sizeof *calls);
    int per_worker[3] = {0};

    (void)state;
    for (int i = 0; i < N; i++) {
        int ind = -1;
        assert_int_equal(pyproc_track_func(pool, &ind, &calls[i], "t.basic.echo_one", "i", i), 0);
        assert_true(ind >= 0 && ind < 3);
        assert_int_equal(pyproc_call_worker(calls[i]), ind);
        per_worker[ind]++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(per_worker[i] > 0);
    for (int i = N - 1; i >= 0; i--) {
        pyproc_msg *m;
        int v;
        assert_int_equal(pyproc_wait(calls[i], &m, -1), 0);
        assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
        assert_int_equal(v, i);
        pyproc_msg_free(m);
        pyproc_call_free(calls[i]);
    }
    free(calls);
}

static void wait_times_out_then_succeeds(void **state)
{
    pyproc_call *c;
    pyproc_msg *m = NULL;
    int v;

    (void)state;
    assert_int_equal(pyproc_track_func(pool, NULL, &c, "t.aio.nap", "di", 0.3, 7), 0);
    assert_int_equal(pyproc_wait(c, &m, 10), -ETIMEDOUT);
    assert_null(m);
    assert_int_equal(pyproc_wait(c, &m, -1), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(pyproc_wait(c, NULL, 0), -EALREADY);
    pyproc_msg_free(m);
    pyproc_call_free(c);
    /* Freeing a call that is still running is fine too. */
    assert_int_equal(pyproc_track_func(pool, NULL, &c, "t.aio.nap", "d", 0.05), 0);
    pyproc_call_free(c);
}

static void bad_arguments_send_nothing(void **state)
{
    pyproc_msg *m = NULL;
    pyproc_call *c = NULL;
    int64_t before, after;

    (void)state;
    before = 0;
    assert_int_equal(pyproc_ind_func(pool, 0, "t.basic.count", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &before), 0);
    pyproc_msg_free(m);
    m = NULL;

    assert_int_equal(pyproc_func(NULL, "t.basic.count", &m, NULL), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, 0, NULL, &m, NULL), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, 0, "t.basic.count", &m, "q"), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, 0, "t.basic.count", &m, "[i"), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, 0, "t.basic.count", &m, "i]", 1), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, 0, "t.basic.count", &m, "{i}", 1), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, 0, "t.basic.count", &m, "|i", 1), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, 0, "t.basic.count", &m, "s", NULL), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, 3, "t.basic.count", &m, NULL), -EINVAL);
    assert_int_equal(pyproc_ind_func(pool, -1, "t.basic.count", &m, NULL), -EINVAL);
    assert_int_equal(pyproc_track_func(pool, NULL, NULL, "t.basic.count", NULL), -EINVAL);
    assert_int_equal(pyproc_wait(NULL, &m, 0), -EINVAL);
    assert_null(m);
    assert_null(c);
    assert_int_equal(pyproc_add_sub(pool, "", "e2e", 0), -EINVAL);
    assert_int_equal(pyproc_add_sub(NULL, "x", "e2e", 0), -EINVAL);

    assert_int_equal(pyproc_ind_func(pool, 0, "t.basic.count", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &after), 0);
    pyproc_msg_free(m);
    assert_true(after == before + 1);
}

static void sub_init_runs_once_per_worker(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        pyproc_msg *m;
        int n;
        assert_int_equal(pyproc_ind_func(pool, i, "t.basic.inits", &m, NULL), 0);
        assert_int_equal(pyproc_msg_read(m, "i", &n), 0);
        assert_int_equal(n, 1);
        pyproc_msg_free(m);
    }
}

static void add_sub_that_does_not_import(void **state)
{
    pyproc_msg *m = NULL;

    (void)state;
    assert_int_equal(pyproc_add_sub_err(pool, "bad", "no_such_package_here", 0, &m),
                     PYPROC_EREMOTE);
    assert_non_null(strstr(pyproc_msg_error(m), "no_such_package_here"));
    assert_non_null(strstr(pyproc_msg_error(m), "ModuleNotFoundError"));
    pyproc_msg_free(m);
    /* The failed sub is not left half mounted. */
    assert_int_equal(pyproc_func(pool, "bad.x.y", &m, NULL), -ENOENT);
    pyproc_msg_free(m);
}

static void forked_child_gets_echild(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pyproc_msg *m = NULL;
        int rc = pyproc_func(pool, "t.basic.pid", &m, NULL);
        _exit(rc == -ECHILD && pyproc_workers(pool) == -ECHILD ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(e2e_int(pool, "t.basic.pid") > 0);
}

static void missing_or_broken_worker_fails_fast(void **state)
{
    pyproc_opts opts = {.workers = 2, .worker_path = "/nonexistent/pyproc-worker"};
    pyproc_pool *p = NULL;
    double t0;

    (void)state;
    t0 = e2e_now();
    /* Valgrind (make check-valgrind) makes posix_spawn's vfork a fork, which
     * cannot hand the exec error back: such a worker merely dies. */
    if (!RUNNING_ON_VALGRIND) {
        assert_int_equal(pyproc_pool_new(&p, "missing", &opts), -ENOENT);
        opts.worker_path = "tests/e2e.h"; /* not executable */
        assert_int_equal(pyproc_pool_new(&p, "noexec", &opts), -EACCES);
    }
    opts.worker_path = "/bin/false"; /* runs, then dies before it is ready */
    assert_int_equal(pyproc_pool_new(&p, "dies", &opts), PYPROC_EWORKER);
    assert_null(p);
    assert_true(e2e_now() - t0 < 1.0);
    assert_int_equal(pyproc_pool_new(&p, NULL, NULL), -EINVAL);
    assert_int_equal(pyproc_pool_new(NULL, "x", NULL), -EINVAL);
}

static void messages_over_the_limit(void **state)
{
    pyproc_opts opts = {.workers = 1, .python_path = "tests/py", .max_msg_bytes = 4096};
    pyproc_pool *p = NULL;
    pyproc_msg *m = NULL;
    static char big[5000];
    int64_t before, after;

    (void)state;
    assert_int_equal(pyproc_pool_new(&p, "small", &opts), 0);
    assert_int_equal(pyproc_add_sub(p, "t", "e2e", 0), 0);
    assert_int_equal(pyproc_func(p, "t.basic.count", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &before), 0);
    pyproc_msg_free(m);
    m = NULL;
    /* Too large to send: refused before anything reaches the worker. */
    assert_int_equal(pyproc_func(p, "t.basic.count", &m, "y", big, sizeof big), -EMSGSIZE);
    assert_null(m);
    /* Too large to answer: the worker says so and lives on. */
    assert_int_equal(pyproc_func(p, "t.basic.make_bytes", &m, "i", 5000), -EMSGSIZE);
    assert_non_null(strstr(pyproc_msg_error(m), "over the pool's limit"));
    pyproc_msg_free(m);
    assert_int_equal(pyproc_func(p, "t.basic.count", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "I", &after), 0);
    pyproc_msg_free(m);
    assert_true(after == before + 1);
    pyproc_pool_free(p);
}

static void freeing_a_pool_cancels_calls_in_flight(void **state)
{
    pyproc_pool *p = e2e_pool(1);
    pyproc_call *c;
    pyproc_msg *m = NULL;

    (void)state;
    assert_int_equal(pyproc_track_func(p, NULL, &c, "t.aio.nap", "d", 30.0), 0);
    pyproc_pool_free(p);
    assert_int_equal(pyproc_wait(c, &m, 1000), -ECANCELED);
    assert_non_null(pyproc_msg_error(m));
    pyproc_msg_free(m);
    pyproc_call_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_robin_reaches_every_worker),
        cmocka_unit_test(positional_and_keyword_arguments),
        cmocka_unit_test(every_format_code_round_trips),
        cmocka_unit_test(exception_carries_type_message_traceback),
        cmocka_unit_test(unknown_reference_is_enoent),
        cmocka_unit_test(list_of_unknown_length_walked),
        cmocka_unit_test(threads_get_their_own_answers),
        cmocka_unit_test(thousands_of_tracked_calls),
        cmocka_unit_test(wait_times_out_then_succeeds),
        cmocka_unit_test(bad_arguments_send_nothing),
        cmocka_unit_test(sub_init_runs_once_per_worker),
        cmocka_unit_test(add_sub_that_does_not_import),
        cmocka_unit_test(forked_child_gets_echild),
        cmocka_unit_test(missing_or_broken_worker_fails_fast),
        cmocka_unit_test(messages_over_the_limit),
        cmocka_unit_test(freeing_a_pool_cancels_calls_in_flight),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
