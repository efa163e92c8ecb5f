/*
 * Unit tests of the shared-memory ring (shm/ring.c), in one process.
 *
 * The data area sits between two inaccessible pages, so a read outside it
 * by the consumer crashes the test instead of passing unnoticed.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/ring.h"

#define RING 4096u
#define HDR SHM_FRAME_HEADER_BYTES
#define MAX_FRAG (RING / 4 - HDR) /* 1008 */
#define MAX_MSG (1u << 20)

struct fx {
    struct shm_ring_ctl *ctl;
    uint8_t *map;
    size_t map_len;
    uint8_t *data;
    struct shm_ring prod, cons;
};

static void fx_attach_consumer(struct fx *f, uint64_t max_msg)
{
    shm_ring_detach(&f->cons);
    assert_int_equal(shm_ring_attach(&f->cons, f->ctl, f->data, RING, max_msg, -1,
                                     shm_frame_type_to_worker),
                     0);
}

static int fx_setup(void **state)
{
    long page = sysconf(_SC_PAGESIZE);
    struct fx *f = calloc(1, sizeof *f);

    assert_non_null(f);
    assert_int_equal(posix_memalign((void **)&f->ctl, 64, sizeof *f->ctl), 0);
    memset(f->ctl, 0, sizeof *f->ctl);
    /* guard page, the page that holds the area at its end, guard page */
    f->map_len = 3 * (size_t)page;
    f->map = mmap(NULL, f->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(f->map != MAP_FAILED);
    assert_int_equal(mprotect(f->map + page, (size_t)page, PROT_READ | PROT_WRITE), 0);
    f->data = f->map + 2 * (size_t)page - RING;
    assert_int_equal(shm_ring_attach(&f->prod, f->ctl, f->data, RING, MAX_MSG, -1, NULL), 0);
    fx_attach_consumer(f, MAX_MSG);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;

    shm_ring_detach(&f->prod);
    shm_ring_detach(&f->cons);
    munmap(f->map, f->map_len);
    free(f->ctl);
    free(f);
    return 0;
}

static uint64_t tail_of(struct fx *f)
{
    return atomic_load(&f->ctl->tail);
}
static uint64_t head_of(struct fx *f)
{
    return atomic_load(&f->ctl->head);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
}

/* Publish one frame without waiting; the ring must have room. */
static void put(struct fx *f, uint16_t type, uint64_t id, uint32_t len, unsigned seed)
{
    void *dst;

    assert_int_equal(shm_ring_reserve(&f->prod, len, &dst), 0);
    fill(dst, len, seed);
    shm_ring_commit(&f->prod, type, 0, id, len);
}

/* Read one message and check it against what put() wrote. */
static void expect(struct fx *f, uint16_t type, uint64_t id, uint32_t len, unsigned seed)
{
    struct shm_msg m;
    uint8_t *want = malloc(len ? len : 1);

    assert_int_equal(shm_ring_read(&f->cons, &m), 1);
    assert_int_equal(m.type, type);
    assert_int_equal(m.id, id);
    assert_int_equal(m.len, len);
    fill(want, len, seed);
    assert_memory_equal(m.payload, want, len);
    free(want);
    shm_ring_done(&f->cons, &m);
}

/* Publish and consume zero-length frames until both counters reach pos. */
static void advance_to(struct fx *f, uint64_t pos)
{
    while (tail_of(f) < pos) {
        /* 16-byte frames, and one of 24 when pos is not a multiple of 16. */
        uint32_t len = (pos - tail_of(f)) % 16 ? 8 : 0;

        put(f, SHM_FRAME_CALL, 0, len, 0);
        expect(f, SHM_FRAME_CALL, 0, len, 0);
    }
    assert_int_equal(tail_of(f), pos);
    assert_int_equal(head_of(f), pos);
}

static void test_attach_limits(void **state)
{
    struct fx *f = *state;
    struct shm_ring r;

    assert_int_equal(f->prod.max_frag, MAX_FRAG);
    assert_int_equal(shm_ring_attach(&r, f->ctl, f->data, 2048, MAX_MSG, -1, NULL), -EINVAL);
    assert_int_equal(shm_ring_attach(&r, f->ctl, f->data, 6144, MAX_MSG, -1, NULL), -EINVAL);
    assert_int_equal(shm_ring_attach(&r, f->ctl, f->data + 4, RING, MAX_MSG, -1, NULL), -EINVAL);
    assert_int_equal(shm_ring_attach(&r, f->ctl, f->data, RING, 0, -1, NULL), -EINVAL);
}

static void test_empty(void **state)
{
    struct fx *f = *state;
    struct shm_msg m;
    int64_t t0;

    assert_true(shm_ring_empty(&f->cons));
    assert_int_equal(shm_ring_read(&f->cons, &m), 0);
    assert_int_equal(shm_ring_wait(&f->cons, 0, 0), 0);
    t0 = shm_now_ns();
    assert_int_equal(shm_ring_wait(&f->cons, 1000, 20), 0);
    assert_true(shm_now_ns() - t0 >= 15 * 1000000);
    assert_int_equal(atomic_load(&f->ctl->consumer_wait), SHM_AWAKE);
    assert_int_equal(head_of(f), 0);
}

static void test_full_then_room(void **state)
{
    struct fx *f = *state;
    void *dst;

    /* Four frames of the largest payload fill the area exactly. */
    for (unsigned i = 0; i < 4; i++)
        put(f, SHM_FRAME_CALL, i + 1, MAX_FRAG, i);
    assert_int_equal(tail_of(f) - head_of(f), RING);
    assert_int_equal(shm_ring_reserve(&f->prod, 0, &dst), -EAGAIN);
    assert_int_equal(shm_ring_reserve(&f->prod, MAX_FRAG + 1, &dst), -EMSGSIZE);

    expect(f, SHM_FRAME_CALL, 1, MAX_FRAG, 0);
    put(f, SHM_FRAME_CALL, 5, MAX_FRAG, 4);
    assert_int_equal(shm_ring_reserve(&f->prod, 0, &dst), -EAGAIN);
    for (unsigned i = 1; i < 5; i++)
        expect(f, SHM_FRAME_CALL, i + 1, MAX_FRAG, i);
    assert_true(shm_ring_empty(&f->cons));
    assert_int_equal(head_of(f), 5 * RING / 4);
}

static void test_full_counts_pad(void **state)
{
    struct fx *f = *state;
    void *dst;

    /* 34 frames of 120 bytes end at 4080: 16 bytes short of the end. */
    for (unsigned i = 0; i < 34; i++)
        put(f, SHM_FRAME_CALL, i, 100, i);
    assert_int_equal(tail_of(f), 4080);
    /* The next one needs its frame plus a 16-byte PAD, and only 16 are free. */
    assert_int_equal(shm_ring_reserve(&f->prod, 100, &dst), -EAGAIN);
    expect(f, SHM_FRAME_CALL, 0, 100, 0);
    put(f, SHM_FRAME_CALL, 34, 100, 34);
    assert_int_equal(tail_of(f), RING + 120);
    for (unsigned i = 1; i < 35; i++)
        expect(f, SHM_FRAME_CALL, i, 100, i);
    assert_int_equal(head_of(f), RING + 120);
}

static void test_wrap_with_pad(void **state)
{
    struct fx *f = *state;
    struct shm_frame_header pad;
    struct shm_msg m;

    advance_to(f, RING - 64);
    put(f, SHM_FRAME_SET_ATTR, 7, 100, 3);
    memcpy(&pad, f->data + RING - 64, sizeof pad);
    assert_int_equal(pad.type, SHM_FRAME_PAD);
    assert_int_equal(pad.len, 64 - HDR);
    assert_int_equal(tail_of(f), RING + 120);

    assert_int_equal(shm_ring_read(&f->cons, &m), 1);
    assert_ptr_equal(m.payload, f->data + HDR);
    assert_int_equal(m.frame_bytes, 64 + 120);
    assert_int_equal(m.id, 7);
    shm_ring_done(&f->cons, &m);
    assert_int_equal(head_of(f), RING + 120);
}

static void test_wrap_small_gap(void **state)
{
    struct fx *f = *state;
    struct shm_msg m;

    /* Three largest frames and one of 1016 bytes end 8 bytes short. */
    for (unsigned i = 0; i < 3; i++)
        put(f, SHM_FRAME_CALL, i, MAX_FRAG, i);
    put(f, SHM_FRAME_CALL, 3, 1000, 3);
    assert_int_equal(tail_of(f), RING - 8);
    for (unsigned i = 0; i < 3; i++)
        expect(f, SHM_FRAME_CALL, i, MAX_FRAG, i);
    expect(f, SHM_FRAME_CALL, 3, 1000, 3);

    memset(f->data + RING - 8, 0xab, 8);
    put(f, SHM_FRAME_CANCEL, 9, 0, 0);
    assert_int_equal(tail_of(f), RING + HDR);
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(f->data[RING - 8 + i], 0xab);

    assert_int_equal(shm_ring_read(&f->cons, &m), 1);
    assert_int_equal(m.type, SHM_FRAME_CANCEL);
    assert_int_equal(m.len, 0);
    assert_ptr_equal(m.payload, f->data + HDR);
    assert_int_equal(m.frame_bytes, 8 + HDR);
    shm_ring_done(&f->cons, &m);
    assert_int_equal(head_of(f), RING + HDR);
}

static void test_frame_fits_end_exactly(void **state)
{
    struct fx *f = *state;

    advance_to(f, RING - 120);
    put(f, SHM_FRAME_CALL, 1, 100, 1);
    assert_int_equal(tail_of(f), RING);
    put(f, SHM_FRAME_CALL, 2, 100, 2);
    assert_int_equal(tail_of(f), RING + 120);
    expect(f, SHM_FRAME_CALL, 1, 100, 1);
    expect(f, SHM_FRAME_CALL, 2, 100, 2);
}

static void test_zero_length(void **state)
{
    struct fx *f = *state;
    struct shm_msg m;

    assert_int_equal(shm_ring_write(&f->prod, SHM_FRAME_SHUTDOWN, 0, NULL, 0, 0), 0);
    put(f, SHM_FRAME_CALL, 3, 5, 1);
    assert_int_equal(shm_ring_write(&f->prod, SHM_FRAME_CANCEL, 4, "x", 0, 0), 0);
    assert_int_equal(tail_of(f), HDR + HDR + 8 + HDR);

    assert_int_equal(shm_ring_read(&f->cons, &m), 1);
    assert_int_equal(m.type, SHM_FRAME_SHUTDOWN);
    assert_int_equal(m.len, 0);
    assert_int_equal(m.frame_bytes, HDR);
    shm_ring_done(&f->cons, &m);
    expect(f, SHM_FRAME_CALL, 3, 5, 1);
    expect(f, SHM_FRAME_CANCEL, 4, 0, 0);
    assert_true(shm_ring_empty(&f->cons));
}

static void test_write_too_big(void **state)
{
    struct fx *f = *state;
    static uint8_t big[4000];

    f->prod.max_msg = sizeof big - 1;
    assert_int_equal(shm_ring_write(&f->prod, SHM_FRAME_CALL, 1, big, sizeof big, 0), -EMSGSIZE);
    assert_int_equal(tail_of(f), 0);
}

/* ---- fragments ---- */

static const size_t frag_sizes[] = {
    MAX_FRAG, MAX_FRAG + 1, 2 * MAX_FRAG, 2 * MAX_FRAG + 1, 0, 17 * RING + 77, 3,
};

struct writer {
    struct shm_ring *r;
    int rc;
};

static void *write_fragments(void *arg)
{
    struct writer *w = arg;
    uint8_t *p = malloc(17 * RING + 77);

    w->rc = 0;
    for (size_t i = 0; i < sizeof frag_sizes / sizeof frag_sizes[0] && !w->rc; i++) {
        fill(p, frag_sizes[i], (unsigned)i);
        w->rc = shm_ring_write(w->r, SHM_FRAME_ADD_SUB, 100 + i, p, frag_sizes[i], 1000);
    }
    free(p);
    return NULL;
}

/*
 * Wait for a frame that the writer thread is about to publish.  A wait that
 * runs into its time-out and only then finds the frame missed its wake-up.
 */
static void wait_woken(struct shm_ring *r)
{
    int64_t t0 = shm_now_ns();

    assert_int_equal(shm_ring_wait(r, 1000, 2000), 1);
    assert_true(shm_now_ns() - t0 < 1500 * 1000000ll);
}

static void test_fragments_threaded(void **state)
{
    struct fx *f = *state;
    struct writer w = {.r = &f->prod};
    uint8_t *want = malloc(17 * RING + 77);
    pthread_t t;

    assert_int_equal(pthread_create(&t, NULL, write_fragments, &w), 0);
    for (size_t i = 0; i < sizeof frag_sizes / sizeof frag_sizes[0]; i++) {
        struct shm_msg m;
        int rc;

        while ((rc = shm_ring_read(&f->cons, &m)) == 0)
            wait_woken(&f->cons);
        assert_int_equal(rc, 1);
        assert_int_equal(m.type, SHM_FRAME_ADD_SUB);
        assert_int_equal(m.id, 100 + i);
        assert_int_equal(m.len, frag_sizes[i]);
        /* Only messages longer than one frame are reassembled. */
        assert_int_equal(m.frame_bytes == 0, frag_sizes[i] > MAX_FRAG);
        fill(want, m.len, (unsigned)i);
        assert_memory_equal(m.payload, want, m.len);
        shm_ring_done(&f->cons, &m);
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, 0);
    assert_true(shm_ring_empty(&f->cons));
    assert_false(f->cons.asm_open);
    free(want);
}

/* ---- untrusted input ---- */

static void craft(struct fx *f, uint64_t off, uint32_t len, uint16_t type, uint16_t flags,
                  uint64_t id)
{
    struct shm_frame_header h = {.len = len, .type = type, .flags = flags, .id = id};

    memcpy(f->data + off, &h, sizeof h);
}

static void set_counters(struct fx *f, uint64_t head, uint64_t tail)
{
    atomic_store(&f->ctl->head, head);
    atomic_store(&f->ctl->tail, tail);
}

/* The read fails, again when repeated, and consumes nothing. */
static void expect_bad(struct fx *f)
{
    uint64_t head = head_of(f);
    struct shm_msg m;

    assert_int_equal(shm_ring_read(&f->cons, &m), -EBADMSG);
    assert_int_equal(shm_ring_read(&f->cons, &m), -EBADMSG);
    assert_int_equal(head_of(f), head);
}

static void test_bad_len_past_tail(void **state)
{
    struct fx *f = *state;

    craft(f, 0, 100, SHM_FRAME_CALL, 0, 1);
    set_counters(f, 0, HDR + 64);
    expect_bad(f);
    /* A length this large would reach far past the area. */
    craft(f, 0, UINT32_MAX, SHM_FRAME_CALL, 0, 1);
    set_counters(f, 0, RING);
    expect_bad(f);
}

static void test_bad_frame_crosses_end(void **state)
{
    struct fx *f = *state;

    craft(f, RING - 64, 100, SHM_FRAME_CALL, 0, 1);
    set_counters(f, RING - 64, RING + 200);
    expect_bad(f);
}

static void test_bad_type(void **state)
{
    struct fx *f = *state;
    unsigned first_after = SHM_FRAME_CALL;
    uint16_t bad[] = {0, 2, SHM_FRAME_CALL - 1, 0, SHM_FRAME_RESULT, UINT16_MAX};

    /* The first type past the host's range, wherever frame.h ends it now. */
    while (shm_frame_type_to_worker(first_after))
        first_after++;
    bad[3] = (uint16_t)first_after;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        craft(f, 0, 8, bad[i], 0, 1);
        set_counters(f, 0, HDR + 8);
        expect_bad(f);
    }
    /* Unknown flags are refused too. */
    craft(f, 0, 8, SHM_FRAME_CALL, 0x8, 1);
    expect_bad(f);
}

