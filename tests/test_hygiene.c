/*
 * End to end: least privilege and hygiene.  A worker inherits exactly the
 * fds it needs, even from a host that leaks fds without close-on-exec;
 * the pool leaves nothing in /dev/shm and opens only close-on-exec fds;
 * the env, cwd, resource-limit and no_new_privs options take effect.
 *
 * To see what a worker inherits before Python opens anything, the test
 * binary stands in as the worker: run with the worker's command line
 * ("--fd ..."), it writes down its fds and execs the real worker.  With a
 * template (PYPROC_START_TEMPLATE), it stands in as the template
 * ("--template ..."), and the forked workers are looked at as they run.
 *
 * Every test runs twice: with workers exec'd, then forked from a
 * template ($PYPROC_START, which the pools' defaults follow).
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"

static char dump_prefix[64];

/* ---- fd listings ---- */

struct fd_entry {
    int fd;
    char target[256];
};

/* The fds of process pid ("self" for us), without the listing's own. */
static int list_fds(const char *pid, struct fd_entry *ret, int max)
{
    char dir_path[64], link[PATH_MAX];
    struct dirent *e;
    int n = 0;

    snprintf(dir_path, sizeof dir_path, "/proc/%s/fd", pid);
    DIR *d = opendir(dir_path);
    if (!d)
        return -1;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (strcmp(pid, "self") == 0 && fd == dirfd(d))
            continue;
        snprintf(link, sizeof link, "%s/%s", dir_path, e->d_name);
        ssize_t len = readlink(link, ret[n].target, sizeof ret[n].target - 1);
        ret[n].target[len < 0 ? 0 : len] = 0;
        ret[n++].fd = fd;
    }
    closedir(d);
    return n;
}

/* Stand-in worker: write down our fds, then become the real worker. */
static int as_worker(char **argv)
{
    struct fd_entry fds[64];
    char path[128];
    int n = list_fds("self", fds, 64);
    FILE *f;

    snprintf(path, sizeof path, "%s.%d", getenv("PYPROC_TEST_FD_DUMP"), (int)getpid());
    f = fopen(path, "we");
    if (!f)
        return 126;
    for (int i = 0; i < n; i++)
        fprintf(f, "%d %s\n", fds[i].fd, fds[i].target);
    fclose(f);
    execv(getenv("PYPROC_TEST_REAL_WORKER"), argv);
    return 127;
}

