/* Failures of the machine, on demand, for tests of what a run leaves
 * behind (tests/test_safety.c). Preloaded into the real binary
 * (LD_PRELOAD); never linked into anything installed. Each is off unless
 * its environment variable is set:
 *
 *   HVQ_FAULT_RENAME=N       the Nth rename(2) fails with EBUSY (from 1)
 *   HVQ_FAULT_SLOW_RENAME=MS every rename(2) waits MS milliseconds first (two
 *                            runs committing at once then interleave)
 *   HVQ_FAULT_SHRINK=PATH    once PATH is mapped, it is truncated to half
 *                            its size: reading its tail raises SIGBUS, as
 *                            when a file being copied is read
 *   HVQ_FAULT_SIGNAL=SIG     the first mapping of a file raises signal SIG
 *                            (the run has started, no output is complete)
 *   HVQ_FAULT_NO_TMPFILE=1   open(O_TMPFILE) fails with EOPNOTSUPP, as on
 *                            filesystems without it
 *   HVQ_FAULT_WRITE_SIGNAL=SIG  the first pwrite(2) (an output being
 *                            written) raises signal SIG, e.g. 9 (SIGKILL) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int env_int(const char *name)
{
    const char *v = getenv(name);
    return v ? atoi(v) : 0;
}

int rename(const char *from, const char *to)
{
    static int (*real)(const char *, const char *);
    static int count;
    if (!real)
        real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int slow = env_int("HVQ_FAULT_SLOW_RENAME");
    if (slow > 0)
        usleep((useconds_t)slow * 1000);
    int at = env_int("HVQ_FAULT_RENAME");
    if (at > 0 && ++count == at) {
        errno = EBUSY;
        return -1;
    }
    return real(from, to);
}

/* After mapping fd: the shrink and the signal. */
static void after_map(int fd)
{
    static int shrunk, raised;
    struct stat a, b;
    const char *path = getenv("HVQ_FAULT_SHRINK");
    if (fd < 0 || fstat(fd, &a) != 0 || !S_ISREG(a.st_mode))
        return;
    if (path && !shrunk && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
        shrunk = 1;
        if (truncate(path, a.st_size / 2) != 0)
            abort();
    }
    int sig = env_int("HVQ_FAULT_SIGNAL");
    if (sig > 0 && !raised) {
        raised = 1;
        raise(sig);
    }
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    static void *(*real)(void *, size_t, int, int, int, off_t);
    if (!real)
        real = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
    void *p = real(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED)
        after_map(fd);
    return p;
}

static int no_tmpfile(int flags)
{
#ifdef O_TMPFILE
    if ((flags & O_TMPFILE) == O_TMPFILE && env_int("HVQ_FAULT_NO_TMPFILE")) {
        errno = EOPNOTSUPP;
        return 1;
    }
#endif
    return 0;
}

#define OPEN_WRAPPER(fn)                                                            \
    int fn(const char *path, int flags, ...)                                        \
    {                                                                               \
        static int (*real)(const char *, int, ...);                                 \
        if (!real)                                                                  \
            real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #fn);          \
        mode_t mode = 0;                                                            \
        if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {               \
            va_list ap;                                                             \
            va_start(ap, flags);                                                    \
            mode = (mode_t)va_arg(ap, int);                                         \
            va_end(ap);                                                             \
        }                                                                           \
        return no_tmpfile(flags) ? -1 : real(path, flags, mode);                    \
    }

OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define PWRITE_WRAPPER(fn)                                                          \
    ssize_t fn(int fd, const void *buf, size_t n, off_t off)                        \
    {                                                                               \
        static ssize_t (*real)(int, const void *, size_t, off_t);                   \
        static int raised;                                                          \
        if (!real)                                                                  \
            real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, #fn); \
        int sig = env_int("HVQ_FAULT_WRITE_SIGNAL");                                \
        if (sig > 0 && !raised) {                                                   \
            raised = 1;                                                             \
            raise(sig);                                                             \
        }                                                                           \
        return real(fd, buf, n, off);                                               \
    }

PWRITE_WRAPPER(pwrite)
PWRITE_WRAPPER(pwrite64)
