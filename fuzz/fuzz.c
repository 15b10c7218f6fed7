/* Shared code of the fuzz targets; see fuzz.h. */
#include "config.h"

#include "fuzz.h"

#include "dtype.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static hvq_ctx *g_ctx;
static hvq_registry *g_reg;
static char g_dir[PATH_MAX / 2];
static char g_path[PATH_MAX];
static int g_verbose; /* HVQ_FUZZ_VERBOSE: print why each input was refused */

void hvq_fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hvq-fuzz: contract violation: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    abort();
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hvq-fuzz: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(3);
}

static void remove_scratch(void)
{
    DIR *d = opendir(g_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(g_dir);
}

static const char *builddir(void)
{
    const char *s = getenv("HVQ_TOP_BUILDDIR");
    return s && *s ? s : HVQ_BUILDDIR;
}

void hvq_fuzz_init(const char *const *plugins)
{
    if (g_ctx)
        return;
    hvq_ctx_opts o = {.quiet = 1, .threads = 1};
    if (!(g_ctx = hvq_ctx_new(&o)) || !(g_reg = hvq_registry_new()))
        fatal("out of memory");
    hvq_ctx_set_registry(g_ctx, g_reg);
    g_verbose = getenv("HVQ_FUZZ_VERBOSE") != NULL;
    if (plugins) {
        for (size_t i = 0; plugins[i]; i++) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", builddir(), plugins[i]);
            if (hvq_registry_load_file(g_reg, g_ctx, p) != HVQ_OK)
                fatal("%s (build the plugins first; HVQ_TOP_BUILDDIR names the build tree)",
                      hvq_ctx_error(g_ctx));
        }
    } else {
        static const char *const sub[] = {"formats/.libs", "plugins/.libs"};
        for (int i = 0; i < 2; i++) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", builddir(), sub[i]);
            if (hvq_registry_load_dir(g_reg, g_ctx, p) != HVQ_OK)
                fatal("%s", hvq_ctx_error(g_ctx));
        }
        if (hvq_registry_count(g_reg) == 0)
            fatal("no plugin in the build tree %s", builddir());
    }
    /* A private scratch directory, in memory when /dev/shm is there. */
    const char *base = "/dev/shm";
    struct stat sb;
    if (stat(base, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(base, W_OK) != 0) {
        base = getenv("TMPDIR");
        if (!base || !*base)
            base = "/tmp";
    }
    snprintf(g_dir, sizeof g_dir, "%s/hvqfuzz-XXXXXX", base);
    if (!mkdtemp(g_dir))
        fatal("mkdtemp %s: %s", g_dir, strerror(errno));
    atexit(remove_scratch);
    hvq_fuzz_end(); /* each input gets its own context (hvq_fuzz_begin) */
}

hvq_ctx *hvq_fuzz_ctx(void) { return g_ctx; }

/* A context per input, as each run of hvqconv has its own (a context
 * keeps what a run opened, e.g. the directories of its inputs). */
void hvq_fuzz_begin(void)
{
    if (g_ctx)
        hvq_ctx_free(g_ctx);
    hvq_ctx_opts o = {.quiet = 1, .threads = 1};
    if (!(g_ctx = hvq_ctx_new(&o)))
        fatal("out of memory");
    hvq_ctx_set_registry(g_ctx, g_reg);
}

void hvq_fuzz_end(void)
{
    hvq_ctx_free(g_ctx);
    g_ctx = NULL;
}
hvq_registry *hvq_fuzz_registry(void) { return g_reg; }

const char *hvq_fuzz_path(const char *name)
{
    snprintf(g_path, sizeof g_path, "%s/%s", g_dir, name);
    return g_path;
}

const char *hvq_fuzz_write(const char *name, const void *data, size_t n)
{
    const char *p = hvq_fuzz_path(name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fatal("cannot write %s: %s", p, strerror(errno));
    const unsigned char *b = data;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fatal("cannot write %s: %s", p, strerror(errno));
        b += w;
        n -= (size_t)w;
    }
    close(fd);
    return p;
}

void hvq_fuzz_unlink(const char *name) { unlink(hvq_fuzz_path(name)); }

size_t hvq_fuzz_split(const unsigned char *data, size_t size, size_t max,
                      const unsigned char **piece, size_t *len)
{
    const size_t m = sizeof HVQ_FUZZ_SEP - 1;
    size_t n = 0, at = 0;
    for (;;) {
        size_t i = at;
        while (i + m <= size && memcmp(data + i, HVQ_FUZZ_SEP, m) != 0)
            i++;
        int found = i + m <= size;
        piece[n] = data + at;
        len[n++] = (found ? i : size) - at;
        if (!found || n == max)
            return n;
        at = i + m;
    }
}

void hvq_fuzz_check_error(hvq_status st, const char *what)
{
    const char *msg = hvq_ctx_error(g_ctx);
    if (g_verbose)
        fprintf(stderr, "hvq-fuzz: refused (status %d): %s\n", (int)st, msg);
    if (st < HVQ_E_INPUT || st > HVQ_E_INTERNAL)
        hvq_fuzz_fail("failure with status %d (message \"%s\")", (int)st, msg);
    if (st == HVQ_E_INTERNAL)
        hvq_fuzz_fail("internal error on bad input: %s", msg);
    if (st != HVQ_E_NOMEM && !*msg)
        hvq_fuzz_fail("failure (status %d) without an error message", (int)st);
    if (st != HVQ_E_NOMEM && what && !strstr(msg, what))
        hvq_fuzz_fail("the error message does not name the file '%s': %s", what, msg);
    hvq_ctx_clear_error(g_ctx);
}

static volatile unsigned char g_sink;