/* What worker pid had open when it started, from its dump. */
static int read_dump(int pid, struct fd_entry *ret, int max)
{
    char path[128];
    int n = 0;

    snprintf(path, sizeof path, "%s.%d", dump_prefix, pid);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    while (n < max && fscanf(f, "%d %255[^\n]", &ret[n].fd, ret[n].target) == 2)
        n++;
    fclose(f);
    unlink(path);
    return n;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* What each of a worker's fds 0 to 7 is, as host/spawn.c promises. */
static const char *const worker_fd_kinds[] = {
    "/dev/null",
    "pipe:[",
    "pipe:[",
    "/memfd:pyproc",
    "anon_inode:[eventfd]",
    "anon_inode:[eventfd]",
    "pipe:[",
    "socket:[",
};

/* Exactly fds 0 to 7, each what host/spawn.c promises. */
static void expect_inherited_set(int pid)
{
    struct fd_entry fds[64];
    bool seen[8] = {false};
    int n = read_dump(pid, fds, 64);

    for (int i = 0; i < n; i++) {
        printf("worker %d started with fd %d -> %s\n", pid, fds[i].fd, fds[i].target);
        assert_in_range(fds[i].fd, 0, 7);
        assert_true(starts_with(fds[i].target, worker_fd_kinds[fds[i].fd]));
        seen[fds[i].fd] = true;
    }
    assert_int_equal(n, 8);
    for (int i = 0; i < 8; i++)
        assert_true(seen[i]);
}

/* The template: 0 and 1 /dev/null, 2 our stderr, 3 its socket; its
 * socket's name in *sock. */
static void expect_template_set(int pid, char *sock, size_t len)
{
    char err_target[256] = "";
    struct fd_entry fds[64];
    int n = read_dump(pid, fds, 64);
    ssize_t k = readlink("/proc/self/fd/2", err_target, sizeof err_target - 1);

    err_target[k < 0 ? 0 : k] = 0;
    for (int i = 0; i < n; i++) {
        printf("template %d started with fd %d -> %s\n", pid, fds[i].fd, fds[i].target);
        assert_in_range(fds[i].fd, 0, 3);
        if (fds[i].fd < 2)
            assert_string_equal(fds[i].target, "/dev/null");
        else if (fds[i].fd == 2)
            assert_string_equal(fds[i].target, err_target);
        else
            snprintf(sock, len, "%s", fds[i].target);
    }
    assert_int_equal(n, 4);
    assert_true(starts_with(sock, "socket:["));
}

/* A forked worker, running: fds 0 to 7 what spawn.c promises, and none
 * of the template's. */
static void expect_forked_set(int pid, const char *template_sock)
{
    struct fd_entry fds[256];
    char pid_s[16];
    int seen = 0;

    snprintf(pid_s, sizeof pid_s, "%d", pid);
    int n = list_fds(pid_s, fds, 256);
    for (int i = 0; i < n; i++) {
        printf("forked worker %d has fd %d -> %s\n", pid, fds[i].fd, fds[i].target);
        assert_string_not_equal(fds[i].target, template_sock);
        if (fds[i].fd < 8) {
            assert_true(starts_with(fds[i].target, worker_fd_kinds[fds[i].fd]));
            seen++;
        }
    }
    assert_int_equal(seen, 8);
}

/* The pids of the stand-ins that wrote a dump: the template's alone, when
 * there is one. */
static int dumped_pids(int *pids, int max)
{
    char dir_prefix[80];
    struct dirent *e;
    int n = 0;
    DIR *d = opendir("/tmp");

    assert_non_null(d);
    snprintf(dir_prefix, sizeof dir_prefix, "%s.", strrchr(dump_prefix, '/') + 1);
    while ((e = readdir(d)) && n < max)
        if (starts_with(e->d_name, dir_prefix))
            pids[n++] = atoi(e->d_name + strlen(dir_prefix));
    closedir(d);
    return n;
}

static bool template_mode(void)
{
    return strcmp(getenv("PYPROC_START"), "template") == 0;
}

/* No fd of the running worker is one of the leaked ones. */
static void expect_no_leak(int pid, const struct fd_entry *leaked, int nleaked)
{
    struct fd_entry fds[256];
    char pid_s[16];

    snprintf(pid_s, sizeof pid_s, "%d", pid);
    int n = list_fds(pid_s, fds, 256);
    assert_true(n > 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nleaked; j++)
            assert_string_not_equal(fds[i].target, leaked[j].target);
}

/*
 * The template's pid, from the dumps: the one with its four fds.  A
 * worker may have dumped too, exec'd because the template was busy or
 * slow to fork (a loaded machine): its dump is dropped, and the worker is
 * checked from /proc with the others.
 */
static int template_dump_pid(void)
{
    int pids[8], n = dumped_pids(pids, 8), found = -1;

    for (int i = 0; i < n; i++) {
        char path[128], line[300];
        int lines = 0;
        snprintf(path, sizeof path, "%s.%d", dump_prefix, pids[i]);
        FILE *f = fopen(path, "re");
        assert_non_null(f);
        while (fgets(line, sizeof line, f))
            lines++;
        fclose(f);
        if (lines == 4 && found < 0)
            found = pids[i];
        else
            unlink(path);
    }
    return found;
}

static void worker_inherits_only_its_own_fds(void **state)
{
    char tmp[] = "/tmp/pyproc-hygiene-XXXXXX", self[PATH_MAX], real[PATH_MAX];
    struct fd_entry leaked[4];
    int pipefd[2];

    (void)state;
    /* Fds an application leaks into its children: no O_CLOEXEC, one just
     * above the worker's fixed set and one far above it. */
    int file = mkstemp(tmp);
    assert_true(file >= 0);
    fcntl(file, F_SETFD, 0);
    assert_int_equal(pipe(pipefd), 0);
    /* Fd 7 taken already would be a leak from whoever started us: it must
     * stay out just the same. */
    bool took7 = fcntl(7, F_GETFD) < 0;
    if (took7)
        assert_int_equal(dup2(file, 7), 7);
    assert_int_equal(dup2(pipefd[1], 100), 100);
    struct fd_entry all[64];
    int nall = list_fds("self", all, 64), nleaked = 0;
    for (int i = 0; i < nall; i++)
        if (all[i].fd == file || all[i].fd == pipefd[0] || all[i].fd == 100)
            leaked[nleaked++] = all[i];
    assert_int_equal(nleaked, 3);

    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(len > 0);
    self[len] = 0;
    /* The worker of the same build tree: <B>/tests/.. -> <B>/bin. */
    snprintf(real, sizeof real, "%.*s/../bin/pyproc-worker", (int)(strrchr(self, '/') - self),
             self);
    assert_int_equal(access(real, X_OK), 0);
    setenv("PYPROC_TEST_REAL_WORKER", real, 1);
    setenv("PYPROC_TEST_FD_DUMP", dump_prefix, 1);
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .worker_path = self});
    char template_sock[256] = "";
    if (template_mode()) {
        int tpid = template_dump_pid();
        assert_true(tpid > 0);
        expect_template_set(tpid, template_sock, sizeof template_sock);
        expect_no_leak(tpid, leaked, nleaked);
    }
    for (int i = 0; i < 2; i++) {
        int pid = e2e_pid_of(p, i);
        if (template_mode())
            expect_forked_set(pid, template_sock);
        else
            expect_inherited_set(pid);
        expect_no_leak(pid, leaked, nleaked);
    }
    /* A respawned worker, started by the same service thread later on. */
    int old = e2e_pid_of(p, 1);
    assert_int_equal(kill(old, SIGKILL), 0);
    int pid = e2e_wait_respawned(p, 1, old);
    if (template_mode())
        expect_forked_set(pid, template_sock);
    else
        expect_inherited_set(pid);
    expect_no_leak(pid, leaked, nleaked);
    pyproc_pool_free(p);
    close(file);
    if (took7)
        close(7);
    close(100);
    close(pipefd[0]);
    close(pipefd[1]);
    unlink(tmp);
}

