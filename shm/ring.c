#include "ring.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "futex.h"

#define HDR SHM_FRAME_HEADER_BYTES

/* Smallest and largest area a ring accepts; see shm_ring_attach(). */
#define RING_MIN_BYTES 4096ull
#define RING_MAX_BYTES (1ull << 32)

/* How often a spin loop looks at the clock, in rounds. */
#define SPIN_CLOCK_ROUNDS 32u

/*
 * A producer waiting for space sleeps at most this long before it looks
 * again, so that a closed flag is seen even if its wake-up went astray.
 */
#define PRODUCER_NAP_MS 100

/*
 * A reassembly buffer larger than this is freed once its message is done,
 * so that one huge message does not pin its memory for the ring's life.
 */
#define ASM_KEEP_BYTES (64u << 20)

static uint64_t frame_bytes(uint64_t len)
{
    return HDR + ((len + SHM_FRAME_ALIGN - 1) & ~(uint64_t)(SHM_FRAME_ALIGN - 1));
}

/*
 * Headers go through volatile 64-bit words: the consumer reads each header
 * exactly once, so a peer that rewrites it after the checks cannot make the
 * checks and the use see different values.
 */
static void write_header(uint8_t *p, const struct shm_frame_header *h)
{
    volatile uint64_t *w = (volatile uint64_t *)(void *)p;
    uint64_t words[2];

    memcpy(words, h, sizeof words);
    w[0] = words[0];
    w[1] = words[1];
}

static struct shm_frame_header read_header(const uint8_t *p)
{
    const volatile uint64_t *w = (const volatile uint64_t *)(const void *)p;
    uint64_t words[2] = {w[0], w[1]};
    struct shm_frame_header h;

    memcpy(&h, words, sizeof h);
    return h;
}

static_assert(sizeof(struct shm_frame_header) == 2 * sizeof(uint64_t),
              "a frame header is two 64-bit words");

int shm_ring_attach(struct shm_ring *r, struct shm_ring_ctl *ctl, void *data, uint64_t size,
                    uint64_t max_msg, int doorbell_fd, int (*type_ok)(unsigned type))
{
    if (!r || !ctl || !data || max_msg == 0)
        return -EINVAL;
    if (size < RING_MIN_BYTES || size > RING_MAX_BYTES || (size & (size - 1)))
        return -EINVAL;
    if ((uintptr_t)data % SHM_FRAME_ALIGN)
        return -EINVAL;

    *r = (struct shm_ring){
        .ctl = ctl,
        .data = data,
        .size = size,
        .mask = size - 1,
        /* A whole frame takes at most a quarter of the area. */
        .max_frag = (uint32_t)(((size / 4) & ~(uint64_t)(SHM_FRAME_ALIGN - 1)) - HDR),
        .max_msg = max_msg,
        .doorbell_fd = doorbell_fd,
        .type_ok = type_ok,
    };
    return 0;
}

void shm_ring_detach(struct shm_ring *r)
{
    if (!r)
        return;
    free(r->asm_buf);
    r->asm_buf = NULL;
    r->asm_len = r->asm_cap = 0;
    r->asm_open = false;
}

int64_t shm_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool shm_ring_is_closed(const struct shm_ring *r)
{
    /* Pairs with the release store in shm_ring_close(). */
    return atomic_load_explicit(&r->ctl->closed, memory_order_acquire) != 0;
}

bool shm_ring_empty(const struct shm_ring *r)
{
    /* Pairs with the release store of tail in shm_ring_commit(). */
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);

    return tail == atomic_load_explicit(&r->ctl->head, memory_order_relaxed);
}

