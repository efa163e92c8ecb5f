/*
 * A map's shared state: the window of item slots that answers land in,
 * the chunks in flight and what they measured, and the reader's wake-up.
 * map.c (the public API) packs and sends chunks and reads the slots; the
 * drainer stores item results (chunk.c); a chunk's end, however it comes
 * (its END or ERROR, its worker's death, the pool's end), settles the
 * items it did not answer (pyproc__chunk_end(), from
 * pyproc__call_complete()).
 *
 * An item lives in a slot from its push until it is read: item i in slot
 * i % window in an ordered map, whose reader takes items in order (so
 * all items before i - window are read); in the slot it took from the
 * free ones in an unordered map, where each chunk keeps its items' slots.
 * At most window items are pushed and unread, so no two live items share
 * a slot, and neither side's memory grows with the input.
 *
 * Floor 2 of host/ (see host/floors.txt).
 */
#ifndef PYPROC_HOST_MAPQ_H
#define PYPROC_HOST_MAPQ_H

#include <stdbool.h>
#include <stdint.h>

#include "call.h"
#include "fmt.h"

enum { MAP_SLOT_FREE, MAP_SLOT_WAIT, MAP_SLOT_DONE };

struct pp_map_slot {
    uint64_t index;  /* the item it holds */
    pyproc_msg *msg; /* its answer, once MAP_SLOT_DONE */
    int result;      /* 0 or the item's error */
    int state;       /* MAP_SLOT_* */
};

/* Items encoded into one MAP_CHUNK payload, not sent yet: the owner's. */
struct pp_batch {
    struct shm_buf b;
    size_t head_len;    /* see pyproc__wire_chunk_begin() */
    int64_t born_ns;    /* when its first item came */
    uint32_t max_items; /* seal it at this many items */
    uint64_t first;
    uint32_t count;
    uint32_t *slots; /* unordered maps: each item's slot; cap_slots of room */
    uint32_t cap_slots;
    struct pp_batch *next;
};

/*
 * A chunk sent to a worker.  refs counts the map's list of chunks in
 * flight (dropped by pyproc__chunk_end()) and the call that carries it
 * (c->chunk, dropped when the call is freed), so a drainer that found the
 * call may still look at the chunk after its end.  Taken relaxed from a
 * reference already held; dropped acq_rel, as a call's are.
 */
struct pp_chunk {
    _Atomic int refs;
    struct pp_map *map; /* a reference, dropped with the chunk */
    uint64_t first;
    uint32_t count;
    uint32_t *slots; /* unordered maps: each item's slot */
    int index;       /* the worker index it went to */
    int64_t sent_ns; /* set before it is shared */
    /* Under map->lock: the map's reference to the call carrying it (NULL
     * before pyproc__chunk_bind() and after the end), items it has not
     * answered, whether it ended, its place in map->inflight. */
    pyproc_call *call;
    uint32_t left;
    bool ended;
    struct pp_chunk *prev, *next;
};

/*
 * The map.  refs counts the handle and each chunk (acq_rel on the drop,
 * as for calls).  pool, ref, ordered, window, nworkers and the arrays'
 * sizes are constant.  The owner (the one thread at a time that pushes
 * and reads) alone touches the fields marked so; the rest is under lock.
 */
struct pp_map {
    _Atomic int refs;
    pyproc_pool *pool;
    /* The map's handle while it lives, for a callback on its items
     * (pyproc_stream_on_item()); written under lock (NULL once freed).
     * deliver: set (release) when the handle gets such a callback, loaded
     * (acquire) by pyproc__map_wake() before it looks. */
    pyproc_call *handle;
    _Atomic bool deliver;
    char *ref;
    bool ordered;
    uint32_t window;
    uint32_t mask; /* window - 1 when a power of two (the default), else 0 */
    int nworkers;

    /* The owner's. */
    uint64_t pushed;
    bool input_ended;
    struct pp_batch *partial;                 /* items being packed */
    struct pp_batch *queue_head, *queue_tail; /* sealed, waiting for a worker */
    struct pp_batch *spare;                   /* a sent one's buffer, for reuse */
    struct pp_worker **wref;                  /* per index: the worker last sent to, a ref */
    uint8_t *polling;                         /* per index: how we poll wref's (MAP_POLL_*) */
    int64_t stalled_since;                    /* no live worker took a chunk since */
    uint32_t *free_slots;                     /* unordered maps: a stack of n_free slots */
    uint32_t n_free;
    struct pyproc__fmt_plan plan; /* the format of the last push */
    /* Answers taken out of the slots in one go, handed out one by one. */
    struct pp_map_slot cache[64];
    uint32_t cache_head, cache_len;

