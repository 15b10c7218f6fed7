/* Opening an input file without hanging, and recording it as an input of
 * the run: a FIFO (or a device) opened with fopen blocks until a writer
 * appears, so every reader of a path the user names opens it through here;
 * and every file a run reads goes through the host's input_open, so that no
 * output of the run may replace it. Linked into the core and plugins
 * (libhvqjson). */
#ifndef HVQ_COMMON_FILE_H
#define HVQ_COMMON_FILE_H

#include <stdio.h>

#include "plugin.h"

/* open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) through the host's
 * input_open when ctx's host has one (then the file is an input of the
 * run), else directly. -1 with errno set on failure. */
int hvq_open_input(hvq_ctx *ctx, const char *path);

/* path opened for reading ("rb") when it is a regular file: opened with
 * hvq_open_input (O_NONBLOCK never waits), checked with fstat, then
 * switched back to blocking reads. NULL with errno set when it cannot be
 * opened, and with *not_regular = 1 when it is something else: errno
 * EISDIR for a directory, EINVAL for a FIFO, a socket or a device. ctx
 * may be NULL (the
 * file is then not recorded as an input). */
FILE *hvq_fopen_input(hvq_ctx *ctx, const char *path, int *not_regular);

/* Reads a whole regular file of at most limit bytes (what names it in
 * messages: "a token file") as an input of the run, NUL-terminated, into
 * *buf (host->alloc) and *len. */
hvq_status hvq_slurp_input(hvq_ctx *ctx, const char *path, uint64_t limit, const char *what,
                           unsigned char **buf, size_t *len);

/* Maps path (recorded as an input of the run) read-only into *map and
 * *size; an empty file gives NULL and 0 (the caller reports it as its
 * format needs). The errors name the file: cannot open or stat, not a
 * regular file, too large to map, cannot map. munmap it when done. */
hvq_status hvq_map_input(hvq_ctx *ctx, const char *path, const void **map, size_t *size);

#endif