static void ring_doorbell(struct shm_ring *r)
{
    uint64_t one = 1;

    if (r->doorbell_fd < 0)
        return;
    /*
     * A full eventfd counter (EAGAIN) means the consumer has wake-ups
     * pending already, and nothing useful can be done about other errors.
     */
    while (write(r->doorbell_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

static void ring_wake_consumer(struct shm_ring *r)
{
    uint32_t old = atomic_exchange_explicit(&r->ctl->consumer_wait, SHM_AWAKE,
                                            memory_order_relaxed);

    if (old == SHM_SLEEP_FUTEX)
        shm_futex_wake(&r->ctl->consumer_wait, 1, true);
    else if (old == SHM_SLEEP_DOORBELL)
        ring_doorbell(r);
}

void shm_ring_close(struct shm_ring *r)
{
    /* Pairs with the acquire load in shm_ring_is_closed(). */
    atomic_store_explicit(&r->ctl->closed, 1, memory_order_release);
    /*
     * Pairs with the fences after the sleep announcements in
     * shm_ring_sleep_begin() and ring_wait_space(): a side that announced
     * sleep before this point has its word reset and is woken below, and
     * one that announces later sees the flag in its re-check.
     */
    atomic_thread_fence(memory_order_seq_cst);
    atomic_store_explicit(&r->ctl->consumer_wait, SHM_AWAKE, memory_order_relaxed);
    shm_futex_wake(&r->ctl->consumer_wait, INT_MAX, true);
    atomic_store_explicit(&r->ctl->producer_wait, 0, memory_order_relaxed);
    shm_futex_wake(&r->ctl->producer_wait, INT_MAX, true);
    ring_doorbell(r);
}

/* ---- producer ---- */

/*
 * Bytes to skip at producer position `tail` before a frame with a len-byte
 * payload: the rest of the area when the frame does not fit before its
 * end (filled with a PAD, or left as a gap when shorter than a header).
 */
static uint64_t ring_skip(const struct shm_ring *r, uint64_t tail, uint32_t len)
{
    uint64_t to_end = r->size - (tail & r->mask);

    return frame_bytes(len) > to_end ? to_end : 0;
}

/* True when a frame with a len-byte payload fits now. */
static bool ring_fits(const struct shm_ring *r, uint64_t tail, uint32_t len)
{
    /* Pairs with the release store of head in ring_release(). */
    uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_acquire);
    uint64_t used = tail - head;

    /* A head beyond tail or too far behind it is the peer's bug: no room. */
    if (used > r->size)
        return false;
    return ring_skip(r, tail, len) + frame_bytes(len) <= r->size - used;
}

int shm_ring_reserve(struct shm_ring *r, uint32_t len, void **payload)
{
    /* Only the producer writes tail, so its own last store is current. */
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_relaxed);
    uint64_t skip;

    if (len > r->max_frag)
        return -EMSGSIZE;
    if (!ring_fits(r, tail, len))
        return -EAGAIN;

    skip = ring_skip(r, tail, len);
    if (skip >= HDR) {
        struct shm_frame_header pad = {
            .len = (uint32_t)(skip - HDR),
            .type = SHM_FRAME_PAD,
        };
        write_header(r->data + (tail & r->mask), &pad);
    }
    r->res_pos = tail + skip;
    r->res_len = len;
    *payload = r->data + (r->res_pos & r->mask) + HDR;
    return 0;
}

void shm_ring_commit(struct shm_ring *r, uint16_t type, uint16_t flags, uint64_t id, uint32_t len)
{
    struct shm_frame_header h = {
        .len = len,
        .type = type,
        .flags = flags,
        .id = id,
    };

    assert(len <= r->res_len);
    write_header(r->data + (r->res_pos & r->mask), &h);
    /*
     * Pairs with the acquire load of tail in shm_ring_read(): the PAD, the
     * header and the payload are visible before the tail that covers them.
     */
    atomic_store_explicit(&r->ctl->tail, r->res_pos + frame_bytes(len), memory_order_release);
}

void shm_ring_notify(struct shm_ring *r)
{
    /*
     * Pairs with the fence in shm_ring_sleep_begin(): either the consumer's
     * re-check sees the tail published before this point, or this load sees
     * that it sleeps.
     */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->ctl->consumer_wait, memory_order_relaxed) != SHM_AWAKE)
        ring_wake_consumer(r);
}

/*
 * Spin until check() says something other than 0 or spin_ns has passed.
 * Reading the clock costs more than a pause, so it is read only now and
 * then.
 */
static int ring_spin(struct shm_ring *r, int64_t spin_ns,
                     int (*check)(struct shm_ring *r, uint32_t arg), uint32_t arg)
{
    int64_t deadline;
    int rc = check(r, arg);

    if (rc || spin_ns <= 0)
        return rc;
    int64_t start = shm_now_ns();
    deadline = start + spin_ns;
    for (unsigned i = 1;; i++) {
        shm_cpu_relax();
        rc = check(r, arg);
        if (rc)
            return rc;
        if (i % SPIN_CLOCK_ROUNDS == 0) {
            int64_t now = shm_now_ns();
            if (now >= deadline)
                return 0;
            shm_spin_yield(now - start);
        }
    }
}

/* 1 when a len-byte frame fits, -EPIPE when closed, else 0. */
static int ring_writable(struct shm_ring *r, uint32_t len)
{
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_relaxed);

    if (shm_ring_is_closed(r))
        return -EPIPE;
    return ring_fits(r, tail, len) ? 1 : 0;
}

