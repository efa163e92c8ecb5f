/*
 * A map's shared state: item slots, chunks in flight, the reader's
 * wake-up (see mapq.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../shm/futex.h"
#include "msg.h"
#include "mapq.h"

struct pp_map *pyproc__map_alloc(pyproc_pool *p, const char *ref, bool ordered)
{
    struct pp_map *m = calloc(1, sizeof *m);
    int n = p->nworkers;

    if (!m)
        return NULL;
    m->pool = p;
    m->ordered = ordered;
    m->window = p->map_window;
    m->mask = (m->window & (m->window - 1)) == 0 ? m->window - 1 : 0;
    m->nworkers = n;
    m->ref = strdup(ref);
    m->slots = calloc(m->window, sizeof *m->slots);
    m->doneq = ordered ? NULL : calloc(m->window, sizeof *m->doneq);
    m->free_slots = ordered ? NULL : calloc(m->window, sizeof *m->free_slots);
    for (uint32_t i = 0; m->free_slots && i < m->window; i++)
        m->free_slots[m->n_free++] = m->window - 1 - i;
    m->wref = calloc((size_t)n, sizeof *m->wref);
    m->polling = calloc((size_t)n, sizeof *m->polling);
    m->load = calloc((size_t)n, sizeof *m->load);
    m->chunks_in = calloc((size_t)n, sizeof *m->chunks_in);
    atomic_init(&m->refs, 1);
    pthread_mutex_init(&m->lock, NULL);
    if (!m->ref || !m->slots || (!ordered && (!m->doneq || !m->free_slots)) || !m->wref ||
        !m->polling || !m->load || !m->chunks_in) {
        pyproc__map_unref(m);
        return NULL;
    }
    return m;
}

void pyproc__batch_free(struct pp_batch *b)
{
    if (b) {
        shm_buf_free(&b->b);
        free(b->slots);
        free(b);
    }
}

void pyproc__map_unref(struct pp_map *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; m->slots && i < m->window; i++)
        pyproc_msg_free(m->slots[i].msg);
    for (uint32_t i = m->cache_head; i < m->cache_len; i++)
        pyproc_msg_free(m->cache[i].msg);
    pyproc__fmt_plan_free(&m->plan);
    pyproc__batch_free(m->partial);
    pyproc__batch_free(m->spare);
    while (m->queue_head) {
        struct pp_batch *b = m->queue_head;
        m->queue_head = b->next;
        pyproc__batch_free(b);
    }
    pthread_mutex_destroy(&m->lock);
    free(m->slots);
    free(m->doneq);
    free(m->free_slots);
    free(m->wref);
    free(m->polling);
    free(m->load);
    free(m->chunks_in);
    free(m->ref);
    free(m);
}

void pyproc__map_wake(struct pp_map *m)
{
    pyproc_call *h = NULL;

    /* Release: publishes what changed to the reader's acquire load of seq;
     * seq_cst against its announcement in sleeping (see struct pp_map). */
    atomic_fetch_add_explicit(&m->seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&m->sleeping, memory_order_seq_cst))
        shm_futex_wake(&m->seq, 1, false);
    /* A reader by callback: have pyproc_dispatch() look (see events.c). */
    if (!atomic_load_explicit(&m->deliver, memory_order_acquire))
        return;
    pthread_mutex_lock(&m->lock);
    if ((h = m->handle))
        atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed); /* from the handle's */
    pthread_mutex_unlock(&m->lock);
    if (h) {
        pyproc__stream_notify(h);
        pyproc__call_unref(h);
    }
}

/* The slot of item index, whose batch or chunk starts at first and keeps
 * its items' slots in slots (unordered maps). */
static struct pp_map_slot *slot_of(struct pp_map *m, const uint32_t *slots, uint64_t first,
                                   uint64_t index)
{
    return &m->slots[m->ordered ? pyproc__map_pos(m, index) : slots[index - first]];
}

