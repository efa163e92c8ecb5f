/* Unit tests of the segment's stop table (shm/segment.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "shm/segment.h"

#define RING 4096u

/* An id as host/table.c makes it: generation high, slot low. */
static uint64_t id_of(uint32_t gen, uint32_t slot)
{
    return ((uint64_t)gen << 32) | slot;
}

static void test_post_and_lookup(void **state)
{
    struct shm_seg s;
    struct shm_seg_header *h;

    (void)state;
    assert_int_equal(shm_seg_create(&s, RING, 0, 1 << 20), 0);
    h = s.hdr;
    assert_int_equal(atomic_load(&h->stop_seq), 0);
    assert_int_equal(shm_seg_stop_lookup(h, id_of(1, 5)), 0);
    assert_int_equal(shm_seg_stop_lookup(h, 0), 0); /* no call has id 0 */

    assert_int_equal(shm_seg_stop_post(h, 3, id_of(1, 5), SHM_INTERRUPT_TIMEOUT), 1);
    assert_int_equal(shm_seg_stop_post(h, 7, id_of(2, 9), SHM_INTERRUPT_CANCEL), 2);
    assert_int_equal(shm_seg_stop_lookup(h, id_of(1, 5)), SHM_INTERRUPT_TIMEOUT);
    assert_int_equal(shm_seg_stop_lookup(h, id_of(2, 9)), SHM_INTERRUPT_CANCEL);
    /* The same slot number in a later generation is another call. */
    assert_int_equal(shm_seg_stop_lookup(h, id_of(2, 5)), 0);
    assert_int_equal(atomic_load(&h->stop_seq), 2);
    assert_int_equal(shm_seg_stop_seen(h), 0);
    shm_seg_release(&s);
}

static void test_clear_and_reuse(void **state)
{
    struct shm_seg s;
    struct shm_seg_header *h;

    (void)state;
    assert_int_equal(shm_seg_create(&s, RING, 0, 1 << 20), 0);
    h = s.hdr;
    shm_seg_stop_post(h, 0, id_of(1, 1), SHM_INTERRUPT_CANCEL);
    shm_seg_stop_clear(h, 0);
    assert_int_equal(shm_seg_stop_lookup(h, id_of(1, 1)), 0);
    shm_seg_stop_post(h, 0, id_of(3, 1), SHM_INTERRUPT_TIMEOUT);
    assert_int_equal(shm_seg_stop_lookup(h, id_of(1, 1)), 0);
    assert_int_equal(shm_seg_stop_lookup(h, id_of(3, 1)), SHM_INTERRUPT_TIMEOUT);
    /* Every slot holds an entry of its own. */
    for (unsigned i = 0; i < SHM_STOP_SLOTS; i++)
        shm_seg_stop_post(h, i, id_of(7, 100 + i), SHM_INTERRUPT_CANCEL);
    for (unsigned i = 0; i < SHM_STOP_SLOTS; i++)
        assert_int_equal(shm_seg_stop_lookup(h, id_of(7, 100 + i)), SHM_INTERRUPT_CANCEL);
    assert_int_equal(shm_seg_stop_lookup(h, id_of(3, 1)), 0);
    shm_seg_release(&s);
}

/* The table and its words lie before the rings' control blocks. */
static void test_layout(void **state)
{
    (void)state;
    assert_true(offsetof(struct shm_seg_header, stops) % 64 == 0);
    assert_true(offsetof(struct shm_seg_header, request) >=
                offsetof(struct shm_seg_header, stops) + SHM_STOP_SLOTS * sizeof(struct shm_stop));
    assert_true(sizeof(struct shm_seg_header) <= SHM_SEG_DATA_OFFSET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_and_lookup),
        cmocka_unit_test(test_clear_and_reuse),
        cmocka_unit_test(test_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
