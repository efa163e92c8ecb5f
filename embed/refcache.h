/*
 * The worker's cache of resolved references, keyed by a reference's bytes
 * as they come in a CALL frame (embed/refcache.c).  Main thread, GIL held.
 */
#ifndef PYPROC_EMBED_REFCACHE_H
#define PYPROC_EMBED_REFCACHE_H

#include <Python.h>
#include <stdbool.h>
#include <stdint.h>

/* What a call needs of a (callable, wants_hub) pair, read once. */
struct refcache_hit {
    PyObject *fn; /* borrowed from the pair */
    bool wants_hub;
};

/* The (callable, wants_hub) pair stored for ref, or NULL.  Borrowed:
 * valid until refcache_clear() or the next refcache_store(). */
PyObject *refcache_find(const char *ref, uint32_t len);

/* The same as a hit; valid as long as the pair. */
const struct refcache_hit *refcache_find_hit(const char *ref, uint32_t len);

/* Remember entry (a pair, checked by the caller) for ref (the cache takes its own reference); a ref too
 * long for the cache is not stored. */
void refcache_store(const char *ref, uint32_t len, PyObject *entry);

/* Forget everything: what a reference means may have changed. */
void refcache_clear(void);

#endif
