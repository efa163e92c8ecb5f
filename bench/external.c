/*
 * The Python baselines run as scripts under /usr/bin/python3 (Debian's,
 * with python3-msgpack).  Each prints one JSON object per row on stdout:
 *   {"key": "ppe-lat", "label": "...", "unit": "us", "kind": "cost",
 *    "p99": true, "samples": true, "note": "...", "values": [12.5, ...]}
 * values being the samples in `unit`.  The script runs in a process group
 * of its own, so that a timeout also ends the workers it started.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"

#define PYTHON "/usr/bin/python3"

extern char **environ;

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

/* The character an escape stands for; '?' for \uXXXX and the like. */
static char json_unescape(char c)
{
    switch (c) {
    case 'n':
        return '\n';
    case 't':
        return '\t';
    case '"':
    case '\\':
    case '/':
        return c;
    case 0:
        return 0;
    default:
        return '?';
    }
}

/* A string into out, cut to cap - 1 bytes; returns what follows it. */
static const char *json_str(const char *p, char *out, size_t cap)
{
    size_t n = 0;
    char c;

    if (*p++ != '"')
        return NULL;
    while ((c = *p++) != '"') {
        if (c == '\\')
            c = json_unescape(*p++);
        if (!c)
            return NULL;
        if (n + 1 < cap)
            out[n++] = c;
    }
    out[n] = 0;
    return p;
}

static const char *json_numbers(const char *p, struct series *s)
{
    char *end;

    p = json_ws(p + 1);
    while (*p != ']') {
        double v = strtod(p, &end);
        if (end == p || series_push(s, v) < 0)
            return NULL;
        p = json_ws(end);
        if (*p == ',')
            p = json_ws(p + 1);
        else if (*p != ']')
            return NULL;
    }
    return p + 1;
}

struct json_row {
    char key[32], label[96], unit[16], kind[8], note[128];
    bool p99, samples;
    struct series values;
};

static void json_set_text(struct json_row *r, const char *name, const char *text)
{
    const struct {
        const char *name;
        char *dst;
        size_t len;
    } f[] = {{"key", r->key, sizeof r->key},
             {"label", r->label, sizeof r->label},
             {"unit", r->unit, sizeof r->unit},
             {"kind", r->kind, sizeof r->kind},
             {"note", r->note, sizeof r->note}};

    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!strcmp(name, f[i].name))
            snprintf(f[i].dst, f[i].len, "%s", text);
}

/* One "name": value pair of a row; returns what follows it, or NULL. */
static const char *json_field(const char *p, struct json_row *r)
{
    char name[32], text[128];
    char *end;
    bool yes;

    if (!(p = json_str(p, name, sizeof name)))
        return NULL;
    p = json_ws(p);
    if (*p++ != ':')
        return NULL;
    p = json_ws(p);
    if (*p == '[')
        return !strcmp(name, "values") ? json_numbers(p, &r->values) : NULL;
    if (*p == '"') {
        if ((p = json_str(p, text, sizeof text)))
            json_set_text(r, name, text);
        return p;
    }
    yes = !strncmp(p, "true", 4);
    if (yes || !strncmp(p, "false", 5)) {
        if (!strcmp(name, "p99"))
            r->p99 = yes;
        else if (!strcmp(name, "samples"))
            r->samples = yes;
        return p + (yes ? 4 : 5);
    }
    strtod(p, &end);
    return end == p ? NULL : end;
}

static int row_from_json(const char *line)
{
    struct json_row r = {0};
    const char *p = json_ws(line);

    if (*p != '{')
        return -EBADMSG;
    for (p = json_ws(p + 1); p && *p != '}';) {
        if ((p = json_field(p, &r)) && *(p = json_ws(p)) == ',')
            p = json_ws(p + 1);
    }
    if (!p || !*r.key || !*r.unit) {
        series_free(&r.values);
        return -EBADMSG;
    }
    return bench_row_add(r.key, r.label, r.unit, strcmp(r.kind, "rate") ? ROW_COST : ROW_RATE,
                         (r.p99 ? ROW_P99 : 0) | (r.samples ? ROW_SAMPLES : 0), &r.values, r.note);
}