static void test_bad_pad(void **state)
{
    struct fx *f = *state;

    /* A PAD 8 bytes short of the end. */
    craft(f, RING - 64, 40, SHM_FRAME_PAD, 0, 0);
    craft(f, 0, 0, SHM_FRAME_CALL, 0, 1);
    set_counters(f, RING - 64, RING + HDR);
    expect_bad(f);
    /* A PAD reaching past the end. */
    craft(f, RING - 64, 56, SHM_FRAME_PAD, 0, 0);
    expect_bad(f);
    /* A PAD marked as a fragment. */
    craft(f, RING - 64, 48, SHM_FRAME_PAD, SHM_FRAME_MORE, 0);
    expect_bad(f);
    /* The right PAD is accepted. */
    craft(f, RING - 64, 48, SHM_FRAME_PAD, 0, 0);
    expect(f, SHM_FRAME_CALL, 1, 0, 0);
    /* A PAD longer than what is published. */
    craft(f, 0, RING - HDR, SHM_FRAME_PAD, 0, 0);
    set_counters(f, 0, 64);
    expect_bad(f);
}

static void test_bad_counters(void **state)
{
    struct fx *f = *state;

    craft(f, 0, 0, SHM_FRAME_CALL, 0, 1);
    set_counters(f, 0, RING + 8);
    expect_bad(f);
    /* tail behind head */
    set_counters(f, 64, 32);
    expect_bad(f);
    /* less than a header published */
    set_counters(f, 0, 8);
    expect_bad(f);
    /* only the short gap at the end published, or the gap and half a header */
    set_counters(f, RING - 8, RING);
    expect_bad(f);
    set_counters(f, RING - 8, RING + 8);
    expect_bad(f);
    /* the same gap followed by a whole header is fine */
    set_counters(f, RING - 8, RING + HDR);
    expect(f, SHM_FRAME_CALL, 1, 0, 0);
}