static int ring_wait_space(struct shm_ring *r, uint32_t len, int64_t spin_ns)
{
    int rc = ring_spin(r, spin_ns, ring_writable, len);

    while (rc == 0) {
        atomic_store_explicit(&r->ctl->producer_wait, 1, memory_order_relaxed);
        /*
         * Pairs with the fence in ring_release(): either the consumer sees
         * that we sleep, or the re-check below sees the head it released.
         */
        atomic_thread_fence(memory_order_seq_cst);
        rc = ring_writable(r, len);
        if (rc == 0)
            shm_futex_wait(&r->ctl->producer_wait, 1, PRODUCER_NAP_MS, true);
        atomic_store_explicit(&r->ctl->producer_wait, 0, memory_order_relaxed);
        if (rc == 0)
            rc = ring_writable(r, len);
    }
    return rc < 0 ? rc : 0;
}

int shm_ring_write(struct shm_ring *r, uint16_t type, uint64_t id, const void *payload, size_t len,
                   int64_t spin_ns)
{
    size_t done = 0;

    if (len > r->max_msg)
        return -EMSGSIZE;
    /* A zero-length message is still one frame, hence do-while. */
    do {
        uint32_t n = len - done > r->max_frag ? r->max_frag : (uint32_t)(len - done);
        uint16_t flags = done + n < len ? SHM_FRAME_MORE : 0;
        void *dst;
        int rc;

        if (shm_ring_is_closed(r))
            return -EPIPE;
        while ((rc = shm_ring_reserve(r, n, &dst)) == -EAGAIN) {
            rc = ring_wait_space(r, n, spin_ns);
            if (rc < 0)
                return rc;
        }
        if (rc < 0)
            return rc;
        if (n)
            memcpy(dst, (const uint8_t *)payload + done, n);
        shm_ring_commit(r, type, flags, id, n);
        shm_ring_notify(r);
        done += n;
    } while (done < len);
    return 0;
}

/* ---- consumer ---- */

/* Give the bytes below new_head back to the producer, waking it if needed. */
static void ring_release(struct shm_ring *r, uint64_t new_head)
{
    /*
     * Pairs with the acquire load of head in ring_fits(): everything read
     * from these bytes was read before the producer may reuse them.
     */
    atomic_store_explicit(&r->ctl->head, new_head, memory_order_release);
    /*
     * Pairs with the fence in ring_wait_space(): either the producer's
     * re-check sees this head, or this load sees that it sleeps.
     */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->ctl->producer_wait, memory_order_relaxed) &&
        atomic_exchange_explicit(&r->ctl->producer_wait, 0, memory_order_relaxed))
        shm_futex_wake(&r->ctl->producer_wait, 1, true);
}

/*
 * Check the frame at consumer position pos, with the producer's tail at
 * `tail`, and return how many bytes it takes, or -EBADMSG.  A gap too short
 * for a header comes back as a PAD.  Nothing outside the area and nothing
 * past tail is read.
 */
static int64_t ring_check_frame(const struct shm_ring *r, uint64_t pos, uint64_t tail,
                                struct shm_frame_header *ret)
{
    uint64_t avail = tail - pos;
    uint64_t to_end = r->size - (pos & r->mask);
    struct shm_frame_header h;
    uint64_t n;

    if (to_end < HDR) {
        /* The producer skips such a gap only on its way to a frame. */
        if (avail < to_end + HDR)
            return -EBADMSG;
        *ret = (struct shm_frame_header){.type = SHM_FRAME_PAD};
        return (int64_t)to_end;
    }
    if (avail < HDR)
        return -EBADMSG;

    h = read_header(r->data + (pos & r->mask));
    if (h.type == SHM_FRAME_PAD) {
        if (h.flags != 0 || h.len != to_end - HDR)
            return -EBADMSG;
        n = to_end;
    } else {
        if (h.flags & ~SHM_FRAME_MORE)
            return -EBADMSG;
        if (r->type_ok && !r->type_ok(h.type))
            return -EBADMSG;
        if (h.len > r->max_frag)
            return -EBADMSG;
        n = frame_bytes(h.len);
        if (n > to_end)
            return -EBADMSG;
    }
    if (n > avail)
        return -EBADMSG;
    *ret = h;
    return (int64_t)n;
}

/*
 * Make the reassembly buffer hold at least `need` bytes (need <= max_msg).
 * Allocated even for 0 bytes: a message handed out always has a payload
 * pointer, and memcpy() never sees NULL.
 */
