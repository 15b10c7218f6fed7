/* npz source and sink (numpy's savez / savez_compressed), and single .npy
 * files as a source.
 *
 * Format: a zip archive whose members are NAME.npy files, one array each
 * (see npy.h for the NPY format); numpy names the array NAME. Members are
 * stored (savez) or deflated (savez_compressed); numpy writes ZIP64 records.
 * npz has no metadata.
 *
 * Source: the archive is read with libarchive's seekable zip reader (the
 * central directory, so ZIP64 and data descriptors work). Opening walks the
 * members and parses every NPY header (reading only the first bytes of each
 * member), after checking what every member claims against what the
 * archive holds (zipdir.h: a stored member no larger than its stored
 * bytes, a deflated one no larger than 1032 times them), so that no claim
 * is allocated that the file cannot back. source_read decompresses one
 * member into a buffer owned by the source, reading forward through the
 * archive and starting over when asked for an earlier member. Big-endian data is byte-swapped and Fortran-order
 * data transposed to C order; a tensor's dtype_name is the numpy descr of
 * the data as delivered ('<f4', '|b1', ...). A lone .npy file is a model
 * with one tensor named after the file's stem.
 *
 * Sink: a zip written with libarchive's writer through the host's atomic
 * output; each tensor becomes NAME.npy with the header numpy writes (data
 * aligned to 64 bytes in the member). Members are stored unless the sink's
 * parameter compress is true. libarchive switches a member to ZIP64 when it
 * is larger than 4 GiB (the size is declared before the data), and the
 * archive when its central directory lies beyond 4 GiB.
 */
#include "config.h" /* _GNU_SOURCE, through AC_USE_SYSTEM_EXTENSIONS */

#include "plugin.h"
#include "checked.h"
#include "npy.h"
#include "file.h"
#include "zipdir.h"

#include <archive.h>
#include <archive_entry.h>

#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>


#define NPZ_EXT ".npz"
#define NPY_EXT ".npy"
/* The longest member name a zip header holds (a 16-bit length). */
#define NPZ_MAX_MEMBER 65535u
#define NPZ_MSG 2048
#define NPZ_BLOCK 65536
#define NPZ_CHUNK ((size_t)1 << 30) /* libarchive's zip writer takes 32-bit
                                       lengths for the CRC and zlib */
/* Member times: 1980-01-02 00:00 UTC, so the DOS date is 1980-01-01 or
 * 1980-01-02 in every time zone (numpy writes 1980-01-01 00:00). */
#define NPZ_MTIME ((time_t)315619200)

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

/* Sets the ctx error "PATH: MESSAGE" (or "PATH: member 'M': MESSAGE") and
 * returns st. */