static void test_bad_interleaved_fragments(void **state)
{
    struct fx *f = *state;

    struct shm_msg m;

    craft(f, 0, 8, SHM_FRAME_CALL, SHM_FRAME_MORE, 1);
    craft(f, 24, 8, SHM_FRAME_CALL, SHM_FRAME_MORE, 2);
    set_counters(f, 0, 48);
    assert_int_equal(shm_ring_read(&f->cons, &m), -EBADMSG);
    /* The first fragment was taken in and released. */
    assert_int_equal(head_of(f), 24);
    assert_true(f->cons.asm_open);
    expect_bad(f);

    /* Same id, other type. */
    craft(f, 24, 8, SHM_FRAME_CANCEL, 0, 1);
    expect_bad(f);
    /* A whole frame of another id while the message is open. */
    craft(f, 24, 8, SHM_FRAME_CALL, 0, 2);
    expect_bad(f);
}

static void test_bad_sizes(void **state)
{
    struct fx *f = *state;
    struct shm_msg m;

    /* A lone frame longer than a fragment may be. */
    craft(f, 0, MAX_FRAG + 8, SHM_FRAME_CALL, 0, 1);
    set_counters(f, 0, HDR + MAX_FRAG + 8);
    expect_bad(f);

    /* Fragments adding up to more than max_msg. */
    fx_attach_consumer(f, 1500);
    craft(f, 0, MAX_FRAG, SHM_FRAME_CALL, SHM_FRAME_MORE, 1);
    craft(f, HDR + MAX_FRAG, MAX_FRAG, SHM_FRAME_CALL, 0, 1);
    set_counters(f, 0, 2 * (HDR + MAX_FRAG));
    assert_int_equal(shm_ring_read(&f->cons, &m), -EBADMSG);
    expect_bad(f);
    assert_int_equal(f->cons.asm_len, MAX_FRAG);
    assert_int_equal(head_of(f), HDR + MAX_FRAG);

    /* A lone frame over max_msg. */
    fx_attach_consumer(f, 100);
    craft(f, 0, 200, SHM_FRAME_CALL, 0, 1);
    set_counters(f, 0, HDR + 200);
    expect_bad(f);
}

