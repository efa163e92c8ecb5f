/*
 * The worker's functions on the path of every call.  GCC puts hot
 * functions together in .text.hot, at the front of the text, so that a call
 * after idle, whose every code page costs a TLB miss and a page walk,
 * finds the worker's part of its path on two or three pages rather than
 * spread over the whole module.
 */
#ifndef PYPROC_EMBED_HOT_H
#define PYPROC_EMBED_HOT_H

#define WORKER_HOT __attribute__((hot))

#endif