static hvq_status npz_fail(hvq_ctx *ctx, hvq_status st, const char *path,
                           const char *member, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

static hvq_status npz_fail(hvq_ctx *ctx, hvq_status st, const char *path,
                           const char *member, const char *fmt, ...)
{
    char msg[NPZ_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (member != NULL)
        return ctx->host->error(ctx, st, "%s: member '%.300s': %s", path,
                                member, msg);
    return ctx->host->error(ctx, st, "%s: %s", path, msg);
}

/* The status for a libarchive failure: out of memory and I/O errors are
 * what they are, everything else is a damaged file. */
static hvq_status npz_arc_status(struct archive *a)
{
    int e = archive_errno(a);
    if (e == ENOMEM)
        return HVQ_E_NOMEM;
    if (e == EIO)
        return HVQ_E_IO;
    return HVQ_E_INPUT;
}

static const char *npz_arc_msg(struct archive *a)
{
    const char *m = archive_error_string(a);
    return m != NULL ? m : "unknown libarchive error";
}

/* libarchive converts member names to the locale's character set, and the
 * host never calls setlocale: in the "C" locale a UTF-8 name (numpy writes
 * non-ASCII names in UTF-8) would be lost. Every libarchive call of the
 * source therefore runs in a thread-local UTF-8 locale when one exists. */
typedef struct npz_locale {
    locale_t utf8;
    locale_t saved;
} npz_locale;

static void npz_locale_init(npz_locale *l)
{
    l->utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    if (l->utf8 == (locale_t)0)
        l->utf8 = newlocale(LC_CTYPE_MASK, "C.utf8", (locale_t)0);
    if (l->utf8 == (locale_t)0)
        l->utf8 = newlocale(LC_CTYPE_MASK, "en_US.UTF-8", (locale_t)0);
    l->saved = (locale_t)0;
}

static void npz_locale_enter(npz_locale *l)
{
    if (l->utf8 != (locale_t)0)
        l->saved = uselocale(l->utf8);
}

static void npz_locale_leave(npz_locale *l)
{
    if (l->utf8 != (locale_t)0 && l->saved != (locale_t)0)
        uselocale(l->saved);
    l->saved = (locale_t)0;
}

static void npz_locale_free(npz_locale *l)
{
    if (l->utf8 != (locale_t)0)
        freelocale(l->utf8);
    l->utf8 = (locale_t)0;
}

/* ------------------------------------------------------------------------
 * probe
 * ---------------------------------------------------------------------- */
static int npz_probe(const char *path, const unsigned char *head,
                     size_t head_len)
{
    struct stat sb; /* the host gives the head (at most 4096 bytes) */
    if (path == NULL)
        return 0;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return 0;
    if (head != NULL && head_len >= NPY_MAGIC_LEN &&
        memcmp(head, NPY_MAGIC, NPY_MAGIC_LEN) == 0)
        return 90;
    if (head != NULL && head_len >= 4 &&
        (memcmp(head, "PK\003\004", 4) == 0 ||
         memcmp(head, "PK\005\006", 4) == 0))
        return hvq_ends_with(path, NPZ_EXT) ? 60 : 40;
    /* Only the name says npz or npy: a low score, so that a damaged file
     * still reaches source_open and gets a precise error. */
    return hvq_ends_with(path, NPZ_EXT) || hvq_ends_with(path, NPY_EXT) ? 10
                                                                        : 0;
}

/* ------------------------------------------------------------------------
 * Source
 * ---------------------------------------------------------------------- */
typedef struct npz_tensor {
    hvq_tensor_info info;        /* name: host alloc */
    char *member;                /* the zip member's name (NULL: lone .npy) */
    uint64_t prefix;             /* bytes before the data */
    uint64_t size;               /* member size: prefix + info.nbytes */
    unsigned itemsize;
    int swap, fortran;
} npz_tensor;

typedef struct npz_source {
    const hvq_host *host;
    char *path;                  /* as opened (host alloc) */
    int fd;
    uint64_t file_size;
    int lone;                    /* a single .npy file */
    npz_locale loc;
    struct archive *a;           /* open reader, or NULL */
    size_t next;                 /* members whose header a has returned */
    npz_tensor *t;
    size_t n, cap;
    unsigned char *buf, *tmp;    /* the data returned by source_read, and
                                    room to transpose */
    size_t buf_cap, tmp_cap;
} npz_source;

static void npz_source_free(npz_source *s)
{
    size_t i;
    const hvq_host *h;
    if (s == NULL)
        return;
    h = s->host;
    if (s->a != NULL)
        archive_read_free(s->a);
    if (s->fd >= 0)
        close(s->fd);
    npz_locale_free(&s->loc);
    for (i = 0; i < s->n; i++) {
        h->free((char *)s->t[i].info.name);
        h->free(s->t[i].member);
    }
    h->free(s->t);
    h->free(s->buf);
    h->free(s->tmp);
    h->free(s->path);
    h->free(s);
}

static hvq_status npz_reserve(hvq_ctx *ctx, unsigned char **p, size_t *cap,
                              uint64_t n)
{
    void *q;
    if (n <= *cap && *p != NULL)
        return HVQ_OK;
    if (n > SIZE_MAX)
        return HVQ_E_NOMEM;
    q = ctx->host->realloc(ctx, *p, n ? (size_t)n : 1);
    if (q == NULL)
        return HVQ_E_NOMEM;
    *p = q;
    *cap = n ? (size_t)n : 1;
    return HVQ_OK;
}

/* A new tensor slot (zeroed), or NULL when out of memory. */
static npz_tensor *npz_add(hvq_ctx *ctx, npz_source *s)
{
    npz_tensor *t;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        t = s->host->realloc(ctx, s->t, cap * sizeof *t);
        if (t == NULL)
            return NULL;
        s->t = t;
        s->cap = cap;
    }
    t = &s->t[s->n++];
    memset(t, 0, sizeof *t);
    return t;
}

/* Reads up to n bytes of the current member's data; *got is what came
 * (fewer only at the member's end). */
static hvq_status npz_arc_read(hvq_ctx *ctx, npz_source *s,
                               const char *member, void *buf, size_t n,
                               size_t *got)
{
    unsigned char *p = buf;
    *got = 0;
    while (*got < n) {
        la_ssize_t r = archive_read_data(s->a, p + *got, n - *got);
        if (r < 0)
            return npz_fail(ctx, npz_arc_status(s->a), s->path, member,
                            "cannot read: %s", npz_arc_msg(s->a));
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return HVQ_OK;
}

/* Everything about one array from its NPY prefix and header: reads them
 * (from the current member of s->a, or with pread for a lone file), checks
 * them against size (the member's or file's size) and fills t. member is
 * NULL for a lone file. */
/* The next n bytes of the array: from the archive member (read in
 * sequence), or at offset in the lone file. *got < n: truncated; an error
 * status only for a failed read. */
static hvq_status npz_read_more(hvq_ctx *ctx, npz_source *s, const char *member,
                                void *buf, size_t n, uint64_t offset, size_t *got)
{
    if (member != NULL)
        return npz_arc_read(ctx, s, member, buf, n, got);
    int e = npz_pread_all(s->fd, buf, n, offset);
    if (e > 0)
        return npz_fail(ctx, HVQ_E_IO, s->path, NULL, "read failed: %s", strerror(e));
    *got = e == 0 ? n : 0;
    return HVQ_OK;
}

/* The NPY prefix (magic, version, header length) of an array of size
 * bytes: into h, with the header length to read in *hlen; pre holds the
 * *got bytes read, *need of them the prefix itself. */
static hvq_status npz_read_prefix(hvq_ctx *ctx, npz_source *s, const char *member,
                                  uint64_t size, unsigned char *pre, size_t *got,
                                  size_t *need, size_t *hlen, npy_header *h)
{
    size_t want = size < NPY_PREFIX_MAX ? (size_t)size : NPY_PREFIX_MAX;
    const char *what = member != NULL ? "member" : "file";
    char why[512];
    if (size == 0)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, member,
                        "the %s is empty, not an NPY array", what);
    hvq_status st = npz_read_more(ctx, s, member, pre, want, 0, got);
    if (st != HVQ_OK)
        return st;
    if (*got < want)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, member,
                        "truncated: %zu of its %llu bytes could be read", *got,
                        (unsigned long long)size);
    if (*got < 10 && *got >= NPY_MAGIC_LEN && memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) == 0)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, member,
                        "the %s is %llu bytes, too short for an NPY header",
                        what, (unsigned long long)size);
    if (npy_read_prefix(pre, *got, h, need, why, sizeof why) != 0)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, member, "%s", why);
    if (h->prefix_len - *need > NPY_MAX_HEADER)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, member,
                        "NPY header length %llu exceeds the limit of %u bytes",
                        (unsigned long long)(h->prefix_len - *need), NPY_MAX_HEADER);
    if (h->prefix_len > size)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, member,
                        "the NPY header (%llu bytes with its prefix) goes "
                        "beyond the end of the %s (%llu bytes; truncated?)",
                        (unsigned long long)h->prefix_len, what,
                        (unsigned long long)size);
    *hlen = (size_t)(h->prefix_len - *need);
    return HVQ_OK;
}

