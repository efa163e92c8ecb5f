/*
 * What a pool's host and its template say to each other over their
 * SOCK_SEQPACKET socket pair (the template's fd 3).  Both ends are built
 * from the same tree, so the messages are plain structs.
 *
 *   template -> host  TMPL_READY      Python is up; it may fork now
 *   host -> template  TMPL_FORK       with the new worker's 7 fds, in the
 *                                     order they get as its fds 1 to 7
 *   worker -> host    TMPL_FORKED     from the forked child itself, with
 *                                     its pid, so a template that dies
 *                                     right after the fork loses nothing
 *   template -> host  TMPL_FORKED     with value < 0: the fork failed
 *   host -> template  TMPL_PRELOAD    name '\0' pypath '\0' follow
 *   template -> host  TMPL_PRELOADED  value: 0, or -EBUSY when the import
 *                                     left threads running (no more
 *                                     forks), or -EIO when it failed
 */
#ifndef PYPROC_SHM_TEMPLATE_H
#define PYPROC_SHM_TEMPLATE_H

#include <stdint.h>

enum {
    SHM_TMPL_READY = 1,
    SHM_TMPL_FORK,
    SHM_TMPL_FORKED,
    SHM_TMPL_PRELOAD,
    SHM_TMPL_PRELOADED,
};

#define SHM_TMPL_FORK_FDS 7
#define SHM_TMPL_MAX_BODY 8192

struct shm_tmpl_msg {
    uint32_t kind;
    int32_t index; /* TMPL_FORK: the worker's index */
    int64_t value; /* TMPL_FORK: spin in us; replies: a pid or -errno */
};

#endif
