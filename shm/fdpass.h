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

/*
 * The same for up to SHM_FDS_MAX fds and a body of any length up to a
 * cap: the template of a pool and its host talk so (embed/template.c,
 * host/template.c).  Send blocks; 0 or a negative errno as above.
 */
#define SHM_FDS_MAX 8
int shm_fds_send(int sock, const void *body, size_t len, const int *fds, int nfds);
/* Take the next datagram, waiting up to timeout_ms (-1: for ever): its
 * length (its body in body, at most cap bytes, and its fds, close-on-exec
 * and the caller's, in fds with their count in *nfds); 0 when the peer
 * is gone; -ETIMEDOUT; -EBADMSG for one cut short (its fds are closed);
 * another negative errno. */
int shm_fds_recv(int sock, void *body, size_t cap, int *fds, int *nfds, int timeout_ms);

#endif
