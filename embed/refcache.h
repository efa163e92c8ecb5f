/*
 * The worker's cache of resolved references, keyed by a reference's bytes
 * as they come in a CALL frame (embed/refcache.c).  Main thread, GIL held.
 */
#ifndef PYPROC_EMBED_REFCACHE_H
#define PYPROC_EMBED_REFCACHE_H

#include <Python.h>
#include <stdint.h>

/* The (callable, wants_hub) pair stored for ref, or NULL.  Borrowed:
 * valid until refcache_clear() or the next refcache_store(). */
PyObject *refcache_find(const char *ref, uint32_t len);

/* Remember entry for ref (the cache takes its own reference); a ref too
 * long for the cache is not stored. */
void refcache_store(const char *ref, uint32_t len, PyObject *entry);

/* Forget everything: what a reference means may have changed. */
void refcache_clear(void);

#endif