static int asm_reserve(struct shm_ring *r, size_t need)
{
    size_t cap = r->asm_cap ? r->asm_cap : 4096;
    uint8_t *p;

    if (r->asm_buf && need <= r->asm_cap)
        return 0;
    while (cap < need)
        cap *= 2;
    if (cap > r->max_msg)
        cap = (size_t)r->max_msg;
    p = realloc(r->asm_buf, cap);
    if (!p)
        return -ENOMEM;
    r->asm_buf = p;
    r->asm_cap = cap;
    return 0;
}

/* Append one fragment to the message being reassembled. */
static int ring_append(struct shm_ring *r, const struct shm_frame_header *h, const uint8_t *src)
{
    size_t have = r->asm_open ? r->asm_len : 0;
    int rc;

    if (r->asm_open && (h->type != r->asm_type || h->id != r->asm_id))
        return -EBADMSG;
    if (h->len > r->max_msg - have)
        return -EBADMSG;
    rc = asm_reserve(r, have + h->len);
    if (rc < 0)
        return rc;
    if (!r->asm_open) {
        r->asm_open = true;
        r->asm_type = h->type;
        r->asm_id = h->id;
    }
    /* h->len was read once and checked; the bytes are copied once. */
    memcpy(r->asm_buf + have, src, h->len);
    r->asm_len = have + h->len;
    return 0;
}

/*
 * Take in the fragment at pos, which takes n bytes, and release it at once
 * so the producer can write the next one.  Returns 1 with *m filled when it
 * was the last, 0 when more must follow, or a negative errno.
 */
static int ring_take_fragment(struct shm_ring *r, const struct shm_frame_header *h, uint64_t pos,
                              uint64_t n, struct shm_msg *m)
{
    int rc = ring_append(r, h, r->data + (pos & r->mask) + HDR);

    if (rc < 0)
        return rc;
    ring_release(r, pos + n);
    if (h->flags & SHM_FRAME_MORE)
        return 0;
    r->asm_open = false;
    *m = (struct shm_msg){
        .type = r->asm_type,
        .id = r->asm_id,
        .payload = r->asm_buf,
        .len = r->asm_len,
        .frame_bytes = 0,
    };
    return 1;
}

int shm_ring_read(struct shm_ring *r, struct shm_msg *m)
{
    uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_relaxed);
    /* Pairs with the release store in shm_ring_commit(). */
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
    uint64_t pos = head;

    /*
     * Only we write head, but it lies where the producer can write too: a
     * head off the frame grid would have headers read misaligned.
     */
    if (tail - head > r->size || head % SHM_FRAME_ALIGN)
        return -EBADMSG;

    while (pos != tail) {
        struct shm_frame_header h;
        int64_t n = ring_check_frame(r, pos, tail, &h);
        int rc;

        if (n < 0)
            return (int)n;
        if (h.type != SHM_FRAME_PAD && !r->asm_open && !(h.flags & SHM_FRAME_MORE)) {
            /* A whole message in one frame: hand it out where it lies. */
            if (h.len > r->max_msg)
                return -EBADMSG;
            *m = (struct shm_msg){
                .type = h.type,
                .id = h.id,
                .payload = r->data + (pos & r->mask) + HDR,
                .len = h.len,
                .frame_bytes = pos + (uint64_t)n - head,
            };
            return 1;
        }
        if (h.type != SHM_FRAME_PAD) {
            rc = ring_take_fragment(r, &h, pos, (uint64_t)n, m);
            if (rc != 0)
                return rc;
            head = pos + (uint64_t)n;
        }
        pos += (uint64_t)n;
    }
    /* Only PADs and fragments were there; give back the PADs too. */
    if (pos != head)
        ring_release(r, pos);
    return 0;
}

/*
 * Copy a payload out of the area a 64-bit word at a time, each word read
 * once: a producer that rewrites an aligned word while we copy leaves
 * either its old or its new value in the copy, never a mix of the two.
 * src is 8-byte aligned (payloads follow 16-byte headers on the frame
 * grid) and the frame's padding lets the last word be read whole.
 */
