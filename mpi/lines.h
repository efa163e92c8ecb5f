/*
 * Remote workers' output lines, handed from the relay thread to a thread
 * of their own that passes them to the pool's output function (or
 * stderr): a slow output function then holds up only later lines, never
 * the relay and with it every call of the pool.
 *
 * The queue between them is bounded (PM_LINES_MAX_BYTES): a worker that
 * prints faster than the output function takes its lines loses what does
 * not fit, and the loss is said on stderr, where a local worker would be
 * made to wait on its full pipe instead.
 */
#ifndef PYPROC_MPI_LINES_H
#define PYPROC_MPI_LINES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../host/chan.h"

#define PM_LINES_MAX_BYTES (4u << 20)

struct pm_line;

/*
 * Written under lock: by pm_lines_add() (the relay thread) the tail and
 * the counts, by the output thread the head; stop by pm_lines_stop().
 */
struct pm_lines {
    pyproc_pool *p; /* set before the first line */
    pthread_mutex_t lock;
    pthread_cond_t more;
    struct pm_line *head, *tail;
    size_t bytes;     /* of the lines queued */
    uint64_t dropped; /* lines that did not fit since the last said */
    bool stop;
    bool running;
    pthread_t thread;
};

/* Start the output thread: 0 or -errno. */
int pm_lines_start(struct pm_lines *l);
/* Queue one line of worker index's stream (1 stdout, 2 stderr). */
void pm_lines_add(struct pm_lines *l, int index, int stream, const uint8_t *s, size_t n);
/* Pass on every line queued, then end the thread; also when never
 * started. */
void pm_lines_stop(struct pm_lines *l);

#endif