int pyproc__map_slot_take(struct pp_map *m, struct pp_batch *b)
{
    if (m->ordered)
        return 0;
    if (b->count == b->cap_slots) {
        uint32_t cap = b->cap_slots ? 2 * b->cap_slots : 64;
        uint32_t *l = realloc(b->slots, cap * sizeof *l);
        if (!l)
            return -ENOMEM;
        b->slots = l;
        b->cap_slots = cap;
    }
    /* The window was checked: a slot is free. */
    b->slots[b->count] = m->free_slots[--m->n_free];
    return 0;
}

/* An answer came for slot s: it goes to the reader.  Under lock. */
static void slot_done(struct pp_map *m, struct pp_map_slot *s, int result, pyproc_msg *msg)
{
    if (m->closed) {
        pyproc_msg_free(msg);
        msg = NULL;
    }
    s->msg = msg;
    s->result = result;
    s->state = MAP_SLOT_DONE;
    if (m->doneq)
        m->doneq[pyproc__map_pos(m, m->done_tail++)] = (uint32_t)(s - m->slots);
}

void pyproc__map_batch_wait(struct pp_map *m, const struct pp_batch *b)
{
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < b->count; i++) {
        struct pp_map_slot *s = slot_of(m, b->slots, b->first, b->first + i);
        s->index = b->first + i;
        s->msg = NULL;
        s->result = 0;
        s->state = MAP_SLOT_WAIT;
    }
    pthread_mutex_unlock(&m->lock);
}

void pyproc__map_batch_fail(struct pp_map *m, const struct pp_batch *b, int err, const char *why)
{
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < b->count; i++) {
        struct pp_map_slot *s = slot_of(m, b->slots, b->first, b->first + i);
        pyproc_msg *msg = NULL;
        pyproc__msg_error(&msg, "%s", why);
        s->index = b->first + i;
        slot_done(m, s, err, msg);
    }
    pthread_mutex_unlock(&m->lock);
    pyproc__map_wake(m);
}

/* The next answer ready in the slots, freed; NULL when none.  Under lock. */
static struct pp_map_slot *take_one(struct pp_map *m)
{
    struct pp_map_slot *s = NULL;

    if (m->ordered) {
        s = &m->slots[pyproc__map_pos(m, m->read)];
        if (s->state != MAP_SLOT_DONE || s->index != m->read)
            return NULL;
    } else if (m->done_head != m->done_tail) {
        s = &m->slots[m->doneq[pyproc__map_pos(m, m->done_head++)]];
        m->free_slots[m->n_free++] = (uint32_t)(s - m->slots);
    } else {
        return NULL;
    }
    s->state = MAP_SLOT_FREE;
    m->read++;
    return s;
}

