/*
 * pyproc-bench: how fast pyproc is, against what a user would otherwise
 * pick, measured in one run.
 *
 * The machine this runs on is small and noisy, so absolute figures drift
 * from run to run; the table therefore compares every pyproc row with the
 * baselines measured moments before or after it: two C processes ping-
 * ponging over pipes and over spinning shared memory (the floors),
 * Python's ProcessPoolExecutor and multiprocessing.Pool, and the original
 * pop proc transport (bench/baselines.py and bench/popproc.py).
 *
 *   pyproc-bench [--quick | --smoke] [--only STEP,...] [--csv PATH]
 *                [--samples PATH] [--table PATH]
 *
 * --quick runs in under a minute, the default in under five; --smoke runs
 * a few iterations of every row to prove that each one works.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"

struct bench_run bench;

static const struct bench_budget budgets[][3] = {
    /*                smoke            quick                full */
    [BUDGET_FAST] = {{5, 20, 0.2}, {2000, 20000, 1.0}, {20000, 200000, 4.0}},
    [BUDGET_IDLE] = {{1, 3, 0.5}, {1, 20, 2.0}, {2, 100, 10.0}},
    [BUDGET_BULK] = {{1, 3, 0.5}, {2, 5000, 0.4}, {5, 50000, 1.5}},
    [BUDGET_START] = {{0, 1, 0}, {0, 3, 0}, {1, 10, 0}},
    [BUDGET_RATE] = {{0, 2, 0.005}, {1, 5, 0.1}, {1, 9, 0.3}},
    [BUDGET_WARM] = {{0, 0, 0}, {0, 0, 0.5}, {0, 0, 2.0}},
};

const struct bench_budget *bench_budget(enum bench_budget_kind kind)
{
    return &budgets[kind][bench.level];
}

static const struct step {
    const char *name, *section;
    int (*run)(void);
} steps[] = {
    {"pipe", "C floors: two processes passing one byte", bench_floor_pipe},
    {"shm", "C floors: two processes passing one byte", bench_floor_shm},
    {"switch", "C floors: two processes passing one byte", bench_floor_switch},
    {"poll", "C floors: one system call", bench_floor_poll},
    {"sync", "pyproc", bench_sync},
    {"sync-pool", "pyproc", bench_sync_pool},
    {"idle", "pyproc", bench_idle},
    {"async", "pyproc", bench_async},
    {"dispatch", "pyproc", bench_dispatch},
    {"pipelined", "pyproc", bench_pipelined},
    {"saturated", "pyproc", bench_saturated},
    {"gen", "pyproc", bench_gen},
    {"map", "pyproc", bench_map},
    {"echo", "pyproc", bench_echo},
    {"hand", "pyproc", bench_hand},
    {"large", "pyproc", bench_large},
    {"startup", "pyproc", bench_startup},
    {"mixed", "Tail latency of a mixed load: 1 ms and 50 ms calls on 4 workers", bench_mixed},
    {"idle-pool", "pyproc", bench_idle_cpu},
    {"cpu", "CPU-bound Python: the same loop in a worker and under /usr/bin/python3", bench_cpu},
    {"python", NULL, bench_python},
    {"popproc", NULL, bench_popproc},
    {"large-py", NULL, bench_large_python},
};

static bool step_chosen(const char *only, const char *name)
{
    size_t len = strlen(name);

    if (!only)
        return true;
    for (const char *s = only; *s;) {
        size_t n = strcspn(s, ",");
        if (n == len && !strncmp(s, name, len))
            return true;
        s += n + (s[n] == ',');
    }
    return false;
}

static bool has_bench_py(const char *root)
{
    char path[PATH_MAX + 64];

    snprintf(path, sizeof path, "%s/bench/py/benchmods/__init__.py", root);
    return access(path, R_OK) == 0;
}

/*
 * The repository: two levels above the binary (build/bench/pyproc-bench),
 * else the working directory.  *exe_dir gets the binary's folder, where
 * the results go by default.
 */
static int find_root(char *exe_dir)
{
    char exe[PATH_MAX], up[PATH_MAX + 8];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

    if (n < 0)
        return -errno;
    exe[n] = 0;
    snprintf(exe_dir, PATH_MAX, "%s", dirname(exe));
    snprintf(up, sizeof up, "%s/../..", exe_dir);
    if (has_bench_py(up) && realpath(up, bench.root))
        return 0;
    if (has_bench_py(".") && realpath(".", bench.root))
        return 0;
    fprintf(stderr,
            "pyproc-bench: bench/py/benchmods not found above %s "
            "nor in the working directory\n",
            exe_dir);
    return -ENOENT;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pyproc-bench [--quick | --smoke] [--only STEP,...] "
            "[--csv PATH]\n"
            "                    [--samples PATH] [--table PATH]\n"
            "steps:");
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        fprintf(f, " %s", steps[i].name);
    fprintf(f, "\n");
}

struct args {
    const char *only;
    char csv[PATH_MAX + 32], samples[PATH_MAX + 32], table[PATH_MAX];
};