/* The NPY header text after the prefix (the first bytes of it already in
 * pre), parsed into h. */
static hvq_status npz_read_dict(hvq_ctx *ctx, npz_source *s, const char *member,
                                const unsigned char *pre, size_t got, size_t need,
                                size_t hlen, npy_header *h)
{
    char why[512];
    char *text = ctx->host->alloc(ctx, hlen ? hlen : 1);
    if (text == NULL)
        return HVQ_E_NOMEM;
    size_t have = got - need, more = 0; /* header bytes read with the prefix */
    if (have > hlen)
        have = hlen;
    memcpy(text, pre + need, have);
    hvq_status st = npz_read_more(ctx, s, member, text + have, hlen - have, need + have, &more);
    if (st == HVQ_OK && more != hlen - have)
        st = npz_fail(ctx, HVQ_E_INPUT, s->path, member,
                      "truncated: the NPY header ends early");
    if (st == HVQ_OK && npy_parse_header(text, hlen, need, h, why, sizeof why) != 0)
        st = npz_fail(ctx, HVQ_E_INPUT, s->path, member, "%s", why);
    ctx->host->free(text);
    return st;
}

static hvq_status npz_read_header(hvq_ctx *ctx, npz_source *s,
                                  const char *member, uint64_t size,
                                  npz_tensor *t)
{
    unsigned char pre[NPY_PREFIX_MAX];
    size_t got = 0, need = 0, hlen = 0;
    char shape[300], desc[300];
    npy_header h;
    const char *what = member != NULL ? "member" : "file";

    memset(&h, 0, sizeof h);
    hvq_status st = npz_read_prefix(ctx, s, member, size, pre, &got, &need, &hlen, &h);
    if (st == HVQ_OK)
        st = npz_read_dict(ctx, s, member, pre, got, need, hlen, &h);
    if (st != HVQ_OK)
        return st;
    /* "<f4 (64, 64)", with the byte order the file has. */
    snprintf(desc, sizeof desc, "%s%s %s", h.swap ? ">" : "",
             h.swap ? h.type->descr + 1 : h.type->descr,
             npy_shape_text(shape, sizeof shape, h.ndim, h.shape));
    if (h.nbytes != size - h.prefix_len)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, member,
                        "size mismatch: %s needs %llu data bytes but the %s "
                        "holds %llu after its %llu-byte NPY header",
                        desc, (unsigned long long)h.nbytes, what,
                        (unsigned long long)(size - h.prefix_len),
                        (unsigned long long)h.prefix_len);
    if (h.nbytes > (uint64_t)SIZE_MAX)
        return npz_fail(ctx, HVQ_E_UNSUPPORTED, s->path, member,
                        "%s is too large for this system", desc);
    t->info.dtype = h.type->dtype;
    t->info.dtype_name = h.type->descr;
    t->info.ndim = h.ndim;
    memcpy(t->info.shape, h.shape, sizeof h.shape);
    t->info.nbytes = h.nbytes;
    t->prefix = h.prefix_len;
    t->size = size;
    t->itemsize = h.type->size;
    t->swap = h.swap;
    t->fortran = h.fortran;
    return HVQ_OK;
}

/* A lone .npy file: one tensor named after the file's stem. */
static hvq_status npz_open_npy(hvq_ctx *ctx, npz_source *s)
{
    const char *base = strrchr(s->path, '/');
    size_t len;
    char *name;
    npz_tensor *t;
    hvq_status st;

    base = base != NULL ? base + 1 : s->path;
    len = strlen(base);
    if (hvq_ends_with(base, NPY_EXT)) {
        len -= strlen(NPY_EXT);
    } else {
        const char *dot = strrchr(base, '.');
        if (dot != NULL && dot != base)
            len = (size_t)(dot - base);
    }
    if (len == 0)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                        "cannot name the array: the file name has no stem");
    t = npz_add(ctx, s);
    if (t == NULL)
        return HVQ_E_NOMEM;
    name = ctx->host->alloc(ctx, len + 1);
    if (name == NULL)
        return HVQ_E_NOMEM;
    memcpy(name, base, len);
    name[len] = '\0';
    t->info.name = name;
    s->lone = 1;
    st = npz_read_header(ctx, s, NULL, s->file_size, t);
    return st;
}

/* A fresh reader on the archive, before its first member. */
static hvq_status npz_arc_open(hvq_ctx *ctx, npz_source *s)
{
    unsigned char head[4] = {0};
    int r;
    if (s->a != NULL) {
        archive_read_free(s->a);
        s->a = NULL;
    }
    s->next = 0;
    if (lseek(s->fd, 0, SEEK_SET) < 0)
        return npz_fail(ctx, HVQ_E_IO, s->path, NULL, "cannot seek: %s",
                        strerror(errno));
    s->a = archive_read_new();
    if (s->a == NULL)
        return npz_fail(ctx, HVQ_E_NOMEM, s->path, NULL, "out of memory");
    if (archive_read_support_format_zip_seekable(s->a) != ARCHIVE_OK)
        return npz_fail(ctx, HVQ_E_INTERNAL, s->path, NULL,
                        "libarchive cannot read zip archives: %s",
                        npz_arc_msg(s->a));
    r = archive_read_open_fd(s->a, s->fd, NPZ_BLOCK);
    if (r == ARCHIVE_OK)
        return HVQ_OK;
    /* Say why in terms of the file. */
    if (npz_pread_all(s->fd, head, sizeof head, 0) != 0 ||
        (memcmp(head, "PK\003\004", 4) != 0 &&
         memcmp(head, "PK\005\006", 4) != 0)) {
        char show[32];
        size_t i, o = 0;
        size_t n = s->file_size < 4 ? (size_t)s->file_size : 4;
        for (i = 0; i < n; i++)
            o += (size_t)snprintf(show + o, sizeof show - o, "%s%02x",
                                  i ? " " : "", head[i]);
        show[o] = '\0';
        if (s->file_size == 0)
            return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                            "not a zip archive: the file is empty");
        return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                        "not a zip archive (it starts with the bytes %s, "
                        "not PK\\x03\\x04) nor an NPY file",
                        show);
    }
    return npz_fail(ctx, npz_arc_status(s->a) == HVQ_E_IO ? HVQ_E_IO
                                                           : HVQ_E_INPUT,
                    s->path, NULL,
                    "truncated or damaged zip archive: no end of central "
                    "directory record found (%s)",
                    npz_arc_msg(s->a));
}

