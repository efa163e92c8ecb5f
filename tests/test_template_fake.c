/*
 * The host's side of a pool's template, against a fake one: this binary,
 * started as the pool's template ("--template"), speaks its socket
 * (shm/template.h) without Python and misbehaves as its test asks
 * (FAKE_MODE_ENV); started as a worker ("--fd"), it is a fake worker
 * (fake_worker.h) that answers "pid".
 *
 *   slowchild  the first fork makes a child that stays silent past the
 *              host's patience, holding the worker's fds; the child then
 *              writes to FAKE_RESULT_ENV whether the worker's death pipe
 *              still has a writer ("open") or reads EOF ("eof")
 *   slowworker workers take SLOW_WORKER_MS to come up
 *   deaf       after its first answer it stops reading its socket (the
 *              next fork request fails to send) but stays alive
 *
 * Either way the template answers every other fork with -EAGAIN, so that
 * the host execs the worker.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "fake_worker.h"
#include "shm/fdpass.h"
#include "shm/template.h"

#define FAKE_RESULT_ENV "PYPROC_TEST_RESULT"
#define SLOW_CHILD_MS 4000 /* more than the host's 2 s + 1 s */
#define SLOW_WORKER_MS 2500

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0)
        ;
}

static const char *mode(void)
{
    return getenv(FAKE_MODE_ENV) ? getenv(FAKE_MODE_ENV) : "none";
}

/* ---- the fake template and worker ---- */

static void answer(int sock, const struct shm_tmpl_msg *req, int64_t value)
{
    struct shm_tmpl_msg m = {.kind = SHM_TMPL_FORKED, .index = req->index, .value = value};

    shm_fds_send(sock, &m, sizeof m, NULL, 0);
}

/* A child that holds the worker's fds (and the socket) and is slow to
 * say FORKED; then it tells whether its death pipe reads EOF. */
static _Noreturn void slow_child(int sock, const int *fds, const struct shm_tmpl_msg *req)
{
    const char *path = getenv(FAKE_RESULT_ENV);
    struct pollfd pfd = {.fd = fds[5], .events = POLLIN};

    sleep_ms(SLOW_CHILD_MS);
    answer(sock, req, getpid());
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    const char *what = poll(&pfd, 1, 0) == 1 ? "eof" : "open";
    if (fd >= 0 && write(fd, what, strlen(what)) < 0)
        _exit(1);
    _exit(0);
}

static int fake_template(void)
{
    struct shm_tmpl_msg ready = {.kind = SHM_TMPL_READY, .value = getpid()};
    bool forked = false;

    /* Gone with the host even when deaf. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        return 1;
    if (shm_fds_send(3, &ready, sizeof ready, NULL, 0) < 0)
        return 1;
    for (;;) {
        char body[SHM_TMPL_MAX_BODY];
        int fds[SHM_FDS_MAX], nfds = 0;
        struct shm_tmpl_msg req;
        int n = shm_fds_recv(3, body, sizeof body, fds, &nfds, -1);
        if (n == -EBADMSG)
            continue;
        if (n <= 0)
            return 0;
        memcpy(&req, body, sizeof req);
        if (req.kind == SHM_TMPL_FORK && nfds == SHM_TMPL_FORK_FDS &&
            strcmp(mode(), "slowchild") == 0 && !forked) {
            forked = true;
            if (fork() == 0)
                slow_child(3, fds, &req);
        } else if (req.kind == SHM_TMPL_FORK) {
            answer(3, &req, -EAGAIN);
            if (strcmp(mode(), "deaf") == 0) {
                shutdown(3, SHUT_RD);
                for (;;)
                    pause();
            }
        } else if (req.kind == SHM_TMPL_PRELOAD) {
            struct shm_tmpl_msg m = {.kind = SHM_TMPL_PRELOADED};
            shm_fds_send(3, &m, sizeof m, NULL, 0);
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    }
}

static void serve(struct shm_msg *m)
{
    if (fake_call_named(m, "pid"))
        fake_write_pid(SHM_FRAME_RESULT, m->id);
    else
        fake_serve_default(m);
}

static int fake_worker(int argc, char **argv)
{
    if (strcmp(mode(), "slowworker") == 0)
        sleep_ms(SLOW_WORKER_MS);
    fake_attach(argc, argv);
    fake_run(serve, NULL);
}

/* ---- what /proc says ---- */

/* Our child whose command line holds "--template" and whose pid is not other, or
 * -1; with the thread of ours that is its parent in *tid. */
static int template_pid(int other, int *tid)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int found = -1;

    assert_non_null(d);
    while (found < 0 && (e = readdir(d))) {
        char path[300], cmd[4096];
        int pid;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
        FILE *f = fopen(path, "re");
        while (f && found < 0 && fscanf(f, "%d", &pid) == 1) {
            snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
            FILE *c = fopen(path, "re");
            size_t n = c ? fread(cmd, 1, sizeof cmd - 1, c) : 0;
            if (c)
                fclose(c);
            cmd[n] = 0;
            for (size_t i = 0; i < n && found < 0; i += strlen(cmd + i) + 1)
                if (strcmp(cmd + i, "--template") == 0 && pid != other) {
                    found = pid;
                    if (tid)
                        *tid = atoi(e->d_name);
                }
        }
        if (f)
            fclose(f);
    }
    closedir(d);
    return found;
}

