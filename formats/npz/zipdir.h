/* The central directory of a zip archive, read on its own: libarchive
 * reports a member's uncompressed size but not its compressed size nor its
 * method, and a hostile archive can claim a terabyte for a member of a few
 * bytes. What each member claims is checked against what the archive holds
 * before anything is allocated for it.
 *
 * Format (APPNOTE.TXT): the end of central directory record ("PK\5\6",
 * 22 bytes and a comment of up to 65535) gives the entry count, the size
 * and the offset of the central directory; when one of them does not fit
 * its 16 or 32 bits, a ZIP64 locator ("PK\6\7", the 20 bytes before it)
 * points at the ZIP64 end record ("PK\6\6") that holds them in 64 bits.
 * Each central directory entry ("PK\1\2", 46 bytes, then the name, the
 * extra fields and the comment) gives the method, the compressed and
 * uncompressed sizes and the offset of the member's local header; sizes
 * and offsets of 0xFFFFFFFF are in the ZIP64 extra field (id 1). An
 * archive with bytes before it (a self-extracting stub) is read as
 * libarchive reads it: every offset shifted by the stub's length.
 *
 * Functions that can fail return 0 on success; -1 for a damaged archive
 * (a one-line reason in why, no file name), -2 when out of memory, or an
 * errno value (> 0) when reading fails. */
#ifndef HVQ_NPZ_ZIPDIR_H
#define HVQ_NPZ_ZIPDIR_H

#include <stddef.h>
#include <stdint.h>

/* Deflate's largest expansion: a match of 258 bytes in 2 bits, 1032
 * bytes of output per byte of input. */
#define NPZ_DEFLATE_MAX_RATIO 1032u

#define NPZ_METHOD_STORED 0u
#define NPZ_METHOD_DEFLATED 8u

typedef struct npz_zip_dir {
    unsigned char *cd;       /* the central directory (malloc'd) */
    size_t cd_len;
    uint64_t n;              /* entries it declares */
    uint64_t shift;          /* bytes before the archive */
    uint64_t file_size;
} npz_zip_dir;

typedef struct npz_zip_member {
    const unsigned char *name; /* in d->cd, not NUL-terminated */
    size_t name_len;
    unsigned method;
    uint64_t csize, usize;   /* compressed and uncompressed sizes */
    uint64_t offset;         /* of the local header in the file */
} npz_zip_member;

/* Reads exactly n bytes at offset off of fd: 0, an errno value, or -1
 * when the file ends first. */
int npz_pread_all(int fd, void *buf, size_t n, uint64_t off);

/* Finds and reads the central directory of the archive fd
 * (file_size bytes). */
int npz_zip_dir_read(int fd, uint64_t file_size, npz_zip_dir *d, char *why,
                     size_t why_len);
void npz_zip_dir_free(npz_zip_dir *d);

/* Entry k of the directory (k < d->n), parsed from *pos (0 for the first,
 * then as left by the previous call). */
int npz_zip_dir_entry(const npz_zip_dir *d, size_t *pos, npz_zip_member *m,
                      char *why, size_t why_len);

/* The local header of the member the directory entry cd describes: *loc
 * gets the method and sizes it gives (a copy of cd's when it leaves them
 * to a data descriptor), *data_at where the member's data starts. A
 * reader may take the sizes from either record, so both are checked. */
int npz_zip_local_read(int fd, const npz_zip_dir *d, const npz_zip_member *cd,
                       npz_zip_member *loc, uint64_t *data_at, char *why,
                       size_t why_len);

/* Whether what m claims (which: "the central directory", "its local
 * header") fits what the archive holds: its compressed data, from byte
 * data_at, inside the file, a stored member no larger than its stored
 * bytes, any other no larger than deflate's largest expansion of them. 0,
 * or -1 with the reason. */
int npz_zip_member_check(const npz_zip_dir *d, const npz_zip_member *m,
                         uint64_t data_at, const char *which, char *why,
                         size_t why_len);

#endif