/* The next member's header; *name is its name in UTF-8 (or as stored). */
static hvq_status npz_arc_next(hvq_ctx *ctx, npz_source *s,
                               struct archive_entry **e, const char **name,
                               int *eof)
{
    int r = archive_read_next_header(s->a, e);
    *eof = 0;
    *name = NULL;
    if (r == ARCHIVE_EOF) {
        *eof = 1;
        return HVQ_OK;
    }
    if (r < ARCHIVE_WARN) {
        if (s->next > 0 && s->next <= s->n && s->t[s->next - 1].member)
            return npz_fail(ctx, npz_arc_status(s->a), s->path, NULL,
                            "damaged zip archive after member '%.300s': %s",
                            s->t[s->next - 1].member, npz_arc_msg(s->a));
        return npz_fail(ctx, npz_arc_status(s->a), s->path, NULL,
                        "damaged zip archive: %s", npz_arc_msg(s->a));
    }
    *name = archive_entry_pathname_utf8(*e);
    if (*name == NULL)
        *name = archive_entry_pathname(*e);
    if (*name == NULL)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                        "member %zu: its name cannot be decoded: %s",
                        s->next + 1,
                        r == ARCHIVE_WARN ? npz_arc_msg(s->a)
                                          : "no name");
    s->next++;
    return HVQ_OK;
}

static int npz_tensor_name_cmp(const void *a, const void *b)
{
    const npz_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->info.name, (*y)->info.name);
}

/* An archive of nothing but an end of central directory record with no
 * entries (what numpy.savez writes for no arrays). libarchive 3.6 does not
 * recognize it, so it is checked here. */
static int npz_is_empty_zip(npz_source *s)
{
    unsigned char e[22];
    if (s->file_size < 22 || s->file_size > 22 + 65535)
        return 0;
    if (npz_pread_all(s->fd, e, sizeof e, 0) != 0 ||
        memcmp(e, "PK\005\006", 4) != 0)
        return 0;
    /* disk numbers 0, no entries, an empty central directory at 0, and the
     * comment running to the end of the file. */
    return e[4] == 0 && e[5] == 0 && e[6] == 0 && e[7] == 0 && e[8] == 0 &&
           e[9] == 0 && e[10] == 0 && e[11] == 0 && e[12] == 0 &&
           e[13] == 0 && e[14] == 0 && e[15] == 0 && e[16] == 0 &&
           e[17] == 0 && e[18] == 0 && e[19] == 0 &&
           22 + ((unsigned)e[20] | (unsigned)e[21] << 8) == s->file_size;
}

/* Why the array name a[0..len) cannot be a member name safely (NULL: it
 * can): a tool that extracts the archive must not be led out of its
 * directory, so no absolute name, no "." or ".." component, no empty
 * component, no backslash. "a/b" is allowed, as numpy's savez writes it. */
static const char *npz_name_problem(const char *a, size_t len)
{
    if (len > 0 && a[0] == '/')
        return "it starts with '/'";
    if (memchr(a, '\\', len))
        return "it holds a backslash";
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && a[i] != '/')
            continue;
        size_t n = i - start;
        if (n == 0)
            return "it has an empty path component";
        if ((n == 1 && a[start] == '.') || (n == 2 && a[start] == '.' && a[start + 1] == '.'))
            return "it has a '.' or '..' path component";
        start = i + 1;
    }
    return NULL;
}

/* What every member of the archive claims, against what the archive
 * holds (zipdir.h): checked before anything is allocated for a member, as
 * a claim of a terabyte in a file of 300 bytes would otherwise be. */
static hvq_status npz_check_claims(hvq_ctx *ctx, npz_source *s)
{
    npz_zip_dir d;
    npz_zip_member m, loc;
    char why[512], name[NPZ_MSG / 4] = "";
    size_t pos = 0;
    uint64_t k, data_at = 0;
    int claim = 0; /* the failure is a claim, not damage */
    int e = npz_zip_dir_read(s->fd, s->file_size, &d, why, sizeof why);

    for (k = 0; e == 0 && k < d.n; k++) {
        name[0] = '\0';
        e = npz_zip_dir_entry(&d, &pos, &m, why, sizeof why);
        if (e != 0)
            break;
        snprintf(name, sizeof name, "%.*s",
                 (int)(m.name_len < sizeof name ? m.name_len : sizeof name - 1),
                 (const char *)m.name);
        e = npz_zip_local_read(s->fd, &d, &m, &loc, &data_at, why, sizeof why);
        claim = e == 0;
        if (e == 0)
            e = npz_zip_member_check(&d, &m, data_at, "the central directory",
                                     why, sizeof why);
        if (e == 0)
            e = npz_zip_member_check(&d, &loc, data_at, "its local header",
                                     why, sizeof why);
    }
    npz_zip_dir_free(&d);
    if (e == -2)
        return npz_fail(ctx, HVQ_E_NOMEM, s->path, NULL, "out of memory");
    if (e > 0)
        return npz_fail(ctx, HVQ_E_IO, s->path, NULL, "read failed: %s",
                        strerror(e));
    if (e < 0)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, name[0] ? name : NULL,
                        "%s%s", claim ? "" : "damaged zip archive: ", why);
    return HVQ_OK;
}

