/*
 * The report: every row measured in this run, each pyproc row compared
 * with the baselines of the same run, printed as a table and written as a
 * CSV; latency samples go to a file of their own for bench/plot.py.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

struct row {
    char key[32], label[96], unit[16], note[128], section[96];
    enum row_kind kind;
    unsigned flags;
    double median, p99;
    size_t n;
    struct series samples; /* kept only with ROW_SAMPLES */
};

static struct row *rows;
static size_t nrows;
static char section[96] = "";

/*
 * What each pyproc row is compared with.  A ratio says how many times
 * better pyproc is (time: baseline / pyproc; rate: pyproc / baseline);
 * `delta` names a row whose difference is shown as well, for targets that
 * are an added cost rather than a ratio.
 */
static const struct compare {
    const char *key;
    const char *vs[6];
    const char *delta;
} compares[] = {
    {"sync", {"pipe", "shm", "ppe-lat", "mp-apply", "popproc-lat"}},
    {"sync-idle", {"pipe", "pipe-idle"}, "sync"},
    {"sync-2w", {"switch"}, "sync"},
    {"dispatch", {"poll"}, "sync"},
    {"sync-cold", {"pipe", "ppe-lat", "mp-apply", "popproc-lat"}, "sync"},
    {"async", {"ppe-lat", "mp-apply", "popproc-lat"}, "sync"},
    {"async-sleep0", {"ppe-lat", "mp-apply", "popproc-lat"}, "async"},
    {"tput-1t-1w", {"ppe-100k", "ppe-map256", "mp-imap1", "mp-imap256"}},
    {"tput-1t-2w", {"ppe-100k", "ppe-map256", "mp-imap1", "mp-imap256"}},
    {"tput-4t-1w", {"ppe-100k", "ppe-map256", "mp-imap1", "mp-imap256"}},
    {"tput-4t-2w", {"ppe-100k", "ppe-map256", "mp-imap1", "mp-imap256"}},
    {"gen", {"ppe-map256", "mp-imap256"}},
    {"map-unord", {"mp-imap256", "ppe-map256"}},
    {"map-ord", {"mp-imap256o", "ppe-map256"}},
    {"echo-16MiB", {"ppe-echo-16MiB"}},
    {"hand-16MiB-buf", {"hand-16MiB-copy"}},
    {"sum-1MiB-buf", {"sum-1MiB-copy", "ppe-shm-sum-1MiB", "ppe-bytes-sum-1MiB"}},
    {"sum-64MiB-buf", {"sum-64MiB-copy", "ppe-shm-sum-64MiB", "ppe-bytes-sum-64MiB"}},
    {"sum-256MiB-buf",
     {"sum-256MiB-copy", "ppe-shm-sum-256MiB", "ppe-bytes-sum-256MiB", "sum-256MiB-in-buf"}},
    {"noop-256MiB-buf", {"noop-4KiB-buf"}},
    {"sum-256MiB-in-buf", {"sum-256MiB-in-private"}},
    {"start-1", {"ppe-start", "popproc-start", "start-1-exec"}},
    {"start-2", {"ppe-start", "popproc-start", "start-2-exec"}},
    {"start-4", {"ppe-start", "popproc-start", "start-4-exec", "start-1"}},
    {"start-1-exec", {"ppe-start", "popproc-start"}},
    {"start-2-exec", {"ppe-start", "popproc-start"}},
    {"start-4-exec", {"ppe-start", "popproc-start"}},
    {"add-proc", {"add-proc-exec"}},
    {"respawn", {"respawn-exec"}},
    {"rss-priv", {"rss-priv-exec"}},
    {"cpu", {"py-cpu"}},
    {"cpu-rtt", {"py-cpu"}},
};

void bench_section(const char *title)
{
    snprintf(section, sizeof section, "%s", title);
}

int bench_row_add(const char *key, const char *label, const char *unit, enum row_kind kind,
                  unsigned flags, struct series *s, const char *note)
{
    struct row *r, *nr = realloc(rows, (nrows + 1) * sizeof *rows);

    if (!nr)
        return -ENOMEM;
    rows = nr;
    r = &rows[nrows++];
    *r = (struct row){.kind = kind, .flags = flags, .n = s->n};
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->label, sizeof r->label, "%s", label);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    snprintf(r->note, sizeof r->note, "%s", note ? note : "");
    snprintf(r->section, sizeof r->section, "%s", section);
    r->median = series_median(s);
    r->p99 = (flags & ROW_P99) ? series_quantile(s, 0.99) : NAN;
    if (flags & ROW_SAMPLES)
        r->samples = *s;
    else
        series_free(s);
    *s = (struct series){0};
    return 0;
}

static const struct row *row_find(const char *key)
{
    for (size_t i = 0; i < nrows; i++)
        if (!strcmp(rows[i].key, key) && !isnan(rows[i].median))
            return &rows[i];
    return NULL;
}

static const struct compare *compare_find(const char *key)
{
    for (size_t i = 0; i < sizeof compares / sizeof compares[0]; i++)
        if (!strcmp(compares[i].key, key))
            return &compares[i];
    return NULL;
}

/* Figures from 0.1 µs to millions of calls/s, all without exponents. */
static void fmt_value(char *buf, size_t len, double v)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else if (fabs(v) >= 1000)
        snprintf(buf, len, "%.0f", v);
    else if (fabs(v) >= 100)
        snprintf(buf, len, "%.1f", v);
    else if (fabs(v) >= 10)
        snprintf(buf, len, "%.2f", v);
    else
        snprintf(buf, len, "%.3f", v);
}