/* ---- the host's side ---- */

static bool is_cloexec(int fd)
{
    char path[64], line[128];
    unsigned flags = 0;
    bool found = false;

    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "re");
    if (!f)
        return true; /* closed since: nothing to leak */
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "flags: %o", &flags) == 1) {
            found = true;
            break;
        }
    fclose(f);
    assert_true(found);
    return (flags & O_CLOEXEC) != 0;
}

static bool listed(const struct fd_entry *fds, int n, int fd)
{
    for (int i = 0; i < n; i++)
        if (fds[i].fd == fd)
            return true;
    return false;
}

static void host_fds_are_close_on_exec(void **state)
{
    struct fd_entry before[256], after[256];
    pyproc_msg *m = NULL;
    int nbefore = list_fds("self", before, 256), ind, checked = 0;

    (void)state;
    pyproc_pool *p = e2e_pool(2);
    /* Everything that opens fds: calls, a stream, a new worker, a respawn. */
    e2e_int(p, "t.basic.pid");
    pyproc_call *s;
    assert_int_equal(pyproc_gen(p, "t.proc.gen_range", &s, "ii", 0, 3), 0);
    while (pyproc_next(s, &m) == 1)
        pyproc_msg_free(m);
    pyproc_call_free(s);
    assert_int_equal(pyproc_add_proc(p, &ind), 0);
    int old = e2e_pid_of(p, 0);
    assert_int_equal(kill(old, SIGKILL), 0);
    e2e_wait_respawned(p, 0, old);
    int nafter = list_fds("self", after, 256);
    for (int i = 0; i < nafter; i++) {
        if (listed(before, nbefore, after[i].fd))
            continue;
        if (!is_cloexec(after[i].fd))
            fail_msg("fd %d (%s) is not close-on-exec", after[i].fd, after[i].target);
        checked++;
    }
    printf("%d fds of the pool, all close-on-exec\n", checked);
    assert_true(checked >= 3 * 6); /* 3 workers with pipes, bells and pidfds */
    pyproc_pool_free(p);
    /* And none is left behind. */
    nafter = list_fds("self", after, 256);
    for (int i = 0; i < nafter; i++)
        if (!listed(before, nbefore, after[i].fd))
            fail_msg("fd %d (%s) outlived the pool", after[i].fd, after[i].target);
}