static hvq_status npz_open_zip(hvq_ctx *ctx, npz_source *s)
{
    npz_tensor **sorted;
    hvq_status st;
    size_t i;

    if (npz_is_empty_zip(s))
        return HVQ_OK;
    st = npz_arc_open(ctx, s);
    if (st == HVQ_OK)
        st = npz_check_claims(ctx, s);
    if (st != HVQ_OK)
        return st;
    for (;;) {
        struct archive_entry *e;
        const char *name;
        npz_tensor *t;
        size_t len;
        int eof;
        st = npz_arc_next(ctx, s, &e, &name, &eof);
        if (st != HVQ_OK)
            return st;
        if (eof)
            break;
        len = strlen(name);
        if (archive_entry_filetype(e) == AE_IFDIR ||
            (len > 0 && name[len - 1] == '/'))
            return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                            "member '%.300s' is a directory; an npz archive "
                            "holds only NAME.npy arrays",
                            name);
        if (!hvq_ends_with(name, NPY_EXT))
            return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                            "member '%.300s' is not an .npy array (an npz "
                            "archive holds only NAME.npy members)",
                            name);
        if (len == strlen(NPY_EXT) || name[len - strlen(NPY_EXT) - 1] == '/')
            return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                            "member '%.300s' has an empty array name", name);
        const char *why = npz_name_problem(name, len - strlen(NPY_EXT));
        if (why)
            return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                            "member '%.300s' cannot be an array name: %s",
                            name, why);
        if (archive_entry_filetype(e) != AE_IFREG)
            return npz_fail(ctx, HVQ_E_INPUT, s->path, name,
                            "not a regular file (a link or a device)");
        if (archive_entry_is_encrypted(e))
            return npz_fail(ctx, HVQ_E_UNSUPPORTED, s->path, name,
                            "encrypted members are not supported");
        if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
            return npz_fail(ctx, HVQ_E_INPUT, s->path, name,
                            "the archive does not record its size");

        t = npz_add(ctx, s);
        if (t == NULL)
            return HVQ_E_NOMEM;
        t->member = ctx->host->strdup(ctx, name);
        if (t->member == NULL)
            return HVQ_E_NOMEM;
        t->info.name = ctx->host->alloc(ctx, len - strlen(NPY_EXT) + 1);
        if (t->info.name == NULL)
            return HVQ_E_NOMEM;
        memcpy((char *)t->info.name, name, len - strlen(NPY_EXT));
        ((char *)t->info.name)[len - strlen(NPY_EXT)] = '\0';
        st = npz_read_header(ctx, s, t->member,
                             (uint64_t)archive_entry_size(e), t);
        if (st != HVQ_OK)
            return st;
    }
    /* The reader is at the end; source_read starts over. */
    archive_read_free(s->a);
    s->a = NULL;
    s->next = 0;

    if (s->n < 2)
        return HVQ_OK;
    sorted = ctx->host->calloc(ctx, s->n, sizeof *sorted);
    if (sorted == NULL)
        return HVQ_E_NOMEM;
    for (i = 0; i < s->n; i++)
        sorted[i] = &s->t[i];
    qsort(sorted, s->n, sizeof *sorted, npz_tensor_name_cmp);
    st = HVQ_OK;
    for (i = 1; i < s->n && st == HVQ_OK; i++)
        if (strcmp(sorted[i]->info.name, sorted[i - 1]->info.name) == 0)
            st = npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                          "duplicate member name '%.300s' (the archive "
                          "holds it twice)",
                          sorted[i]->member);
    ctx->host->free(sorted);
    return st;
}

