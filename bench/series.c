/*
 * Samples, quantiles and the timing loop shared by every latency row.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "bench/bench.h"

int series_push(struct series *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        double *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv)
            return -ENOMEM;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double series_quantile(struct series *s, double q)
{
    size_t rank;

    if (!s->n)
        return NAN;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    rank = (size_t)ceil(q * (double)s->n);
    return s->v[rank ? rank - 1 : 0];
}

double series_median(struct series *s)
{
    if (!s->n)
        return NAN;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    if (s->n % 2)
        return s->v[s->n / 2];
    return (s->v[s->n / 2 - 1] + s->v[s->n / 2]) / 2;
}

void series_free(struct series *s)
{
    free(s->v);
    *s = (struct series){0};
}

int64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_ns(int64_t ns)
{
    struct timespec ts = {ns / 1000000000, ns % 1000000000};

    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
        ;
}

int bench_latency(struct series *s, const struct bench_budget *b, int64_t pause_ns, bench_op *op,
                  void *arg)
{
    int64_t deadline, t0, t1;
    int err;

    for (int i = 0; i < b->warmup; i++)
        if ((err = op(arg)) < 0)
            return err;
    deadline = bench_now_ns() + (int64_t)(b->max_seconds * 1e9);
    for (t1 = 0; s->n < b->max_samples && (!s->n || t1 < deadline);) {
        if (pause_ns)
            bench_sleep_ns(pause_ns);
        t0 = bench_now_ns();
        err = op(arg);
        t1 = bench_now_ns();
        if (err < 0)
            return err;
        if (series_push(s, (double)(t1 - t0) / 1e3) < 0)
            return -ENOMEM;
    }
    return 0;
}