static int dev_shm_names(char names[][256], int max)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    int n = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)) && n < max)
        snprintf(names[n++], 256, "%s", e->d_name);
    closedir(d);
    return n;
}

static void nothing_in_dev_shm(void **state)
{
    static char before[256][256], during[256][256];
    int nbefore = dev_shm_names(before, 256);

    (void)state;
    pyproc_pool *p = e2e_pool(2);
    e2e_int(p, "t.basic.pid");
    int nduring = dev_shm_names(during, 256);
    for (int i = 0; i < nduring; i++) {
        bool old = false;
        for (int j = 0; j < nbefore; j++)
            old |= strcmp(during[i], before[j]) == 0;
        if (!old)
            fail_msg("/dev/shm/%s appeared with the pool", during[i]);
    }
    assert_int_equal(nduring, nbefore);
    pyproc_pool_free(p);
}

/* ---- options ---- */

static char *call_str(pyproc_pool *p, const char *ref, const char *fmt, const char *arg)
{
    pyproc_msg *m = NULL;
    const char *s = NULL;
    char *copy;

    int rc = pyproc_func(p, ref, &m, fmt, arg);
    if (rc < 0)
        fail_msg("%s: %s", ref, m ? pyproc_msg_error(m) : pyproc_strerror(rc));
    if (pyproc_msg_type(m) == PYPROC_NIL) {
        pyproc_msg_free(m);
        return NULL;
    }
    assert_int_equal(pyproc_msg_read(m, "s", &s), 0);
    copy = strdup(s);
    pyproc_msg_free(m);
    return copy;
}

static void env_option_replaces_the_environment(void **state)
{
    static const char *const env[] = {"PYPROC_HYGIENE=chosen", "LANG=C.UTF-8", NULL};
    char *v;

    (void)state;
    setenv("PYPROC_HOST_ONLY", "leaked", 1);
    pyproc_pool *p = e2e_pool(1);
    v = call_str(p, "t.hygiene.env", "s", "PYPROC_HOST_ONLY");
    assert_string_equal(v, "leaked"); /* default: the host's */
    free(v);
    pyproc_pool_free(p);

    p = e2e_pool_opts((pyproc_opts){.workers = 1, .env = env});
    v = call_str(p, "t.hygiene.env", "s", "PYPROC_HYGIENE");
    assert_string_equal(v, "chosen");
    free(v);
    assert_null(call_str(p, "t.hygiene.env", "s", "PYPROC_HOST_ONLY"));
    assert_null(call_str(p, "t.hygiene.env", "s", "PATH"));
    pyproc_pool_free(p);
    unsetenv("PYPROC_HOST_ONLY");
}

static void cwd_option_moves_the_workers(void **state)
{
    char dir[] = "/tmp/pyproc-cwd-XXXXXX", real[PATH_MAX], here[PATH_MAX];
    pyproc_pool *p;

    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_non_null(realpath(dir, real));
    assert_non_null(getcwd(here, sizeof here));
    /* python_path "tests/py" is relative: it still names the host's. */
    p = e2e_pool_opts((pyproc_opts){.workers = 1, .cwd = dir});
    char *v = call_str(p, "t.hygiene.cwd", NULL, NULL);
    assert_string_equal(v, real);
    free(v);
    pyproc_pool_free(p);
    p = e2e_pool(1);
    v = call_str(p, "t.hygiene.cwd", NULL, NULL);
    assert_string_equal(v, here);
    free(v);
    pyproc_pool_free(p);
    /* A directory that is not there fails at once. */
    pyproc_opts bad = {.workers = 1, .cwd = "/nonexistent/pyproc"};
    assert_int_equal(pyproc_pool_new(&p, "test", &bad), -ENOENT);
    rmdir(dir);
}

