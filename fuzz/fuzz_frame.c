/*
 * The ring's consumer against a producer that writes anything.
 *
 * The input is a script.  Its first byte picks the consumer's settings,
 * the next 8 its starting head; after that come steps, each of which may
 * write well-formed messages through the producer side (so that fragments,
 * PADs and wrap-around are easy to reach), overwrite bytes of the data
 * area, move tail anywhere, or move head the way a hostile peer could.
 * After every step the consumer reads what it can.  The data area is a
 * malloc'd block of exactly the ring's size, so AddressSanitizer sees any
 * read outside it; every message handed out is checked to lie inside the
 * area (or the reassembly buffer) and is read in full.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shm/ring.h"

#define RING_BYTES 4096u
#define READS_PER_STEP 8

struct input {
    const uint8_t *p;
    size_t left;
};

static uint64_t take(struct input *in, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n && in->left; i++, in->left--)
        v |= (uint64_t)*in->p++ << (8 * i);
    return v;
}

static void check(int ok)
{
    if (!ok)
        abort();
}

static int host_types(unsigned type)
{
    return shm_frame_type_to_host(type);
}

/* Read every byte of a message handed out, so that ASan sees them. */
static void check_msg(const struct shm_ring *r, const struct shm_msg *m)
{
    volatile uint8_t sum = 0;

    check(m->len <= r->max_msg);
    check(!r->type_ok || r->type_ok(m->type));
    if (m->frame_bytes) {
        /* Handed out in place: inside the area, whole, and on the frame
         * grid (off it, the header before it was read misaligned). */
        check((uintptr_t)m->payload % SHM_FRAME_ALIGN == 0);
        check(m->payload >= r->data + SHM_FRAME_HEADER_BYTES);
        check(m->payload + m->len <= r->data + r->size);
        check(m->frame_bytes <= r->size);
    } else {
        check(m->len == 0 || m->payload == r->asm_buf);
    }
    for (size_t i = 0; i < m->len; i++)
        sum += m->payload[i];
    (void)sum;
}

static void consume(struct shm_ring *r)
{
    for (int i = 0; i < READS_PER_STEP; i++) {
        struct shm_msg m;
        int rc = shm_ring_read(r, &m);

        if (rc != 1) {
            check(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
            return;
        }
        check_msg(r, &m);
        shm_ring_done(r, &m);
    }
}

/* A well-formed message through the producer side, without waiting for
 * room: what does not fit is left out, as if the producer stalled. */
static void produce(struct shm_ring *r, uint32_t arg)
{
    uint16_t type = (uint16_t)(SHM_FRAME_READY + (arg & 7));
    size_t len = (arg >> 3) & 0x1fff, done = 0;
    uint64_t id = arg >> 16;

    /* Only a step of this script can put tail off the grid; a real
     * producer never writes there. */
    if (atomic_load(&r->ctl->tail) % SHM_FRAME_ALIGN)
        return;
    do {
        uint32_t n = len - done > r->max_frag ? r->max_frag : (uint32_t)(len - done);
        void *dst;

        if (shm_ring_reserve(r, n, &dst) < 0)
            return;
        memset(dst, (int)(id + done), n);
        shm_ring_commit(r, type, done + n < len ? SHM_FRAME_MORE : 0, id, n);
        done += n;
    } while (done < len);
}

static void step(struct shm_ring *r, struct input *in)
{
    unsigned op = (unsigned)take(in, 1);
    uint32_t arg = (uint32_t)take(in, 4);
    _Atomic uint64_t *tail = &r->ctl->tail, *head = &r->ctl->head;

    switch (op & 3) {
    case 0:
        produce(r, arg);
        break;
    case 1:
        atomic_store(tail, atomic_load(tail) + arg);
        break;
    case 2:
        atomic_store(tail, atomic_load(head) + (arg & 0x1fff));
        break;
    case 3:
        /* head is the consumer's, but a peer can write it. */
        atomic_store(head, atomic_load(head) + (int64_t)(int16_t)arg);
        break;
    }
    if (op & 4) {
        size_t off = (size_t)take(in, 2) % RING_BYTES;
        size_t n = (size_t)take(in, 1);

        if (n > in->left)
            n = in->left;
        if (n > RING_BYTES - off)
            n = RING_BYTES - off;
        memcpy(r->data + off, in->p, n);
        in->p += n;
        in->left -= n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t max_msgs[4] = {1, 100, RING_BYTES, 1u << 20};
    struct input in = {data, size};
    struct shm_ring_ctl *ctl = aligned_alloc(64, sizeof *ctl);
    uint8_t *area = malloc(RING_BYTES);
    struct shm_ring r;
    unsigned flags = (unsigned)take(&in, 1);
    uint64_t start = take(&in, 8);

    check(ctl && area);
    memset(ctl, 0, sizeof *ctl);
    memset(area, 0, RING_BYTES);
    /* Mostly a sane start on the frame grid; sometimes anything. */
    if (!(flags & 8))
        start &= ~(uint64_t)(SHM_FRAME_ALIGN - 1);
    atomic_store(&ctl->head, start);
    atomic_store(&ctl->tail, start);
    check(shm_ring_attach(&r, ctl, area, RING_BYTES, max_msgs[flags & 3], -1,
                          flags & 4 ? host_types : NULL) == 0);
    while (in.left) {
        step(&r, &in);
        consume(&r);
    }
    shm_ring_detach(&r);
    free(area);
    free(ctl);
    return 0;
}
