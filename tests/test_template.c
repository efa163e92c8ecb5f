/*
 * End to end: workers forked from a template (PYPROC_START_TEMPLATE).
 * Forked workers answer as exec'd ones do, get the pool's history, come
 * back forked after a death, hold the fds an exec'd worker holds, are the
 * children of the host's service thread (so PR_SET_PDEATHSIG means the
 * host) and share code preloaded in the template.  A template killed
 * while workers are being forked loses no call: workers are exec'd until
 * it is back, then forked again.
 *
 * A forked worker still carries the template's command line
 * ("--template"), an exec'd one its own ("--fd"); the template is the
 * host's child with that command line and a single thread (a worker has
 * its death watcher too).
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

/* ---- what /proc says ---- */

/* Whether process pid's command line holds the argument arg. */
static bool cmdline_has(int pid, const char *arg)
{
    char path[64], buf[8192];
    size_t n;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    if (!(f = fopen(path, "re")))
        return false;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
        if (strcmp(buf + i, arg) == 0)
            return true;
    return false;
}

static int status_field(int pid, const char *name)
{
    char path[64], line[256];
    size_t len = strlen(name);
    int v = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if (!(f = fopen(path, "re")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, len) == 0 && line[len] == ':')
            v = atoi(line + len + 1);
    fclose(f);
    return v;
}

