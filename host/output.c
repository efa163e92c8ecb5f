/*
 * A worker's stdout and stderr, passed on line by line.
 *
 * Each worker writes both into pipes whose read ends only the pool holds;
 * the service thread reads them when epoll says so, gathers whole lines
 * and hands each to the pool's output function or writes it to the host's
 * stderr behind "[pool/index] ".  Lines are handed on whole so that the
 * output of several workers interleaves by lines, never inside one.  A
 * line longer than OUTPUT_LINE_MAX is handed on in pieces rather than
 * held back, and when a worker ends, what it wrote after its last newline
 * is handed on as a line of its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "output.h"

#define OUTPUT_LINE_MAX 4096

/*
 * Bytes read from one pipe per call: a worker that writes as fast as we
 * read must not keep the service thread here.  epoll is level-triggered,
 * so what is left brings the thread back on its next pass.
 */
#define OUTPUT_READ_MAX (64 * 1024)

static void write_all(const struct iovec *iov, int n)
{
    struct iovec v[3];
    ssize_t done;

    memcpy(v, iov, (size_t)n * sizeof *v);
    while (n > 0) {
        done = writev(STDERR_FILENO, v, n);
        if (done < 0 && errno == EINTR)
            continue;
        if (done <= 0)
            return; /* nowhere to write: the line is dropped */
        while (n > 0 && (size_t)done >= v[0].iov_len) {
            done -= (ssize_t)v[0].iov_len;
            memmove(v, v + 1, (size_t)--n * sizeof *v);
        }
        if (n > 0) {
            v[0].iov_base = (char *)v[0].iov_base + done;
            v[0].iov_len -= (size_t)done;
        }
    }
}

/* line[len] may be overwritten: it becomes the NUL the callback is promised. */
static void emit(struct pp_worker *w, int k, char *line, size_t len)
{
    pyproc_pool *p = w->pool;
    char prefix[64];

    if (p->output) {
        char saved = line[len];
        line[len] = 0;
        p->output(p, w->index, k + 1, line, len, p->output_data);
        line[len] = saved;
        return;
    }
    int n = snprintf(prefix, sizeof prefix, "[%.40s/%d] ", p->name, w->index);
    struct iovec iov[3] = {
        {prefix, (size_t)n},
        {line, len},
        {"\n", 1},
    };
    write_all(iov, 3);
}

/* Hand on every whole line in the buffer and keep the rest. */
static void emit_lines(struct pp_worker *w, int k)
{
    struct pp_output *o = &w->out[k];
    size_t start = 0;
    char *nl;

    while ((nl = memchr(o->buf + start, '\n', o->len - start))) {
        emit(w, k, o->buf + start, (size_t)(nl - (o->buf + start)));
        start = (size_t)(nl - o->buf) + 1;
    }
    if (start == 0 && o->len == OUTPUT_LINE_MAX) {
        emit(w, k, o->buf, o->len);
        start = o->len;
    }
    memmove(o->buf, o->buf + start, o->len - start);
    o->len -= start;
}

static void close_pipe(struct pp_worker *w, int k)
{
    struct pp_output *o = &w->out[k];

    if (o->fd < 0)
        return;
    if (o->len > 0)
        emit(w, k, o->buf, o->len);
    o->len = 0;
    epoll_ctl(w->pool->epfd, EPOLL_CTL_DEL, o->fd, NULL);
    close(o->fd);
    o->fd = -1;
}

void pyproc__output_read(struct pp_worker *w, int k)
{
    struct pp_output *o = &w->out[k];
    size_t taken = 0;

    if (o->fd < 0)
        return;
    if (!o->buf && !(o->buf = malloc(OUTPUT_LINE_MAX + 1))) {
        close_pipe(w, k); /* the worker sees EPIPE rather than stalling us */
        return;
    }
    while (taken < OUTPUT_READ_MAX) {
        ssize_t n = read(o->fd, o->buf + o->len, OUTPUT_LINE_MAX - o->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            close_pipe(w, k);
            return;
        }
        o->len += (size_t)n;
        taken += (size_t)n;
        emit_lines(w, k);
    }
}

/*
 * The worker has exited, but a process it started may still hold the
 * pipes: take only what is there now, without waiting for EOF.
 */
void pyproc__output_finish(struct pp_worker *w)
{
    for (int k = 0; k < 2; k++) {
        pyproc__output_read(w, k);
        close_pipe(w, k);
    }
}

void pyproc__output_close(struct pp_worker *w)
{
    for (int k = 0; k < 2; k++) {
        if (w->out[k].fd >= 0)
            close(w->out[k].fd);
        w->out[k].fd = -1;
        free(w->out[k].buf);
        w->out[k].buf = NULL;
    }
}
