/* Opening an input file without hanging: see file.h. */
#include "config.h"

#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
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

hvq_status hvq_slurp_input(hvq_ctx *ctx, const char *path, uint64_t limit, const char *what,
                        unsigned char **buf, size_t *len)
{
    const hvq_host *H = ctx->host;
    *buf = NULL;
    *len = 0;
    int odd;
    FILE *f = hvq_fopen_input(ctx, path, &odd);
    if (!f)
        return H->error(ctx, HVQ_E_INPUT, "%s: cannot open %s: %s", path, what,
                        odd ? "not a regular file (a FIFO, a device?)" : strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int e = errno;
        fclose(f);
        return H->error(ctx, HVQ_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if ((uint64_t)st.st_size > limit) {
        fclose(f);
        return H->error(ctx, HVQ_E_INPUT, "%s: %llu bytes, too large for %s", path,
                        (unsigned long long)st.st_size, what);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *b = H->alloc(ctx, n + 1);
    if (!b) {
        fclose(f);
        return HVQ_E_NOMEM;
    }
    size_t got = fread(b, 1, n, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (got != n) {
        H->free(b);
        if (err)
            return H->error(ctx, HVQ_E_IO, "%s: cannot read: %s", path, strerror(err));
        return H->error(ctx, HVQ_E_IO, "%s: the file shrank while being read", path);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return HVQ_OK;
}

hvq_status hvq_map_input(hvq_ctx *ctx, const char *path, const void **map, size_t *size)
{
    const hvq_host *H = ctx->host;
    struct stat sb;
    int e, fd = hvq_open_input(ctx, path);
    *map = NULL;
    *size = 0;
    if (fd < 0) {
        e = errno;
        return H->error(ctx, e == ENOENT || e == ENOTDIR ? HVQ_E_INPUT : HVQ_E_IO,
                        "%s: cannot open: %s", path, strerror(e));
    }
    if (fstat(fd, &sb) != 0) {
        e = errno;
        close(fd);
        return H->error(ctx, HVQ_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > (uint64_t)SIZE_MAX || sb.st_size == 0) {
        close(fd);
        if (!S_ISREG(sb.st_mode))
            return H->error(ctx, HVQ_E_INPUT, "%s: not a regular file", path);
        return sb.st_size == 0 ? HVQ_OK /* mmap refuses length 0 */
                               : H->error(ctx, HVQ_E_UNSUPPORTED,
                                          "%s: file too large to map on this system", path);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return H->error(ctx, e == ENOMEM ? HVQ_E_NOMEM : HVQ_E_IO,
                        "%s: cannot map the file: %s", path, strerror(e));
    *map = m;
    *size = (size_t)sb.st_size;
    return HVQ_OK;
}