/* Hand every complete line in buf to row_from_json; keep the rest. */
static int take_lines(char *buf, size_t *len)
{
    char *nl;
    int err = 0;

    while ((nl = memchr(buf, '\n', *len))) {
        *nl = 0;
        if (*json_ws(buf) == '{') {
            if (row_from_json(buf) < 0 && !err)
                err = bench_fail("a baseline's output", -EBADMSG, NULL);
        } else if (*buf) {
            fprintf(stderr, "%s\n", buf);
        }
        *len -= (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, *len);
    }
    return err;
}

static pid_t spawn_script(char *const argv[], int *out)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int fds[2], err;
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    err = posix_spawn(&pid, argv[0], &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(fds[1]);
    if (err) {
        close(fds[0]);
        return -err;
    }
    *out = fds[0];
    return pid;
}

/* Read rows until EOF or the deadline; -ETIMEDOUT at the deadline. */
static int read_rows(int fd, int64_t deadline)
{
    size_t len = 0, cap = 1 << 20;
    char *buf = malloc(cap);
    int err = buf ? 0 : -ENOMEM;

    while (!err) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int64_t left = (deadline - bench_now_ns()) / 1000000;
        if (left <= 0) {
            err = -ETIMEDOUT;
            break;
        }
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        if (cap - len < 65536) {
            char *more = realloc(buf, cap * 2);
            if (!more) {
                err = -ENOMEM;
                break;
            }
            buf = more;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n == 0)
            break;
        if (n < 0 && errno != EINTR)
            err = -errno;
        len += n > 0 ? (size_t)n : 0;
        if (n > 0 && take_lines(buf, &len) < 0)
            err = -EBADMSG;
    }
    free(buf);
    return err;
}

/* Run bench/<script> and take its rows: only those named in `only`
 * (comma-separated keys), or all when it is NULL. */
static int bench_script(const char *script, const char *only, double timeout_s)
{
    char path[PATH_MAX + 32], *argv[10];
    int n = 0, fd = -1, status, err;
    pid_t pid;

    snprintf(path, sizeof path, "%s/bench/%s", bench.root, script);
    argv[n++] = PYTHON;
    argv[n++] = path;
    argv[n++] = (char *)(bench.level == BENCH_FULL    ? "--full"
                         : bench.level == BENCH_QUICK ? "--quick"
                                                      : "--smoke");
    argv[n++] = "--py-path";
    argv[n++] = bench.py_path;
    if (only) {
        argv[n++] = "--only";
        argv[n++] = (char *)only;
    }
    argv[n] = NULL;
    if ((pid = spawn_script(argv, &fd)) < 0)
        return bench_fail(PYTHON, pid, NULL);
    err = read_rows(fd, bench_now_ns() + (int64_t)(timeout_s * 1e9));
    close(fd);
    if (err == -ETIMEDOUT)
        kill(-pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (err < 0)
        return bench_fail(script, err, NULL);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        fprintf(stderr, "pyproc-bench: %s failed (wait status %#x)\n", script, status);
        return -EIO;
    }
    return 0;
}

int bench_python(void)
{
    static const double timeout_s[] = {90, 45, 240};

    bench_section("Python baselines (" PYTHON ")");
    return bench_script("baselines.py", NULL, timeout_s[bench.level]);
}

int bench_baseline_rows(const char *only)
{
    static const double timeout_s[] = {30, 60, 120};

    return bench_script("baselines.py", only, timeout_s[bench.level]);
}

int bench_popproc(void)
{
    static const double timeout_s[] = {60, 20, 90};

    bench_section(
        "pop proc transport: msgpack over a Unix-socket connection "
        "per call");
    return bench_script("popproc.py", NULL, timeout_s[bench.level]);
}

int bench_large_python(void)
{
    static const double timeout_s[] = {240, 30, 600};

    bench_section("Python baselines for large data (" PYTHON ")");
    return bench_script("large.py", NULL, timeout_s[bench.level]);
}
