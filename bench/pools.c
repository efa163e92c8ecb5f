/*
 * Pools as a whole: how long one takes to be ready, and what an idle one
 * costs in CPU time and memory.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench/bench.h"

#define RING_BYTES (2u << 20)

int bench_fail(const char *what, int err, pyproc_msg *m)
{
    const char *text = m ? pyproc_msg_error(m) : NULL;

    fprintf(stderr, "pyproc-bench: %s: %s\n", what, pyproc_strerror(err));
    if (text)
        fprintf(stderr, "%s\n", text);
    return err < 0 ? err : -EIO;
}

static int pool_new_as(pyproc_pool **ret, int workers, int spin_us, int start);

int bench_pool_new(pyproc_pool **ret, int workers)
{
    return bench_pool_new_spin(ret, workers, 0);
}

int bench_pool_new_spin(pyproc_pool **ret, int workers, int spin_us)
{
    return pool_new_as(ret, workers, spin_us, PYPROC_START_DEFAULT);
}

/* start: pyproc_opts.start. */
static int pool_new_as(pyproc_pool **ret, int workers, int spin_us, int start)
{
    pyproc_opts opts = {.workers = workers,
                        .python_path = bench.py_path,
                        .ring_bytes = RING_BYTES,
                        .spin_us = spin_us,
                        .start = start};
    pyproc_msg *m = NULL;
    pyproc_pool *p;
    int err = pyproc_pool_new(&p, "bench", &opts);

    if (err < 0)
        return bench_fail("pyproc_pool_new", err, NULL);
    err = pyproc_add_sub_err(p, "bench", "benchmods", 0, &m);
    if (err < 0) {
        bench_fail("pyproc_add_sub benchmods", err, m);
        pyproc_msg_free(m);
        pyproc_pool_free(p);
        return err;
    }
    *ret = p;
    return 0;
}

/*
 * A new pool can be slower for a while than it will be (a worker may still
 * be loading what its first call did not need), and the latency rows are
 * about the steady state: the fresh pool has rows of its own.
 */
int bench_pool_warm(pyproc_pool *p, int workers)
{
    int64_t until = bench_now_ns() + (int64_t)(bench_budget(BUDGET_WARM)->max_seconds * 1e9);
    int err = 0;

    for (int i = 0; !err && (i < workers || bench_now_ns() < until); i++) {
        pyproc_msg *m = NULL;
        if ((err = pyproc_ind_func(p, i % workers, "bench.calls.noop", &m, NULL)) < 0)
            bench_fail("warming up", err, m);
        pyproc_msg_free(m);
    }
    return err;
}

int bench_pool(pyproc_pool **ret, int workers)
{
    return bench_pool_spin(ret, workers, 0);
}

int bench_pool_spin(pyproc_pool **ret, int workers, int spin_us)
{
    pyproc_pool *p;
    int err = bench_pool_new_spin(&p, workers, spin_us);

    if (err < 0)
        return err;
    if ((err = bench_pool_warm(p, workers)) < 0) {
        pyproc_pool_free(p);
        return err;
    }
    *ret = p;
    return 0;
}

/* A call to every worker at once, all answered. */
static int call_each(pyproc_pool *p, int workers)
{
    pyproc_call *calls[16] = {0};
    int err = 0;

    for (int i = 0; i < workers && !err; i++)
        err = pyproc_ind_call(p, i, &calls[i], "bench.calls.noop", NULL);
    for (int i = 0; i < workers && calls[i]; i++) {
        pyproc_msg *m = NULL;
        int rc = pyproc_wait(calls[i], &m, -1);
        if (rc < 0 && !err)
            err = bench_fail("bench.calls.noop", rc, m);
        pyproc_msg_free(m);
        pyproc_call_free(calls[i]);
    }
    return err;
}

/* From nothing to every worker having answered one call. */
static int start_once(int workers, int start, double *ms)
{
    int64_t t0 = bench_now_ns();
    pyproc_pool *p;
    int err = pool_new_as(&p, workers, 0, start);

    if (err < 0)
        return err;
    err = call_each(p, workers);
    *ms = (double)(bench_now_ns() - t0) / 1e6;
    pyproc_pool_free(p);
    return err;
}

