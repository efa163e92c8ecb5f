/*
 * One fd and its body per datagram (see fdpass.h).
 */
#include "fdpass.h"

#include <errno.h>
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
