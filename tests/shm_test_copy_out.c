/*
 * Unit tests of shm_ring_copy_out() (shm/ring.c): a payload read where it
 * lies is copied into private memory and its frame released at once; a
 * payload that is private already is left alone.  The data area ends at
 * an inaccessible page, so a copy that reads past it crashes the test.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/ring.h"

#define RING 4096u
#define MAX_MSG (1u << 20)

struct fx {
    struct shm_ring_ctl ctl;
    uint8_t *map;
    size_t map_len;
    struct shm_ring prod, cons;
};

static int fx_setup(void **state)
{
    long page = sysconf(_SC_PAGESIZE);
    struct fx *f = calloc(1, sizeof *f);
    uint8_t *data;

    assert_non_null(f);
    /* the page that holds the area at its end, then a guard page */
    f->map_len = 2 * (size_t)page;
    f->map = mmap(NULL, f->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(f->map != MAP_FAILED);
    assert_int_equal(mprotect(f->map, (size_t)page, PROT_READ | PROT_WRITE), 0);
    data = f->map + (size_t)page - RING;
    assert_int_equal(shm_ring_attach(&f->prod, &f->ctl, data, RING, MAX_MSG, -1, NULL), 0);
    assert_int_equal(shm_ring_attach(&f->cons, &f->ctl, data, RING, MAX_MSG, -1, NULL), 0);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;

    shm_ring_detach(&f->prod);
    shm_ring_detach(&f->cons);
    munmap(f->map, f->map_len);
    free(f);
    return 0;
}

static void put(struct fx *f, const void *p, size_t n)
{
    assert_int_equal(shm_ring_write(&f->prod, SHM_FRAME_RESULT, 7, p, n, 0), 0);
}

/* A message of one frame: copied, frame released, bytes kept. */
static void in_place_payload_is_copied_and_released(void **state)
{
    struct fx *f = *state;
    uint8_t src[13] = "hello, world";
    struct shm_msg m;

    put(f, src, sizeof src);
    assert_int_equal(shm_ring_read(&f->cons, &m), 1);
    assert_true(shm_msg_in_ring(&m));
    const uint8_t *in_ring = m.payload;
    assert_int_equal(shm_ring_copy_out(&f->cons, &m), 0);
    assert_false(shm_msg_in_ring(&m));
    assert_true(m.payload != in_ring);
    /* released at once: the producer may reuse the bytes */
    assert_int_equal(shm_ring_consumed(&f->cons), shm_ring_published(&f->cons));
    memset((void *)in_ring, 0xee, sizeof src);
    assert_int_equal(m.len, sizeof src);
    assert_memory_equal(m.payload, src, sizeof src);
    shm_ring_done(&f->cons, &m);
    assert_int_equal(shm_ring_consumed(&f->cons), shm_ring_published(&f->cons));
}

/* The last frame of the area, with a length that is no multiple of 8:
 * nothing past the frame's padding is read. */
static void copy_stops_at_the_frame(void **state)
{
    struct fx *f = *state;
    uint8_t src[1008];
    struct shm_msg m;

    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)(i * 7);
    /* Three frames of 16 + 1008 bytes, then one of 16 + 1003 that ends
     * at the area's end once padded. */
    for (int i = 0; i < 3; i++) {
        put(f, src, 1008);
        assert_int_equal(shm_ring_read(&f->cons, &m), 1);
        shm_ring_done(&f->cons, &m);
    }
    uint64_t left = RING - (shm_ring_published(&f->cons) % RING);
    size_t n = (size_t)(left - SHM_FRAME_HEADER_BYTES - 5);
    assert_true(n <= sizeof src);
    put(f, src, n);
    assert_int_equal(shm_ring_read(&f->cons, &m), 1);
    assert_int_equal(shm_ring_copy_out(&f->cons, &m), 0);
    assert_int_equal(m.len, n);
    assert_memory_equal(m.payload, src, n);
    shm_ring_done(&f->cons, &m);
}

/* A reassembled message is private already: left where it is. */
static void reassembled_payload_is_left_alone(void **state)
{
    struct fx *f = *state;
    size_t n = 3 * f->prod.max_frag;
    uint8_t *src = malloc(n);
    struct shm_msg m;
    int rc;

    assert_non_null(src);
    for (size_t i = 0; i < n; i++)
        src[i] = (uint8_t)(i * 13);
    /* Write from another side of the ring: one fragment at a time, each
     * read before the next is written. */
    for (size_t done = 0; done < n; done += f->prod.max_frag) {
        void *dst;
        assert_int_equal(shm_ring_reserve(&f->prod, f->prod.max_frag, &dst), 0);
        memcpy(dst, src + done, f->prod.max_frag);
        shm_ring_commit(&f->prod, SHM_FRAME_RESULT,
                        done + f->prod.max_frag < n ? SHM_FRAME_MORE : 0, 9, f->prod.max_frag);
        rc = shm_ring_read(&f->cons, &m);
        assert_int_equal(rc, done + f->prod.max_frag < n ? 0 : 1);
    }
    assert_false(shm_msg_in_ring(&m));
    const uint8_t *before = m.payload;
    assert_int_equal(shm_ring_copy_out(&f->cons, &m), 0);
    assert_ptr_equal(m.payload, before);
    assert_int_equal(m.len, n);
    assert_memory_equal(m.payload, src, n);
    shm_ring_done(&f->cons, &m);
    free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(in_place_payload_is_copied_and_released, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(copy_stops_at_the_frame, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(reassembled_payload_is_left_alone, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
