/*
 * Per-thread free lists (see freelist.h).  A list is a stack linked
 * through the first bytes of its blocks.  The thread's lists are freed by
 * a thread-specific key's destructor when it exits; the main thread's,
 * like the encoding buffer of start.c, live until the process ends, on
 * the registry.
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

_Thread_local struct pyproc__fl_thread *pyproc__fl_self;
/* This thread's lists were freed (it is exiting): keep nothing more. */
static _Thread_local bool fl_gone;
static pthread_key_t fl_key;
static bool fl_key_ok;
/* Every thread's lists (see freelist.h); a leaf lock, held only to link
 * or unlink one, and across fork() (fl_fork_*), so a child finds it
 * free. */
static pthread_mutex_t fl_all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pyproc__fl_thread *fl_all;

static void fl_release(void *arg)
{
    struct pyproc__fl_thread *t = arg;

    pthread_mutex_lock(&fl_all_lock);
    if (t->prev)
        t->prev->next = t->next;
    else
        fl_all = t->next;
    if (t->next)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&fl_all_lock);
    for (int k = 0; k < PYPROC__FL_KINDS; k++) {
        while (t->head[k]) {
            struct pyproc__fl_node *b = t->head[k];
            t->head[k] = b->next;
            free(b);
        }
    }
    free(t);
    pyproc__fl_self = NULL;
    fl_gone = true;
}

static void fl_fork_prepare(void)
{
    pthread_mutex_lock(&fl_all_lock);
}

static void fl_fork_done(void)
{
    pthread_mutex_unlock(&fl_all_lock);
}

/*
 * At load, before the program's main(): fork handlers registered later
 * run their prepare step before ours and their child step after ours, so
 * one that frees a call or message (and so registers its thread) never
 * finds fl_all_lock held by the fork in progress.
 */
__attribute__((constructor)) static void fl_init(void)
{
    fl_key_ok = pthread_key_create(&fl_key, fl_release) == 0 &&
                pthread_atfork(fl_fork_prepare, fl_fork_done, fl_fork_done) == 0;
}

/* Start keeping blocks on this thread: its lists, on the registry, freed
 * when it exits.  NULL when they cannot be (no key or memory left), and
 * then nothing is kept. */
static struct pyproc__fl_thread *fl_register(void)
{
    struct pyproc__fl_thread *t;

    if (!fl_key_ok || !(t = calloc(1, sizeof *t)))
        return NULL;
    if (pthread_setspecific(fl_key, t) != 0) {
        free(t);
        return NULL;
    }
    pthread_mutex_lock(&fl_all_lock);
    t->next = fl_all;
    if (fl_all)
        fl_all->prev = t;
    fl_all = t;
    pthread_mutex_unlock(&fl_all_lock);
    pyproc__fl_self = t;
    return t;
}

void *pyproc__fl_get_slow(enum pyproc__fl_kind kind, size_t size)
{
    struct pyproc__fl_thread *t = pyproc__fl_self;
    struct pyproc__fl_node *b = t ? t->head[kind] : NULL;

    if (!b)
        return malloc(size);
    t->head[kind] = b->next;
    t->n[kind]--;
    FL_UNPOISON(b, size);
    return b;
}

void pyproc__fl_put_slow(enum pyproc__fl_kind kind, void *block, size_t size)
{
    struct pyproc__fl_thread *t = pyproc__fl_self;
    struct pyproc__fl_node *b = block;

    if (!b)
        return;
    if (!t && !fl_gone)
        t = fl_register();
    if (!t || t->n[kind] >= PYPROC__FL_MAX) {
        free(b);
        return;
    }
    b->next = t->head[kind];
    t->head[kind] = b;
    t->n[kind]++;
    FL_POISON((char *)b + sizeof *b, size - sizeof *b);
}
