/*
 * End to end: what a user debugging a failure gets.  Each worker's stdout
 * and stderr reach the host line by line, behind "[pool/index] " on the
 * host's stderr or through the output callback; pyproc_stats() counts
 * calls, errors, calls in flight and restarts per worker index.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

/* ---- output ---- */

struct line {
    int ind, fd;
    char text[64];
};

static struct {
    pthread_mutex_t lock;
    struct line lines[4096];
    int n;
    pyproc_pool *pool; /* the pool the callback was given */
    bool bad_args;
} got = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void collect(pyproc_pool *pool, int ind, int fd, const char *line, size_t len, void *data)
{
    pthread_mutex_lock(&got.lock);
    if ((got.pool && pool != got.pool) || data != &got || line[len] != 0)
        got.bad_args = true;
    got.pool = pool;
    if (got.n < 4096) {
        struct line *l = &got.lines[got.n++];
        l->ind = ind;
        l->fd = fd;
        snprintf(l->text, sizeof l->text, "%.*s", (int)len, line);
    }
    pthread_mutex_unlock(&got.lock);
}

static int count_lines(int ind, int fd, const char *text)
{
    int n = 0;

    pthread_mutex_lock(&got.lock);
    for (int i = 0; i < got.n; i++)
        n += got.lines[i].ind == ind && got.lines[i].fd == fd &&
             (!text || strcmp(got.lines[i].text, text) == 0);
    pthread_mutex_unlock(&got.lock);
    return n;
}

/* Lines come on the service thread, after the call's answer maybe. */
static bool wait_lines(int ind, int fd, int n)
{
    for (int i = 0; i < 500; i++) {
        if (count_lines(ind, fd, NULL) >= n)
            return true;
        usleep(10000);
    }
    return false;
}

static void output_callback_gets_lines(void **state)
{
    pyproc_opts opts = {.workers = 2, .output = collect, .output_data = &got};
    pyproc_msg *m = NULL;

    (void)state;
    pyproc_pool *p = e2e_pool_opts(opts);
    assert_int_equal(pyproc_ind_func(p, 1, "t.hygiene.say", &m, NULL), 0);
    pyproc_msg_free(m);
    assert_true(wait_lines(1, 1, 2));
    assert_int_equal(count_lines(1, 1, "first line"), 1);
    assert_int_equal(count_lines(1, 1, "second line"), 1);
    pthread_mutex_lock(&got.lock);
    for (int i = 0; i < got.n; i++)
        if (got.lines[i].ind == 1 && got.lines[i].fd == 1 &&
            strcmp(got.lines[i].text, "first line") == 0)
            assert_string_equal(got.lines[i + 1].text, "second line");
    pthread_mutex_unlock(&got.lock);
    /* Many lines, in order, none lost or cut. */
    assert_int_equal(pyproc_ind_func(p, 0, "t.hygiene.say_a_lot", &m, "i", 2000), 0);
    pyproc_msg_free(m);
    assert_true(wait_lines(0, 1, 2000));
    /* The stderr text has no newline: it comes when the worker ends. */
    assert_int_equal(count_lines(1, 2, NULL), 0);
    pyproc_pool_free(p);
    assert_int_equal(count_lines(1, 2, "no newline"), 1);
    assert_int_equal(count_lines(0, 2, NULL), 0);
    assert_false(got.bad_args);
    assert_ptr_equal(got.pool, p);
    pthread_mutex_lock(&got.lock);
    int k = 0;
    for (int i = 0; i < got.n; i++) {
        if (got.lines[i].ind != 0)
            continue;
        char want[32];
        snprintf(want, sizeof want, "line %d", k++);
        assert_string_equal(got.lines[i].text, want);
    }
    pthread_mutex_unlock(&got.lock);
}

/* Without a callback: the host's stderr, behind "[pool/index] ". */
static int stderr_child(void)
{
    pyproc_opts opts = {.workers = 2, .python_path = "tests/py"};
    pyproc_pool *p;
    pyproc_msg *m = NULL;

    if (pyproc_pool_new(&p, "dbg", &opts) < 0 || pyproc_add_sub(p, "t", "e2e", 0) < 0 ||
        pyproc_ind_func(p, 1, "t.hygiene.say", &m, NULL) < 0)
        return 1;
    pyproc_msg_free(m);
    pyproc_pool_free(p);
    return 0;
}

