/*
 * Remote workers' output lines, passed on by a thread of their own (see
 * lines.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lines.h"

struct pm_line {
    struct pm_line *next;
    int index, stream;
    size_t len;
    char text[]; /* len bytes and a NUL */
};

static void line_emit(pyproc_pool *p, const struct pm_line *ln)
{
    if (p->output)
        p->output(p, ln->index, ln->stream, ln->text, ln->len, p->output_data);
    else
        fprintf(stderr, "[%.40s/%d] %s\n", p->name, ln->index, ln->text);
}

static void say_dropped(const struct pm_lines *l, uint64_t n)
{
    fprintf(stderr,
            "pyproc %.40s: %llu lines of remote workers' output dropped: "
            "the output function did not keep up\n",
            l->p->name, (unsigned long long)n);
}

static void *lines_main(void *arg)
{
    struct pm_lines *l = arg;

    pthread_mutex_lock(&l->lock);
    for (;;) {
        while (!l->head && !l->stop)
            pthread_cond_wait(&l->more, &l->lock);
        struct pm_line *ln = l->head;
        if (!ln)
            break; /* stopped, and nothing left */
        l->head = ln->next;
        if (!l->head)
            l->tail = NULL;
        l->bytes -= ln->len;
        uint64_t dropped = l->dropped;
        l->dropped = 0;
        pthread_mutex_unlock(&l->lock);
        if (dropped)
            say_dropped(l, dropped);
        line_emit(l->p, ln);
        free(ln);
        pthread_mutex_lock(&l->lock);
    }
    uint64_t dropped = l->dropped; /* after the last line, or with none queued */
    pthread_mutex_unlock(&l->lock);
    if (dropped)
        say_dropped(l, dropped);
    return NULL;
}

int pm_lines_start(struct pm_lines *l)
{
    int err;

    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->more, NULL);
    err = pthread_create(&l->thread, NULL, lines_main, l);
    l->running = err == 0;
    return -err;
}

void pm_lines_add(struct pm_lines *l, int index, int stream, const uint8_t *s, size_t n)
{
    struct pm_line *ln = NULL;

    pthread_mutex_lock(&l->lock);
    if (l->bytes + n <= PM_LINES_MAX_BYTES)
        ln = malloc(sizeof *ln + n + 1);
    if (!ln) {
        l->dropped++;
        pthread_mutex_unlock(&l->lock);
        return;
    }
    *ln = (struct pm_line){.index = index, .stream = stream, .len = n};
    memcpy(ln->text, s, n);
    ln->text[n] = 0;
    if (l->tail)
        l->tail->next = ln;
    else
        l->head = ln;
    l->tail = ln;
    l->bytes += n;
    pthread_cond_signal(&l->more);
    pthread_mutex_unlock(&l->lock);
}

void pm_lines_stop(struct pm_lines *l)
{
    if (!l->running)
        return;
    pthread_mutex_lock(&l->lock);
    l->stop = true;
    pthread_cond_signal(&l->more);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    l->running = false;
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->more);
}
