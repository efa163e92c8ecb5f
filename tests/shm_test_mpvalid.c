/* Unit tests of the shared msgpack validator (shm/mpvalid.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shm/mpvalid.h"

struct sample {
    const char *bytes;
    size_t len;
};

/* A table of samples reads best as written. */
/* clang-format off */
#define S(lit) {lit, sizeof(lit) - 1}

/* One well-formed value each, of every kind of head. */
static const struct sample valid[] = {
    S("\x00"), S("\x7f"), S("\xe0"), S("\xff"), S("\xc0"), S("\xc2"), S("\xc3"),
    S("\xcc\x01"), S("\xcd\x01\x02"), S("\xce\x01\x02\x03\x04"),
    S("\xcf\x01\x02\x03\x04\x05\x06\x07\x08"), S("\xd0\xff"), S("\xd1\xff\xff"),
    S("\xd2\x00\x00\x00\x01"), S("\xd3\x00\x00\x00\x00\x00\x00\x00\x01"),
    S("\xca\x3f\x80\x00\x00"), S("\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"),
    S("\xa3" "abc"), S("\xd9\x03" "abc"), S("\xda\x00\x03" "abc"),
    S("\xdb\x00\x00\x00\x03" "abc"), S("\xc4\x02" "xy"), S("\xc5\x00\x02" "xy"),
    S("\xc6\x00\x00\x00\x02" "xy"), S("\xd4\x01" "a"), S("\xd5\x01" "ab"),
    S("\xd6\x01" "abcd"), S("\xd7\x01" "abcdefgh"), S("\xd8\x01" "abcdefghijklmnop"),
    S("\xc7\x02\x05" "ab"), S("\xc8\x00\x02\x05" "ab"), S("\xc9\x00\x00\x00\x02\x05" "ab"),
    S("\x90"), S("\x80"), S("\x92\x01\xa1" "x"), S("\x81\xa1" "k\x93\x01\x02\x03"),
    S("\xdc\x00\x02\xc0\xc3"), S("\xdd\x00\x00\x00\x01\x91\x90"),
    S("\xde\x00\x01\x01\x02"), S("\xdf\x00\x00\x00\x01\xc0\x81\x01\x02"),
};
/* clang-format on */

static void test_accepts_every_kind(void **state)
{
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        const char *p = valid[i].bytes, *end = p + valid[i].len;
        assert_int_equal(shm_mp_next(&p, end), 0);
        assert_ptr_equal(p, end);
        assert_int_equal(shm_mp_check(valid[i].bytes, valid[i].len), 0);
    }
}

/* A msgpack value states every length up front, so no proper prefix of
 * one is a whole value. */
static void test_rejects_every_prefix(void **state)
{
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        for (size_t n = 0; n < valid[i].len; n++) {
            char *copy = malloc(n ? n : 1); /* exact size: ASan sees overreads */
            memcpy(copy, valid[i].bytes, n);
            const char *p = copy;
            assert_int_equal(shm_mp_next(&p, copy + n), -EBADMSG);
            assert_int_equal(shm_mp_check(copy, n), -EBADMSG);
            free(copy);
        }
    }
}

static void test_rejects_reserved_and_trailing(void **state)
{
    assert_int_equal(shm_mp_check("\xc1", 1), -EBADMSG);
    assert_int_equal(shm_mp_check("\x91\xc1", 2), -EBADMSG);
    assert_int_equal(shm_mp_check("\x01\x02", 2), -EBADMSG); /* two values */
    assert_int_equal(shm_mp_check(NULL, 0), -EBADMSG);
    assert_int_equal(shm_mp_check("\x01", 0), -EBADMSG);
}

/* Counts that the bytes left could never hold: a 32-bit count that would
 * wrap an int, and maps whose doubled count overflows 32 bits. */
static void test_rejects_impossible_counts(void **state)
{
    assert_int_equal(shm_mp_check("\xdd\xff\xff\xff\xff", 5), -EBADMSG);
    assert_int_equal(shm_mp_check("\xdf\xff\xff\xff\xff\x01\x01", 7), -EBADMSG);
    assert_int_equal(shm_mp_check("\xdb\xff\xff\xff\xff"
                                  "abc",
                                  8),
                     -EBADMSG);
    assert_int_equal(shm_mp_check("\xc9\xff\xff\xff\xff\x01", 6), -EBADMSG);
    /* Nested arrays, each claiming one more item than the bytes hold. */
    assert_int_equal(shm_mp_check("\x92\x92\x92\x01", 4), -EBADMSG);
}

/* Deep nesting is fine: the walk keeps a count, not a stack. */
static void test_deep_nesting(void **state)
{
    size_t depth = 100000;
    char *b = malloc(depth + 1);

    memset(b, 0x91, depth);
    b[depth] = 0x00;
    assert_int_equal(shm_mp_check(b, depth + 1), 0);
    assert_int_equal(shm_mp_check(b, depth), -EBADMSG);
    free(b);
}

/* Stepping leaves the pointer on the next value. */
static void test_next_steps_one_value(void **state)
{
    static const char two[] = "\x92\x01\x02\xa2hi";
    const char *p = two, *end = two + sizeof two - 1;

    assert_int_equal(shm_mp_next(&p, end), 0);
    assert_ptr_equal(p, two + 3);
    assert_int_equal(shm_mp_next(&p, end), 0);
    assert_ptr_equal(p, end);
    assert_int_equal(shm_mp_next(&p, end), -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_every_kind),
        cmocka_unit_test(test_rejects_every_prefix),
        cmocka_unit_test(test_rejects_reserved_and_trailing),
        cmocka_unit_test(test_rejects_impossible_counts),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_next_steps_one_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