    pthread_mutex_t lock;
    struct pp_map_slot *slots; /* window of them */
    uint64_t read;             /* items handed out (written by the owner) */
    uint32_t *doneq;           /* unordered maps: answered items' slots, as they came */
    uint64_t done_head, done_tail;
    uint32_t *load; /* per worker index: items in flight */
    /* Per worker index: chunks in flight; written under lock, read also
     * without it (relaxed) as a hint of an idle worker. */
    _Atomic uint32_t *chunks_in;
    int64_t item_ns; /* time per item the workers measured; 0: none yet */
    struct pp_chunk *inflight;
    bool closed; /* the handle is gone: answers are dropped */

    /* Set once by pyproc_cancel() or the handle's free (seq_cst, read by
     * the owner and by pyproc__chunk_bind() under lock). */
    _Atomic bool cancelled;
    /*
     * The reader's wake-up: bumped (release) after every change it may
     * wait for, under lock or after it; the reader loads it (acquire)
     * before it looks, announces itself in sleeping (seq_cst, as is the
     * waker's load of it after its bump) and sleeps while seq is what it
     * loaded.
     */
    _Atomic uint32_t seq;
    _Atomic bool sleeping;
};

/* Free a batch and what it holds (NULL: nothing). */
void pyproc__batch_free(struct pp_batch *b);

/* A new map with the handle's reference, or NULL (no memory). */
struct pp_map *pyproc__map_alloc(pyproc_pool *p, const char *ref, bool ordered);
void pyproc__map_unref(struct pp_map *m);
/* Wake the map's reader after a change. */
void pyproc__map_wake(struct pp_map *m);

/* Take a free slot for the next item of batch b (unordered maps);
 * -ENOMEM.  The owner only. */
int pyproc__map_slot_take(struct pp_map *m, struct pp_batch *b);
/* Mark a sealed batch's items as waiting for answers. */
void pyproc__map_batch_wait(struct pp_map *m, const struct pp_batch *b);
/* Answer every item of a batch that will not be sent with err and the
 * text of why. */
void pyproc__map_batch_fail(struct pp_map *m, const struct pp_batch *b, int err, const char *why);
/* Where counter i falls in a ring of window entries (item slots of an
 * ordered map, the queue of answered slots of an unordered one). */
static inline uint32_t pyproc__map_pos(const struct pp_map *m, uint64_t i)
{
    return m->mask ? (uint32_t)(i & m->mask) : (uint32_t)(i % m->window);
}

/* Fill the reader's cache with every answer ready, up to its size, under
 * one lock; false when none is.  The owner only. */
bool pyproc__map_refill(struct pp_map *m);

/*
 * The next answer the reader may have, in input order or, for an
 * unordered map, as they came: true with its message, result and index,
 * the slot freed; false when it has not come.  The owner only.
 */
static inline bool pyproc__map_take(struct pp_map *m, pyproc_msg **msg, int *result,
                                    uint64_t *index)
{
    struct pp_map_slot *s;

    if (m->cache_head == m->cache_len && !pyproc__map_refill(m))
        return false;
    s = &m->cache[m->cache_head++];
    *msg = s->msg;
    *result = s->result;
    *index = s->index;
    return true;
}

/* A chunk of b's items for worker index, in the map's chunks in flight;
 * NULL when out of memory. */
struct pp_chunk *pyproc__chunk_alloc(struct pp_map *m, const struct pp_batch *b, int index);
void pyproc__chunk_ref(struct pp_chunk *k);
void pyproc__chunk_unref(struct pp_chunk *k);
/* The call that carries k was sent; the map keeps the caller's reference
 * to it until k ends (dropped at once when it ended already: false). */
bool pyproc__chunk_bind(struct pp_chunk *k, pyproc_call *c);
/* One item's answer, on its way into a slot. */
struct pp_answer {
    uint64_t index;
    pyproc_msg *msg; /* result 0: its value; else its error message */
    int result;
};
/*
 * Store n answers of k's items, under one lock.  Takes every msg.
 * Returns 0, or -EBADMSG when one is not an item of k's still waiting (a
 * worker that answers twice or makes up an index).
 */
int pyproc__chunk_store(struct pp_chunk *k, const struct pp_answer *a, uint32_t n);
/* Its worker spent busy_ns running n of k's items (a MAP_ITEMS): what
 * sizes the chunks to come. */
void pyproc__chunk_measure(struct pp_chunk *k, uint64_t busy_ns, uint32_t n);
/*
 * k is over: result 0 when its worker answered every item, else its error
 * with ret (taken; may be NULL) saying why, which each item still waiting
 * gets.  Drops the map's references to its call and to k.  Once per
 * chunk.
 */
void pyproc__chunk_end(struct pp_chunk *k, int result, pyproc_msg *ret);

#endif