/* ---- waiting and waking ---- */

struct waiter {
    struct shm_ring *r;
    int timeout_ms;
    int rc;
    int64_t woke_ns;
};

static void *wait_frame(void *arg)
{
    struct waiter *w = arg;

    w->rc = shm_ring_wait(w->r, 0, w->timeout_ms);
    w->woke_ns = shm_now_ns();
    return NULL;
}

/*
 * Wait until a word says its owner went to sleep, then a little more so
 * that it is in FUTEX_WAIT.  A producer's own nap then ends about 95 ms
 * after this returns, which the tests tell apart from a real wake-up.
 */
#define NAP_SEEN_NS (60 * 1000000ll)

static void until_asleep(_Atomic uint32_t *word, uint32_t value)
{
    int64_t limit = shm_now_ns() + 5000000000;

    while (atomic_load(word) != value)
        assert_true(shm_now_ns() < limit);
    usleep(5000);
}

static void test_notify_wakes_sleeper(void **state)
{
    struct fx *f = *state;
    struct waiter w = {.r = &f->cons, .timeout_ms = 5000};
    pthread_t t;
    int64_t t0;

    /* Cheap when nobody sleeps: the word stays as it is. */
    shm_ring_notify(&f->prod);
    assert_int_equal(atomic_load(&f->ctl->consumer_wait), SHM_AWAKE);

    assert_int_equal(pthread_create(&t, NULL, wait_frame, &w), 0);
    until_asleep(&f->ctl->consumer_wait, SHM_SLEEP_FUTEX);
    put(f, SHM_FRAME_CALL, 1, 4, 1);
    t0 = shm_now_ns();
    shm_ring_notify(&f->prod);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, 1);
    assert_true(w.woke_ns - t0 < 1000000000);
    assert_int_equal(atomic_load(&f->ctl->consumer_wait), SHM_AWAKE);
    expect(f, SHM_FRAME_CALL, 1, 4, 1);
}