static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        {"quick", no_argument, NULL, 'q'},         {"smoke", no_argument, NULL, 's'},
        {"only", required_argument, NULL, 'o'},    {"csv", required_argument, NULL, 'c'},
        {"samples", required_argument, NULL, 'S'}, {"table", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},          {0}};
    bool smoke = false, quick = false;
    int c;

    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'q':
            quick = true;
            break;
        case 's':
            smoke = true;
            break;
        case 'o':
            a->only = optarg;
            break;
        case 'c':
            snprintf(a->csv, sizeof a->csv, "%s", optarg);
            break;
        case 'S':
            snprintf(a->samples, sizeof a->samples, "%s", optarg);
            break;
        case 't':
            snprintf(a->table, sizeof a->table, "%s", optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return -EINVAL;
    }
    /* --smoke wins: it is what make check runs, with or without --quick. */
    bench.level = smoke ? BENCH_SMOKE : quick ? BENCH_QUICK : BENCH_FULL;
    return 0;
}

static void cpu_model(char *out, size_t len)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    char line[256];

    snprintf(out, len, "unknown CPU");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(out, len, "%s", strchr(line, ':') + 2);
            out[strcspn(out, "\n")] = 0;
            break;
        }
    if (f)
        fclose(f);
}

/* Other work on a small machine moves every figure: the table says how
 * busy the machine was when the run began. */
static void load_average(char *out, size_t len)
{
    FILE *f = fopen("/proc/loadavg", "re");

    if (!f || !fgets(out, (int)len, f))
        snprintf(out, len, "?");
    out[strcspn(out, " ")] = 0;
    if (f)
        fclose(f);
}

/*
 * Where and when the figures were taken (`start` is when the run began,
 * `load` the load average then), and by which command.
 */
static void header(char *buf, size_t len, time_t start, const char *load, int argc, char **argv)
{
    char cpu[128], end_load[64], date[64];
    struct utsname u;
    size_t n;

    cpu_model(cpu, sizeof cpu);
    load_average(end_load, sizeof end_load);
    uname(&u);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M %Z", localtime(&start));
    n = (size_t)snprintf(buf, len,
                         "pyproc %s bench, %s; %s, %ld CPUs, Linux %s; "
                         "load average %s at start, %s at end\ncommand:",
                         pyproc_version(), date, cpu, sysconf(_SC_NPROCESSORS_ONLN), u.release,
                         load, end_load);
    for (int i = 0; i < argc && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, " %s", argv[i]);
    if (n < len)
        snprintf(buf + n, len - n, "\n");
}

/* Make the folder that will hold path. */
static void make_parent(const char *path)
{
    char dir[PATH_MAX];

    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; (p = strchr(p, '/')); *p++ = '/') {
        *p = 0;
        mkdir(dir, 0777);
    }
}

static int run_steps(const char *only)
{
    int failed = 0;

    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        if (!step_chosen(only, steps[i].name))
            continue;
        int64_t t0 = bench_now_ns();
        fprintf(stderr, "pyproc-bench: %s...\n", steps[i].name);
        if (steps[i].section)
            bench_section(steps[i].section);
        if (steps[i].run() < 0) {
            fprintf(stderr, "pyproc-bench: step %s FAILED\n", steps[i].name);
            failed++;
        }
        fprintf(stderr, "pyproc-bench: %s took %.1f s\n", steps[i].name,
                (double)(bench_now_ns() - t0) / 1e9);
    }
    return failed;
}

int main(int argc, char **argv)
{
    char exe_dir[PATH_MAX], head[1024], copy[PATH_MAX + 32], load[64];
    struct args a = {0};
    time_t start;
    int failed, err;

    if (parse_args(argc, argv, &a) < 0 || find_root(exe_dir) < 0)
        return 2;
    snprintf(bench.py_path, sizeof bench.py_path, "%s/bench/py", bench.root);
    if (!*a.csv)
        snprintf(a.csv, sizeof a.csv, "%s/results.csv", exe_dir);
    snprintf(copy, sizeof copy, "%s", a.csv);
    if (!*a.samples)
        snprintf(a.samples, sizeof a.samples, "%s/latency-samples.csv", dirname(copy));
    start = time(NULL);
    load_average(load, sizeof load);
    failed = run_steps(a.only);
    header(head, sizeof head, start, load, argc, argv);

    make_parent(a.csv);
    make_parent(a.samples);
    if (*a.table)
        make_parent(a.table);
    if ((err = bench_print_table(*a.table ? a.table : NULL, head)) < 0)
        fprintf(stderr, "pyproc-bench: %s: %s\n", a.table, strerror(-err));
    if ((err = bench_write_csv(a.csv)) < 0)
        fprintf(stderr, "pyproc-bench: %s: %s\n", a.csv, strerror(-err));
    if ((err = bench_write_samples(a.samples)) < 0)
        fprintf(stderr, "pyproc-bench: %s: %s\n", a.samples, strerror(-err));
    bench_rows_free();
    if (failed)
        fprintf(stderr, "pyproc-bench: %d step%s failed\n", failed, failed > 1 ? "s" : "");
    return failed || err < 0 ? 1 : 0;
}