/* The two ways to start workers, for rows "<key>" and "<key>-exec". */
static const struct start_mode {
    int start;
    const char *suffix, *label;
} start_modes[] = {
    {PYPROC_START_TEMPLATE, "", "forked"},
    {PYPROC_START_EXEC, "-exec", "exec'd"},
};

static int startup_rows(const struct start_mode *sm)
{
    const struct bench_budget *b = bench_budget(BUDGET_START);
    static const int sizes[] = {1, 2, 4};

    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        struct series s = {0};
        char key[32], label[96];
        double ms;
        int err = 0;
        for (int i = 0; i < b->warmup && !err; i++)
            err = start_once(sizes[k], sm->start, &ms);
        for (size_t i = 0; i < b->max_samples && !err; i++)
            if (!(err = start_once(sizes[k], sm->start, &ms)))
                err = series_push(&s, ms);
        if (err < 0) {
            series_free(&s);
            return err;
        }
        snprintf(key, sizeof key, "start-%d%s", sizes[k], sm->suffix);
        snprintf(label, sizeof label, "pool start-up, %d worker%s %s, all answered", sizes[k],
                 sizes[k] > 1 ? "s" : "", sm->label);
        bench_row_add(key, label, "ms", ROW_COST, ROW_P99, &s,
                      "pyproc_pool_new + add_sub + one call per worker");
    }
    return 0;
}

/*
 * A pool without subs, so that a new worker has no history to replay:
 * pyproc_add_proc() until it returns, and a killed worker until its
 * replacement holds the slot (pyproc_stats() counts the restart).
 */
static int add_proc_once(pyproc_pool *p, struct series *s)
{
    int64_t t0 = bench_now_ns();
    int ind, err = pyproc_add_proc(p, &ind);

    if (err < 0)
        return bench_fail("pyproc_add_proc", err, NULL);
    return series_push(s, (double)(bench_now_ns() - t0) / 1e6);
}

static int respawn_once(pyproc_pool *p, struct series *s)
{
    pyproc_worker_stats st;
    int64_t t0, until;
    uint64_t before;

    if (pyproc_stats(p, 0, &st) < 0 || st.pid <= 0)
        return bench_fail("pyproc_stats", -ESRCH, NULL);
    before = st.restarts;
    t0 = bench_now_ns();
    until = t0 + 10 * 1000000000LL;
    kill(st.pid, SIGKILL);
    while (pyproc_stats(p, 0, &st) == 0 && st.restarts == before && bench_now_ns() < until)
        bench_sleep_ns(100000);
    if (st.restarts == before)
        return bench_fail("respawn", -ETIMEDOUT, NULL);
    return series_push(s, (double)(bench_now_ns() - t0) / 1e6);
}

static int grow_rows(const struct start_mode *sm)
{
    const struct bench_budget *b = bench_budget(BUDGET_START);
    size_t n = b->max_samples < 4 ? 4 : b->max_samples;
    pyproc_opts opts = {.workers = 1, .ring_bytes = RING_BYTES, .start = sm->start};
    struct series add = {0}, re = {0};
    char key[32], label[96];
    pyproc_pool *p;
    int err = pyproc_pool_new(&p, "bench", &opts);

    if (err < 0)
        return bench_fail("pyproc_pool_new", err, NULL);
    for (size_t i = 0; i < n && !err; i++)
        err = add_proc_once(p, &add);
    /* A worker that dies before it answered anything is respawned after a
     * backoff: each answers first (an error: there are no subs). */
    for (size_t i = 0; i < n && !err; i++) {
        pyproc_msg *m = NULL;
        pyproc_ind_func(p, 0, "no.such.function", &m, NULL);
        pyproc_msg_free(m);
        err = respawn_once(p, &re);
    }
    pyproc_pool_free(p);
    if (!err) {
        snprintf(key, sizeof key, "add-proc%s", sm->suffix);
        snprintf(label, sizeof label, "pyproc_add_proc, worker %s, no history", sm->label);
        bench_row_add(key, label, "ms", ROW_COST, 0, &add, "until it returns");
        snprintf(key, sizeof key, "respawn%s", sm->suffix);
        snprintf(label, sizeof label, "respawn after SIGKILL, worker %s, no history", sm->label);
        bench_row_add(key, label, "ms", ROW_COST, 0, &re, "kill to the replacement in its slot");
    }
    series_free(&add);
    series_free(&re);
    return err;
}