bool pyproc__map_refill(struct pp_map *m)
{
    struct pp_map_slot *s;
    uint32_t n = 0;

    pthread_mutex_lock(&m->lock);
    while (n < sizeof m->cache / sizeof m->cache[0] && (s = take_one(m))) {
        m->cache[n++] = *s;
        s->msg = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    m->cache_head = 0;
    m->cache_len = n;
    return n > 0;
}

struct pp_chunk *pyproc__chunk_alloc(struct pp_map *m, const struct pp_batch *b, int index)
{
    struct pp_chunk *k = calloc(1, sizeof *k);

    if (!k)
        return NULL;
    atomic_init(&k->refs, 1); /* the list of chunks in flight */
    /* From the handle's reference: relaxed (see struct pp_map). */
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    k->map = m;
    k->first = b->first;
    k->count = k->left = b->count;
    if (!m->ordered) {
        k->slots = malloc(b->count * sizeof *k->slots);
        if (!k->slots) {
            free(k);
            pyproc__map_unref(m);
            return NULL;
        }
        memcpy(k->slots, b->slots, b->count * sizeof *k->slots);
    }
    k->index = index;
    k->sent_ns = shm_now_ns();
    pthread_mutex_lock(&m->lock);
    k->next = m->inflight;
    if (m->inflight)
        m->inflight->prev = k;
    m->inflight = k;
    m->load[index] += k->count;
    atomic_fetch_add_explicit(&m->chunks_in[index], 1, memory_order_relaxed);
    pthread_mutex_unlock(&m->lock);
    return k;
}

void pyproc__chunk_ref(struct pp_chunk *k)
{
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
}

void pyproc__chunk_unref(struct pp_chunk *k)
{
    if (!k || atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
        return;
    pyproc__map_unref(k->map);
    free(k->slots);
    free(k);
}

bool pyproc__chunk_bind(struct pp_chunk *k, pyproc_call *c)
{
    struct pp_map *m = k->map;
    bool ended;

    pthread_mutex_lock(&m->lock);
    ended = k->ended;
    if (!ended)
        k->call = c;
    pthread_mutex_unlock(&m->lock);
    if (ended)
        pyproc__call_unref(c);
    return !ended;
}

int pyproc__chunk_store(struct pp_chunk *k, const struct pp_answer *a, uint32_t n)
{
    struct pp_map *m = k->map;
    int err = 0;

    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t index = a[i].index;
        struct pp_map_slot *s = index - k->first < k->count ? slot_of(m, k->slots, k->first, index)
                                                            : NULL;
        if (k->ended || !s || s->index != index || s->state != MAP_SLOT_WAIT) {
            /* An ended chunk's late items are made up too: its end
             * settled every item it had not answered. */
            err = -EBADMSG;
            pyproc_msg_free(a[i].msg);
            continue;
        }
        slot_done(m, s, a[i].result, a[i].msg);
        k->left--;
        m->load[k->index]--;
    }
    pthread_mutex_unlock(&m->lock);
    return err;
}

void pyproc__chunk_measure(struct pp_chunk *k, uint64_t busy_ns, uint32_t n)
{
    struct pp_map *m = k->map;
    int64_t per;

    if (!n || busy_ns > INT64_MAX / 4)
        return;
    per = (int64_t)(busy_ns / n);
    if (per < 1)
        per = 1;
    pthread_mutex_lock(&m->lock);
    /* A moving average, weighted towards the past: one odd batch does
     * not swing the chunks' size. */
    m->item_ns = m->item_ns ? (3 * m->item_ns + per) / 4 : per;
    pthread_mutex_unlock(&m->lock);
}

/* Settle the items k did not answer.  Under lock. */
static void fail_left(struct pp_map *m, struct pp_chunk *k, int result, pyproc_msg *ret)
{
    const char *why = ret ? pyproc_msg_error(ret) : NULL;

    if (result == 0) {
        /* END with items unanswered: the worker broke the protocol. */
        result = -EPROTO;
        why = "the worker ended the chunk without answering this item";
    }
    for (uint32_t i = 0; k->left && i < k->count; i++) {
        struct pp_map_slot *s = slot_of(m, k->slots, k->first, k->first + i);
        if (s->index != k->first + i || s->state != MAP_SLOT_WAIT)
            continue;
        pyproc_msg *msg = NULL;
        pyproc__msg_error(&msg, "%s", why ? why : pyproc_strerror(result));
        slot_done(m, s, result, msg);
        k->left--;
    }
}

void pyproc__chunk_end(struct pp_chunk *k, int result, pyproc_msg *ret)
{
    struct pp_map *m = k->map;
    pyproc_call *c;

    pthread_mutex_lock(&m->lock);
    if (k->ended) {
        pthread_mutex_unlock(&m->lock);
        pyproc_msg_free(ret);
        return;
    }
    k->ended = true;
    m->load[k->index] -= k->left;
    atomic_fetch_sub_explicit(&m->chunks_in[k->index], 1, memory_order_relaxed);
    fail_left(m, k, result, ret);
    if (k->prev)
        k->prev->next = k->next;
    else
        m->inflight = k->next;
    if (k->next)
        k->next->prev = k->prev;
    c = k->call;
    k->call = NULL;
    pthread_mutex_unlock(&m->lock);
    pyproc_msg_free(ret);
    pyproc__map_wake(m);
    if (c)
        pyproc__call_unref(c);
    pyproc__chunk_unref(k);
}
