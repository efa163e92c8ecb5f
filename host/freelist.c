/*
 * Per-thread free lists (see freelist.h).  A list is a stack linked
 * through the first bytes of its blocks.  The thread's lists are freed by
 * a thread-specific key's destructor when it exits; the main thread's,
 * like the encoding buffer of start.c, live until the process ends.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "freelist.h"

/* Under AddressSanitizer every get and put comes here (freelist.h), and
 * a block on a list is poisoned, bar its link, so that a use after it was
 * put back is still reported. */
#ifdef PYPROC__FL_SLOW_ONLY
#include <sanitizer/asan_interface.h>
#define FL_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define FL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define FL_POISON(p, n) ((void)(p), (void)(n))
#define FL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

_Thread_local struct pyproc__fl_thread pyproc__fl;
static pthread_key_t fl_key;
static pthread_once_t fl_once = PTHREAD_ONCE_INIT;
static bool fl_key_ok;

static void fl_release(void *arg)
{
    struct pyproc__fl_thread *t = arg;

    for (int k = 0; k < PYPROC__FL_KINDS; k++) {
        while (t->head[k]) {
            struct pyproc__fl_node *b = t->head[k];
            t->head[k] = b->next;
            free(b);
        }
        t->n[k] = 0;
    }
    t->state = PYPROC__FL_GONE;
}

static void fl_key_init(void)
{
    fl_key_ok = pthread_key_create(&fl_key, fl_release) == 0;
}

/* Have this thread's lists freed when it exits; false when they cannot
 * be (no key left), and then nothing is kept. */
static bool fl_register(void)
{
    pthread_once(&fl_once, fl_key_init);
    if (!fl_key_ok || pthread_setspecific(fl_key, &pyproc__fl) != 0)
        return false;
    pyproc__fl.state = PYPROC__FL_KEYED;
    return true;
}

void *pyproc__fl_get_slow(enum pyproc__fl_kind kind, size_t size)
{
    struct pyproc__fl_thread *t = &pyproc__fl;
    struct pyproc__fl_node *b = t->head[kind];

    if (!b)
        return malloc(size);
    t->head[kind] = b->next;
    t->n[kind]--;
    FL_UNPOISON(b, size);
    return b;
}

void pyproc__fl_put_slow(enum pyproc__fl_kind kind, void *block, size_t size)
{
    struct pyproc__fl_thread *t = &pyproc__fl;
    struct pyproc__fl_node *b = block;

    if (!b)
        return;
    if (t->n[kind] >= PYPROC__FL_MAX ||
        (t->state != PYPROC__FL_KEYED && (t->state == PYPROC__FL_GONE || !fl_register()))) {
        free(b);
        return;
    }
    b->next = t->head[kind];
    t->head[kind] = b;
    t->n[kind]++;
    FL_POISON((char *)b + sizeof *b, size - sizeof *b);
}
