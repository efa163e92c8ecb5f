/*
 * Passing one fd with a few bytes that name it, as one datagram of a
 * SOCK_SEQPACKET socket pair (SCM_RIGHTS).  Host and worker pass shared
 * buffers' fds this way (see host/shared.h); each datagram carries a body
 * of a fixed size and exactly one fd, so either side can tell a datagram
 * that is not what it expects and drop it, closing what it brought.
 */
#ifndef PYPROC_SHM_FDPASS_H
#define PYPROC_SHM_FDPASS_H

#include <stdbool.h>
#include <stddef.h>

/* Send fd with the len bytes at body.  With wait false, never blocks.
 * 0; -EAGAIN when the socket is full (wait false); -EPIPE when the peer is
 * gone; another negative errno of sendmsg(). */
int shm_fd_send(int sock, const void *body, size_t len, int fd, bool wait);

/* Take the next datagram without waiting: 1 with its body in body and
 * its fd (close-on-exec, the caller's) in *fd; 0 when none waits (or the
 * peer is gone);
 * -EBADMSG for one of another shape, which is dropped (any fd it carried
 * is closed); another negative errno of recvmsg(). */
int shm_fd_recv(int sock, void *body, size_t len, int *fd);

#endif