static void copy_words(uint8_t *dst, const uint8_t *src, size_t len)
{
    const volatile uint64_t *w = (const volatile uint64_t *)(const void *)src;
    size_t i;

    for (i = 0; i + 8 <= len; i += 8) {
        uint64_t v = w[i / 8];
        memcpy(dst + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = w[i / 8];
        memcpy(dst + i, &v, len - i);
    }
}

int shm_ring_copy_out(struct shm_ring *r, struct shm_msg *m)
{
    uint64_t head;

    if (!shm_msg_in_ring(m))
        return 0;
    /* A whole frame is handed out only while no message is being
     * reassembled, so the reassembly buffer is free. */
    assert(!r->asm_open);
    if (asm_reserve(r, m->len) < 0)
        return -ENOMEM;
    copy_words(r->asm_buf, m->payload, m->len);
    head = atomic_load_explicit(&r->ctl->head, memory_order_relaxed);
    ring_release(r, head + m->frame_bytes);
    m->payload = r->asm_buf;
    m->frame_bytes = 0;
    return 0;
}

uint64_t shm_ring_consumed(const struct shm_ring *r)
{
    /* Only the consumer writes head. */
    return atomic_load_explicit(&r->ctl->head, memory_order_relaxed);
}

uint64_t shm_ring_published(const struct shm_ring *r)
{
    /* Pairs with the release store of tail in shm_ring_commit(). */
    return atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
}

void shm_ring_done(struct shm_ring *r, struct shm_msg *m)
{
    if (m->frame_bytes) {
        uint64_t head = atomic_load_explicit(&r->ctl->head, memory_order_relaxed);

        ring_release(r, head + m->frame_bytes);
    } else if (!r->asm_open && r->asm_cap > ASM_KEEP_BYTES) {
        free(r->asm_buf);
        r->asm_buf = NULL;
        r->asm_cap = 0;
    }
    /* A second call for the same message releases nothing. */
    m->frame_bytes = 0;
    m->payload = NULL;
    m->len = 0;
}

/* 1 when a frame waits, -EPIPE when closed with nothing left, else 0. */
static int ring_readable(struct shm_ring *r, uint32_t unused)
{
    (void)unused;
    if (!shm_ring_empty(r))
        return 1;
    if (!shm_ring_is_closed(r))
        return 0;
    /*
     * The producer publishes its last frames before it closes: look at the
     * tail again now that the flag is seen, so that they are not lost.
     */
    return shm_ring_empty(r) ? -EPIPE : 1;
}

bool shm_ring_sleep_begin(struct shm_ring *r, enum shm_wait_state how)
{
    atomic_store_explicit(&r->ctl->consumer_wait, how, memory_order_relaxed);
    /*
     * Pairs with the fence in shm_ring_notify() (and in shm_ring_close()):
     * either the producer sees that we sleep, or this re-check sees what it
     * published.
     */
    atomic_thread_fence(memory_order_seq_cst);
    if (shm_ring_empty(r) && !shm_ring_is_closed(r))
        return false;
    shm_ring_sleep_end(r);
    return true;
}

bool shm_ring_doorbell_begin(struct shm_ring *r)
{
    uint32_t awake = SHM_AWAKE, bell = SHM_SLEEP_DOORBELL;

    if (!atomic_compare_exchange_strong_explicit(&r->ctl->consumer_wait, &awake, SHM_SLEEP_DOORBELL,
                                                 memory_order_relaxed, memory_order_relaxed))
        return false; /* armed already, or a futex sleeper will drain */
    /* Pairs with the fence in shm_ring_notify(), as in sleep_begin(). */
    atomic_thread_fence(memory_order_seq_cst);
    if (shm_ring_empty(r) && !shm_ring_is_closed(r))
        return false;
    /* Only from our own value: a futex sleeper that came meanwhile stays. */
    atomic_compare_exchange_strong_explicit(&r->ctl->consumer_wait, &bell, SHM_AWAKE,
                                            memory_order_relaxed, memory_order_relaxed);
    return true;
}

void shm_ring_sleep_end(struct shm_ring *r)
{
    /* A producer that still sees the old value wakes us once for nothing. */
    atomic_store_explicit(&r->ctl->consumer_wait, SHM_AWAKE, memory_order_relaxed);
}

int shm_ring_wait(struct shm_ring *r, int64_t spin_ns, int timeout_ms)
{
    int rc = ring_spin(r, spin_ns, ring_readable, 0);

    if (rc || timeout_ms == 0)
        return rc;
    if (!shm_ring_sleep_begin(r, SHM_SLEEP_FUTEX)) {
        /* Time-outs and signals alike end in the re-check below. */
        shm_futex_wait(&r->ctl->consumer_wait, SHM_SLEEP_FUTEX, timeout_ms, true);
        shm_ring_sleep_end(r);
    }
    return ring_readable(r, 0);
}