/*
 * The comparisons of row r, as "ppe-lat 41.2x  pipe 0.93x  +1.5 us over
 * sync" for the table or "ppe-lat=41.2;pipe=0.93;delta_sync=1.5" for the
 * CSV.  Returns a string to free, or NULL.
 */
static char *fmt_ratios(const struct row *r, bool table)
{
    const struct compare *c = compare_find(r->key);
    const char *sep = table ? "  " : ";";
    const struct row *b;
    char *out = NULL, v[32];
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    if (!f)
        return NULL;
    for (size_t i = 0; c && !isnan(r->median) && i < 6 && c->vs[i]; i++) {
        if (!(b = row_find(c->vs[i])) || r->median <= 0 || b->median <= 0)
            continue;
        fmt_value(v, sizeof v, r->kind == ROW_RATE ? r->median / b->median : b->median / r->median);
        fprintf(f, table ? "%s%s %sx" : "%s%s=%s", ftell(f) ? sep : "", b->key, v);
    }
    if (c && c->delta && !isnan(r->median) && (b = row_find(c->delta))) {
        fmt_value(v, sizeof v, r->median - b->median);
        if (table)
            fprintf(f, "%s%s%s %s over %s", ftell(f) ? sep : "", r->median >= b->median ? "+" : "",
                    v, r->unit, b->key);
        else
            fprintf(f, "%sdelta_%s=%s", ftell(f) ? sep : "", b->key, v);
    }
    fclose(f);
    return out;
}

static void print_row(FILE *f, const struct row *r)
{
    char med[32], p99[32], *ratios = fmt_ratios(r, true);

    fmt_value(med, sizeof med, r->median);
    fmt_value(p99, sizeof p99, r->p99);
    fprintf(f, "%-14s %-50s %-7s %9s %9s %7zu  %s%s%s\n", r->key, r->label, r->unit, med, p99, r->n,
            ratios ? ratios : "", *r->note && ratios && *ratios ? "; " : "", r->note);
    free(ratios);
}

/* The table under `head` on stdout, and in `path` too unless NULL. */
int bench_print_table(const char *path, const char *head)
{
    FILE *file = path ? fopen(path, "we") : NULL;
    FILE *out[2] = {stdout, file};

    if (path && !file)
        return -errno;
    for (int k = 0; k < 2 && out[k]; k++) {
        FILE *f = out[k];
        fprintf(f, "%s\n%-14s %-50s %-7s %9s %9s %7s  %s\n", head, "key", "row", "unit", "median",
                "p99", "n", "compared with the baselines of this run; notes");
        for (size_t i = 0; i < nrows; i++) {
            if (!i || strcmp(rows[i].section, rows[i - 1].section))
                fprintf(f, "-- %s\n", rows[i].section);
            print_row(f, &rows[i]);
        }
        fprintf(f,
                "Nx: pyproc is N times better than that baseline "
                "(time: baseline/pyproc; rate: pyproc/baseline),\n"
                "so 0.80x means pyproc takes 1.25 times as long.\n");
    }
    if (file && fclose(file) < 0)
        return -errno;
    return 0;
}

static void csv_field(FILE *f, const char *s, const char *end)
{
    if (strpbrk(s, ",\"\n")) {
        fputc('"', f);
        for (; *s; s++)
            fprintf(f, *s == '"' ? "\"\"" : "%c", *s);
        fputc('"', f);
    } else {
        fputs(s, f);
    }
    fputs(end, f);
}

int bench_write_csv(const char *path)
{
    FILE *f = fopen(path, "we");

    if (!f)
        return -errno;
    fprintf(f, "key,section,row,unit,median,p99,samples,ratios,note\n");
    for (size_t i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        char *ratios = fmt_ratios(r, false);
        csv_field(f, r->key, ",");
        csv_field(f, r->section, ",");
        csv_field(f, r->label, ",");
        csv_field(f, r->unit, ",");
        fprintf(f, isnan(r->median) ? "," : "%.6g,", r->median);
        fprintf(f, isnan(r->p99) ? "," : "%.6g,", r->p99);
        fprintf(f, "%zu,", r->n);
        csv_field(f, ratios ? ratios : "", ",");
        csv_field(f, r->note, "\n");
        free(ratios);
    }
    return fclose(f) < 0 ? -errno : 0;
}

/*
 * Raw latencies for the plot, at most 20000 a row: the samples are sorted
 * by then, so an even stride keeps the shape of the distribution.
 */
int bench_write_samples(const char *path)
{
    FILE *f = fopen(path, "we");

    if (!f)
        return -errno;
    fprintf(f, "key,us\n");
    for (size_t i = 0; i < nrows; i++) {
        const struct series *s = &rows[i].samples;
        size_t stride = s->n / 20000 + 1;
        for (size_t j = 0; j < s->n; j += stride)
            fprintf(f, "%s,%.4f\n", rows[i].key, s->v[j]);
    }
    return fclose(f) < 0 ? -errno : 0;
}

void bench_rows_free(void)
{
    for (size_t i = 0; i < nrows; i++)
        series_free(&rows[i].samples);
    free(rows);
    rows = NULL;
    nrows = 0;
}
