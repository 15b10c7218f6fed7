/* The central directory of a zip archive and what its members claim; see
 * zipdir.h. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "zipdir.h"
#include "npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define ZD_EOCD_LEN 22u      /* end of central directory record */
#define ZD_MAX_COMMENT 65535u
#define ZD_LOC64_LEN 20u     /* ZIP64 end of central directory locator */
#define ZD_END64_LEN 56u     /* ZIP64 end of central directory record */
#define ZD_ENTRY_LEN 46u     /* central directory entry, fixed part */
#define ZD_LOCAL_LEN 30u     /* local file header, fixed part */
#define ZD_SAT16 0xFFFFu
#define ZD_SAT32 0xFFFFFFFFu
#define ZD_PREAD_CHUNK ((size_t)1 << 30)

static uint64_t zd_le(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;
    while (n-- > 0)
        v = v << 8 | p[n];
    return v;
}

int npz_pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > ZD_PREAD_CHUNK ? ZD_PREAD_CHUNK : n;
        ssize_t r = pread(fd, p, chunk, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno ? errno : EIO;
        if (r == 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* Reads n bytes at off, a file that ends first being damage. */
static int zd_read(int fd, void *buf, size_t n, uint64_t off, const char *what,
                   char *why, size_t len)
{
    int e = npz_pread_all(fd, buf, n, off);
    if (e < 0)
        return npy_fail(why, len, "%s at byte %llu is cut short by the end of "
                        "the file", what, (unsigned long long)off);
    return e;
}

/* The last end of central directory record: its offset and bytes. */
static int zd_find_end(int fd, uint64_t size, uint64_t *at,
                       unsigned char rec[ZD_EOCD_LEN], char *why, size_t len)
{
    size_t tail = size < ZD_EOCD_LEN + ZD_MAX_COMMENT
                      ? (size_t)size : ZD_EOCD_LEN + ZD_MAX_COMMENT;
    unsigned char *buf;
    size_t i;
    int e;

    if (size < ZD_EOCD_LEN)
        return npy_fail(why, len, "%llu bytes, too short for a zip archive",
                        (unsigned long long)size);
    buf = malloc(tail);
    if (buf == NULL)
        return -2;
    e = zd_read(fd, buf, tail, size - tail, "the end of the archive", why,
                len);
    for (i = tail - ZD_EOCD_LEN + 1; e == 0 && i-- > 0;)
        if (memcmp(buf + i, "PK\005\006", 4) == 0 &&
            i + ZD_EOCD_LEN + zd_le(buf + i + 20, 2) <= tail) {
            memcpy(rec, buf + i, ZD_EOCD_LEN);
            *at = size - tail + i;
            free(buf);
            return 0;
        }
    free(buf);
    return e != 0 ? e
                  : npy_fail(why, len, "no end of central directory record");
}

/* The 64-bit count, size and offset from the ZIP64 records before the
 * end record at eocd, when there is a locator (else they stay: 65535
 * entries may be just that); *end becomes where the ZIP64 record
 * starts. */
static int zd_read_zip64(int fd, uint64_t eocd, uint64_t *n, uint64_t *cd_size,
                         uint64_t *cd_off, uint64_t *end, char *why, size_t len)
{
    unsigned char loc[ZD_LOC64_LEN], rec[ZD_END64_LEN];
    uint64_t at;
    int e;
    if (eocd < ZD_LOC64_LEN)
        return 0;
    e = zd_read(fd, loc, sizeof loc, eocd - ZD_LOC64_LEN, "the ZIP64 locator",
                why, len);
    if (e != 0 || memcmp(loc, "PK\006\007", 4) != 0)
        return e;
    at = zd_le(loc + 8, 8);
    if (at > eocd - ZD_LOC64_LEN || eocd - ZD_LOC64_LEN - at < ZD_END64_LEN)
        return npy_fail(why, len, "the ZIP64 end of central directory record "
                        "at byte %llu is not before its locator",
                        (unsigned long long)at);
    e = zd_read(fd, rec, sizeof rec, at, "the ZIP64 end record", why, len);
    if (e != 0)
        return e;
    if (memcmp(rec, "PK\006\006", 4) != 0)
        return npy_fail(why, len, "no ZIP64 end of central directory record "
                        "at byte %llu", (unsigned long long)at);
    *n = zd_le(rec + 32, 8);
    *cd_size = zd_le(rec + 40, 8);
    *cd_off = zd_le(rec + 48, 8);
    *end = at;
    return 0;
}

int npz_zip_dir_read(int fd, uint64_t file_size, npz_zip_dir *d, char *why,
                     size_t why_len)
{
    unsigned char rec[ZD_EOCD_LEN];
    uint64_t eocd = 0, end, n, cd_size, cd_off, start;
    int e;

    memset(d, 0, sizeof *d);
    d->file_size = file_size;
    e = zd_find_end(fd, file_size, &eocd, rec, why, why_len);
    if (e != 0)
        return e;
    n = zd_le(rec + 10, 2);
    cd_size = zd_le(rec + 12, 4);
    cd_off = zd_le(rec + 16, 4);
    end = eocd;
    if (n == ZD_SAT16 || cd_size == ZD_SAT32 || cd_off == ZD_SAT32) {
        e = zd_read_zip64(fd, eocd, &n, &cd_size, &cd_off, &end, why, why_len);
        if (e != 0)
            return e;
    }
    if (cd_size > end || cd_off > end - cd_size)
        return npy_fail(why, why_len, "the central directory (%llu bytes at "
                        "byte %llu) does not end before its end record at "
                        "byte %llu", (unsigned long long)cd_size,
                        (unsigned long long)cd_off, (unsigned long long)end);
    if (n > cd_size / ZD_ENTRY_LEN)
        return npy_fail(why, why_len, "a central directory of %llu bytes "
                        "cannot hold the %llu entries it declares",
                        (unsigned long long)cd_size, (unsigned long long)n);
    start = end - cd_size; /* cd_off plus any bytes before the archive */
    d->shift = start - cd_off;
    d->n = n;
    d->cd_len = (size_t)cd_size;
    d->cd = malloc(d->cd_len ? d->cd_len : 1);
    if (d->cd == NULL)
        return -2;
    return zd_read(fd, d->cd, d->cd_len, start, "the central directory", why,
                   why_len);
}

void npz_zip_dir_free(npz_zip_dir *d)
{
    free(d->cd);
    memset(d, 0, sizeof *d);
}

/* The ZIP64 extra field of an entry: the 64-bit values of the fields
 * that are saturated, in the order usize, csize, offset. */
static int zd_zip64_extra(const unsigned char *x, size_t xlen,
                          npz_zip_member *m, uint64_t *off, char *why,
                          size_t len)
{
    while (xlen >= 4) {
        size_t id = (size_t)zd_le(x, 2), sz = (size_t)zd_le(x + 2, 2);
        if (sz > xlen - 4)
            return npy_fail(why, len, "an extra field runs past its entry");
        if (id == 1) {
            uint64_t *want[3] = {&m->usize, &m->csize, off};
            const unsigned char *q = x + 4;
            size_t left = sz, k;
            for (k = 0; k < 3; k++) {
                if (*want[k] != ZD_SAT32)
                    continue;
                if (left < 8)
                    return npy_fail(why, len, "its ZIP64 extra field is too "
                                    "short");
                *want[k] = zd_le(q, 8);
                q += 8;
                left -= 8;
            }
        }
        x += 4 + sz;
        xlen -= 4 + sz;
    }
    return 0;
}

int npz_zip_dir_entry(const npz_zip_dir *d, size_t *pos, npz_zip_member *m,
                      char *why, size_t why_len)
{
    const unsigned char *p = d->cd + *pos;
    size_t left = d->cd_len - *pos, nlen, xlen, clen;
    uint64_t off;
    int e;

    memset(m, 0, sizeof *m);
    if (left < ZD_ENTRY_LEN || memcmp(p, "PK\001\002", 4) != 0)
        return npy_fail(why, why_len, "no central directory entry at byte %zu "
                        "of the central directory", *pos);
    nlen = (size_t)zd_le(p + 28, 2);
    xlen = (size_t)zd_le(p + 30, 2);
    clen = (size_t)zd_le(p + 32, 2);
    if (nlen + xlen + clen > left - ZD_ENTRY_LEN)
        return npy_fail(why, why_len, "the central directory entry at byte "
                        "%zu runs past the end of the central directory",
                        *pos);
    m->method = (unsigned)zd_le(p + 10, 2);
    m->csize = zd_le(p + 20, 4);
    m->usize = zd_le(p + 24, 4);
    off = zd_le(p + 42, 4);
    m->name = p + ZD_ENTRY_LEN;
    m->name_len = nlen;
    e = zd_zip64_extra(p + ZD_ENTRY_LEN + nlen, xlen, m, &off, why, why_len);
    if (e != 0)
        return e;
    if (off > UINT64_MAX - d->shift)
        return npy_fail(why, why_len, "its local header offset %llu is out of "
                        "range", (unsigned long long)off);
    m->offset = off + d->shift;
    *pos += ZD_ENTRY_LEN + nlen + xlen + clen;
    return 0;
}

int npz_zip_local_read(int fd, const npz_zip_dir *d, const npz_zip_member *cd,
                       npz_zip_member *loc, uint64_t *data_at, char *why,
                       size_t why_len)
{
    unsigned char h[ZD_LOCAL_LEN], *x;
    size_t nlen, xlen;
    uint64_t unused = 0;
    int e;

    *loc = *cd;
    if (cd->offset > d->file_size || d->file_size - cd->offset < ZD_LOCAL_LEN)
        return npy_fail(why, why_len, "its local header at byte %llu lies "
                        "beyond the end of the file (%llu bytes)",
                        (unsigned long long)cd->offset,
                        (unsigned long long)d->file_size);
    e = zd_read(fd, h, sizeof h, cd->offset, "its local header", why,
                why_len);
    if (e != 0)
        return e;
    if (memcmp(h, "PK\003\004", 4) != 0)
        return npy_fail(why, why_len, "no local header at byte %llu",
                        (unsigned long long)cd->offset);
    nlen = (size_t)zd_le(h + 26, 2);
    xlen = (size_t)zd_le(h + 28, 2);
    *data_at = cd->offset + ZD_LOCAL_LEN + nlen + xlen;
    if (*data_at > d->file_size)
        return npy_fail(why, why_len, "its local header at byte %llu runs "
                        "past the end of the file",
                        (unsigned long long)cd->offset);
    loc->method = (unsigned)zd_le(h + 8, 2);
    if (zd_le(h + 6, 2) & 0x08)
        return 0; /* the sizes follow the data: the directory's are used */
    loc->csize = zd_le(h + 18, 4);
    loc->usize = zd_le(h + 22, 4);
    x = malloc(xlen ? xlen : 1);
    if (x == NULL)
        return -2;
    e = zd_read(fd, x, xlen, cd->offset + ZD_LOCAL_LEN + nlen,
                "its local header", why, why_len);
    if (e == 0)
        e = zd_zip64_extra(x, xlen, loc, &unused, why, why_len);
    free(x);
    return e;
}

int npz_zip_member_check(const npz_zip_dir *d, const npz_zip_member *m,
                         uint64_t data_at, const char *which, char *why,
                         size_t why_len)
{
    if (m->csize > d->file_size - data_at)
        return npy_fail(why, why_len, "%s gives it %llu compressed bytes "
                        "from byte %llu, beyond the end of the file (%llu "
                        "bytes)", which, (unsigned long long)m->csize,
                        (unsigned long long)data_at,
                        (unsigned long long)d->file_size);
    if (m->method == NPZ_METHOD_STORED && m->usize > m->csize)
        return npy_fail(why, why_len, "%s claims %llu bytes for it, but it "
                        "is stored (not compressed) in %llu", which,
                        (unsigned long long)m->usize,
                        (unsigned long long)m->csize);
    if (m->method != NPZ_METHOD_STORED &&
        m->csize < UINT64_MAX / NPZ_DEFLATE_MAX_RATIO &&
        m->usize > m->csize * NPZ_DEFLATE_MAX_RATIO)
        return npy_fail(why, why_len, "%s claims %llu bytes for it from %llu "
                        "compressed bytes, more than the %u times deflate can "
                        "expand them", which, (unsigned long long)m->usize,
                        (unsigned long long)m->csize, NPZ_DEFLATE_MAX_RATIO);
    return 0;
}
