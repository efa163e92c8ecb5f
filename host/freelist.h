/*
 * Per-thread free lists of the blocks that every call makes and drops:
 * call objects and small messages.  malloc() keeps only a few blocks of
 * a size per thread (glibc's tcache: 7), so a thread that has hundreds of
 * calls in flight, or frees answers that another thread made, took the
 * arena's slow path twice per call; these lists keep up to
 * PYPROC__FL_MAX blocks of each kind per thread instead.
 *
 * A block is plain malloc() memory of the kind's size: whoever has one may
 * free() it instead of putting it back, and a block got on one thread may
 * be put on any other (it joins that thread's list).  A thread's lists are
 * freed when it exits; what it puts afterwards is freed at once.  Each
 * list is its thread's alone, so nothing here is shared or locked.
 *
 * Floor 0 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_FREELIST_H
#define PYPROC_HOST_FREELIST_H

#include <stddef.h>

enum pyproc__fl_kind {
    PYPROC__FL_CALL, /* struct pyproc_call (core.h) */
    PYPROC__FL_MSG,  /* a message with a small value inline (msg.c) */
    PYPROC__FL_KINDS
};

/* Blocks kept per kind and thread, at most. */
#define PYPROC__FL_MAX 256

/* A block of size bytes, which must be the same for every get and put of
 * a kind: from this thread's list, else from malloc().  NULL when out of
 * memory.  Its contents are undefined. */
void *pyproc__fl_get(enum pyproc__fl_kind kind, size_t size);
/* Give back a block of kind (NULL: nothing), got here or malloc()ed with
 * the kind's size: kept on this thread's list, or freed when it is full. */
void pyproc__fl_put(enum pyproc__fl_kind kind, void *block, size_t size);

#endif
