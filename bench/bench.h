/*
 * pyproc-bench: what one measurement needs from the others.
 *
 * Every step measures something and adds rows; the report compares each
 * pyproc row with the baselines measured in the same run, because on a
 * small, noisy machine only ratios carry from one run to the next.
 */
#ifndef PYPROC_BENCH_H
#define PYPROC_BENCH_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pyproc.h"

enum bench_level { BENCH_SMOKE, BENCH_QUICK, BENCH_FULL };

/* The run as the command line set it up. */
struct bench_run {
    enum bench_level level;
    char root[PATH_MAX];         /* the repository: bench/ lives there */
    char py_path[PATH_MAX + 16]; /* bench/py, the workers' python_path */
};

extern struct bench_run bench;

/* How much one measurement may take at the run's level. */
struct bench_budget {
    int warmup; /* untimed operations first */
    size_t max_samples;
    double max_seconds; /* stop earlier once this much time has passed */
};

/* Which kind of measurement a budget is for. */
enum bench_budget_kind {
    BUDGET_FAST,  /* round trips of microseconds */
    BUDGET_IDLE,  /* one round trip after 50 ms of idling */
    BUDGET_BULK,  /* round trips carrying megabytes */
    BUDGET_START, /* starting pools */
    BUDGET_RATE,  /* repetitions of a throughput run */
    BUDGET_WARM,  /* calls that settle a new pool before it is measured */
};

const struct bench_budget *bench_budget(enum bench_budget_kind kind);

/* ---- series.c: samples and clocks ---- */

struct series {
    double *v;
    size_t n, cap;
};

int series_push(struct series *s, double v);
/* The q-quantile (0..1) by nearest rank; sorts the series. NAN if empty. */
double series_quantile(struct series *s, double q);
double series_median(struct series *s);
void series_free(struct series *s);

int64_t bench_now_ns(void);
void bench_sleep_ns(int64_t ns);

/* One operation to time; returns 0 or a negative errno. */
typedef int bench_op(void *arg);

/*
 * Time op, after b->warmup untimed runs, until b->max_samples or
 * b->max_seconds, sleeping pause_ns before each timed run.  Pushes each
 * round trip in microseconds.  Returns 0 or op's first error.
 */
int bench_latency(struct series *s, const struct bench_budget *b, int64_t pause_ns, bench_op *op,
                  void *arg);

/* ---- report.c: rows, the table, the CSV ---- */

enum row_kind {
    ROW_COST, /* lower is better: time, CPU, memory */
    ROW_RATE, /* higher is better: calls/s, GB/s */
};

/* Flags of bench_row_add(). */
#define ROW_P99 0x1u     /* a latency: report its p99 too */
#define ROW_SAMPLES 0x2u /* dump its samples for the latency plot */

/*
 * Add a row from a series of values already in `unit`; the series moves
 * into the report (and is emptied).  `key` names the row in ratios and the
 * CSV.  Returns 0 or -ENOMEM.
 */
int bench_row_add(const char *key, const char *label, const char *unit, enum row_kind kind,
                  unsigned flags, struct series *s, const char *note);
void bench_section(const char *title);
int bench_print_table(const char *path, const char *head);
int bench_write_csv(const char *path);
int bench_write_samples(const char *path);
void bench_rows_free(void);

/* ---- the steps; each returns 0 or a negative errno ---- */

int bench_floor_pipe(void);
int bench_floor_shm(void);
int bench_floor_switch(void);
int bench_floor_poll(void);
int bench_sync(void);
int bench_sync_pool(void);
int bench_idle(void);
int bench_async(void);
int bench_dispatch(void);
int bench_pipelined(void);
int bench_saturated(void);
int bench_gen(void);
int bench_map(void);
int bench_echo(void);
int bench_hand(void);
int bench_startup(void);
int bench_idle_cpu(void);
int bench_cpu(void);
int bench_python(void);
int bench_popproc(void);
int bench_large(void);
int bench_large_python(void);
int bench_mixed(void);
/* The rows of bench/baselines.py named in `only` (comma-separated keys),
 * added to this run's report. */
int bench_baseline_rows(const char *only);

/* ---- pools.c: helpers for the steps that use pyproc ---- */

/* Start a pool of `workers` with bench/py mounted as sub "bench". */
int bench_pool_new(pyproc_pool **ret, int workers);
/* Call every worker of p in turn for the run's warm-up time. */
int bench_pool_warm(pyproc_pool *p, int workers);
/* bench_pool_new() then bench_pool_warm(): a pool in its steady state. */
int bench_pool(pyproc_pool **ret, int workers);
/* The same two with the pool's spin_us (0: the default, -1: none). */
int bench_pool_new_spin(pyproc_pool **ret, int workers, int spin_us);
int bench_pool_spin(pyproc_pool **ret, int workers, int spin_us);
/* Say what failed, with Python's error text when there is one. */
int bench_fail(const char *what, int err, pyproc_msg *m);

#endif
