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
 * list is its thread's alone: only the thread reads and writes it, without
 * a lock.  The lists' heads live in a small heap block per thread, linked
 * on a process-wide registry under its own lock (freelist.c), taken only
 * as a thread starts and stops keeping blocks: so the blocks of a thread
 * still running at exit, or of the parent's threads in a forked child,
 * stay reachable for a leak checker, never lost.
 *
 * Floor 0 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_FREELIST_H
#define PYPROC_HOST_FREELIST_H

#include <stddef.h>
#include <stdint.h>

enum pyproc__fl_kind {
    PYPROC__FL_CALL, /* struct pyproc_call (core.h) */
    PYPROC__FL_MSG,  /* a message with a small value inline (msg.c) */
    PYPROC__FL_KINDS
};

/* Blocks kept per kind and thread, at most. */
#define PYPROC__FL_MAX 256

/*
 * A thread's lists, exposed only so that the common cases below inline;
 * use the functions.  pyproc__fl_self is NULL until the thread first puts
 * a block back (and again once its lists were freed at its exit).  prev
 * and next link it on the registry, under the registry's lock.
 */
struct pyproc__fl_node {
    struct pyproc__fl_node *next;
};
struct pyproc__fl_thread {
    struct pyproc__fl_node *head[PYPROC__FL_KINDS];
    uint32_t n[PYPROC__FL_KINDS];
    struct pyproc__fl_thread *prev, *next;
};
extern _Thread_local struct pyproc__fl_thread *pyproc__fl_self;

/* The other cases (freelist.c); and every case under AddressSanitizer,
 * which poisons the blocks on a list. */
void *pyproc__fl_get_slow(enum pyproc__fl_kind kind, size_t size);
void pyproc__fl_put_slow(enum pyproc__fl_kind kind, void *block, size_t size);

#if defined(__SANITIZE_ADDRESS__)
#define PYPROC__FL_SLOW_ONLY 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PYPROC__FL_SLOW_ONLY 1
#endif
#endif

/* A block of size bytes, which must be the same for every get and put of
 * a kind: from this thread's list, else from malloc().  NULL when out of
 * memory.  Its contents are undefined. */
static inline void *pyproc__fl_get(enum pyproc__fl_kind kind, size_t size)
{
#ifndef PYPROC__FL_SLOW_ONLY
    struct pyproc__fl_thread *t = pyproc__fl_self;
    struct pyproc__fl_node *b = t ? t->head[kind] : NULL;

    if (b) {
        t->head[kind] = b->next;
        t->n[kind]--;
        return b;
    }
#endif
    return pyproc__fl_get_slow(kind, size);
}

/* Give back a block of kind (NULL: nothing), got here or malloc()ed with
 * the kind's size: kept on this thread's list, or freed when it is full. */
static inline void pyproc__fl_put(enum pyproc__fl_kind kind, void *block, size_t size)
{
#ifndef PYPROC__FL_SLOW_ONLY
    struct pyproc__fl_thread *t = pyproc__fl_self;
    struct pyproc__fl_node *b = block;

    if (b && t && t->n[kind] < PYPROC__FL_MAX) {
        b->next = t->head[kind];
        t->head[kind] = b;
        t->n[kind]++;
        return;
    }
#endif
    pyproc__fl_put_slow(kind, block, size);
}

#endif