static void test_close_wakes_reader(void **state)
{
    struct fx *f = *state;
    struct waiter w = {.r = &f->cons, .timeout_ms = 5000};
    pthread_t t;
    int64_t t0;

    assert_int_equal(pthread_create(&t, NULL, wait_frame, &w), 0);
    until_asleep(&f->ctl->consumer_wait, SHM_SLEEP_FUTEX);
    t0 = shm_now_ns();
    shm_ring_close(&f->prod);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, -EPIPE);
    assert_true(w.woke_ns - t0 < 1000000000);
    assert_true(shm_ring_is_closed(&f->cons));
    /* Nobody may go to sleep on a closed ring, by either way of sleeping. */
    assert_true(shm_ring_sleep_begin(&f->cons, SHM_SLEEP_DOORBELL));
    assert_int_equal(atomic_load(&f->ctl->consumer_wait), SHM_AWAKE);
    assert_int_equal(shm_ring_wait(&f->cons, 0, 5000), -EPIPE);
}

static void test_close_keeps_last_frames(void **state)
{
    struct fx *f = *state;
    struct shm_msg m;

    assert_int_equal(shm_ring_write(&f->prod, SHM_FRAME_CALL, 1, "abc", 3, 0), 0);
    shm_ring_close(&f->prod);
    assert_int_equal(shm_ring_write(&f->prod, SHM_FRAME_CALL, 2, "abc", 3, 0), -EPIPE);
    assert_int_equal(shm_ring_wait(&f->cons, 0, 0), 1);
    assert_int_equal(shm_ring_wait(&f->cons, 0, 1000), 1);
    assert_int_equal(shm_ring_read(&f->cons, &m), 1);
    assert_memory_equal(m.payload, "abc", 3);
    shm_ring_done(&f->cons, &m);
    assert_int_equal(shm_ring_wait(&f->cons, 0, 1000), -EPIPE);
}