static void default_output_is_prefixed_stderr(void **state)
{
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    int fds[2], status;

    (void)state;
    assert_int_equal(pipe(fds), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        dup2(fds[1], STDERR_FILENO);
        execl("/proc/self/exe", "test_debug", "stderr-child", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    while (len < sizeof buf - 1 && (n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = 0;
    close(fds[0]);
    assert_int_equal(waitpid(child, &status, 0), child);
    printf("the host's stderr:\n%s", buf);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_non_null(strstr(buf, "[dbg/1] first line\n[dbg/1] second line\n"));
    assert_non_null(strstr(buf, "[dbg/1] no newline\n"));
}

/* ---- stats ---- */

static void stats_count_calls_errors_and_restarts(void **state)
{
    pyproc_worker_stats st;
    pyproc_call *slow;
    pyproc_msg *m = NULL;

    (void)state;
    pyproc_pool *p = e2e_pool(2);
    assert_int_equal(pyproc_stats(p, 0, &st), 0);
    assert_int_equal(st.calls, 0); /* add_sub is the pool's, not a call */
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.restarts, 0);
    assert_int_equal(st.rank, -1); /* a local pool's worker */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pyproc_ind_func(p, 0, "t.basic.pid", &m, NULL), 0);
        pyproc_msg_free(m);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pyproc_ind_func(p, 0, "t.basic.fail", &m, "s", "no"), PYPROC_EREMOTE);
        pyproc_msg_free(m);
    }
    int pid0 = e2e_pid_of(p, 0);
    assert_int_equal(pyproc_stats(p, 0, &st), 0);
    assert_int_equal(st.calls, 8);
    assert_int_equal(st.errors, 2);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.restarts, 0);
    assert_int_equal(st.pid, pid0);

    int old = e2e_pid_of(p, 1);
    assert_int_equal(pyproc_ind_call(p, 1, &slow, "t.crash.nap", "d", 30.0), 0);
    assert_int_equal(pyproc_stats(p, 1, &st), 0);
    assert_int_equal(st.calls, 2);
    assert_int_equal(st.in_flight, 1);
    assert_int_equal(st.pid, old);
    assert_int_equal(kill(old, SIGKILL), 0);
    assert_int_equal(pyproc_wait(slow, &m, 5000), PYPROC_EWORKER);
    pyproc_msg_free(m);
    pyproc_call_free(slow);
    int pid = e2e_wait_respawned(p, 1, old);
    assert_int_equal(pyproc_stats(p, 1, &st), 0);
    assert_int_equal(st.restarts, 1);
    assert_true(st.errors >= 1); /* the nap, and calls sent while it was down */
    assert_true(st.calls >= 3);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.pid, pid);
    assert_int_equal(st.rank, -1);
    /* The other index saw none of it. */
    assert_int_equal(pyproc_stats(p, 0, &st), 0);
    assert_int_equal(st.calls, 8);
    assert_int_equal(st.restarts, 0);

    assert_int_equal(pyproc_stats(p, 2, &st), -EINVAL);
    assert_int_equal(pyproc_stats(p, -1, &st), -EINVAL);
    assert_int_equal(pyproc_stats(p, 0, NULL), -EINVAL);
    assert_int_equal(pyproc_stats(NULL, 0, &st), -EINVAL);
    /* A worker added later gets counters of its own. */
    int ind;
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(pyproc_ind_func(p, ind, "t.basic.pid", &m, NULL), 0);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_stats(p, ind, &st), 0);
    assert_int_equal(st.calls, 1);
    assert_true(st.pid > 0);
    assert_int_equal(st.rank, -1);
    pyproc_pool_free(p);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "stderr-child") == 0)
        return stderr_child();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(output_callback_gets_lines),
        cmocka_unit_test(default_output_is_prefixed_stderr),
        cmocka_unit_test(stats_count_calls_errors_and_restarts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