static hvq_status npz_source_open(hvq_ctx *ctx, const char *path,
                                  void **state)
{
    npz_source *s;
    struct stat sb;
    unsigned char head[NPY_MAGIC_LEN];
    hvq_status st;
    int e;

    *state = NULL;
    if (path == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "npz: no path given");
    s = ctx->host->calloc(ctx, 1, sizeof *s);
    if (s == NULL)
        return HVQ_E_NOMEM;
    s->host = ctx->host;
    s->fd = -1;
    npz_locale_init(&s->loc);
    s->path = ctx->host->strdup(ctx, path);
    if (s->path == NULL) {
        npz_source_free(s);
        return HVQ_E_NOMEM;
    }

    s->fd = hvq_open_input(ctx, path);
    if (s->fd < 0) {
        e = errno;
        st = npz_fail(ctx,
                      e == ENOENT || e == ENOTDIR ? HVQ_E_INPUT : HVQ_E_IO,
                      path, NULL, "cannot open: %s", strerror(e));
        goto out;
    }
    if (fstat(s->fd, &sb) != 0) {
        st = npz_fail(ctx, HVQ_E_IO, path, NULL, "cannot stat: %s",
                      strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = npz_fail(ctx, HVQ_E_INPUT, path, NULL, "not a regular file");
        goto out;
    }
    s->file_size = (uint64_t)sb.st_size;

    npz_locale_enter(&s->loc);
    if (s->file_size >= NPY_MAGIC_LEN &&
        npz_pread_all(s->fd, head, sizeof head, 0) == 0 &&
        memcmp(head, NPY_MAGIC, NPY_MAGIC_LEN) == 0)
        st = npz_open_npy(ctx, s);
    else
        st = npz_open_zip(ctx, s);
    npz_locale_leave(&s->loc);
out:
    if (st != HVQ_OK) {
        npz_source_free(s);
        return st;
    }
    ctx->host->log(ctx, HVQ_LOG_DEBUG, "%s: %zu arrays%s", path, s->n,
                   s->lone ? " (a single .npy file)" : "");
    *state = s;
    return HVQ_OK;
}

static size_t npz_source_count(void *state)
{
    const npz_source *s = state;
    return s != NULL ? s->n : 0;
}

static hvq_status npz_source_info(void *state, size_t i,
                                  hvq_tensor_info *info)
{
    const npz_source *s = state;
    if (s == NULL || info == NULL || i >= s->n)
        return HVQ_E_INTERNAL;
    *info = s->t[i].info;
    return HVQ_OK;
}

/* The data of member i into s->buf (the NPY prefix skipped). */
static hvq_status npz_read_member(hvq_ctx *ctx, npz_source *s, size_t i)
{
    const npz_tensor *x = &s->t[i];
    struct archive_entry *e;
    const char *name;
    uint64_t total = 0;
    hvq_status st;
    int eof;

    /* Forward to member i, starting over when it is behind us. */
    if (s->a == NULL || s->next > i) {
        st = npz_arc_open(ctx, s);
        if (st != HVQ_OK)
            return st;
    }
    while (s->next <= i) {
        size_t k = s->next;
        st = npz_arc_next(ctx, s, &e, &name, &eof);
        if (st != HVQ_OK)
            return st;
        if (eof || strcmp(name, s->t[k].member) != 0)
            return npz_fail(ctx, HVQ_E_INPUT, s->path, NULL,
                            "the archive changed since it was opened: "
                            "member %zu is %s'%.300s', expected '%.300s'",
                            k + 1, eof ? "missing, not " : "",
                            eof ? s->t[k].member : name, s->t[k].member);
    }
    for (;;) {
        const void *blk;
        size_t len;
        la_int64_t off;
        uint64_t lo, hi;
        int r = archive_read_data_block(s->a, &blk, &len, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) /* ARCHIVE_WARN too: a CRC mismatch */
            return npz_fail(ctx, npz_arc_status(s->a), s->path, x->member,
                            "cannot read: %s", npz_arc_msg(s->a));
        if (off < 0 || (uint64_t)off != total)
            return npz_fail(ctx, HVQ_E_INPUT, s->path, x->member,
                            "cannot read: data at offset %lld, expected "
                            "%llu",
                            (long long)off, (unsigned long long)total);
        if (len > x->size - total)
            return npz_fail(ctx, HVQ_E_INPUT, s->path, x->member,
                            "holds more than the %llu bytes the archive "
                            "records",
                            (unsigned long long)x->size);
        /* The part of [total, total + len) past the NPY header. */
        lo = total > x->prefix ? total : x->prefix;
        hi = total + len;
        if (hi > lo)
            memcpy(s->buf + (lo - x->prefix),
                   (const unsigned char *)blk + (lo - total),
                   (size_t)(hi - lo));
        total += len;
    }
    if (total != x->size)
        return npz_fail(ctx, HVQ_E_INPUT, s->path, x->member,
                        "truncated: %llu of its %llu bytes could be read",
                        (unsigned long long)total,
                        (unsigned long long)x->size);
    return HVQ_OK;
}

static hvq_status npz_source_read(hvq_ctx *ctx, void *state, size_t i,
                                  hvq_tensor *t)
{
    npz_source *s = state;
    npz_tensor *x;
    hvq_status st;
    unsigned char *data;

    if (s == NULL || t == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "npz: source_read without a source");
    if (i >= s->n)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "%s: tensor index %zu out of range (%zu "
                                "tensors)",
                                s->path, i, s->n);
    x = &s->t[i];
    st = npz_reserve(ctx, &s->buf, &s->buf_cap, x->info.nbytes);
    if (st != HVQ_OK)
        return st;
    if (s->lone) {
        int e = npz_pread_all(s->fd, s->buf, (size_t)x->info.nbytes,
                              x->prefix);
        if (e != 0)
            return npz_fail(ctx, e > 0 ? HVQ_E_IO : HVQ_E_INPUT, s->path,
                            NULL, "cannot read the data: %s",
                            e > 0 ? strerror(e)
                                  : "the file is shorter than when it was "
                                    "opened");
    } else {
        npz_locale_enter(&s->loc);
        st = npz_read_member(ctx, s, i);
        npz_locale_leave(&s->loc);
        if (st != HVQ_OK) {
            /* Start over on the next read. */
            if (s->a != NULL) {
                archive_read_free(s->a);
                s->a = NULL;
            }
            return st;
        }
    }
    data = s->buf;
    if (x->swap)
        npy_swap(data, hvq_numel(&x->info), x->itemsize);
    if (x->fortran && x->info.ndim > 1 && x->info.nbytes > 0) {
        st = npz_reserve(ctx, &s->tmp, &s->tmp_cap, x->info.nbytes);
        if (st != HVQ_OK)
            return st;
        npy_fortran_to_c(s->tmp, s->buf, x->info.ndim, x->info.shape,
                         x->itemsize);
        data = s->tmp;
    }
    t->info = x->info;
    t->data = data;
    return HVQ_OK;
}

static void npz_source_meta(void *state, const hvq_meta **meta, size_t *n)
{
    (void)state;
    if (meta != NULL)
        *meta = NULL;
    if (n != NULL)
        *n = 0;
}

static void npz_source_close(hvq_ctx *ctx, void *state)
{
    (void)ctx;
    npz_source_free(state);
}

/* ------------------------------------------------------------------------
 * Sink
 * ---------------------------------------------------------------------- */
enum { NPZ_P_COMPRESS };