struct blocked_writer {
    struct shm_ring *r;
    int rc;
    int64_t done_ns;
};

static void *write_into_full(void *arg)
{
    struct blocked_writer *w = arg;
    static const uint8_t payload[100];

    w->rc = shm_ring_write(w->r, SHM_FRAME_CALL, 9, payload, sizeof payload, 1000);
    w->done_ns = shm_now_ns();
    return NULL;
}

static void test_close_wakes_writer(void **state)
{
    struct fx *f = *state;
    struct blocked_writer w = {.r = &f->prod};
    pthread_t t;
    int64_t t0;

    for (unsigned i = 0; i < 4; i++)
        put(f, SHM_FRAME_CALL, i, MAX_FRAG, i);
    assert_int_equal(pthread_create(&t, NULL, write_into_full, &w), 0);
    until_asleep(&f->ctl->producer_wait, 1);
    t0 = shm_now_ns();
    shm_ring_close(&f->cons);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, -EPIPE);
    /* Sooner than the producer's own 100 ms nap would have noticed. */
    assert_true(w.done_ns - t0 < NAP_SEEN_NS);
    assert_int_equal(atomic_load(&f->ctl->producer_wait), 0);
    assert_int_equal(tail_of(f), RING);
}

static void test_done_wakes_writer(void **state)
{
    struct fx *f = *state;
    struct blocked_writer w = {.r = &f->prod};
    pthread_t t;
    int64_t t0;

    for (unsigned i = 0; i < 4; i++)
        put(f, SHM_FRAME_CALL, i, MAX_FRAG, i);
    assert_int_equal(pthread_create(&t, NULL, write_into_full, &w), 0);
    until_asleep(&f->ctl->producer_wait, 1);
    t0 = shm_now_ns();
    expect(f, SHM_FRAME_CALL, 0, MAX_FRAG, 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, 0);
    /* Woken by shm_ring_done(), not by the end of its own nap. */
    assert_true(w.done_ns - t0 < NAP_SEEN_NS);
    assert_int_equal(tail_of(f), RING + 120);
}