static void expect_rlimit(pyproc_pool *p, const char *name, int64_t want)
{
    pyproc_msg *m = NULL;
    int64_t soft, hard;

    assert_int_equal(pyproc_func(p, "t.hygiene.rlimit", &m, "s", name), 0);
    assert_int_equal(pyproc_msg_read(m, "[II]", &soft, &hard), 0);
    assert_int_equal(soft, want);
    assert_int_equal(hard, want);
    pyproc_msg_free(m);
}

/* AddressSanitizer reserves terabytes of address space for its shadow: a
 * worker built with it cannot start under any useful RLIMIT_AS. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static void memory_cap_fails_only_the_runaway(void **state)
{
    const int64_t cap = 512ll << 20;
    pyproc_msg *m = NULL;

    (void)state;
#ifdef UNDER_ASAN
    skip();
#endif
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 2, .mem_limit_bytes = (uint64_t)cap});
    expect_rlimit(p, "RLIMIT_AS", cap);
    int pid = e2e_pid_of(p, 0);
    int rc = pyproc_ind_func(p, 0, "t.hygiene.allocate", &m, "I", (int64_t)2 << 30);
    printf("2 GiB under a 512 MiB cap: %s\n", pyproc_msg_error(m));
    if (rc == PYPROC_EREMOTE) {
        assert_non_null(strstr(pyproc_msg_error(m), "MemoryError"));
        assert_int_equal(e2e_pid_of(p, 0), pid); /* it lives on */
    } else {
        assert_int_equal(rc, PYPROC_EWORKER);
        assert_non_null(strstr(pyproc_msg_error(m), "worker 0"));
        e2e_wait_respawned(p, 0, pid);
    }
    pyproc_msg_free(m);
    /* The pool keeps serving, on both workers, small allocations too. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pyproc_func(p, "t.hygiene.allocate", &m, "I", (int64_t)1 << 20), 0);
        pyproc_msg_free(m);
    }
    assert_true(e2e_pid_of(p, 1) > 0);
    pyproc_pool_free(p);
}

static void fd_cap(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool_opts((pyproc_opts){.workers = 1, .max_fds = 64});
    expect_rlimit(p, "RLIMIT_NOFILE", 64);
    pyproc_pool_free(p);
    pyproc_opts bad = {.workers = 1, .max_fds = 8};
    assert_int_equal(pyproc_pool_new(&p, "test", &bad), -EINVAL);
}

static int no_new_privs_of(int pid)
{
    char path[64], line[128];
    int v = -1;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "NoNewPrivs: %d", &v) == 1)
            break;
    fclose(f);
    return v;
}

static void no_new_privs_option(void **state)
{
    (void)state;
    pyproc_pool *p = e2e_pool(1);
    assert_int_equal(no_new_privs_of(e2e_pid_of(p, 0)), 0);
    pyproc_pool_free(p);
    p = e2e_pool_opts((pyproc_opts){.workers = 2, .no_new_privs = 1});
    assert_int_equal(no_new_privs_of(e2e_pid_of(p, 0)), 1);
    assert_int_equal(no_new_privs_of(e2e_pid_of(p, 1)), 1);
    pyproc_pool_free(p);
    assert_int_equal(no_new_privs_of(getpid()), 0); /* the host is untouched */
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--fd") == 0 || strcmp(argv[1], "--template") == 0))
        return as_worker(argv);
    snprintf(dump_prefix, sizeof dump_prefix, "/tmp/pyproc-fds-%d", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(worker_inherits_only_its_own_fds),
        cmocka_unit_test(host_fds_are_close_on_exec),
        cmocka_unit_test(nothing_in_dev_shm),
        cmocka_unit_test(env_option_replaces_the_environment),
        cmocka_unit_test(cwd_option_moves_the_workers),
        cmocka_unit_test(memory_cap_fails_only_the_runaway),
        cmocka_unit_test(fd_cap),
        cmocka_unit_test(no_new_privs_option),
    };
    setenv("PYPROC_START", "exec", 1);
    int failed = cmocka_run_group_tests_name("exec'd workers", tests, NULL, NULL);
    setenv("PYPROC_START", "template", 1);
    return failed +
           cmocka_run_group_tests_name("workers forked from a template", tests, NULL, NULL);
}
