/* Opening an input file without hanging: see file.h. */
#include "config.h"

#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/stat.h>
#include <unistd.h>

/* Closes fd and returns NULL with errno e. */
static FILE *fail(int fd, int e)
{
    close(fd);
    errno = e;
    return NULL;
}

int hvq_open_input(hvq_ctx *ctx, const char *path)
{
    const hvq_host *h = ctx ? ctx->host : NULL;
    if (h && h->struct_size >= offsetof(hvq_host, input_open) + sizeof h->input_open &&
        h->input_open)
        return h->input_open(ctx, path);
    return open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
}

FILE *hvq_fopen_input(hvq_ctx *ctx, const char *path, int *not_regular)
{
    *not_regular = 0;
    int fd = hvq_open_input(ctx, path);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return fail(fd, errno);
    if (!S_ISREG(st.st_mode)) {
        *not_regular = 1;
        return fail(fd, S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
        return fail(fd, errno);
    FILE *f = fdopen(fd, "rb");
    return f ? f : fail(fd, errno);
}
