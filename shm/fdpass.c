/*
 * One fd and its body per datagram (see fdpass.h).
 */
#include "fdpass.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Room for one fd's control message, aligned as cmsghdr must be. */
union fd_control {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
};

int shm_fd_send(int sock, const void *body, size_t len, int fd, bool wait)
{
    union fd_control u;
    struct iovec iov = {(void *)body, len};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

    memset(&u, 0, sizeof u);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    while (sendmsg(sock, &mh, MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT)) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return -EAGAIN;
        return errno == ECONNREFUSED || errno == ECONNRESET ? -EPIPE : -errno;
    }
    return 0;
}

int shm_fd_recv(int sock, void *body, size_t len, int *fd)
{
    union fd_control u;
    struct iovec iov = {body, len};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    struct cmsghdr *cm;
    ssize_t n;
    int got = -1;

    do
        n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    if (n == 0)
        return 0; /* the peer is gone: nothing will come */
    /* Room for one fd only: the kernel closes any more a peer sends. */
    cm = CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
        cm->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(&got, CMSG_DATA(cm), sizeof got);
    if ((size_t)n != len || got < 0 || (mh.msg_flags & MSG_TRUNC)) {
        if (got >= 0)
            close(got);
        return -EBADMSG;
    }
    *fd = got;
    return 1;
}

union fds_control {
    char buf[CMSG_SPACE(SHM_FDS_MAX * sizeof(int))];
    struct cmsghdr align;
};

int shm_fds_send(int sock, const void *body, size_t len, const int *fds, int nfds)
{
    union fds_control u;
    struct iovec iov = {(void *)body, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    if (nfds < 0 || nfds > SHM_FDS_MAX)
        return -EINVAL;
    memset(&u, 0, sizeof u);
    if (nfds > 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
    }
    while (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR)
            return errno == ECONNREFUSED || errno == ECONNRESET ? -EPIPE : -errno;
    }
    return 0;
}

/* The fds of mh's SCM_RIGHTS message into fds; their count. */
static int take_fds(struct msghdr *mh, int *fds)
{
    int n = 0;

    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k && n < SHM_FDS_MAX; i++)
            memcpy(&fds[n++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
    }
    return n;
}

int shm_fds_recv(int sock, void *body, size_t cap, int *fds, int *nfds, int timeout_ms)
{
    union fds_control u;
    struct iovec iov = {body, cap};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    ssize_t n;
    int r;

    do
        r = poll(&pfd, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (r == 0)
        return -ETIMEDOUT;
    do
        n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == ECONNRESET ? 0 : -errno;
    *nfds = take_fds(&mh, fds);
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return -EBADMSG;
    }
    return (int)n;
}
