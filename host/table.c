/*
 * A worker's call table: the calls waiting for an answer from it, by id.
 *
 * An id is a slot number in the low 32 bits and the slot's generation in
 * the high 32, so a late answer for a call whose slot was reused, or an id
 * a broken worker made up, finds nothing.  The table holds one reference
 * to each call in it.
 */
#include <errno.h>
#include <stdlib.h>

#include "table.h"

static void slot_release(struct pp_worker *w, uint32_t slot)
{
    w->slots[slot].call = NULL;
    w->slots[slot].gen++;
    w->slots[slot].next_free = w->free_head;
    w->free_head = slot;
    atomic_store_explicit(&w->in_flight,
                          atomic_load_explicit(&w->in_flight, memory_order_relaxed) - 1,
                          memory_order_relaxed); /* under calls_lock */
}

int pyproc__table_add(struct pp_worker *w, pyproc_call *c)
{
    uint32_t slot;

    pyproc__lock(&w->calls_lock);
    if (w->calls_closed) {
        int err = w->calls_retired ? -ESTALE : -EPIPE;
        pyproc__unlock(&w->calls_lock);
        return err;
    }
    if (w->free_head == UINT32_MAX) {
        uint32_t n = w->nslots ? w->nslots * 2 : 64;
        struct call_slot *s = realloc(w->slots, n * sizeof *s);
        if (!s) {
            pyproc__unlock(&w->calls_lock);
            return -ENOMEM;
        }
        for (uint32_t i = w->nslots; i < n; i++)
            s[i] = (struct call_slot){NULL, 1, i + 1 < n ? i + 1 : UINT32_MAX};
        w->free_head = w->nslots;
        w->slots = s;
        w->nslots = n;
    }
    slot = w->free_head;
    w->free_head = w->slots[slot].next_free;
    w->slots[slot].call = c;
    c->id = ((uint64_t)w->slots[slot].gen << 32) | slot;
    atomic_store_explicit(&w->in_flight,
                          atomic_load_explicit(&w->in_flight, memory_order_relaxed) + 1,
                          memory_order_relaxed); /* under calls_lock */
    pyproc__unlock(&w->calls_lock);
    return 0;
}

bool pyproc__table_remove(struct pp_worker *w, pyproc_call *c)
{
    uint32_t slot = (uint32_t)c->id;
    bool found = false;

    pyproc__lock(&w->calls_lock);
    if (slot < w->nslots && w->slots[slot].call == c) {
        slot_release(w, slot);
        found = true;
    }
    pyproc__unlock(&w->calls_lock);
    return found;
}

static pyproc_call *lookup(struct pp_worker *w, uint64_t id, bool take)
{
    uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);
    pyproc_call *c = NULL;

    pyproc__lock(&w->calls_lock);
    if (slot < w->nslots && w->slots[slot].gen == gen && w->slots[slot].call) {
        c = w->slots[slot].call;
        if (take)
            slot_release(w, slot); /* the table's reference moves to us */
        else
            /* From the table's own reference: relaxed (pool.h). */
            atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    }
    pyproc__unlock(&w->calls_lock);
    return c;
}

pyproc_call *pyproc__call_take(struct pp_worker *w, uint64_t id)
{
    return lookup(w, id, true);
}

pyproc_call *pyproc__call_find(struct pp_worker *w, uint64_t id)
{
    return lookup(w, id, false);
}

pyproc_call *pyproc__table_take_next(struct pp_worker *w, uint32_t *cursor)
{
    pyproc_call *c = NULL;

    pyproc__lock(&w->calls_lock);
    w->calls_closed = true;
    for (; !c && *cursor < w->nslots; ++*cursor) {
        if (w->slots[*cursor].call) {
            c = w->slots[*cursor].call;
            slot_release(w, *cursor); /* the table's reference moves to us */
        }
    }
    pyproc__unlock(&w->calls_lock);
    return c;
}

bool pyproc__table_close_idle(struct pp_worker *w)
{
    pyproc__lock(&w->calls_lock);
    if (!w->calls_closed && atomic_load_explicit(&w->in_flight, memory_order_relaxed) == 0)
        w->calls_closed = w->calls_retired = true;
    bool closed = w->calls_closed;
    pyproc__unlock(&w->calls_lock);
    return closed;
}

bool pyproc__table_has(struct pp_worker *w, uint64_t id)
{
    uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);

    pyproc__lock(&w->calls_lock);
    bool has = slot < w->nslots && w->slots[slot].gen == gen && w->slots[slot].call;
    pyproc__unlock(&w->calls_lock);
    return has;
}