void hvq_fuzz_check_tensor(const hvq_tensor_info *info, const void *data, int has_data)
{
    if (!info->name)
        hvq_fuzz_fail("a tensor without a name");
    size_t nl = strlen(info->name); /* a terminated string */
    if (info->ndim < 0 || info->ndim > HVQ_MAX_DIMS)
        hvq_fuzz_fail("tensor '%s': ndim %d", info->name, info->ndim);
    /* Every product of some of the dimensions must fit in 63 bits (the
     * host computes rows, columns and blocks from them in any order), so
     * the non-zero dimensions multiply to at most INT64_MAX, even when
     * another dimension is 0. */
    uint64_t nonzero = 1;
    int zero = 0;
    for (int d = 0; d < info->ndim; d++) {
        if (info->shape[d] < 0)
            hvq_fuzz_fail("tensor '%s': negative dimension %lld", info->name,
                          (long long)info->shape[d]);
        uint64_t x = (uint64_t)info->shape[d];
        if (x == 0) {
            zero = 1;
            continue;
        }
        if (nonzero > (uint64_t)INT64_MAX / x)
            hvq_fuzz_fail("tensor '%s': its non-zero dimensions multiply past 63 bits",
                          info->name);
        nonzero *= x;
    }
    uint64_t numel = zero ? 0 : nonzero;
    size_t es = hvq_dtype_size(info->dtype);
    if (es != 0) {
        if ((numel != 0 && es > UINT64_MAX / numel) || numel * es != info->nbytes)
            hvq_fuzz_fail("tensor '%s': %llu bytes for %llu elements of %s", info->name,
                          (unsigned long long)info->nbytes, (unsigned long long)numel,
                          hvq_dtype_name(info->dtype));
    } else if (info->dtype != HVQ_DTYPE_OPAQUE) {
        hvq_fuzz_fail("tensor '%s': unknown dtype %d", info->name, (int)info->dtype);
    }
    unsigned char acc = (unsigned char)nl;
    g_sink = acc;
    if (!has_data)
        return;
    if (info->nbytes > 0 && !data)
        hvq_fuzz_fail("tensor '%s': no data", info->name);
    const unsigned char *b = data;
    for (uint64_t i = 0; i < info->nbytes; i++)
        acc ^= b[i];
    g_sink = acc;
}

/* The tensor converted to float32, as the driver does for a compressed
 * tensor (the values are not checked: NaN is the driver's to refuse). */
static void convert_f32(const hvq_tensor *t)
{
    if (!hvq_dtype_is_float(t->info.dtype))
        return;
    size_t n = (size_t)(t->info.nbytes / hvq_dtype_size(t->info.dtype));
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f)
        hvq_fuzz_fail("out of memory for %zu floats", n);
    if (hvq_convert(g_ctx, HVQ_DTYPE_F32, f, t->info.dtype, t->data, n) != HVQ_OK)
        hvq_fuzz_fail("conversion of tensor '%s' failed: %s", t->info.name,
                      hvq_ctx_error(g_ctx));
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b[sizeof(float)];
        memcpy(b, &f[i], sizeof b);
        acc ^= b[0];
    }
    g_sink = acc;
    free(f);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

void hvq_fuzz_read_model(const char *source, const char *path)
{
    hvq_fuzz_begin();
    hvq_ctx *ctx = g_ctx;
    const hvq_loaded_plugin *pl = hvq_registry_find(g_reg, HVQ_KIND_SOURCE, source);
    if (!pl)
        fatal("no source plugin '%s' loaded", source);
    const hvq_plugin *d = &pl->desc;
    const char *what = base_name(path);
    hvq_ctx_clear_error(ctx);
    /* Detection as the host does it (first bytes, then probe); a file the
     * probe rejects is opened anyway: the open must refuse it cleanly. */
    const hvq_loaded_plugin *det = hvq_registry_detect(g_reg, ctx, path);
    if (!det)
        hvq_ctx_clear_error(ctx);
    void *state = NULL;
    hvq_status st = d->source_open(ctx, path, &state);
    if (st != HVQ_OK) {
        hvq_fuzz_check_error(st, what);
        d->source_close(ctx, state);
        hvq_fuzz_end();
        return;
    }
    size_t n = d->source_count(state);
    for (size_t i = 0; i < n; i++) {
        hvq_tensor_info info;
        if ((st = d->source_info(state, i, &info)) != HVQ_OK)
            hvq_fuzz_fail("%s: source_info(%zu) of %zu failed: %s", what, i, n,
                          hvq_ctx_error(ctx));
        hvq_fuzz_check_tensor(&info, NULL, 0);
    }
    if (d->source_meta) {
        const hvq_meta *meta = NULL;
        size_t nm = 0;
        d->source_meta(state, &meta, &nm);
        if (nm && !meta)
            hvq_fuzz_fail("%s: %zu metadata entries and no array", what, nm);
        size_t sum = 0;
        for (size_t i = 0; i < nm; i++) {
            if (!meta[i].key || !meta[i].value)
                hvq_fuzz_fail("%s: metadata entry %zu without a key or value", what, i);
            sum += strlen(meta[i].key) + strlen(meta[i].value);
        }
        g_sink = (unsigned char)sum;
    }
    for (size_t i = 0; i < n; i++) {
        hvq_tensor t;
        memset(&t, 0, sizeof t);
        st = d->source_read(ctx, state, i, &t);
        if (st != HVQ_OK) {
            hvq_fuzz_check_error(st, what);
            break;
        }
        hvq_fuzz_check_tensor(&t.info, t.data, 1);
        convert_f32(&t);
    }
    d->source_close(ctx, state);
    hvq_fuzz_end();
}