static const hvq_param_spec npz_params[] = {
    {"compress", HVQ_PARAM_BOOL, "false", 0, 0, NULL,
     "deflate every member, like numpy.savez_compressed (default: stored, "
     "like numpy.savez)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct npz_sink {
    const hvq_host *host;
    hvq_ctx *ctx;                /* the ctx of the call in progress */
    char *path;
    hvq_output *out;
    struct archive *a;
    const npy_type **types;      /* per declared tensor, in write order (the
                                    host checks each write against the
                                    declaration, so t->info is the rest) */
    size_t next;
    int failed, finished, abandoned;
    hvq_status io_status;        /* why the write callback failed */
} npz_sink;

static void npz_sink_free(npz_sink *k)
{
    if (k == NULL)
        return;
    if (k->a != NULL) {
        /* Without a finish the archive is abandoned: libarchive still
         * closes it (archive_write_fail would leak its buffers), but the
         * write callback refuses everything from now on. */
        k->abandoned = !k->finished;
        archive_write_free(k->a);
    }
    k->host->free((void *)k->types);
    k->host->free(k->path);
    k->host->free(k);
}

static la_ssize_t npz_write_cb(struct archive *a, void *client,
                               const void *buf, size_t n)
{
    npz_sink *k = client;
    hvq_status st;
    if (k->io_status != HVQ_OK || k->finished || k->abandoned) {
        archive_set_error(a, EIO, "the output is closed");
        return -1;
    }
    st = k->host->output_write(k->ctx, k->out, buf, n);
    if (st != HVQ_OK) {
        k->io_status = st; /* the host has set the message */
        archive_set_error(a, EIO, "write failed");
        return -1;
    }
    return (la_ssize_t)n;
}

/* After a failed libarchive write call: the host's status and message when
 * the output failed, else libarchive's. */
static hvq_status npz_write_failed(hvq_ctx *ctx, npz_sink *k,
                                   const char *what)
{
    k->failed = 1;
    if (k->io_status != HVQ_OK)
        return k->io_status;
    return npz_fail(ctx, HVQ_E_IO, k->path, NULL, "cannot write %s: %s",
                    what, npz_arc_msg(k->a));
}

/* What npz itself limits in the declared tensors (the host checked the
 * rest: names present, UTF-8 and unique, shapes, typed byte sizes): names
 * that make zip member names, and dtypes numpy stores. */
static hvq_status npz_check_decl(hvq_ctx *ctx, const char *path,
                                 const hvq_tensor_info *tensors, size_t n,
                                 const npy_type **types)
{
    size_t i;

    for (i = 0; i < n; i++) {
        const hvq_tensor_info *t = &tensors[i];
        const npy_type *type;
        uint64_t numel = 1;
        char shape[256];
        if (strlen(t->name) > NPZ_MAX_MEMBER - strlen(NPY_EXT))
            return npz_fail(ctx, HVQ_E_INPUT, path, NULL,
                            "tensor '%.60s...': a name of %zu bytes does not "
                            "fit a zip member name (%u bytes with '.npy')",
                            t->name, strlen(t->name), NPZ_MAX_MEMBER);
        const char *why = npz_name_problem(t->name, strlen(t->name));
        if (why)
            return npz_fail(ctx, HVQ_E_INPUT, path, NULL,
                            "tensor '%.200s' cannot be a zip member name: %s",
                            t->name, why);
        if (t->dtype == HVQ_DTYPE_BF16)
            return npz_fail(ctx, HVQ_E_UNSUPPORTED, path, NULL,
                            "tensor '%.200s' is BF16, which npz cannot "
                            "store: numpy has no bfloat16; use --dtype f16 "
                            "or f32",
                            t->name);
        type = npy_type_of(t->dtype);
        if (type == NULL)
            return npz_fail(ctx, HVQ_E_UNSUPPORTED, path, NULL,
                            "tensor '%.200s': dtype '%.60s' cannot be "
                            "stored in npz",
                            t->name,
                            t->dtype_name ? t->dtype_name : "(none)");
        npy_shape_text(shape, sizeof shape, t->ndim, t->shape);
        numel = hvq_numel(t); /* the host checked the shape rule */
        if (numel > (UINT64_MAX - (1u << 20)) / type->size)
            return npz_fail(ctx, HVQ_E_INPUT, path, NULL,
                            "tensor '%.200s': the byte size of %s %s does "
                            "not fit in 64 bits",
                            t->name, type->descr, shape);
        if (numel * type->size != t->nbytes)
            return npz_fail(ctx, HVQ_E_INPUT, path, NULL,
                            "tensor '%.200s': declared as %llu bytes but %s "
                            "%s needs %llu",
                            t->name, (unsigned long long)t->nbytes,
                            type->descr, shape,
                            (unsigned long long)(numel * type->size));
        types[i] = type;
    }
    return HVQ_OK;
}

static hvq_status npz_sink_open(hvq_ctx *ctx, const char *path, int compress,
                                const hvq_meta *meta, size_t n_meta,
                                const hvq_tensor_info *tensors, size_t n,
                                void **state)
{
    const hvq_host *h = ctx->host;
    npz_sink *k = NULL;
    const npy_type **types = NULL;
    hvq_status st;

    *state = NULL;
    if (path == NULL)
        return h->error(ctx, HVQ_E_INTERNAL, "npz: no output path");
    types = h->calloc(ctx, n ? n : 1, sizeof *types);
    if (types == NULL)
        return HVQ_E_NOMEM;
    st = npz_check_decl(ctx, path, tensors, n, types);
    if (st != HVQ_OK)
        goto fail;
    if (n_meta > 0 && meta != NULL)
        h->log(ctx, HVQ_LOG_WARN,
               "%s: npz files have no metadata; not writing %zu metadata "
               "entr%s ('%.100s'%s)",
               path, n_meta, n_meta == 1 ? "y" : "ies",
               meta[0].key ? meta[0].key : "", n_meta > 1 ? ", ..." : "");

    k = h->calloc(ctx, 1, sizeof *k);
    if (k == NULL) {
        st = HVQ_E_NOMEM;
        goto fail;
    }
    k->host = h;
    k->ctx = ctx;
    k->path = h->strdup(ctx, path);
    if (k->path == NULL) {
        st = HVQ_E_NOMEM;
        goto fail;
    }
    k->types = types; /* the sink's from here on */
    types = NULL;

    k->out = h->output_open(ctx, path);
    if (k->out == NULL) {
        st = h->status(ctx); /* the host has set the message and status */
        if (st == HVQ_OK)
            st = HVQ_E_IO;
        goto fail;
    }
    k->a = archive_write_new();
    if (k->a == NULL) {
        st = npz_fail(ctx, HVQ_E_NOMEM, path, NULL, "out of memory");
        goto fail;
    }
    if (archive_write_set_format_zip(k->a) != ARCHIVE_OK ||
        (compress ? archive_write_zip_set_compression_deflate(k->a)
                  : archive_write_zip_set_compression_store(k->a)) !=
            ARCHIVE_OK ||
        archive_write_set_options(k->a, "zip:hdrcharset=UTF-8") !=
            ARCHIVE_OK ||
        /* Unpadded: the archive ends with its last record. */
        archive_write_set_bytes_per_block(k->a, NPZ_BLOCK) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(k->a, 1) != ARCHIVE_OK) {
        st = npz_fail(ctx, HVQ_E_INTERNAL, path, NULL,
                      "cannot set up libarchive's zip writer: %s",
                      npz_arc_msg(k->a));
        goto fail;
    }
#if ARCHIVE_VERSION_NUMBER >= 3006000
    if (archive_write_open2(k->a, k, NULL, npz_write_cb, NULL, NULL) !=
        ARCHIVE_OK) {
#else
    if (archive_write_open(k->a, k, NULL, npz_write_cb, NULL) != ARCHIVE_OK) {
#endif
        st = npz_write_failed(ctx, k, "the archive");
        goto fail;
    }
    *state = k;
    return HVQ_OK;
fail:
    h->free((void *)types);
    npz_sink_free(k);
    return st;
}

static hvq_status npz_sink_create(hvq_ctx *ctx, const char *path,
                                  const hvq_meta *meta, size_t n_meta,
                                  const hvq_tensor_info *tensors, size_t n,
                                  void **state)
{
    return npz_sink_open(ctx, path, 0, meta, n_meta, tensors, n, state);
}

static hvq_status npz_sink_create_params(hvq_ctx *ctx, const char *path,
                                         const hvq_params *params,
                                         const hvq_meta *meta, size_t n_meta,
                                         const hvq_tensor_info *tensors,
                                         size_t n, void **state)
{
    int compress = 0;
    if (params != NULL && params->count > NPZ_P_COMPRESS &&
        params->values != NULL)
        compress = params->values[NPZ_P_COMPRESS].i != 0;
    return npz_sink_open(ctx, path, compress, meta, n_meta, tensors, n,
                         state);
}

static hvq_status npz_sink_write(hvq_ctx *ctx, void *state,
                                 const hvq_tensor *t)
{
    npz_sink *k = state;
    struct archive_entry *e;
    unsigned char *header = NULL;
    size_t hlen;
    char *member;
    const unsigned char *p;
    uint64_t left;
    la_ssize_t w;
    int r;

    if (k == NULL || t == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "npz: sink_write without a sink or tensor");
    k->ctx = ctx;
    /* The host checked the order, the sizes and the data. */
    hlen = npy_build_header(k->types[k->next], t->info.ndim, t->info.shape, &header);
    member = ctx->host->alloc(ctx, strlen(t->info.name) + sizeof NPY_EXT);
    e = archive_entry_new();
    if (hlen == 0 || member == NULL || e == NULL) {
        free(header);
        ctx->host->free(member);
        if (e != NULL)
            archive_entry_free(e);
        return npz_fail(ctx, HVQ_E_NOMEM, k->path, NULL, "out of memory");
    }
    strcpy(member, t->info.name);
    strcat(member, NPY_EXT);
    archive_entry_set_pathname_utf8(e, member);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, NPZ_MTIME, 0);
    archive_entry_set_size(e, (la_int64_t)(hlen + t->info.nbytes));
    ctx->host->free(member);
    r = archive_write_header(k->a, e);
    archive_entry_free(e);
    if (r != ARCHIVE_OK) {
        free(header);
        return npz_write_failed(ctx, k, "a member header");
    }
    w = archive_write_data(k->a, header, hlen);
    free(header);
    if (w < 0 || (size_t)w != hlen)
        return npz_write_failed(ctx, k, "an NPY header");
    p = t->data;
    left = t->info.nbytes;
    while (left > 0) {
        size_t chunk = left > NPZ_CHUNK ? NPZ_CHUNK : (size_t)left;
        w = archive_write_data(k->a, p, chunk);
        if (w < 0 || (size_t)w != chunk)
            return npz_write_failed(ctx, k, "tensor data");
        p += chunk;
        left -= chunk;
    }
    if (archive_write_finish_entry(k->a) != ARCHIVE_OK)
        return npz_write_failed(ctx, k, "a member");
    k->next++;
    return HVQ_OK;
}

static hvq_status npz_sink_finish(hvq_ctx *ctx, void *state)
{
    npz_sink *k = state;
    if (k == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "npz: sink_finish without a sink");
    k->ctx = ctx;
    if (archive_write_close(k->a) != ARCHIVE_OK)
        return npz_write_failed(ctx, k, "the central directory");
    k->finished = 1;
    return HVQ_OK;
}

static void npz_sink_close(hvq_ctx *ctx, void *state)
{
    npz_sink *k = state;
    if (k != NULL)
        k->ctx = ctx;
    npz_sink_free(k);
}

/* ------------------------------------------------------------------------
 * Descriptor
 * ---------------------------------------------------------------------- */
static const hvq_plugin npz_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_SOURCE | HVQ_KIND_SINK,
    .flags = 0,
    .name = "npz",
    .version = "1.0.0",
    .summary = "numpy .npz archives (savez, savez_compressed) and single "
               ".npy arrays",
    .license = "MIT",
    .params = npz_params,
    .probe = npz_probe,
    .source_open = npz_source_open,
    .source_count = npz_source_count,
    .source_info = npz_source_info,
    .source_read = npz_source_read,
    .source_meta = npz_source_meta,
    .source_close = npz_source_close,
    .sink_create = npz_sink_create,
    .sink_write = npz_sink_write,
    .sink_finish = npz_sink_finish,
    .sink_close = npz_sink_close,
    .extensions = NPZ_EXT,
    .sink_create_params = npz_sink_create_params,
};

HVQ_REGISTER_PLUGIN(npz_plugin)