int bench_startup(void)
{
    int err = 0;

    for (size_t m = 0; m < 2 && !err; m++)
        err = startup_rows(&start_modes[m]);
    for (size_t m = 0; m < 2 && !err; m++)
        err = grow_rows(&start_modes[m]);
    return err;
}

/* ---- an idle pool of 4 ---- */

#define IDLE_WORKERS 4

static int worker_pids(pyproc_pool *p, pid_t *pids, int n)
{
    for (int i = 0; i < n; i++) {
        pyproc_msg *m = NULL;
        int pid = 0, err = pyproc_ind_func(p, i, "bench.calls.pid", &m, NULL);
        if (!err)
            err = pyproc_msg_read(m, "i", &pid);
        if (err < 0) {
            bench_fail("bench.calls.pid", err, m);
            pyproc_msg_free(m);
            return err;
        }
        pyproc_msg_free(m);
        pids[i] = pid;
    }
    return 0;
}

/* utime + stime of a whole process, in clock ticks. */
static int64_t proc_ticks(pid_t pid)
{
    unsigned long long ut, st;
    char path[64], buf[1024], *p;
    size_t n;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!(f = fopen(path, "re")))
        return -errno;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The name may hold spaces and parentheses; the fields follow the last
     * ')'.  State is field 3, utime and stime are fields 14 and 15. */
    if (!(p = strrchr(buf, ')')) ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -EBADMSG;
    return (int64_t)(ut + st);
}

/* Time on a CPU of every thread of a process, in ns (ticks are coarse). */
static int64_t proc_cpu_ns(pid_t pid)
{
    char path[320];
    struct dirent *e;
    int64_t sum = 0;
    DIR *d;

    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    if (!(d = opendir(path)))
        return -errno;
    while ((e = readdir(d))) {
        unsigned long long ns;
        FILE *f;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        if ((f = fopen(path, "re"))) {
            if (fscanf(f, "%llu", &ns) == 1)
                sum += (int64_t)ns;
            fclose(f);
        }
    }
    closedir(d);
    return sum;
}

static int64_t self_cpu_ns(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

struct cpu_mark {
    int64_t ticks, ns, at;
};

static int cpu_mark(struct cpu_mark *c, const pid_t *pids)
{
    *c = (struct cpu_mark){.at = bench_now_ns()};
    for (int i = 0; i < IDLE_WORKERS; i++) {
        int64_t t = proc_ticks(pids[i]), ns = proc_cpu_ns(pids[i]);
        if (t < 0 || ns < 0)
            return t < 0 ? (int)t : (int)ns;
        c->ticks += t;
        c->ns += ns;
    }
    return 0;
}

/*
 * CPU ms per second of the workers (ticks, ns) and of the host.  The host
 * is measured inside the workers' window so that reading /proc does not
 * count as the pool's cost.
 */
static int idle_window(const pid_t *pids, double seconds, struct series s[3])
{
    struct cpu_mark a, b;
    int64_t h0, h1, t0, t1;
    double wall;
    int err = cpu_mark(&a, pids);

    if (err < 0)
        return err;
    h0 = self_cpu_ns();
    t0 = bench_now_ns();
    bench_sleep_ns((int64_t)(seconds * 1e9));
    h1 = self_cpu_ns();
    t1 = bench_now_ns();
    if ((err = cpu_mark(&b, pids)) < 0)
        return err;
    wall = (double)(b.at - a.at) / 1e9;
    series_push(&s[0], (double)(b.ticks - a.ticks) * 1000.0 / (double)sysconf(_SC_CLK_TCK) / wall);
    series_push(&s[1], (double)(b.ns - a.ns) / 1e6 / wall);
    return series_push(&s[2], (double)(h1 - h0) / 1e6 / ((double)(t1 - t0) / 1e9));
}

/* A "Name:   1234 kB" line of /proc/<pid>/status, in MiB. */
static double status_mib(pid_t pid, const char *name)
{
    char path[64], line[256];
    size_t len = strlen(name);
    double mib = -1;
    long kb;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "re")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, name, len) && line[len] == ':' &&
            sscanf(line + len + 1, "%ld", &kb) == 1)
            mib = (double)kb / 1024;
    fclose(f);
    return mib;
}

/* Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup, in MiB:
 * what the process alone holds, shared memory and pages it shares
 * copy-on-write with a template or siblings left out. */