/* Our children, each with the thread of ours that is its parent. */
static int children(int *pids, int *tids, int max)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d))) {
        char path[300];
        int pid;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        while (n < max && fscanf(f, "%d", &pid) == 1) {
            tids[n] = atoi(e->d_name);
            pids[n++] = pid;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* The pool's template (the only one alive), or -1. */
static int template_pid(void)
{
    int pids[256], tids[256], n = children(pids, tids, 256);

    for (int i = 0; i < n; i++)
        if (cmdline_has(pids[i], "--template") && status_field(pids[i], "Threads") == 1 &&
            status_field(pids[i], "State") != -1)
            return pids[i];
    return -1;
}

/* The thread of ours whose child pid is, or -1. */
static int parent_thread(int pid)
{
    int pids[256], tids[256], n = children(pids, tids, 256);

    for (int i = 0; i < n; i++)
        if (pids[i] == pid)
            return tids[i];
    return -1;
}

/* Alive: not gone, not a zombie. */
static bool alive(int pid)
{
    char path[64], buf[512], *p;
    size_t n;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (!(f = fopen(path, "re")))
        return false;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static bool is_forked(int pid)
{
    return cmdline_has(pid, "--template") && status_field(pid, "Threads") > 1;
}

static bool is_execd(int pid)
{
    return cmdline_has(pid, "--fd");
}

/* Wait (without reaping: the pool does) until pid has exited. */
static void wait_gone(int pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    if (fd < 0)
        return; /* reaped already */
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    close(fd);
}

static pyproc_pool *template_pool(int workers)
{
    return e2e_pool_opts((pyproc_opts){.workers = workers, .start = PYPROC_START_TEMPLATE});
}

/* ---- tests ---- */

static void forked_workers_answer(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = template_pool(2);
    int tpid = template_pid();

    assert_true(tpid > 0);
    for (int i = 0; i < 2; i++) {
        pyproc_msg *m = NULL;
        int64_t ind, pid;
        assert_int_equal(pyproc_ind_func(p, i, "t.basic.where", &m, NULL), 0);
        assert_int_equal(pyproc_msg_read(m, "[II]", &ind, &pid), 0);
        pyproc_msg_free(m);
        printf("worker %d: pid %d, forked from template %d\n", i, (int)pid, tpid);
        assert_int_equal(ind, i); /* pyproc.index is its own, not the template's */
        assert_true(pid != tpid);
        assert_true(is_forked((int)pid));
        assert_int_equal(status_field((int)pid, "PPid"), getpid());
    }
    assert_true(e2e_int(p, "t.basic.pid") > 0);
    pyproc_pool_free(p);
    /* The template went with the pool, reaped: not even a zombie. */
    assert_true(kill(tpid, 0) < 0 && errno == ESRCH);
}

static void history_replayed_to_forked_workers(void **state)
{
    pyproc_msg *m = NULL;
    const char *s;
    int ind, n;

    (void)state;
    alarm(60);
    pyproc_pool *p = template_pool(1);
    assert_int_equal(pyproc_set_attr(p, "t.FLAVOUR", "s", "mint"), 0);
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_int_equal(ind, 1);
    assert_true(is_forked(e2e_pid_of(p, 1)));
    /* add_sub's init ran in it once, and set_attr's value is there. */
    assert_int_equal(pyproc_ind_func(p, 1, "t.basic.inits", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "i", &n), 0);
    assert_int_equal(n, 1);
    pyproc_msg_free(m);
    assert_int_equal(pyproc_ind_func(p, 1, "t.proc.get_attr", &m, "s", "t.FLAVOUR"), 0);
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    assert_string_equal(s, "mint");
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

static void respawn_forks_from_the_template(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = template_pool(2);
    int old = e2e_pid_of(p, 0);

    assert_true(is_forked(old));
    double t0 = e2e_now();
    assert_int_equal(kill(old, SIGKILL), 0);
    int pid = e2e_wait_respawned(p, 0, old);
    printf("respawned worker 0 answered %.1f ms after the kill\n", (e2e_now() - t0) * 1e3);
    assert_true(is_forked(pid));
    assert_int_equal(status_field(pid, "PPid"), getpid());
    pyproc_pool_free(p);
}

/*
 * A forked worker holds the fds an exec'd one does, number by number
 * (inode numbers aside): nothing of the template's leaks into it.
 */
static int fd_kinds(int pid, char kinds[][64], int max)
{
    char dir[64], link[300], target[256];
    struct dirent *e;
    int n = 0;

    snprintf(dir, sizeof dir, "/proc/%d/fd", pid);
    DIR *d = opendir(dir);
    assert_non_null(d);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        snprintf(link, sizeof link, "%s/%.200s", dir, e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        target[len < 0 ? 0 : len] = 0;
        char *inode = strchr(target, '[');
        if (inode && strncmp(target, "anon_inode", 10) != 0)
            *inode = 0;
        assert_in_range(fd, 0, max - 1);
        snprintf(kinds[fd], 64, "%.63s", target);
        n = fd + 1 > n ? fd + 1 : n;
    }
    closedir(d);
    return n;
}

static void forked_worker_holds_what_an_execd_one_does(void **state)
{
    static char forked[64][64], execd[64][64];

    (void)state;
    alarm(60);
    pyproc_pool *t = template_pool(1);
    pyproc_pool *x = e2e_pool_opts((pyproc_opts){.workers = 1, .start = PYPROC_START_EXEC});
    int tpid = e2e_pid_of(t, 0), xpid = e2e_pid_of(x, 0);

    assert_true(is_forked(tpid));
    assert_true(is_execd(xpid));
    int nt = fd_kinds(tpid, forked, 64), nx = fd_kinds(xpid, execd, 64);
    for (int i = 0; i < nt || i < nx; i++) {
        printf("fd %d: forked %s, exec'd %s\n", i, forked[i], execd[i]);
        assert_string_equal(forked[i], execd[i]);
    }
    assert_int_equal(nt, nx);
    pyproc_pool_free(t);
    pyproc_pool_free(x);
}

/*
 * The template and its workers are all children of one thread of ours,
 * the service thread that spawned the template (not this one), so their
 * PR_SET_PDEATHSIG follows it as an exec'd worker's does.
 */
static void workers_are_children_of_the_service_thread(void **state)
{
    pyproc_msg *m = NULL;
    int64_t sig, ppid;

    (void)state;
    alarm(60);
    pyproc_pool *p = template_pool(2);
    assert_int_equal(pyproc_add_sub(p, "pre", "preload_ok", PYPROC_SUB_PRELOAD), 0);
    int tpid = template_pid(), service = parent_thread(tpid);
    assert_true(service > 0);
    assert_true(service != (int)syscall(SYS_gettid));
    int ind;
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    for (int i = 0; i < 3; i++) {
        int pid = e2e_pid_of(p, i);
        assert_int_equal(parent_thread(pid), service);
        assert_int_equal(pyproc_ind_func(p, i, "pre.death_signal", &m, NULL), 0);
        assert_int_equal(pyproc_msg_read(m, "[II]", &sig, &ppid), 0);
        pyproc_msg_free(m);
        assert_int_equal(sig, SIGKILL);
        assert_int_equal(ppid, getpid());
    }
    pyproc_pool_free(p);
}

/* The host dies: the template and the workers it forked die with it. */
static void template_and_workers_die_with_the_host(void **state)
{
    int fds[2], pids[4], n = 0;

    (void)state;
    alarm(60);
    assert_int_equal(pipe(fds), 0);
    pid_t host = fork();
    assert_true(host >= 0);
    if (host == 0) {
        pyproc_pool *p;
        pyproc_opts o = {.workers = 2, .start = PYPROC_START_TEMPLATE};
        if (pyproc_pool_new(&p, "doomed", &o) < 0)
            _exit(1);
        int found[4] = {template_pid()}, k = 1, ind;
        pyproc_add_proc(p, &ind);
        int cp[256], ct[256], nc = children(cp, ct, 256);
        for (int i = 0; i < nc && k < 4; i++)
            if (cp[i] != found[0] && cmdline_has(cp[i], "--template"))
                found[k++] = cp[i];
        if (write(fds[1], found, sizeof found) != sizeof found)
            _exit(1);
        pause();
        _exit(0);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], pids, sizeof pids), sizeof pids);
    close(fds[0]);
    for (int i = 0; i < 4; i++) {
        printf("host %d: %s %d\n", (int)host, i ? "forked worker" : "template", pids[i]);
        assert_true(pids[i] > 0);
    }
    kill(host, SIGKILL);
    waitpid(host, NULL, 0);
    for (int i = 0; i < 500 && n < 4; i++) {
        n = 0;
        for (int k = 0; k < 4; k++)
            n += !alive(pids[k]);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(n, 4);
}

/* ---- the template killed while workers are being forked ---- */

struct load {
    pyproc_pool *p;
    atomic_bool stop;
    atomic_long ok, failed;
};

static void *caller(void *arg)
{
    struct load *l = arg;

    while (!atomic_load(&l->stop)) {
        pyproc_msg *m = NULL;
        int rc = pyproc_func(l->p, "t.basic.pid", &m, NULL);
        if (rc == 0) {
            atomic_fetch_add(&l->ok, 1);
        } else {
            fprintf(stderr, "call failed: %s\n", m ? pyproc_msg_error(m) : pyproc_strerror(rc));
            atomic_fetch_add(&l->failed, 1);
        }
        pyproc_msg_free(m);
    }
    return NULL;
}

struct killer {
    int pid;
    int delay_ms;
};

static void *kill_later(void *arg)
{
    struct killer *k = arg;
    struct timespec ts = {0, k->delay_ms * 1000000L};

    nanosleep(&ts, NULL);
    kill(k->pid, SIGKILL);
    return NULL;
}

static int add_one(pyproc_pool *p)
{
    int ind;

    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    return e2e_pid_of(p, ind);
}

/* Wait for a template other than old; its pid. */
static int restarted(int old)
{
    int pid = -1;

    for (int i = 0; i < 1000 && (pid < 0 || pid == old); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pid = template_pid();
    }
    printf("template %d restarted as %d\n", old, pid);
    assert_true(pid > 0 && pid != old);
    return pid;
}

static void template_killed_while_forking(void **state)
{
    struct load l = {.p = NULL};
    pthread_t callers[3], killer;
    int forked_before = 0, execd = 0;

    (void)state;
    alarm(120);
    l.p = template_pool(2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&callers[i], NULL, caller, &l), 0);
    /* Killed while add_proc runs, at some point of a fork. */
    int first = template_pid();
    struct killer k = {first, 3};
    assert_int_equal(pthread_create(&killer, NULL, kill_later, &k), 0);
    for (int i = 0; i < 4; i++) {
        int pid = add_one(l.p);
        forked_before += is_forked(pid);
        execd += is_execd(pid);
    }
    pthread_join(killer, NULL);
    printf("around the kill: %d forked, %d exec'd\n", forked_before, execd);
    int second = restarted(first);
    /* Down: the next worker is exec'd, long before Python could start in
     * a new template. */
    kill(second, SIGKILL);
    wait_gone(second);
    assert_true(is_execd(add_one(l.p)));
    /* Up again: workers are forked again. */
    restarted(second);
    int again = -1;
    for (int i = 0; i < 100 && !(again > 0 && is_forked(again)); i++)
        again = add_one(l.p);
    assert_true(is_forked(again));
    atomic_store(&l.stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(callers[i], NULL);
    /* Every worker, forked or exec'd, answers. */
    for (int i = 0; i < pyproc_workers(l.p); i++)
        assert_true(e2e_pid_of(l.p, i) > 0);
    printf("calls: %ld answered, %ld failed\n", atomic_load(&l.ok), atomic_load(&l.failed));
    assert_int_equal(atomic_load(&l.failed), 0);
    assert_true(atomic_load(&l.ok) > 0);
    pyproc_pool_free(l.p);
}

/* ---- PYPROC_SUB_PRELOAD ---- */

static void preloaded_code_is_shared(void **state)
{
    pyproc_msg *m = NULL;
    int64_t imported_in, pid, ind;

    (void)state;
    alarm(60);
    pyproc_pool *p = template_pool(1);
    int tpid = template_pid();
    assert_int_equal(pyproc_add_sub(p, "pre", "preload_ok", PYPROC_SUB_PRELOAD), 0);
    /* Worker 0 was forked before: it imported the sub itself. */
    assert_int_equal(pyproc_ind_func(p, 0, "pre.where", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[III]", &imported_in, &pid, &ind), 0);
    pyproc_msg_free(m);
    assert_int_equal(imported_in, pid);
    /* A worker forked after it finds it imported by the template, and
     * so does a respawned one. */
    int new_ind;
    assert_int_equal(pyproc_add_proc(p, &new_ind), 0);
    assert_int_equal(pyproc_ind_func(p, new_ind, "pre.where", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[III]", &imported_in, &pid, &ind), 0);
    pyproc_msg_free(m);
    printf("worker %d (pid %d) has the sub imported by %d (the template is %d)\n", (int)ind,
           (int)pid, (int)imported_in, tpid);
    assert_int_equal(imported_in, tpid);
    assert_int_equal(ind, new_ind);
    /* Python's after-fork hooks ran in it: the one the sub registered
     * in the template saw its pid. */
    int64_t hooked = 0;
    assert_int_equal(pyproc_ind_func(p, new_ind, "pre.forked_as", &m, NULL), 0);
    assert_int_equal(pyproc_msg_len(m), 1);
    pyproc_msg *item;
    assert_int_equal(pyproc_msg_at(m, 0, &item, NULL), 0);
    assert_int_equal(pyproc_msg_read(item, "I", &hooked), 0);
    pyproc_msg_free(item);
    pyproc_msg_free(m);
    assert_int_equal(hooked, pid);
    int old = e2e_pid_of(p, 0);
    kill(old, SIGKILL);
    e2e_wait_respawned(p, 0, old);
    assert_int_equal(pyproc_ind_func(p, 0, "pre.where", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[III]", &imported_in, &pid, &ind), 0);
    pyproc_msg_free(m);
    assert_int_equal(imported_in, tpid);
    pyproc_pool_free(p);
}

/*
 * Fds in a forked worker: one a preloaded module opened at import (in
 * the template) has a number no worker fd takes, so it is closed there
 * rather than silently another file; one an after-fork hook opened in
 * the worker stays open.
 */
static void fds_of_preloaded_code_in_a_forked_worker(void **state)
{
    pyproc_msg *m = NULL;
    int64_t import_fd, hook_fd;
    int import_open, hook_open;
    int ind;

    (void)state;
    alarm(60);
    pyproc_pool *p = template_pool(1);
    assert_int_equal(pyproc_add_sub(p, "pre", "preload_ok", PYPROC_SUB_PRELOAD), 0);
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    assert_true(is_forked(e2e_pid_of(p, ind)));
    assert_int_equal(pyproc_ind_func(p, ind, "pre.fds", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[IbIb]", &import_fd, &import_open, &hook_fd, &hook_open),
                     0);
    pyproc_msg_free(m);
    printf("import's fd %d (%s), hook's fd %d (%s)\n", (int)import_fd,
           import_open ? "its file" : "not its file", (int)hook_fd, hook_open ? "open" : "closed");
    assert_true(import_fd > 7);
    assert_false(import_open);
    assert_true(hook_fd >= 0);
    assert_true(hook_open);
    pyproc_pool_free(p);
}

/* A preload that starts a thread: the template forks no more (a thread
 * does not survive a fork), workers are exec'd, and all is served. */
static void preload_with_a_thread_falls_back_to_exec(void **state)
{
    (void)state;
    alarm(60);
    pyproc_pool *p = template_pool(1);
    int tpid = template_pid();
    assert_int_equal(pyproc_add_sub(p, "thr", "preload_thread", PYPROC_SUB_PRELOAD), 0);
    wait_gone(tpid);
    int pid = add_one(p);
    assert_true(is_execd(pid));
    assert_int_equal(e2e_int(p, "thr.ping"), 1);
    pyproc_msg *m = NULL;
    assert_int_equal(pyproc_ind_func(p, 1, "thr.ping", &m, NULL), 0);
    pyproc_msg_free(m);
    pyproc_pool_free(p);
}

/* Without a template a preload is a plain add_sub; a bad start is EINVAL. */
static void preload_without_a_template(void **state)
{
    pyproc_pool *p;
    pyproc_msg *m = NULL;
    int64_t imported_in, pid, ind;

    (void)state;
    alarm(60);
    p = e2e_pool_opts((pyproc_opts){.workers = 1, .start = PYPROC_START_EXEC});
    assert_int_equal(template_pid(), -1);
    assert_int_equal(pyproc_add_sub(p, "pre", "preload_ok", PYPROC_SUB_PRELOAD), 0);
    assert_int_equal(pyproc_func(p, "pre.where", &m, NULL), 0);
    assert_int_equal(pyproc_msg_read(m, "[III]", &imported_in, &pid, &ind), 0);
    pyproc_msg_free(m);
    assert_int_equal(imported_in, pid);
    assert_int_equal(pyproc_add_sub(p, "x", "preload_ok", 0x80), -EINVAL);
    pyproc_pool_free(p);
    pyproc_opts bad = {.workers = 1, .start = 7};
    assert_int_equal(pyproc_pool_new(&p, "test", &bad), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forked_workers_answer),
        cmocka_unit_test(history_replayed_to_forked_workers),
        cmocka_unit_test(respawn_forks_from_the_template),
        cmocka_unit_test(forked_worker_holds_what_an_execd_one_does),
        cmocka_unit_test(workers_are_children_of_the_service_thread),
        cmocka_unit_test(template_and_workers_die_with_the_host),
        cmocka_unit_test(template_killed_while_forking),
        cmocka_unit_test(preloaded_code_is_shared),
        cmocka_unit_test(fds_of_preloaded_code_in_a_forked_worker),
        cmocka_unit_test(preload_with_a_thread_falls_back_to_exec),
        cmocka_unit_test(preload_without_a_template),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
