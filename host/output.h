/*
 * A worker's stdout and stderr, passed on line by line (output.c).
 * Floor 1 of host/.
 */
#ifndef PYPROC_HOST_OUTPUT_H
#define PYPROC_HOST_OUTPUT_H

#include "core.h"

/* Pass on the whole lines waiting in w's stdout (k = 0) or stderr (1)
 * pipe; at EOF pass on the rest too and close it.  Service thread only. */
void pyproc__output_read(struct pp_worker *w, int k);
/* w has exited: pass on what its pipes still hold, then close them. */
void pyproc__output_finish(struct pp_worker *w);
/* Close the pipes without reading them (a worker that never ran). */
void pyproc__output_close(struct pp_worker *w);

#endif