/* Wait up to 10 s for a template whose pid is not other. */
static int wait_template(int other, int *tid)
{
    int pid = -1;

    for (int i = 0; i < 1000 && (pid = template_pid(other, tid)) < 0; i++)
        sleep_ms(10);
    return pid;
}

/* CPU time of our thread tid, in clock ticks. */
static long thread_ticks(int tid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;

    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    p = strrchr(buf, ')');
    assert_non_null(p);
    /* After the name: state is field 3; utime and stime are 14 and 15. */
    assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st),
                     2);
    return (long)(ut + st);
}

static pyproc_opts template_opts(int workers)
{
    return (pyproc_opts){.workers = workers,
                         .worker_path = fake_self(),
                         .start = PYPROC_START_TEMPLATE};
}

/* ---- tests ---- */

/*
 * A fork that gets no answer even from the killed template may have made
 * a child that holds the worker's fds: the worker is started with new
 * ones, and that child, its death pipe closed, sees EOF there.
 */
static void unanswered_fork_gives_its_fds_up(void **state)
{
    char path[] = "/tmp/pyproc-tfake-XXXXXX", got[16] = "";
    pyproc_opts o = template_opts(1);
    pyproc_pool *p = NULL;

    (void)state;
    alarm(60);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(setenv(FAKE_MODE_ENV, "slowchild", 1), 0);
    assert_int_equal(setenv(FAKE_RESULT_ENV, path, 1), 0);
    assert_int_equal(pyproc_pool_new(&p, "tfake", &o), 0);
    unsetenv(FAKE_MODE_ENV);
    assert_true(fake_pid(p, 0) > 0);
    for (int i = 0; i < 1000 && !got[0]; i++) {
        sleep_ms(10);
        int r = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = r >= 0 ? read(r, got, sizeof got - 1) : 0;
        got[n > 0 ? n : 0] = 0;
        if (r >= 0)
            close(r);
    }
    unsetenv(FAKE_RESULT_ENV);
    unlink(path);
    printf("the silent child's death pipe: %s\n", got);
    assert_string_equal(got, "eof");
    assert_true(fake_pid(p, 0) > 0);
    pyproc_pool_free(p);
}

struct starter {
    pyproc_pool *p;
    int rc;
};

static void *start_pool(void *arg)
{
    struct starter *s = arg;
    pyproc_opts o = template_opts(1);

    s->rc = pyproc_pool_new(&s->p, "tfake", &o);
    return NULL;
}

/*
 * The template dies while the pool waits for its workers: the service
 * thread does not spin on its pidfd meanwhile, and a new template is
 * started once the pool is up.
 */
static void template_dies_while_the_pool_starts(void **state)
{
    struct starter s = {NULL, -1};
    pthread_t th;
    int service = -1;

    (void)state;
    alarm(60);
    assert_int_equal(setenv(FAKE_MODE_ENV, "slowworker", 1), 0);
    assert_int_equal(pthread_create(&th, NULL, start_pool, &s), 0);
    int first = wait_template(-1, &service);
    assert_true(first > 0);
    sleep_ms(100); /* past READY: the worker is starting */
    assert_int_equal(kill(first, SIGKILL), 0);
    sleep_ms(100);
    long before = thread_ticks(service);
    sleep_ms(500);
    long spent = thread_ticks(service) - before;
    printf("service thread: %ld ticks of CPU in 0.5 s after the template died\n", spent);
    assert_true(spent < sysconf(_SC_CLK_TCK) / 10);
    pthread_join(th, NULL);
    unsetenv(FAKE_MODE_ENV);
    assert_int_equal(s.rc, 0);
    int second = wait_template(first, NULL);
    printf("template %d restarted as %d\n", first, second);
    assert_true(second > 0);
    assert_true(fake_pid(s.p, 0) > 0);
    pyproc_pool_free(s.p);
}

/* A fork request that cannot be sent: the worker is exec'd, and the
 * template, of no use now, is killed and another started. */
static void template_that_cannot_be_told_is_replaced(void **state)
{
    pyproc_opts o = template_opts(1);
    pyproc_pool *p = NULL;

    (void)state;
    alarm(60);
    assert_int_equal(setenv(FAKE_MODE_ENV, "deaf", 1), 0);
    assert_int_equal(pyproc_pool_new(&p, "tfake", &o), 0);
    unsetenv(FAKE_MODE_ENV);
    int first = template_pid(-1, NULL), ind;
    assert_true(first > 0);
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_true(fake_pid(p, ind) > 0);
    int second = wait_template(first, NULL);
    printf("template %d replaced by %d\n", first, second);
    assert_true(first > 0 && second > 0);
    assert_true(kill(first, 0) < 0 && errno == ESRCH);
    pyproc_pool_free(p);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--template") == 0)
        return fake_template();
    if (fake_started_as_worker(argc, argv))
        return fake_worker(argc, argv);
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unanswered_fork_gives_its_fds_up),
        cmocka_unit_test(template_dies_while_the_pool_starts),
        cmocka_unit_test(template_that_cannot_be_told_is_replaced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
