/*
 * Batches, sends, receives, ring queues and idling, shared by the host's
 * relay and the agent (see wire.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wire.h"

#define PM_ALIGN(n) (((n) + 7u) & ~(size_t)7u)

static int batch_reserve(struct pm_batch *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *nb = realloc(b->buf, cap);
    if (!nb)
        return -ENOMEM;
    b->buf = nb;
    b->cap = cap;
    return 0;
}

int pm_batch_add(struct pm_batch *b, uint32_t wid, uint16_t kind, uint16_t type, uint64_t id,
                 const void *payload, size_t n)
{
    struct pm_hdr h = {.wid = wid, .kind = kind, .type = type, .id = id, .len = n};
    size_t need = sizeof h + PM_ALIGN(n);

    if (batch_reserve(b, need) < 0)
        return -ENOMEM;
    memcpy(b->buf + b->len, &h, sizeof h);
    if (n)
        memcpy(b->buf + b->len + sizeof h, payload, n);
    memset(b->buf + b->len + sizeof h + n, 0, PM_ALIGN(n) - n);
    b->len += need;
    return 0;
}

void pm_batch_free(struct pm_batch *b)
{
    free(b->buf);
    *b = (struct pm_batch){0};
}

int pm_next(const uint8_t *buf, size_t len, size_t *off, struct pm_hdr *h, const uint8_t **payload)
{
    if (*off == len)
        return 0;
    if (len - *off < sizeof *h)
        return -EBADMSG;
    memcpy(h, buf + *off, sizeof *h);
    size_t room = len - *off - sizeof *h;
    if (h->len > room || PM_ALIGN(h->len) > room)
        return -EBADMSG;
    *payload = buf + *off + sizeof *h;
    *off += sizeof *h + PM_ALIGN(h->len);
    return 1;
}

/* ---- sending ---- */

void pm_out_init(struct pm_out *o, int rank)
{
    *o = (struct pm_out){.rank = rank, .req = MPI_REQUEST_NULL};
}

bool pm_out_flush(struct pm_out *o, MPI_Comm comm, int tag)
{
    if (o->req != MPI_REQUEST_NULL) {
        int done = 0;
        MPI_Test(&o->req, &done, MPI_STATUS_IGNORE);
        if (!done)
            return true;
    }
    if (o->fill.len == 0)
        return false;
    struct pm_batch t = o->flight;
    o->flight = o->fill;
    o->fill = t;
    o->fill.len = 0;
    /* A batch larger than an int's worth of bytes is not made: the
     * receiver takes whole messages up to max_msg, far below. */
    MPI_Isend(o->flight.buf, (int)o->flight.len, MPI_BYTE, o->rank, tag, comm, &o->req);
    return true;
}

void pm_out_drain(struct pm_out *o, MPI_Comm comm, int tag)
{
    struct timespec step = {0, 50000};

    while (pm_out_flush(o, comm, tag))
        nanosleep(&step, NULL);
}

void pm_out_free(struct pm_out *o)
{
    if (o->req != MPI_REQUEST_NULL) {
        MPI_Cancel(&o->req);
        MPI_Request_free(&o->req);
    }
    pm_batch_free(&o->fill);
    pm_batch_free(&o->flight);
}

int pm_recv(MPI_Comm comm, int source, int tag, struct pm_batch *in, int *from, int *tag_got)
{
    MPI_Status st;
    int flag = 0, n = 0;

    /* Open MPI's MPI_Iprobe() looks for a match first and only then
     * progresses the transport: a message read off the socket by a probe
     * that missed is matched by the next one.  Without the second probe
     * the loop would sleep with the message in hand. */
    for (int i = 0; i < 2 && !flag; i++)
        if (MPI_Iprobe(source, tag, comm, &flag, &st) != MPI_SUCCESS)
            return 0;
    if (!flag)
        return 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    in->len = 0;
    if (n < 0 || batch_reserve(in, (size_t)n) < 0)
        n = 0; /* received into nothing: MPI_ERR_TRUNCATE, then dropped */
    MPI_Recv(in->buf, n, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, comm, MPI_STATUS_IGNORE);
    in->len = (size_t)n;
    *from = st.MPI_SOURCE;
    *tag_got = st.MPI_TAG;
    return 1;
}

/* ---- ring queues ---- */

struct pm_msg {
    struct pm_msg *next;
    uint16_t type;
    uint64_t id;
    size_t len, off;
    bool begun;
    uint8_t data[];
};

int pm_queue_add(struct pm_queue *q, uint16_t type, uint64_t id, const void *payload, size_t n)
{
    struct pm_msg *m = malloc(sizeof *m + n);

    if (!m)
        return -ENOMEM;
    *m = (struct pm_msg){.type = type, .id = id, .len = n};
    if (n)
        memcpy(m->data, payload, n);
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    return 0;
}

/* Write m's fragments while they fit: 1 when all of m is written. */
static int msg_push(struct pm_msg *m, struct shm_ring *r)
{
    while (!m->begun || m->off < m->len) {
        size_t n = m->len - m->off;
        void *dst;
        if (n > r->max_frag)
            n = r->max_frag;
        int err = shm_ring_reserve(r, (uint32_t)n, &dst);
        if (err < 0)
            return err == -EAGAIN ? 0 : err;
        memcpy(dst, m->data + m->off, n);
        bool more = m->off + n < m->len;
        shm_ring_commit(r, m->type, more ? SHM_FRAME_MORE : 0, m->id, (uint32_t)n);
        m->off += n;
        m->begun = true;
    }
    return 1;
}

int pm_queue_push(struct pm_queue *q, struct shm_ring *r)
{
    bool wrote = false;

    if (shm_ring_is_closed(r))
        return -EPIPE;
    while (q->head) {
        struct pm_msg *m = q->head;
        size_t before = m->off;
        bool begun = m->begun;
        int done = msg_push(m, r);
        wrote |= m->off != before || m->begun != begun;
        if (done < 0)
            return done;
        if (done == 0)
            break;
        q->head = m->next;
        if (!q->head)
            q->tail = NULL;
        q->done += pm_cost(m->len);
        free(m);
    }
    if (wrote)
        shm_ring_notify(r);
    return wrote;
}

bool pm_queue_empty(const struct pm_queue *q)
{
    return !q->head;
}

void pm_queue_clear(struct pm_queue *q)
{
    while (q->head) {
        struct pm_msg *m = q->head;
        q->head = m->next;
        free(m);
    }
    q->tail = NULL;
}

/* ---- idling ---- */

int64_t pm_idle_next(struct pm_idle *s, bool busy)
{
    int64_t now = shm_now_ns();

    if (busy) {
        s->busy_ns = now;
        s->sleep_ns = PM_SLEEP_MIN_NS;
        return 0;
    }
    if (now - s->busy_ns < PM_SPIN_NS)
        return 0;
    if (now - s->busy_ns > PM_IDLE_NS)
        return PM_SLEEP_IDLE_NS;
    int64_t t = s->sleep_ns;
    s->sleep_ns = t * 2 > PM_SLEEP_MAX_NS ? PM_SLEEP_MAX_NS : t * 2;
    return t;
}
