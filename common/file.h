/* Opening an input file without hanging: a FIFO (or a device) opened with
 * fopen blocks until a writer appears, so every reader of a path the user
 * names opens it through here. Linked into the core and plugins
 * (libhvqjson). */
#ifndef HVQ_COMMON_FILE_H
#define HVQ_COMMON_FILE_H

#include <stdio.h>

/* path opened for reading ("rb") when it is a regular file: opened with
 * O_NONBLOCK (which never waits), checked with fstat, then switched back
 * to blocking reads. NULL with errno set when it cannot be opened, and
 * with *not_regular = 1 (errno EINVAL) when it is something else: a
 * FIFO, a socket, a device or a directory. */
FILE *hvq_fopen_regular(const char *path, int *not_regular);

#endif