static void test_doorbell(void **state)
{
    struct fx *f = *state;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    uint64_t v = 0;

    assert_true(efd >= 0);
    f->prod.doorbell_fd = efd;

    assert_false(shm_ring_sleep_begin(&f->cons, SHM_SLEEP_DOORBELL));
    assert_int_equal(atomic_load(&f->ctl->consumer_wait), SHM_SLEEP_DOORBELL);
    assert_int_equal(shm_ring_write(&f->prod, SHM_FRAME_CALL, 1, "ab", 2, 0), 0);
    assert_int_equal(read(efd, &v, sizeof v), sizeof v);
    assert_int_equal(v, 1);
    assert_int_equal(atomic_load(&f->ctl->consumer_wait), SHM_AWAKE);
    shm_ring_sleep_end(&f->cons);

    /* Awake consumer: no doorbell. */
    assert_int_equal(shm_ring_write(&f->prod, SHM_FRAME_CALL, 2, "cd", 2, 0), 0);
    assert_int_equal(read(efd, &v, sizeof v), -1);
    assert_int_equal(errno, EAGAIN);

    /* Frames waiting: the consumer must not sleep. */
    assert_true(shm_ring_sleep_begin(&f->cons, SHM_SLEEP_DOORBELL));
    assert_int_equal(atomic_load(&f->ctl->consumer_wait), SHM_AWAKE);

    /* Closing rings the doorbell too. */
    shm_ring_close(&f->prod);
    assert_int_equal(read(efd, &v, sizeof v), sizeof v);
    close(efd);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_attach_limits),
        T(test_empty),
        T(test_full_then_room),
        T(test_full_counts_pad),
        T(test_wrap_with_pad),
        T(test_wrap_small_gap),
        T(test_frame_fits_end_exactly),
        T(test_zero_length),
        T(test_write_too_big),
        T(test_fragments_threaded),
        T(test_bad_len_past_tail),
        T(test_bad_frame_crosses_end),
        T(test_bad_type),
        T(test_bad_pad),
        T(test_bad_counters),
        T(test_bad_interleaved_fragments),
        T(test_bad_sizes),
        T(test_notify_wakes_sleeper),
        T(test_close_wakes_reader),
        T(test_close_keeps_last_frames),
        T(test_close_wakes_writer),
        T(test_done_wakes_writer),
        T(test_doorbell),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
