/* Unit tests of segment create, map and validation (shm/segment.c). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm/segment.h"

#define RING 8192u
#define TOTAL (SHM_SEG_DATA_OFFSET + 2 * RING)

static void test_create(void **state)
{
    struct shm_seg s;
    int seals;

    assert_int_equal(shm_seg_create(&s, RING, 3, 1 << 20), 0);
    assert_true(fcntl(s.fd, F_GETFD) & FD_CLOEXEC);
    seals = fcntl(s.fd, F_GET_SEALS);
    assert_int_equal(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
                     F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    assert_int_equal(ftruncate(s.fd, 4096), -1);
    assert_int_equal(s.size, TOTAL);
    assert_int_equal(lseek(s.fd, 0, SEEK_END), TOTAL);
    assert_int_equal(s.hdr->magic, SHM_SEG_MAGIC);
    assert_int_equal(s.hdr->index, 3);
    assert_int_equal(s.hdr->ring_bytes, RING);
    assert_int_equal(s.hdr->total_bytes, TOTAL);
    assert_int_equal(s.hdr->creator_pid, getpid());
    assert_ptr_equal(s.request_data, s.base + SHM_SEG_DATA_OFFSET);
    assert_ptr_equal(s.reply_data, s.base + SHM_SEG_DATA_OFFSET + RING);
    assert_int_equal(atomic_load(&s.hdr->request.tail), 0);
    shm_seg_release(&s);
    assert_null(s.base);
    shm_seg_release(&s);
}

static void test_create_rejects(void **state)
{
    struct shm_seg s;

    assert_int_equal(shm_seg_create(&s, 2048, 0, 1), -EINVAL);
    assert_int_equal(shm_seg_create(&s, 6144, 0, 1), -EINVAL);
    assert_int_equal(shm_seg_create(&s, SHM_RING_MAX_BYTES * 2, 0, 1), -EINVAL);
    assert_int_equal(shm_seg_create(&s, RING, 0, 0), -EINVAL);
}

static void test_map_shares_memory(void **state)
{
    struct shm_seg a, b;

    assert_int_equal(shm_seg_create(&a, RING, 1, 1 << 20), 0);
    assert_int_equal(shm_seg_map(&b, fcntl(a.fd, F_DUPFD_CLOEXEC, 0), getpid(), 1), 0);
    assert_ptr_not_equal(a.base, b.base);
    a.reply_data[RING - 1] = 0x5a;
    assert_int_equal(b.reply_data[RING - 1], 0x5a);
    atomic_store(&a.hdr->reply.tail, 42);
    assert_int_equal(atomic_load(&b.hdr->reply.tail), 42);
    shm_seg_release(&b);
    shm_seg_release(&a);
}

/* Map a duplicate of fd expecting ret; the duplicate is closed either way. */
static void map_expect(int fd, pid_t pid, uint32_t index, int ret)
{
    struct shm_seg s;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);

    assert_int_equal(shm_seg_map(&s, dup, pid, index), ret);
    if (ret == 0)
        shm_seg_release(&s);
    else
        close(dup);
}

static void test_map_rejects(void **state)
{
    struct shm_seg s;
    struct shm_seg_header saved;

    assert_int_equal(shm_seg_create(&s, RING, 2, 1 << 20), 0);
    map_expect(s.fd, getpid(), 2, 0);
    map_expect(s.fd, getpid() + 1, 2, -EPROTO);
    map_expect(s.fd, getpid(), 3, -EPROTO);

    memcpy(&saved, s.hdr, offsetof(struct shm_seg_header, request));
    s.hdr->magic ^= 1;
    map_expect(s.fd, getpid(), 2, -EPROTO);
    s.hdr->magic = saved.magic;
    s.hdr->version = SHM_SEG_VERSION + 1;
    map_expect(s.fd, getpid(), 2, -EPROTO);
    s.hdr->version = saved.version;
    s.hdr->ring_bytes = RING * 2;
    map_expect(s.fd, getpid(), 2, -EPROTO);
    s.hdr->ring_bytes = RING / 2 + 1;
    map_expect(s.fd, getpid(), 2, -EPROTO);
    s.hdr->ring_bytes = saved.ring_bytes;
    s.hdr->total_bytes = TOTAL + 4096;
    map_expect(s.fd, getpid(), 2, -EPROTO);
    s.hdr->total_bytes = saved.total_bytes;
    map_expect(s.fd, getpid(), 2, 0);
    shm_seg_release(&s);
}

/* A file whose header claims the right sizes but which is not what it says. */
static void test_map_rejects_wrong_file(void **state)
{
    struct shm_seg s;
    int fd;

    assert_int_equal(shm_seg_create(&s, RING, 0, 1 << 20), 0);

    /* Right size and header, but not sealed against shrinking. */
    fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_int_equal(write(fd, s.base, TOTAL), TOTAL);
    map_expect(fd, getpid(), 0, -EPROTO);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    map_expect(fd, getpid(), 0, 0);
    close(fd);

    /* Sealed, but larger than the header says. */
    fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_int_equal(write(fd, s.base, TOTAL), TOTAL);
    assert_int_equal(ftruncate(fd, TOTAL + RING), 0);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    map_expect(fd, getpid(), 0, -EPROTO);
    close(fd);

    /* Sealed, and too short to hold a header. */
    fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_int_equal(write(fd, s.base, 64), 64);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    map_expect(fd, getpid(), 0, -EPROTO);
    close(fd);

    shm_seg_release(&s);
}

static void test_release_zeroed(void **state)
{
    struct shm_seg s = {0};
    bool stdin_open = fcntl(0, F_GETFD) >= 0;
    int fd = memfd_create("test", MFD_CLOEXEC);

    /* A zeroed segment says fd 0, which it does not own. */
    shm_seg_release(&s);
    assert_int_equal(fcntl(0, F_GETFD) >= 0, stdin_open);
    shm_seg_release(NULL);
    /* Nor does a segment that was never mapped own its fd. */
    s = (struct shm_seg){.fd = fd};
    shm_seg_release(&s);
    assert_true(fcntl(fd, F_GETFD) >= 0);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_create_rejects),
        cmocka_unit_test(test_map_shares_memory),
        cmocka_unit_test(test_map_rejects),
        cmocka_unit_test(test_map_rejects_wrong_file),
        cmocka_unit_test(test_release_zeroed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
