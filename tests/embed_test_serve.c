/*
 * embed/serve.c: the fixed part of a CALL frame, [kind, ref, args, kwargs],
 * read from bytes the host wrote: every encoding msgpack allows for the
 * array, the kind and the reference, and refusal of anything else or of a
 * frame cut anywhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "embed/bridge.h"

/* Header bytes, then "abc" as the reference's bytes. */
struct frame {
    unsigned char b[64];
    size_t len;
};

static struct frame frame_of(const unsigned char *head, size_t n)
{
    struct frame f;

    memcpy(f.b, head, n);
    memcpy(f.b + n, "abc", 3);
    f.b[n + 3] = 0x90; /* args */
    f.b[n + 4] = 0x80; /* kwargs */
    f.len = n + 5;
    return f;
}

static void reads_every_encoding(void **state)
{
    static const struct {
        unsigned char head[16];
        size_t n;
        uint64_t kind;
    } good[] = {
        {{0x94, 0x01, 0xa3}, 3, 1},
        {{0xdc, 0x00, 0x04, 0x01, 0xa3}, 5, 1},
        {{0xdd, 0x00, 0x00, 0x00, 0x04, 0x01, 0xa3}, 7, 1},
        {{0x94, 0xcc, 0xff, 0xa3}, 4, 255},
        {{0x94, 0xcd, 0x01, 0x00, 0xa3}, 5, 256},
        {{0x94, 0xce, 0x00, 0x01, 0x00, 0x00, 0xa3}, 7, 65536},
        {{0x94, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0x01, 0xa3}, 11, (1ull << 63) + 1},
        {{0x94, 0x00, 0xd9, 0x03}, 4, 0},
        {{0x94, 0x00, 0xda, 0x00, 0x03}, 5, 0},
        {{0x94, 0x00, 0xdb, 0x00, 0x00, 0x00, 0x03}, 7, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct frame f = frame_of(good[i].head, good[i].n);
        const char *p = (const char *)f.b, *ref = NULL;
        uint64_t kind = 99;
        uint32_t len = 0;

        assert_true(serve_call_header(&p, (const char *)f.b + f.len, &kind, &ref, &len));
        assert_int_equal(kind, good[i].kind);
        assert_int_equal(len, 3);
        assert_memory_equal(ref, "abc", 3);
        assert_ptr_equal(p, f.b + good[i].n + 3);
        /* Cut anywhere before the reference's end: refused, untouched. */
        for (size_t cut = 0; cut < good[i].n + 3; cut++) {
            const char *q = (const char *)f.b;
            assert_false(serve_call_header(&q, (const char *)f.b + cut, &kind, &ref, &len));
            assert_ptr_equal(q, f.b);
        }
    }
}

static void refuses_other_frames(void **state)
{
    static const struct {
        unsigned char head[16];
        size_t n;
    } bad[] = {
        {{0x93, 0x01, 0xa3}, 3},                         /* three items */
        {{0x95, 0x01, 0xa3}, 3},                         /* five */
        {{0xdc, 0x00, 0x05, 0x01, 0xa3}, 5},             /* five, as array 16 */
        {{0x84, 0x01, 0xa3}, 3},                         /* a map */
        {{0xa4, 0x01, 0xa3}, 3},                         /* a str */
        {{0x94, 0xff, 0xa3}, 3},                         /* a negative kind */
        {{0x94, 0xd0, 0x01, 0xa3}, 4},                   /* an int 8 kind */
        {{0x94, 0xc0, 0xa3}, 3},                         /* nil */
        {{0x94, 0x01, 0xc4, 0x03}, 4},                   /* a bin reference */
        {{0x94, 0x01, 0x03}, 3},                         /* an int reference */
        {{0x94, 0x01, 0xa4}, 3},                         /* 4 bytes where 3 and 2 more are */
        {{0x94, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff}, 7}, /* 4 GiB */
    };

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct frame f = frame_of(bad[i].head, bad[i].n);
        const char *p = (const char *)f.b, *ref = NULL;
        uint64_t kind = 99;
        uint32_t len = 99;

        /* Ends right after the reference: nothing past it to borrow. */
        if (serve_call_header(&p, (const char *)f.b + bad[i].n + 3, &kind, &ref, &len))
            fail_msg("frame %zu read", i);
        assert_ptr_equal(p, f.b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_every_encoding),
        cmocka_unit_test(refuses_other_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
