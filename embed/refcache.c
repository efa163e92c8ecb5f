/*
 * A call names its function by a reference string ("sub.module.function").
 * Resolving it through the hub's dict costs a str object, its hash and a
 * dict lookup on every call; this cache finds the pair from the frame's
 * bytes with one hash of a few bytes and one compare.  Direct-mapped: two
 * references that collide just take turns, and the dict behind it stays
 * the source of truth.
 */
#include "refcache.h"

#include <string.h>

#include "hot.h"

#define REFCACHE_SLOTS 64 /* a power of two */
#define REFCACHE_REF_MAX 120

/* What a hit reads comes first, so a short reference is found in one
 * cache line. */
struct refcache_slot {
    PyObject *entry;         /* strong ref; NULL: empty */
    struct refcache_hit hit; /* from entry */
    uint64_t hash;
    uint32_t len;
    char ref[REFCACHE_REF_MAX];
};

static struct refcache_slot slots[REFCACHE_SLOTS];
/* The slot found last: calls to one function back to back skip the hash. */
static struct refcache_slot *last = &slots[0];

/* FNV-1a: references are short, and this only picks a slot. */
static uint64_t ref_hash(const char *ref, uint32_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (uint32_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)ref[i]) * 0x100000001b3ull;
    return h;
}

/* memcmp() for references: a few words, compared here rather than in a
 * libc routine whose code is one more page to fault in after idle. */
static bool ref_equal(const char *a, const char *b, uint32_t len)
{
    uint32_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y)
            return false;
    }
    for (; i < len; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

WORKER_HOT static struct refcache_slot *find(const char *ref, uint32_t len)
{
    uint64_t h;
    struct refcache_slot *s;

    if (len > REFCACHE_REF_MAX)
        return NULL;
    if (last->entry && last->len == len && ref_equal(last->ref, ref, len))
        return last;
    h = ref_hash(ref, len);
    s = &slots[h & (REFCACHE_SLOTS - 1)];
    if (s->entry && s->hash == h && s->len == len && ref_equal(s->ref, ref, len)) {
        last = s;
        return s;
    }
    return NULL;
}

PyObject *refcache_find(const char *ref, uint32_t len)
{
    struct refcache_slot *s = find(ref, len);

    return s ? s->entry : NULL; /* borrowed */
}

WORKER_HOT const struct refcache_hit *refcache_find_hit(const char *ref, uint32_t len)
{
    struct refcache_slot *s = find(ref, len);

    return s ? &s->hit : NULL;
}

void refcache_store(const char *ref, uint32_t len, PyObject *entry)
{
    uint64_t h;
    struct refcache_slot *s;

    if (len > REFCACHE_REF_MAX)
        return;
    h = ref_hash(ref, len);
    s = &slots[h & (REFCACHE_SLOTS - 1)];
    Py_INCREF(entry);
    Py_XSETREF(s->entry, entry);            /* drops the pair it held */
    s->hit.fn = PyTuple_GET_ITEM(entry, 0); /* borrowed from entry */
    s->hit.wants_hub = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 1)) == 1;
    s->hash = h;
    s->len = len;
    memcpy(s->ref, ref, len);
    last = s;
}

void refcache_clear(void)
{
    for (unsigned i = 0; i < REFCACHE_SLOTS; i++)
        Py_CLEAR(slots[i].entry);
}