static double private_mib(pid_t pid)
{
    char path[64], line[256];
    double mib = 0;
    long kb;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    if (!(f = fopen(path, "re")))
        return -1;
    while (fgets(line, sizeof line, f))
        if ((sscanf(line, "Private_Clean: %ld", &kb) == 1 ||
             sscanf(line, "Private_Dirty: %ld", &kb) == 1))
            mib += (double)kb / 1024;
    fclose(f);
    return mib;
}

/* The private memory of the fresh workers of a pool of 4 started as sm
 * says, each having answered a call. */
static int private_row(const struct start_mode *sm)
{
    struct series s = {0};
    pid_t pids[IDLE_WORKERS];
    char key[32], label[96];
    pyproc_pool *p;
    int err = pool_new_as(&p, IDLE_WORKERS, 0, sm->start);

    if (err < 0)
        return err;
    err = worker_pids(p, pids, IDLE_WORKERS);
    for (int i = 0; i < IDLE_WORKERS && !err; i++) {
        double mib = private_mib(pids[i]);
        err = mib < 0 ? bench_fail("reading smaps_rollup", -EBADMSG, NULL) : series_push(&s, mib);
    }
    pyproc_pool_free(p);
    if (!err) {
        snprintf(key, sizeof key, "rss-priv%s", sm->suffix);
        snprintf(label, sizeof label, "worker private memory, %s", sm->label);
        bench_row_add(key, label, "MiB", ROW_COST, 0, &s,
                      "smaps_rollup Private_Clean + Private_Dirty");
    }
    series_free(&s);
    return err;
}

static int memory_rows(const pid_t *pids)
{
    struct series rss = {0}, own = {0};
    char note[128];

    for (int i = 0; i < IDLE_WORKERS; i++) {
        double all = status_mib(pids[i], "VmRSS");
        double shm = status_mib(pids[i], "RssShmem");
        if (all < 0 || shm < 0) {
            series_free(&rss);
            series_free(&own);
            return bench_fail("reading /proc/<pid>/status", -EBADMSG, NULL);
        }
        series_push(&rss, all);
        series_push(&own, all - shm);
    }
    snprintf(note, sizeof note, "median of %d fresh workers; rings 2 x %u MiB", IDLE_WORKERS,
             RING_BYTES >> 20);
    bench_row_add("rss", "worker RSS (VmRSS)", "MiB", ROW_COST, 0, &rss, note);
    int err = bench_row_add("rss-private", "worker RSS outside shared memory", "MiB", ROW_COST, 0,
                            &own, "VmRSS - RssShmem");
    for (size_t m = 0; m < 2 && !err; m++)
        err = private_row(&start_modes[m]);
    return err;
}

static void cpu_rows(struct series s[3])
{
    bench_row_add("idle-cpu", "idle pool of 4: workers' CPU (utime+stime)", "ms/s", ROW_COST, 0,
                  &s[0], "/proc/<pid>/stat, 10 ms ticks");
    bench_row_add("idle-cpu-ns", "idle pool of 4: workers' CPU (schedstat)", "ms/s", ROW_COST, 0,
                  &s[1], "every thread, ns resolution");
    bench_row_add("idle-cpu-host", "idle pool of 4: host process CPU", "ms/s", ROW_COST, 0, &s[2],
                  "getrusage(RUSAGE_SELF)");
}

int bench_idle_cpu(void)
{
    double seconds = bench.level == BENCH_SMOKE ? 0.2 : 1.0;
    int windows = bench.level == BENCH_FULL ? 3 : 1;
    struct series s[3] = {0};
    pid_t pids[IDLE_WORKERS];
    pyproc_pool *p;
    int err = bench_pool_new(&p, IDLE_WORKERS);

    if (err < 0)
        return err;
    err = worker_pids(p, pids, IDLE_WORKERS);
    /* Let every side finish its spin before the pool counts as idle. */
    bench_sleep_ns(100000000);
    for (int i = 0; i < windows && !err; i++)
        err = idle_window(pids, seconds, s);
    if (!err) {
        cpu_rows(s);
        err = memory_rows(pids);
    }
    pyproc_pool_free(p);
    for (int i = 0; i < 3; i++)
        series_free(&s[i]);
    return err < 0 ? bench_fail("idle pool", err, NULL) : 0;
}
