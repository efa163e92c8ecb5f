/*
 * Fork generations (see fork.h).
 */
#include "fork.h"

#include <pthread.h>
#include <stdatomic.h>

/* Bumped by the at-fork handler in the child, which is single-threaded
 * then; read anywhere with relaxed order: a thread only ever compares the
 * value its own process had with what an object recorded. */
static _Atomic unsigned fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
}

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

unsigned pyproc__fork_gen(void)
{
    return atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

unsigned pyproc__fork_track(void)
{
    pthread_once(&atfork_once, install_atfork);
    return pyproc__fork_gen();
}
