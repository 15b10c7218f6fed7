/* Corrupt inputs, failed writes, reproducibility and `hvqconv verify`, end
 * to end: the real binary runs on damaged copies of small valid files
 * (built here byte by byte, or written by hvqconv itself from them) and on
 * the bundled stories260K model.
 *
 * For every reader (safetensors file, directory and sharded index, GGUF,
 * NPY, NPZ, the imatrix .dat and GGUF Hessians, the `file` Hessian, YAML
 * pipelines, the hvq container through decode, inspect, verify and eval)
 * each bad input must give exit status 2, a message naming the file and
 * saying what is wrong (a key phrase is matched), no file at all in the
 * output directory (no temporary file either) and the input's bytes
 * unchanged. Every reader is cut at 32 or more points spread over its
 * header and data.
 *
 * Valid oddities (all-zero rows and tensors, 1-D, 0-D and 0-element
 * tensors, block and group sizes that do not divide a row) give the
 * documented result; a tensor too small for the k-means clusterer with
 * fit: error is refused.
 *
 * A write that fails (RLIMIT_FSIZE) gives exit status 1 (not 2: the input
 * is fine), a message, no output, no temporary file, and leaves an
 * existing output (--force) untouched. The same input, pipeline and seed
 * give the same bytes whatever the output is called and however many
 * threads run.
 *
 * HVQ_CORRUPT_SHOW=1 prints every case's message. */
#include "config.h"

#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- byte buffers -------------------------------------------------------- */

typedef struct bytes {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void b_put(bytes *b, const void *d, size_t n)
{
    if (b->n + n > b->cap || !b->p) { /* never NULL, even when empty */
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void b_u32(bytes *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    b_put(b, x, 4);
}

static void b_u64(bytes *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    b_put(b, x, 8);
}

static void b_str(bytes *b, const char *s) { b_put(b, s, strlen(s)); }

static bytes b_copy(const bytes *b)
{
    bytes c = {0};
    b_put(&c, b->p, b->n);
    return c;
}

static void set_u16(bytes *b, size_t off, uint16_t v)
{
    ck_assert_uint_le(off + 2, b->n);
    b->p[off] = (unsigned char)v;
    b->p[off + 1] = (unsigned char)(v >> 8);
}

static void set_u32(bytes *b, size_t off, uint32_t v)
{
    ck_assert_uint_le(off + 4, b->n);
    for (int i = 0; i < 4; i++)
        b->p[off + (size_t)i] = (unsigned char)(v >> (8 * i));
}

static void set_u64(bytes *b, size_t off, uint64_t v)
{
    ck_assert_uint_le(off + 8, b->n);
    for (int i = 0; i < 8; i++)
        b->p[off + (size_t)i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const bytes *b, size_t off)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | b->p[off + (size_t)i];
    return v;
}

static bytes b_file(const char *path)
{
    size_t n;
    char *d = th_read_file(path, &n);
    ck_assert_msg(d != NULL, "cannot read %s", path);
    bytes b = {(unsigned char *)d, n, n};
    return b;
}

/* Offset of the first occurrence of needle (n bytes) at or after from. */
static size_t b_find(const bytes *b, const void *needle, size_t n, size_t from)
{
    for (size_t i = from; i + n <= b->n; i++)
        if (memcmp(b->p + i, needle, n) == 0)
            return i;
    ck_abort_msg("pattern of %zu bytes not found", n);
    return 0;
}

/* Replaces the first occurrence of from by to (same length). */
static void b_patch(bytes *b, const char *from, const char *to)
{
    size_t n = strlen(from);
    ck_assert_uint_eq(n, strlen(to));
    memcpy(b->p + b_find(b, from, n, 0), to, n);
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

/* ---- paths and runs ------------------------------------------------------- */

static char *g_dir; /* this test's temporary directory */

static const char *gpath(const char *name) { return th_join(g_dir, name); }

static void setup(void) { g_dir = th_tmpdir("corrupt"); }

static void teardown(void)
{
    th_rmtree(g_dir);
    free(g_dir);
    g_dir = NULL;
}

static int run_v(char **out, char **err, const char *const *args) { return th_run(out, err, args); }


static void write_text(const char *path, const char *text) { th_write_file(path, text, strlen(text)); }

static size_t dir_entries(const char *dir, char *first, size_t len)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            if (!n && first)
                snprintf(first, len, "%s", e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

/* haystack contains one of the '|'-separated alternatives of phrase. */
static int has_phrase(const char *hay, const char *phrase)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", phrase);
    for (char *s = buf, *e; s; s = e ? e + 1 : NULL) {
        e = strchr(s, '|');
        if (e)
            *e = '\0';
        if (strstr(hay, s))
            return 1;
    }
    return 0;
}

static int show(void)
{
    const char *s = getenv("HVQ_CORRUPT_SHOW");
    return s && *s && *s != '0';
}

/* ---- the check every bad input gets -------------------------------------- */

/* A command template: NULL-terminated; "@IN@" is the damaged file,
 * "@OUT@" OUTDIR/out.safetensors, "@OUTH@" OUTDIR/out.hvq. */
typedef const char *const tmpl[];

static int g_cases; /* bad inputs checked */

/* Writes data as CASE/name (after copying the files of extra_dir into
 * CASE), runs the command, and checks: exit status 2, the message names
 * names_file (default: the damaged file) and has phrase, OUTDIR is empty,
 * CASE holds nothing new, and the damaged file is unchanged. */
static void bad_in(const char *label, const char *const *t, const char *name, const void *data,
                   size_t n, const char *phrase, const char *extra_dir, const char *names_file)
{
    const char *cdir = gpath("case");
    th_rmtree(cdir);
    ck_assert_int_eq(mkdir(cdir, 0755), 0);
    size_t n_extra = 0;
    if (extra_dir) {
        DIR *d = opendir(extra_dir);
        ck_assert_ptr_nonnull(d);
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            size_t len;
            char *x = th_read_file(th_join(extra_dir, e->d_name), &len);
            ck_assert_ptr_nonnull(x);
            th_write_file(th_join(cdir, e->d_name), x, len);
            free(x);
            n_extra++;
        }
        closedir(d);
    }
    char in[PATH_MAX], outdir[PATH_MAX], o[PATH_MAX + 32], oh[PATH_MAX + 32];
    snprintf(in, sizeof in, "%s/%s", cdir, name);
    snprintf(outdir, sizeof outdir, "%s/out", cdir);
    snprintf(o, sizeof o, "%s/out.safetensors", outdir);
    snprintf(oh, sizeof oh, "%s/out.hvq", outdir);
    ck_assert_int_eq(mkdir(outdir, 0755), 0);
    if (data) {
        if (extra_dir && th_exists(in))
            n_extra--;
        th_write_file(in, data, n);
    }
    const char *args[64];
    size_t k = 0;
    for (; t[k]; k++) {
        ck_assert_uint_lt(k, 63);
        args[k] = strcmp(t[k], "@IN@") == 0     ? in
                  : strcmp(t[k], "@OUT@") == 0  ? o
                  : strcmp(t[k], "@OUTH@") == 0 ? oh
                                                : t[k];
    }
    args[k] = NULL;
    char *out = NULL, *err = NULL;
    int rc = run_v(&out, &err, args);
    if (show())
        fprintf(stderr, "[%s] rc=%d %s", label, rc, err);
    ck_assert_msg(rc == 2, "%s: exit status %d (expected 2):\n%s", label, rc, err);
    const char *want = names_file ? names_file : in;
    ck_assert_msg(strstr(err, want) != NULL, "%s: the message does not name %s:\n%s", label, want,
                  err);
    ck_assert_msg(!phrase || has_phrase(err, phrase), "%s: expected \"%s\" in:\n%s", label,
                  phrase, err);
    ck_assert_msg(strstr(err, "hvqconv: error: ") != NULL, "%s: no error line:\n%s", label, err);
    char first[256] = "";
    size_t left = dir_entries(outdir, first, sizeof first);
    ck_assert_msg(left == 0, "%s: %zu files left in the output directory ('%s')", label, left,
                  first);
    /* nothing beside the input either (temporary files, a report) */
    size_t in_case = dir_entries(cdir, NULL, 0);
    ck_assert_msg(in_case == n_extra + (data ? 1 : 0) + 1, "%s: %zu files in %s", label, in_case,
                  cdir);
    if (data) {
        size_t m;
        char *now = th_read_file(in, &m);
        ck_assert_msg(now && m == n && memcmp(now, data, n) == 0, "%s: the input changed", label);
        free(now);
    }
    free(out);
    free(err);
    g_cases++;
}

static void bad(const char *label, const char *const *t, const char *name, const bytes *b,
                const char *phrase)
{
    bad_in(label, t, name, b->p, b->n, phrase, NULL, NULL);
}

/* What truncated files are told. */
#define PH_TRUNC                                                                             \
    "truncat|too short|too small|ends|end of|beyond|past|outside|exceeds|short|empty|no "     \
    "known format|not a|cannot hold|missing|expected|incomplete|unexpected|only |out of "     \
    "bounds|size mismatch|holds|amaged|bad magic|invalid|JSON"
/* What truncated pipelines are told (the YAML may still parse). */
#define PH_YAML "must|expected|unknown|missing|needs|did you mean|not |invalid|empty|did not find"

/* The file cut at 0 bytes, at the first 12 bytes, and at spread points
 * up to its last byte: at least min_cuts cuts in all. */
static void truncations_ph(const char *label, const char *const *t, const char *name,
                           const bytes *b, int min_cuts, size_t skip_from, const char *phrase)
{
    size_t last = (size_t)-1;
    int n = 0;
    size_t small[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 20, 24, 28};
    size_t ns = sizeof small / sizeof small[0];
    int spread = min_cuts - (int)ns;
    for (int i = 0; i < (int)ns + spread; i++) {
        size_t cut = i < (int)ns ? small[i]
                                 : (size_t)((double)b->n * (double)(i - (int)ns + 1) /
                                            (double)(spread + 1));
        if (i == (int)ns + spread - 1)
            cut = b->n - 1; /* the last byte missing */
        if (cut >= b->n || cut == last || cut >= skip_from)
            continue;
        last = cut;
        char lab[160];
        snprintf(lab, sizeof lab, "%s cut at %zu of %zu", label, cut, b->n);
        bad_in(lab, t, name, b->p, cut, phrase, NULL, NULL);
        n++;
    }
    ck_assert_msg(n >= min_cuts - 4, "%s: only %d cuts", label, n);
}

static void truncations(const char *label, const char *const *t, const char *name,
                        const bytes *b, int min_cuts, size_t skip_from)
{
    truncations_ph(label, t, name, b, min_cuts, skip_from, PH_TRUNC);
}

/* ---- the inputs ------------------------------------------------------------ */

static const float *weights(size_t n)
{
    static float w[1024];
    ck_assert_uint_le(n, 1024);
    for (size_t i = 0; i < n; i++)
        w[i] = (float)((int)((i * 7) % 11) - 5) * 0.125f + (float)(i % 3) * 0.01f;
    return w;
}

/* A safetensors file of F32 tensors: names, shapes (ndim[i] dims from
 * dims), data from vals (or the default weights), bad: a value put at
 * element 21 of the first tensor (0: none). */
typedef struct st_t {
    const char *name;
    int ndim;
    int64_t dims[4];
} st_t;

static bytes st_build(const st_t *ts, size_t nt, const char *meta, float badv, int with_bad)
{
    char hdr[4096];
    size_t len = 0, off = 0;
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "{%s", meta ? meta : "");
    size_t numel[16];
    for (size_t i = 0; i < nt; i++) {
        numel[i] = 1;
        len += (size_t)snprintf(hdr + len, sizeof hdr - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[",
                                i || meta ? "," : "", ts[i].name);
        for (int d = 0; d < ts[i].ndim; d++) {
            len += (size_t)snprintf(hdr + len, sizeof hdr - len, "%s%lld", d ? "," : "",
                                    (long long)ts[i].dims[d]);
            numel[i] *= (size_t)ts[i].dims[d];
        }
        len += (size_t)snprintf(hdr + len, sizeof hdr - len, "],\"data_offsets\":[%zu,%zu]}", off,
                                off + 4 * numel[i]);
        off += 4 * numel[i];
    }
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "}");
    while (len % 8)
        hdr[len++] = ' ';
    bytes b = {0};
    b_u64(&b, len);
    b_put(&b, hdr, len);
    for (size_t i = 0; i < nt; i++) {
        float *v = malloc(numel[i] * 4 + 4);
        ck_assert_ptr_nonnull(v);
        for (size_t k = 0; k < numel[i]; k++)
            v[k] = weights(numel[i] > 1024 ? 1024 : numel[i])[k % 1024];
        if (i == 0 && with_bad && numel[i] > 21)
            v[21] = badv;
        b_put(&b, v, numel[i] * 4); /* little-endian host */
        free(v);
    }
    return b;
}

static const st_t small_ts[] = {
    {"a.weight", 2, {8, 16}}, {"b.weight", 2, {4, 16}}, {"norm.weight", 1, {16}}};

static bytes small_st(void)
{
    return st_build(small_ts, 3, "\"__metadata__\":{\"format\":\"pt\"}", 0, 0);
}

/* A GGUF v3 file of the same three tensors, with its field offsets. */
typedef struct gguf_offs {
    size_t version, n_tensors, n_kv, key_len, arr_count, a_ndim, a_dim0, a_type, a_off, b_off,
        b_name_len, data;
} gguf_offs;

static void g_str(bytes *b, const char *s)
{
    b_u64(b, strlen(s));
    b_str(b, s);
}

static bytes gguf_build(gguf_offs *o, float badv, int with_bad)
{
    bytes b = {0};
    b_str(&b, "GGUF");
    o->version = b.n;
    b_u32(&b, 3);
    o->n_tensors = b.n;
    b_u64(&b, 3);
    o->n_kv = b.n;
    b_u64(&b, 2);
    o->key_len = b.n;
    g_str(&b, "general.alignment");
    b_u32(&b, 4); /* uint32 */
    b_u32(&b, 32);
    g_str(&b, "test.array");
    b_u32(&b, 9); /* array */
    b_u32(&b, 0); /* of uint8 */
    o->arr_count = b.n;
    b_u64(&b, 3);
    b_put(&b, "\1\2\3", 3);
    /* tensor infos: dims innermost first */
    g_str(&b, "a.weight");
    o->a_ndim = b.n;
    b_u32(&b, 2);
    o->a_dim0 = b.n;
    b_u64(&b, 16);
    b_u64(&b, 8);
    o->a_type = b.n;
    b_u32(&b, 0); /* F32 */
    o->a_off = b.n;
    b_u64(&b, 0);
    o->b_name_len = b.n;
    g_str(&b, "b.weight");
    b_u32(&b, 2);
    b_u64(&b, 16);
    b_u64(&b, 4);
    b_u32(&b, 0);
    o->b_off = b.n;
    b_u64(&b, 512);
    g_str(&b, "norm.weight");
    b_u32(&b, 1);
    b_u64(&b, 16);
    b_u32(&b, 0);
    b_u64(&b, 768);
    while (b.n % 32)
        b_put(&b, "", 1);
    o->data = b.n;
    float v[208];
    memcpy(v, weights(208), sizeof v);
    if (with_bad)
        v[21] = badv;
    b_put(&b, v, sizeof v);
    return b;
}

/* A lone .npy: header dict text as given, then nbytes of data. */
static bytes npy_build(int major, const char *dict, size_t nbytes)
{
    bytes b = {0};
    b_put(&b, "\x93NUMPY", 6);
    unsigned char ver[2] = {(unsigned char)major, 0};
    b_put(&b, ver, 2);
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = pre + dl + 1;
    size_t pad = (64 - total % 64) % 64;
    if (major == 1) {
        unsigned char l[2] = {(unsigned char)(dl + pad + 1), (unsigned char)((dl + pad + 1) >> 8)};
        b_put(&b, l, 2);
    } else {
        b_u32(&b, (uint32_t)(dl + pad + 1));
    }
    b_str(&b, dict);
    for (size_t i = 0; i < pad; i++)
        b_put(&b, " ", 1);
    b_put(&b, "\n", 1);
    const float *w = weights(1024);
    for (size_t i = 0; i < nbytes; i += 4)
        b_put(&b, &w[(i / 4) % 1024], nbytes - i < 4 ? nbytes - i : 4);
    return b;
}

/* Pipelines, written once per test (the paths are copied: gpath's
 * buffers rotate). */
static const char *keep(char *buf, const char *path)
{
    snprintf(buf, PATH_MAX, "%s", path);
    return buf;
}

static const char *pipe_all(void)
{
    static char buf[PATH_MAX];
    const char *p = keep(buf, gpath("all.yaml"));
    if (!th_exists(p))
        write_text(p, "name: all\nseed: 5\nstages:\n  clusterer: rtn\n  writer: dequant\n");
    return p;
}

/* Copies a model without compressing anything (to write another format). */
static const char *pipe_copy(void)
{
    static char buf[PATH_MAX];
    const char *p = keep(buf, gpath("copy.yaml"));
    if (!th_exists(p))
        write_text(p, "name: copy\nselect:\n  include: [\"nothing\"]\nstages:\n  clusterer: rtn\n"
                      "  writer: { plugin: dequant, dtype: same }\n");
    return p;
}

static const char *pipe_kmeans(void)
{
    static char buf[PATH_MAX];
    const char *p = keep(buf, gpath("km.yaml"));
    if (!th_exists(p))
        write_text(p, "name: km\nseed: 3\nselect:\n  include: [\"*.weight\"]\n"
                      "stages:\n  importance: hasvq\n"
                      "  clusterer: { plugin: kmeans, block_size: 2, centroids: 4, fit: error }\n"
                      "  residual: { plugin: coo16, sparsity: 0.02 }\n  writer: hvq\n");
    return p;
}

static const char *model_dir(void) { return th_src("models/stories260K"); }

/* Runs hvqconv expecting success. */
static void ok_run(const char *label, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, label);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL)
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    char *out, *err;
    int rc = run_v(&out, &err, args);
    ck_assert_msg(rc == 0, "%s: exit status %d:\n%s", label, rc, err);
    free(out);
    free(err);
}

/* ---- safetensors ---------------------------------------------------------- */

START_TEST(corrupt_safetensors)
{
    static tmpl run = {"run", "-q", NULL, "-i", "@IN@", "-o", "@OUT@", NULL};
    const char *t[8];
    memcpy(t, run, sizeof t);
    t[2] = pipe_all();
    bytes base = small_st();
    /* the base file is fine */
    const char *good = gpath("good.safetensors");
    th_write_file(good, base.p, base.n);
    ok_run("base safetensors", "run", "-q", pipe_all(), "-i", good, "-o",
           gpath("good-out.safetensors"), (const char *)NULL);

    truncations("safetensors", t, "m.safetensors", &base, 40, (size_t)-1);

    bytes b = b_copy(&base);
    set_u64(&b, 0, (uint64_t)1 << 62); /* header length far beyond the file */
    bad("safetensors header length 2^62", t, "m.safetensors", &b, "header");
    set_u64(&b, 0, base.n + 100);
    bad("safetensors header length past the end", t, "m.safetensors", &b, "header");
    set_u64(&b, 0, 0);
    bad("safetensors header length 0", t, "m.safetensors", &b, NULL);
    free(b.p);
    b = b_copy(&base);
    b.p[8] = 'X'; /* not JSON: "bad magic" for a format without one */
    bad("safetensors header not JSON", t, "m.safetensors", &b, "JSON|json|known format");
    free(b.p);
    /* safetensors has no magic and no version field (a header that is not
     * JSON stands for the first); counts and lengths: */
    struct {
        const char *label, *from, *to, *phrase;
    } patches[] = {
        {"shape overflow", "\"shape\":[8,16]", "\"shape\":[9999999999999999]", NULL},
        {"shape product overflow", "\"shape\":[8,16],\"data_offsets\":[0,512]",
         "\"shape\":[4294967296,4294967296,8,16],\"data_offsets\":[0,512]", NULL},
        {"zero dimension beside an overflowing product",
         "\"shape\":[8,16],\"data_offsets\":[0,512]",
         "\"shape\":[0,4294967296,4294967296,8,16],\"data_offsets\":[0,0]", "63 bits"},
        {"negative dimension", "\"shape\":[8,16]", "\"shape\":[-8,16]", NULL},
        {"offset far beyond the file", "[512,768]", "[512,999999999999768]", NULL},
        {"offset overflow", "[512,768]", "[18446744073709551615,768]", NULL},
        {"end before begin", "[512,768]", "[768,512]", NULL},
        {"size and shape disagree", "\"shape\":[8,16]", "\"shape\":[8,17]", NULL},
        {"overlapping tensors", "[512,768]", "[256,512]", NULL},
        {"unknown dtype", "\"dtype\":\"F32\"", "\"dtype\":\"F99\"", "F99"},
        {"non-string metadata", "{\"format\":\"pt\"}", "{\"format\":17}", NULL},
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        /* rebuild the header with the patch, keeping it well formed */
        size_t hl = (size_t)base.p[0] | (size_t)base.p[1] << 8;
        char hdr[4096];
        memcpy(hdr, base.p + 8, hl);
        hdr[hl] = '\0';
        char *at = strstr(hdr, patches[i].from);
        ck_assert_msg(at != NULL, "%s", patches[i].label);
        char nh[4096];
        int len = snprintf(nh, sizeof nh, "%.*s%s%s", (int)(at - hdr), hdr, patches[i].to,
                           at + strlen(patches[i].from));
        while (len > 0 && nh[len - 1] == ' ')
            len--;
        while (len % 8)
            nh[len++] = ' ';
        bytes c = {0};
        b_u64(&c, (uint64_t)len);
        b_put(&c, nh, (size_t)len);
        b_put(&c, base.p + 8 + hl, base.n - 8 - hl);
        char lab[128];
        snprintf(lab, sizeof lab, "safetensors %s", patches[i].label);
        bad(lab, t, "m.safetensors", &c, patches[i].phrase);
        free(c.p);
    }
    /* the fixtures of tests/data/safetensors/bad, each through the CLI */
    const char *fx = th_src("tests/data/safetensors/bad");
    DIR *d = opendir(fx);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int n_fx = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        bytes f = b_file(th_join(fx, e->d_name));
        char lab[300];
        snprintf(lab, sizeof lab, "safetensors fixture %s", e->d_name);
        bad(lab, t, "m.safetensors", &f, NULL);
        free(f.p);
        n_fx++;
    }
    closedir(d);
    ck_assert_int_ge(n_fx, 15);

    /* NaN and infinite weights: refused, naming the tensor and the file */
    static const float nf[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        bytes c = st_build(small_ts, 3, NULL, nf[i], 1);
        bad(i ? "safetensors infinite weight" : "safetensors NaN weight", t, "m.safetensors", &c,
            i ? "infinite" : "NaN");
        free(c.p);
    }
    free(base.p);
}
END_TEST

START_TEST(corrupt_safetensors_dir_and_shards)
{
    static tmpl run = {"run", "-q", NULL, "-i", NULL, "-o", "@OUT@", NULL};
    const char *t[8];
    memcpy(t, run, sizeof t);
    t[2] = pipe_all();
    /* a directory: with no model, and with a damaged model.safetensors */
    static char cbuf[PATH_MAX];
    const char *cdir = keep(cbuf, gpath("case"));
    t[4] = cdir;
    bad_in("empty directory", t, "x", NULL, 0, "safetensors|no model|holds no", NULL, cdir);
    bytes base = small_st();
    t[4] = cdir;
    bad_in("directory with a truncated model", t, "model.safetensors", base.p, base.n / 2,
           PH_TRUNC, NULL, "model.safetensors");
    free(base.p);

    /* sharded: the fixtures, then the index damaged */
    t[4] = "@IN@";
    const char *sh = th_src("tests/data/safetensors/sharded");
    bytes idx = b_file(th_join(sh, "model.safetensors.index.json"));
    truncations("sharded index", t, "model.safetensors.index.json", &idx, 32, idx.n - 2);
    static const char *const fixtures[][2] = {
        {"sharded-missing-shard", "model-00002-of-00002.safetensors"},
        {"sharded-absent-tensor", NULL},
        {"sharded-unlisted", NULL},
    };
    for (size_t i = 0; i < 3; i++) {
        const char *dir = th_src(th_join("tests/data/safetensors", fixtures[i][0]));
        bytes f = b_file(th_join(dir, "model.safetensors.index.json"));
        bad_in(fixtures[i][0], t, "model.safetensors.index.json", f.p, f.n, NULL, dir,
               fixtures[i][1]);
        free(f.p);
    }
    /* weight_map naming a shard outside the directory, and a huge total */
    bytes c = b_copy(&idx);
    b_patch(&c, "\"model-00002-of-00002.safetensors\"", "\"../../../../../../etc/passwd\"    ");
    bad_in("index naming a file outside", t, "model.safetensors.index.json", c.p, c.n, NULL, sh,
           NULL);
    free(c.p);
    c = b_copy(&idx);
    b_patch(&c, "\"weight_map\"", "\"weight_mop\"");
    bad_in("index without weight_map", t, "model.safetensors.index.json", c.p, c.n,
           "weight_map", sh, NULL);
    free(c.p);
    free(idx.p);
}
END_TEST

/* ---- GGUF ------------------------------------------------------------------ */

START_TEST(corrupt_gguf)
{
    static tmpl run = {"run", "-q", NULL, "-i", "@IN@", "-o", "@OUT@", NULL};
    const char *t[8];
    memcpy(t, run, sizeof t);
    t[2] = pipe_all();
    gguf_offs o;
    bytes base = gguf_build(&o, 0, 0);
    const char *good = gpath("good.gguf");
    th_write_file(good, base.p, base.n);
    ok_run("base gguf", "run", "-q", pipe_all(), "-i", good, "-o", gpath("good-out.safetensors"),
           (const char *)NULL);

    truncations("gguf", t, "m.gguf", &base, 40, (size_t)-1);

    struct {
        const char *label;
        size_t off;
        int width; /* 4 or 8 */
        uint64_t v;
        const char *phrase;
    } cases[] = {
        {"bad magic", 0, 4, 0x58554747u /* GGUX */, "bad magic \"GGUX\""},
        {"version 1", o.version, 4, 1, "version"},
        {"version 99", o.version, 4, 99, "version"},
        {"tensor count 2^60", o.n_tensors, 8, (uint64_t)1 << 60, NULL},
        {"tensor count 2^64-1", o.n_tensors, 8, UINT64_MAX, NULL},
        {"metadata count 2^60", o.n_kv, 8, (uint64_t)1 << 60, NULL},
        {"key length 2^62", o.key_len, 8, (uint64_t)1 << 62, NULL},
        {"key length past the end", o.key_len, 8, 5000, NULL},
        {"array count 2^61", o.arr_count, 8, (uint64_t)1 << 61, NULL},
        {"array count past the end", o.arr_count, 8, 100000, NULL},
        {"tensor name length 2^63", o.b_name_len, 8, (uint64_t)1 << 63, NULL},
        {"9 dimensions", o.a_ndim, 4, 9, "n_dims 9"},
        {"2^31 dimensions", o.a_ndim, 4, 0x80000000u, "n_dims"},
        {"dimension 2^62", o.a_dim0, 8, (uint64_t)1 << 62, NULL},
        {"dimension 2^64-1", o.a_dim0, 8, UINT64_MAX, NULL},
        {"unknown tensor type", o.a_type, 4, 9999, "type"},
        {"data offset far beyond the file", o.a_off, 8, (uint64_t)1 << 40, NULL},
        {"data offset overflow", o.a_off, 8, UINT64_MAX - 31, NULL}, /* aligned */
        {"misaligned data offset", o.b_off, 8, 513, NULL},
        {"overlapping tensors", o.b_off, 8, 256, NULL},
        {"alignment 0", o.key_len + 8 + 17 + 4, 4, 0, "alignment"},
        {"alignment 3", o.key_len + 8 + 17 + 4, 4, 3, "alignment"},
        {"metadata type 99", o.key_len + 8 + 17, 4, 99, "type"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bytes c = b_copy(&base);
        if (cases[i].width == 4)
            set_u32(&c, cases[i].off, (uint32_t)cases[i].v);
        else
            set_u64(&c, cases[i].off, cases[i].v);
        char lab[128];
        snprintf(lab, sizeof lab, "gguf %s", cases[i].label);
        bad(lab, t, "m.gguf", &c, cases[i].phrase);
        free(c.p);
    }
    /* duplicate tensor name */
    bytes c = b_copy(&base);
    b_patch(&c, "b.weight", "a.weight");
    bad("gguf duplicate tensor name", t, "m.gguf", &c, "a.weight");
    free(c.p);
    static const float nf[] = {NAN, INFINITY};
    for (int i = 0; i < 2; i++) {
        c = gguf_build(&o, nf[i], 1);
        bad(i ? "gguf infinite weight" : "gguf NaN weight", t, "m.gguf", &c,
            i ? "infinite" : "NaN");
        free(c.p);
    }
    free(base.p);
}
END_TEST

/* ---- NPY and NPZ ------------------------------------------------------------ */

START_TEST(corrupt_npy)
{
    static tmpl run = {"run", "-q", NULL, "-i", "@IN@", "-o", "@OUT@", NULL};
    const char *t[8];
    memcpy(t, run, sizeof t);
    t[2] = pipe_all();
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 16), }";
    bytes base = npy_build(1, dict, 512);
    const char *good = gpath("good.npy");
    th_write_file(good, base.p, base.n);
    ok_run("base npy", "run", "-q", pipe_all(), "-i", good, "-o", gpath("good-out.safetensors"),
           (const char *)NULL);
    truncations("npy", t, "w.npy", &base, 36, (size_t)-1);

    bytes c = b_copy(&base);
    c.p[5] = 'X';
    bad("npy bad magic", t, "w.npy", &c, "nor an NPY file");
    free(c.p);
    c = b_copy(&base);
    c.p[6] = 9;
    bad("npy version 9", t, "w.npy", &c, "version");
    free(c.p);
    c = b_copy(&base);
    set_u16(&c, 8, 0xFFFF);
    bad("npy header length past the end", t, "w.npy", &c, NULL);
    free(c.p);
    c = npy_build(2, dict, 512);
    set_u32(&c, 8, 0xFFFFFFF0u);
    bad("npy v2 header length 2^32", t, "w.npy", &c, NULL);
    free(c.p);
    struct {
        const char *label, *dict, *phrase;
        size_t nbytes;
    } cases[] = {
        {"shape overflow", "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, "
                           "4294967296, 4294967296), }", NULL, 512},
        {"zero dimension beside an overflowing product",
         "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296, 16), }",
         "63 bits", 512},
        {"dimension past int64", "{'descr': '<f4', 'fortran_order': False, 'shape': "
                                 "(99999999999999999999999, 16), }", NULL, 512},
        {"negative dimension", "{'descr': '<f4', 'fortran_order': False, 'shape': (-8, 16), }",
         NULL, 512},
        {"shape beyond the data", "{'descr': '<f4', 'fortran_order': False, 'shape': (800, 16), }",
         NULL, 512},
        {"data beyond the shape", "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 15), }",
         NULL, 512},
        {"object dtype", "{'descr': '|O', 'fortran_order': False, 'shape': (8, 16), }", NULL, 512},
        {"unknown dtype", "{'descr': '<c99', 'fortran_order': False, 'shape': (8, 16), }", NULL,
         512},
        {"header not a dict", "[1, 2, 3]", NULL, 512},
        {"header without shape", "{'descr': '<f4', 'fortran_order': False, }", "shape", 512},
        {"unterminated header", "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 16", NULL,
         512},
        {"33 dimensions", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, "
                          "1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, "
                          "1, 1, 1, 128), }", NULL, 512},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c = npy_build(1, cases[i].dict, cases[i].nbytes);
        char lab[128];
        snprintf(lab, sizeof lab, "npy %s", cases[i].label);
        bad(lab, t, "w.npy", &c, cases[i].phrase);
        free(c.p);
    }
    /* NaN: the lone array is named after the file; every tensor selected */
    c = b_copy(&base);
    float nanv = NAN;
    memcpy(c.p + c.n - 4 * 100, &nanv, 4);
    bad("npy NaN weight", t, "w.npy", &c, "NaN");
    free(c.p);
    free(base.p);
}
END_TEST

/* The local file header and central directory entry of the first member
 * of a stored (not deflated) zip: fixes their CRC-32 after an edit. */
static void zip_fix_crc(bytes *z)
{
    size_t lh = b_find(z, "PK\3\4", 4, 0);
    uint32_t csize = get_u32(z, lh + 18);
    size_t nlen = (size_t)z->p[lh + 26] | (size_t)z->p[lh + 27] << 8;
    size_t xlen = (size_t)z->p[lh + 28] | (size_t)z->p[lh + 29] << 8;
    ck_assert_uint_eq(z->p[lh + 8], 0); /* stored */
    uint32_t crc = crc32_of(z->p + lh + 30 + nlen + xlen, csize);
    set_u32(z, lh + 14, crc);
    size_t cd = b_find(z, "PK\1\2", 4, 0);
    set_u32(z, cd + 16, crc);
}

START_TEST(corrupt_npz)
{
    static tmpl run = {"run", "-q", NULL, "-i", "@IN@", "-o", "@OUT@", NULL};
    const char *t[8];
    memcpy(t, run, sizeof t);
    t[2] = pipe_all();
    /* the npz, written by hvqconv from the small model (stored members) */
    bytes st = small_st();
    static char sbuf[PATH_MAX], nbuf[PATH_MAX];
    const char *src = keep(sbuf, gpath("src.safetensors")), *npz = keep(nbuf, gpath("good.npz"));
    th_write_file(src, st.p, st.n);
    free(st.p);
    ok_run("write npz", "run", "-q", pipe_copy(), "-i", src, "-o", npz, (const char *)NULL);
    bytes base = b_file(npz);
    ck_assert_uint_gt(base.n, 800);
    truncations("npz", t, "m.npz", &base, 40, (size_t)-1);

    bytes c = b_copy(&base);
    c.p[2] = 'X';
    bad("npz bad magic", t, "m.npz", &c, "amaged zip|format");
    free(c.p);
    /* a data byte of the first member flipped: its CRC no longer matches */
    c = b_copy(&base);
    size_t lh = b_find(&c, "\x93NUMPY", 6, 0);
    c.p[lh + 200] ^= 0x55;
    bad("npz checksum mismatch", t, "m.npz", &c, "CRC|crc|checksum");
    free(c.p);
    size_t eocd = b_find(&base, "PK\5\6", 4, 0);
    struct {
        const char *label;
        size_t off;
        int width;
        uint32_t v;
    } cases[] = {
        {"entry count 65535", eocd + 10, 2, 0xFFFF},
        {"central directory size 2^32-1", eocd + 12, 4, 0xFFFFFFFFu},
        {"central directory beyond the file", eocd + 16, 4, 0x7FFFFFF0u},
        {"member size 2^32-1", b_find(&base, "PK\3\4", 4, 0) + 18, 4, 0xFFFFFFFFu},
        {"member size too small", b_find(&base, "PK\3\4", 4, 0) + 18, 4, 16},
        {"central member offset beyond the file", b_find(&base, "PK\1\2", 4, 0) + 42, 4,
         0x7FFFFFF0u},
        {"name length 65535", b_find(&base, "PK\1\2", 4, 0) + 28, 2, 0xFFFF},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c = b_copy(&base);
        if (cases[i].width == 2)
            set_u16(&c, cases[i].off, (uint16_t)cases[i].v);
        else
            set_u32(&c, cases[i].off, cases[i].v);
        char lab[128];
        snprintf(lab, sizeof lab, "npz %s", cases[i].label);
        bad(lab, t, "m.npz", &c, NULL);
        free(c.p);
    }
    /* a member's shape beyond its data, CRC fixed so that only the shape is wrong */
    c = b_copy(&base);
    b_patch(&c, "(8, 16)", "(8, 99)");
    zip_fix_crc(&c);
    bad("npz member shape beyond its data", t, "m.npz", &c, "a.weight");
    free(c.p);
    c = b_copy(&base);
    b_patch(&c, "(8, 16)", "(-8, 1)");
    zip_fix_crc(&c);
    bad("npz member negative dimension", t, "m.npz", &c, "a.weight");
    free(c.p);
    /* the member's NPY version and magic (the zip itself has neither) */
    c = b_copy(&base);
    c.p[b_find(&c, "\x93NUMPY", 6, 0) + 6] = 7;
    zip_fix_crc(&c);
    bad("npz member NPY version 7", t, "m.npz", &c, "version 7");
    free(c.p);
    c = b_copy(&base);
    c.p[b_find(&c, "\x93NUMPY", 6, 0) + 1] = 'X';
    zip_fix_crc(&c);
    bad("npz member bad NPY magic", t, "m.npz", &c, "a.weight");
    free(c.p);
    /* NaN weights through npz */
    st = st_build(small_ts, 3, NULL, NAN, 1);
    th_write_file(src, st.p, st.n);
    free(st.p);
    unlink(npz);
    ok_run("write npz with NaN", "run", "-q", pipe_copy(), "-i", src, "-o", npz,
           (const char *)NULL);
    c = b_file(npz);
    bad("npz NaN weight", t, "m.npz", &c, "NaN");
    free(c.p);
    free(base.p);
}
END_TEST

/* ---- what an archive's members claim --------------------------------------- */

/* tests/data/claims (make_claims.py): int32 token arrays whose NPY header
 * and zip records claim 1 TiB in a file of a few hundred bytes, read as a
 * model (run), as eval's tokens and as calibrate's. Each is refused before
 * anything is allocated for it: exit 2, the file and the member named
 * (they asked for 1 TiB: exit 1, "out of memory", no file named). */
START_TEST(npz_size_claims)
{
    static const struct {
        const char *file, *phrase;
    } cases[] = {
        {"stored-1tib.npz", "member 'ids.npy': the central directory gives it 1099511627904 "
                            "compressed bytes from byte 57, beyond the end of the file (344 "
                            "bytes)"},
        {"stored-claim.npz", "member 'ids.npy': the central directory claims 1099511627904 bytes "
                             "for it, but it is stored (not compressed) in 192"},
        {"deflated-claim.npz", "member 'ids.npy': the central directory claims 1099511627904 "
                               "bytes for it from 4170 compressed bytes, more than the 1032 "
                               "times deflate can expand them"},
        {"local-claim.npz", "member 'ids.npy': its local header claims 1099511627904 bytes for "
                            "it, but it is stored (not compressed) in 192"},
        {"claim.npy", "needs 1099511627776 data bytes but the file holds 64"},
    };
    static char b_model[PATH_MAX], b_cal[PATH_MAX];
    const char *model = keep(b_model, model_dir());
    const char *cal = keep(b_cal, gpath("cal.yaml"));
    static tmpl run = {"run", "-q", NULL, "-i", "@IN@", "-o", "@OUT@", NULL};
    const char *t_run[8], *t_eval[] = {"eval", model, "--tokens", "@IN@", NULL};
    const char *t_cal[] = {"run", "-q", cal, "-i", model, "-o", "@OUT@", NULL};
    memcpy(t_run, run, sizeof t_run);
    t_run[2] = pipe_all();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char lab[160], pipe[2 * PATH_MAX];
        const char *name = strrchr(cases[i].file, '.');
        char in_case[PATH_MAX];
        bytes b = b_file(th_src(th_join("tests/data/claims", cases[i].file)));
        /* calibrate reads the file where bad_in puts it */
        snprintf(in_case, sizeof in_case, "%s/ids%s", gpath("case"), name);
        snprintf(pipe, sizeof pipe, "name: cal\nselect:\n  include: [\"*q_proj.weight\"]\n"
                 "stages:\n  hessian: { plugin: calibrate, tokens: \"%s\", windows: 1, ctx: 8 }\n"
                 "  clusterer: rtn\n  writer: dequant\n", in_case);
        write_text(cal, pipe);
        snprintf(lab, sizeof lab, "run %s", cases[i].file);
        bad_in(lab, t_run, strrchr(in_case, '/') + 1, b.p, b.n, cases[i].phrase, NULL, NULL);
        snprintf(lab, sizeof lab, "eval --tokens %s", cases[i].file);
        bad_in(lab, t_eval, strrchr(in_case, '/') + 1, b.p, b.n, cases[i].phrase, NULL, NULL);
        snprintf(lab, sizeof lab, "calibrate tokens %s", cases[i].file);
        bad_in(lab, t_cal, strrchr(in_case, '/') + 1, b.p, b.n, cases[i].phrase, NULL, NULL);
        free(b.p);
    }
    /* The same ids behind ZIP64 end records and extra fields, and behind a
     * self-extracting stub: read, not refused (eval takes only files that
     * start as a zip or an NPY). */
    static const char *const good[] = {"zip64-ok.npz", "sfx-ok.npz"};
    for (size_t i = 0; i < 2; i++) {
        static char b_f[PATH_MAX];
        const char *f = keep(b_f, th_src(th_join("tests/data/claims", good[i])));
        ok_run(good[i], "run", "-q", pipe_all(), "-i", f, "-o", gpath("good.safetensors"),
               "-f", (const char *)NULL);
        if (i > 0)
            continue;
        char *out, *err;
        int rc = th_hvq(&out, &err, "eval", model, "--tokens", f, "--ctx", "8", (const char *)NULL);
        ck_assert_msg(rc == 0, "eval --tokens %s: exit %d\n%s", good[i], rc, err);
        th_assert_contains(out, "PPL");
        free(out);
        free(err);
    }
}
END_TEST

/* ---- Hessians: imatrix (.dat, GGUF) and file ------------------------------ */

static const char *pipe_imatrix(void)
{
    static char buf[PATH_MAX];
    const char *p = keep(buf, gpath("im.yaml"));
    if (!th_exists(p))
        write_text(p, "name: im\nselect:\n  include: [\"*.weight\"]\n"
                      "  exclude: [\"*norm*\", \"*embed_tokens*\", \"lm_head.weight\"]\n"
                      "stages:\n  hessian: { plugin: imatrix, path: x }\n  importance: hasvq\n"
                      "  clusterer: rtn\n  writer: dequant\n");
    return p;
}

START_TEST(corrupt_imatrix)
{
    static tmpl run = {"run", "-q", NULL, "-i", NULL, "-s", "stages.hessian.path=@IN@", "-o",
                       "@OUT@", NULL};
    const char *t[10];
    memcpy(t, run, sizeof t);
    t[2] = pipe_imatrix();
    t[4] = model_dir();
    /* "-s stages.hessian.path=@IN@" is one argument: substitute by hand */
    char setarg[PATH_MAX + 64];
    snprintf(setarg, sizeof setarg, "stages.hessian.path=%s/case/m.dat", g_dir);
    t[6] = setarg;
    bytes dat = b_file(th_src("tests/data/imatrix/stories260K.imatrix.dat"));
    truncations("imatrix .dat", t, "m.dat", &dat, 36, (size_t)-1);
    struct {
        const char *label;
        size_t off;
        uint32_t v;
    } cases[] = {
        {"entry count 2^31-1", 0, 0x7FFFFFFFu},
        {"entry count negative", 0, 0x80000000u},
        {"name length 2^31-1", 4, 0x7FFFFFFFu},
        {"name length negative", 4, 0xFFFFFFFFu},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bytes c = b_copy(&dat);
        set_u32(&c, cases[i].off, cases[i].v);
        char lab[128];
        snprintf(lab, sizeof lab, "imatrix .dat %s", cases[i].label);
        bad(lab, t, "m.dat", &c, NULL);
        free(c.p);
    }
    /* the first entry's value count: far beyond the file */
    uint32_t nlen = get_u32(&dat, 4);
    bytes c = b_copy(&dat);
    set_u32(&c, 4 + 4 + nlen + 4, 0x7FFFFFF0u);
    bad("imatrix .dat value count 2^31", t, "m.dat", &c, NULL);
    free(c.p);
    /* a NaN diagonal value */
    c = b_copy(&dat);
    float nanv = NAN;
    memcpy(c.p + 4 + 4 + nlen + 8 + 4 * 3, &nanv, 4);
    bad("imatrix .dat NaN value", t, "m.dat", &c, "NaN|finite|nan");
    free(c.p);
    free(dat.p);

    /* the GGUF layout, written by the calibrate plugin */
    const char *img = gpath("im.gguf");
    char save[PATH_MAX + 64];
    snprintf(save, sizeof save, "stages.hessian.save=%s", img);
    char tok[PATH_MAX + 64];
    snprintf(tok, sizeof tok, "stages.hessian.tokens=%s",
             th_src("models/stories260K/tinystories-calib.tok512.npy"));
    ok_run("calibrate and save an imatrix", "run", "-q", pipe_imatrix(), "-i", model_dir(), "-o",
           gpath("cal.safetensors"), "-s", "stages.hessian.plugin=calibrate", "-s", tok, "-s",
           "stages.hessian.windows=1", "-s", "stages.hessian.ctx=32", "-s", save,
           (const char *)NULL);
    bytes g = b_file(img);
    snprintf(setarg, sizeof setarg, "stages.hessian.path=%s/case/m.gguf", g_dir);
    /* the zero padding after the last tensor's data may go */
    size_t end = g.n;
    while (end > 0 && g.p[end - 1] == 0)
        end--;
    truncations("imatrix gguf", t, "m.gguf", &g, 36, end);
    c = b_copy(&g);
    c.p[0] = 'X';
    bad("imatrix gguf bad magic", t, "m.gguf", &c, NULL);
    free(c.p);
    c = b_copy(&g);
    set_u32(&c, 4, 77);
    bad("imatrix gguf version 77", t, "m.gguf", &c, "version");
    free(c.p);
    c = b_copy(&g);
    set_u64(&c, 16, (uint64_t)1 << 59);
    bad("imatrix gguf metadata count 2^59", t, "m.gguf", &c, NULL);
    free(c.p);
    c = b_copy(&g);
    set_u64(&c, 8, (uint64_t)1 << 59);
    bad("imatrix gguf tensor count 2^59", t, "m.gguf", &c, NULL);
    free(c.p);
    free(g.p);
}
END_TEST

START_TEST(corrupt_hessian_file)
{
    static char pbuf[PATH_MAX], ibuf[PATH_MAX];
    const char *pipe = keep(pbuf, gpath("hf.yaml"));
    char y[PATH_MAX * 2];
    snprintf(y, sizeof y,
             "name: hf\nselect:\n  include: [\"*.weight\"]\nstages:\n"
             "  hessian: { plugin: file, path: %s/case/h.safetensors, missing: error }\n"
             "  importance: hasvq\n  clusterer: rtn\n  writer: dequant\n", g_dir);
    write_text(pipe, y);
    bytes st = small_st();
    const char *in = keep(ibuf, gpath("in.safetensors"));
    th_write_file(in, st.p, st.n);
    free(st.p);
    static tmpl run = {"run", "-q", NULL, "-i", NULL, "-o", "@OUT@", NULL};
    const char *t[8];
    memcpy(t, run, sizeof t);
    t[2] = pipe;
    t[4] = in;
    static const st_t hs[] = {{"a.weight", 1, {16}}, {"b.weight", 1, {16}}};
    bytes h = st_build(hs, 2, NULL, 0, 0);
    for (int i = 0; i < 32; i++) { /* positive diagonals */
        float v = 1.0f + 0.25f * (float)i;
        memcpy(h.p + h.n - 128 + 4 * i, &v, 4);
    }
    const char *good = gpath("case/h.safetensors");
    mkdir(gpath("case"), 0755);
    th_write_file(good, h.p, h.n);
    ok_run("a good Hessian file", "run", "-q", pipe, "-i", in, "-o", gpath("ok.safetensors"),
           (const char *)NULL);
    truncations("hessian file", t, "h.safetensors", &h, 34, (size_t)-1);
    static const st_t wrong[] = {{"a.weight", 1, {15}}, {"b.weight", 1, {16}}};
    bytes c = st_build(wrong, 2, NULL, 0, 0);
    bad("hessian file wrong length", t, "h.safetensors", &c, "15");
    free(c.p);
    static const st_t twod[] = {{"a.weight", 2, {4, 4}}, {"b.weight", 1, {16}}};
    c = st_build(twod, 2, NULL, 0, 0);
    bad("hessian file 2-D diagonal", t, "h.safetensors", &c, "a.weight");
    free(c.p);
    static const float nf[] = {NAN, INFINITY, -1.0f};
    for (int i = 0; i < 3; i++) {
        c = b_copy(&h);
        memcpy(c.p + c.n - 128 + 4 * 3, &nf[i], 4); /* a.weight's fourth value */
        char lab[64];
        snprintf(lab, sizeof lab, "hessian file value %g", (double)nf[i]);
        bad(lab, t, "h.safetensors", &c, i == 0 ? "invalid value nan at 3" :
                                         i == 1 ? "invalid value inf at 3" :
                                                  "invalid value -1 at 3");
        free(c.p);
    }
    free(h.p);
}
END_TEST

/* ---- pipelines -------------------------------------------------------------- */

START_TEST(corrupt_pipeline)
{
    bytes st = small_st();
    static char ibuf[PATH_MAX];
    const char *in = keep(ibuf, gpath("in.safetensors"));
    th_write_file(in, st.p, st.n);
    free(st.p);
    static tmpl run = {"run", "-q", "@IN@", "-i", NULL, "-o", "@OUTH@", NULL};
    const char *t[8];
    memcpy(t, run, sizeof t);
    t[4] = in;
    const char *yaml = "name: km\nseed: 3\nselect:\n  include: [\"*.weight\"]\n"
                       "stages:\n  importance: hasvq\n"
                       "  clusterer: { plugin: kmeans, block_size: 2, centroids: 4, fit: error }\n"
                       "  residual: { plugin: coo16, sparsity: 0.02 }\n  writer: hvq\n";
    bytes y = {0};
    b_str(&y, yaml);
    /* every cut but the one that only drops the final newline */
    truncations_ph("pipeline", t, "p.yaml", &y, 40, y.n - 1, PH_YAML);
    struct {
        const char *label, *text, *phrase;
    } cases[] = {
        {"binary garbage", "\x7f" "ELF\1\1\1\0\0\0\0\0\0\0\0\0\2\0>\0", NULL},
        {"invalid UTF-8", "name: \xff\xfe\nstages:\n  clusterer: rtn\n  writer: dequant\n", NULL},
        {"seed past 64 bits", "name: s\nseed: 99999999999999999999999\nstages:\n  clusterer: rtn\n"
                              "  writer: dequant\n", "seed"},
        {"negative seed", "name: s\nseed: -1\nstages:\n  clusterer: rtn\n  writer: dequant\n",
         "seed"},
        {"block size past int", "name: s\nstages:\n  clusterer: { plugin: kmeans, block_size: "
                                "99999999999999999999 }\n  writer: hvq\n", "block_size"},
        {"block size 0", "name: s\nstages:\n  clusterer: { plugin: kmeans, block_size: 0 }\n"
                         "  writer: hvq\n", "block_size"},
        {"NaN sparsity", "name: s\nstages:\n  clusterer: kmeans\n  residual: { plugin: coo16, "
                         "sparsity: .nan }\n  writer: hvq\n", "sparsity"},
        {"infinite sparsity", "name: s\nstages:\n  clusterer: kmeans\n  residual: { plugin: coo16, "
                              "sparsity: .inf }\n  writer: hvq\n", "sparsity"},
        {"a list, not a mapping", "- a\n- b\n", NULL},
        {"two documents", "name: a\n---\nname: b\n", NULL},
        {"deep nesting", NULL, NULL},
        {"alias bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c]\n"
                       "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n", NULL},
        {"empty file", "", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bytes c = {0};
        if (cases[i].text) {
            b_str(&c, cases[i].text);
        } else {
            b_str(&c, "name: deep\nx: ");
            for (int k = 0; k < 20000; k++)
                b_put(&c, "[", 1);
            b_put(&c, "\n", 1);
        }
        char lab[128];
        snprintf(lab, sizeof lab, "pipeline %s", cases[i].label);
        bad(lab, t, "p.yaml", &c, cases[i].phrase);
        free(c.p);
    }
    free(y.p);
}
END_TEST

/* ---- valid oddities ----------------------------------------------------------- */

/* Float32 values of tensor name in a safetensors file written by hvqconv. */
static float *st_values(const char *path, const char *name, size_t *count)
{
    bytes f = b_file(path);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | f.p[i];
    char key[128];
    snprintf(key, sizeof key, "\"%s\":", name);
    char *hdr = malloc(hl + 1);
    memcpy(hdr, f.p + 8, hl);
    hdr[hl] = '\0';
    char *at = strstr(hdr, key);
    ck_assert_msg(at != NULL, "%s not in %s", name, path);
    ck_assert_msg(strstr(at, "\"dtype\":\"F32\"") != NULL, "%s is not F32", name);
    char *off = strstr(at, "\"data_offsets\":[");
    ck_assert_ptr_nonnull(off);
    unsigned long long b0, b1;
    ck_assert_int_eq(sscanf(off, "\"data_offsets\":[%llu,%llu]", &b0, &b1), 2);
    *count = (size_t)(b1 - b0) / 4;
    float *v = malloc((size_t)(b1 - b0) + 4);
    memcpy(v, f.p + 8 + hl + b0, (size_t)(b1 - b0));
    free(hdr);
    free(f.p);
    return v;
}

START_TEST(valid_oddities)
{
    const char *in = gpath("odd.safetensors"), *o = gpath("odd.hvq"),
               *dec = gpath("odd-dec.safetensors");
    char *out, *err;
    /* all-zero rows and an all-zero tensor; 1-D, 0-D and 0-element tensors */
    static const st_t odd[] = {{"a.weight", 2, {8, 16}}, {"z.weight", 2, {4, 16}},
                               {"e.weight", 2, {0, 16}}, {"f.weight", 2, {4, 0}},
                               {"n.weight", 1, {16}},    {"s.weight", 0, {0}}};
    bytes b = st_build(odd, 6, NULL, 0, 0);
    /* zero a.weight's row 2 and all of z.weight */
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | b.p[i];
    memset(b.p + 8 + hl + 2 * 16 * 4, 0, 16 * 4);
    memset(b.p + 8 + hl + 512, 0, 256);
    th_write_file(in, b.p, b.n);
    free(b.p);
    static const char *const pipes[2] = {"km", "rtn"};
    for (int k = 0; k < 2; k++) {
        unlink(o);
        unlink(dec);
        int rc = k == 0 ? th_hvq(&out, &err, "run", pipe_kmeans(), "-q", "-i", in, "-o", o,
                              (const char *)NULL)
                        : th_hvq(&out, &err, "run", pipe_kmeans(), "-q", "-i", in, "-o", o, "-s",
                              "stages.clusterer.plugin=rtn", "-s", "stages.residual.plugin=none",
                              (const char *)NULL);
        ck_assert_msg(rc == 0, "%s: exit %d:\n%s", pipes[k], rc, err);
        /* documented: what is not a matrix, or is empty, passes through with a warning */
        th_assert_contains(err, "tensor 'n.weight' matches the selection but is not a matrix");
        th_assert_contains(err, "tensor 's.weight' matches the selection but is not a matrix");
        th_assert_contains(err, "tensor 'e.weight' matches the selection but is empty");
        th_assert_contains(err, "tensor 'f.weight' matches the selection but is empty");
        free(out);
        free(err);
        rc = th_hvq(&out, &err, "verify", o, (const char *)NULL);
        ck_assert_msg(rc == 0, "verify: %d\n%s", rc, err);
        free(out);
        free(err);
        rc = th_hvq(&out, &err, "decode", "-q", o, "-o", dec, (const char *)NULL);
        ck_assert_msg(rc == 0, "decode: %d\n%s", rc, err);
        free(out);
        free(err);
        size_t n;
        float *v = st_values(dec, "a.weight", &n);
        ck_assert_uint_eq(n, 128);
        for (int c = 0; c < 16; c++) /* the zero row decodes to exact zeros */
            ck_assert_msg(v[2 * 16 + c] == 0.0f, "%s: a.weight[2][%d] = %g", pipes[k], c,
                          (double)v[2 * 16 + c]);
        for (size_t i = 0; i < n; i++)
            ck_assert(isfinite(v[i]));
        free(v);
        v = st_values(dec, "z.weight", &n);
        ck_assert_uint_eq(n, 64);
        for (size_t i = 0; i < n; i++)
            ck_assert(v[i] == 0.0f);
        free(v);
        v = st_values(dec, "e.weight", &n);
        ck_assert_uint_eq(n, 0);
        free(v);
        v = st_values(dec, "s.weight", &n);
        ck_assert_uint_eq(n, 1);
        free(v);
    }
    /* block and group sizes that do not divide a row: documented to work
     * (vectors run along the flattened matrix, the last group is shorter) */
    static const char *const sets[] = {"stages.clusterer.block_size=3",
                                       "stages.clusterer.block_size=5",
                                       "stages.clusterer.block_size=16"};
    for (size_t i = 0; i < 3; i++) {
        unlink(o);
        int rc = th_hvq(&out, &err, "run", pipe_kmeans(), "-q", "-i", in, "-o", o, "-s", sets[i],
                     "-s", "stages.clusterer.centroids=2", (const char *)NULL);
        ck_assert_msg(rc == 0, "%s: exit %d:\n%s", sets[i], rc, err);
        free(out);
        free(err);
        rc = th_hvq(&out, &err, "verify", o, (const char *)NULL);
        ck_assert_msg(rc == 0, "verify after %s: %d\n%s", sets[i], rc, err);
        free(out);
        free(err);
    }
    for (int gs = 3; gs <= 7; gs += 4) {
        unlink(o);
        char set[64];
        snprintf(set, sizeof set, "stages.clusterer.group_size=%d", gs);
        int rc = th_hvq(&out, &err, "run", pipe_kmeans(), "-q", "-i", in, "-o", o, "-s",
                     "stages.clusterer.plugin=rtn", "-s", "stages.residual.plugin=none", "-s", set,
                     (const char *)NULL);
        ck_assert_msg(rc == 0, "%s: exit %d:\n%s", set, rc, err);
        free(out);
        free(err);
        rc = th_hvq(&out, &err, "verify", o, (const char *)NULL);
        ck_assert_msg(rc == 0, "verify after %s: %d\n%s", set, rc, err);
        free(out);
        free(err);
    }
}
END_TEST

START_TEST(too_small_for_clusterer)
{
    static tmpl run = {"run", "-q", NULL, "-i", "@IN@", "-o", "@OUTH@", NULL};
    const char *t[8];
    memcpy(t, run, sizeof t);
    t[2] = pipe_kmeans();
    /* 1x5: 3 vectors of 2 for 4 centroids */
    static const st_t one[] = {{"a.weight", 2, {8, 16}}, {"o.weight", 2, {1, 5}}};
    bytes b = st_build(one, 2, NULL, 0, 0);
    bad("tensor too small for 4 centroids", t, "m.safetensors", &b, "o.weight");
    bad("tensor too small, the reason", t, "m.safetensors", &b, "cannot train 4 centroids");
    free(b.p);
    /* the block larger than the whole tensor */
    static const st_t tiny[] = {{"t.weight", 2, {2, 3}}};
    b = st_build(tiny, 1, NULL, 0, 0);
    const char *t2[12];
    memcpy(t2, run, sizeof run);
    t2[2] = pipe_kmeans();
    t2[7] = "-s";
    t2[8] = "stages.clusterer.block_size=16";
    t2[9] = NULL;
    bad("block larger than the tensor", t2, "m.safetensors", &b, "t.weight");
    free(b.p);
}
END_TEST

/* ---- the container: decode, inspect, verify, eval --------------------------- */

static bytes make_container(const char *name)
{
    bytes st = small_st();
    const char *src = gpath("c-src.safetensors");
    th_write_file(src, st.p, st.n);
    free(st.p);
    const char *o = gpath(name);
    unlink(o);
    ok_run("make a container", "run", "-q", pipe_kmeans(), "-i", src, "-o", o,
           (const char *)NULL);
    return b_file(o);
}

START_TEST(corrupt_container)
{
    bytes base = make_container("good.hvq");
    static tmpl ver = {"verify", "@IN@", NULL};
    static tmpl dec = {"decode", "-q", "@IN@", "-o", "@OUT@", NULL};
    static tmpl ins = {"inspect", "@IN@", NULL};
    char *out, *err;
    int rc = th_hvq(&out, &err, "verify", gpath("good.hvq"), (const char *)NULL);
    ck_assert_msg(rc == 0, "verify: %d\n%s", rc, err);
    th_assert_contains(out, gpath("good.hvq"));
    th_assert_contains(out, "OK");
    th_assert_contains(out, "3 tensors (2 compressed)");
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "verify", "--json", gpath("good.hvq"), (const char *)NULL);
    ck_assert_int_eq(rc, 0);
    th_assert_contains(out, "\"ok\": true");
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "verify", "--help", (const char *)NULL);
    ck_assert_int_eq(rc, 0);
    th_assert_contains(out, "Usage: hvqconv verify");
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "verify", (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, "verify needs a container");
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "--help", (const char *)NULL);
    th_assert_contains(out, "verify FILE.hvq");
    free(out);
    free(err);

    truncations("container verify", ver, "c.hvq", &base, 40, (size_t)-1);
    truncations("container decode", dec, "c.hvq", &base, 32, (size_t)-1);
    truncations("container inspect", ins, "c.hvq", &base, 16, (size_t)-1);

    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | base.p[i];
    size_t data = 8 + (size_t)hl;
    const char *const *cmds[3] = {ver, dec, ins};
    static const char *const cname[3] = {"verify", "decode", "inspect"};
    for (int k = 0; k < 3; k++) {
        char lab[128];
        /* a flipped byte in each tensor's data: the checksum names it */
        bytes c = b_copy(&base);
        c.p[data] ^= 0x10;
        snprintf(lab, sizeof lab, "%s: first data byte flipped", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "tensor 'a.weight': checksum mismatch");
        free(c.p);
        c = b_copy(&base);
        c.p[base.n - 1] ^= 0x10;
        snprintf(lab, sizeof lab, "%s: last data byte flipped", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "tensor 'norm.weight': checksum mismatch");
        free(c.p);
        /* the header JSON */
        c = b_copy(&base);
        b_patch(&c, "{\"__metadata__\"", "[\"__metadata__\"");
        snprintf(lab, sizeof lab, "%s: header not an object", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, NULL);
        free(c.p);
        c = b_copy(&base);
        b_patch(&c, "\"format\":\"hvq\"", "\"format\":\"hvx\"");
        snprintf(lab, sizeof lab, "%s: not a container", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "not an hvq container");
        free(c.p);
        c = b_copy(&base);
        b_patch(&c, "\"hvq.format_version\":\"1\"", "\"hvq.format_version\":\"2\"");
        snprintf(lab, sizeof lab, "%s: newer version", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "container format version 2 is newer");
        free(c.p);
        c = b_copy(&base);
        b_patch(&c, "\"hvq.format_version\":\"1\"", "\"hvq.format_version\":\"x\"");
        snprintf(lab, sizeof lab, "%s: bad version", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "version");
        free(c.p);
        c = b_copy(&base);
        b_patch(&c, "\\\"rows\\\":8", "\\\"rows\\\":9");
        snprintf(lab, sizeof lab, "%s: rows disagree with the shape", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "a.weight");
        free(c.p);
        c = b_copy(&base);
        b_patch(&c, "\\\"crc32\\\":", "\\\"crc33\\\":");
        snprintf(lab, sizeof lab, "%s: no checksum", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "a.weight");
        free(c.p);
        c = b_copy(&base);
        b_patch(&c, "\\\"encoding\\\":\\\"hvq\\\"", "\\\"encoding\\\":\\\"hvz\\\"");
        snprintf(lab, sizeof lab, "%s: unknown encoding", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "hvz");
        free(c.p);
        /* a stored tensor's offsets beyond the data, overlapping */
        c = b_copy(&base);
        b_patch(&c, "\"shape\":[16],\"data_offsets\":[", "\"shape\":[16],\"data_offsets\":]");
        snprintf(lab, sizeof lab, "%s: broken offsets", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, NULL);
        free(c.p);
    }
    free(base.p);

    /* sharded: a missing shard and a cut shard name the shard file */
    static char b_sd[PATH_MAX], b_s2[PATH_MAX];
    const char *sd = keep(b_sd, gpath("sharded"));
    mkdir(sd, 0755);
    bytes st = small_st();
    const char *src = gpath("s-src.safetensors");
    th_write_file(src, st.p, st.n);
    free(st.p);
    ok_run("sharded container", "run", "-q", pipe_kmeans(), "-i", src, "-o", th_join(sd, "m.hvq"),
           "-s", "stages.writer.max_shard_size=100", (const char *)NULL);
    const char *shard2 = keep(b_s2, th_join(sd, "m-00002-of-00002.hvq"));
    ck_assert(th_exists(shard2));
    rc = th_hvq(&out, &err, "verify", sd, (const char *)NULL);
    ck_assert_msg(rc == 0, "verify sharded: %d\n%s", rc, err);
    free(out);
    free(err);
    bytes s2 = b_file(shard2);
    unlink(shard2);
    for (int k = 0; k < 3; k++) {
        static char idx[PATH_MAX];
        keep(idx, th_join(sd, "m.hvq.index.json"));
        const char *args[8];
        int j = 0;
        for (; cmds[k][j]; j++)
            args[j] = strcmp(cmds[k][j], "@IN@") == 0 ? idx : cmds[k][j];
        args[j] = NULL;
        char lab[64];
        snprintf(lab, sizeof lab, "%s: missing shard", cname[k]);
        bad_in(lab, args, "unused", NULL, 0, "cannot be opened", NULL, "m-00002-of-00002.hvq");
    }
    /* shard 2 cut short */
    th_write_file(shard2, s2.p, s2.n - 3);
    rc = th_hvq(&out, &err, "verify", sd, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, "m-00002-of-00002.hvq");
    free(out);
    free(err);
    /* shard 2 with a flipped data byte: the checksum of its tensor */
    s2.p[s2.n - 1] ^= 1;
    th_write_file(shard2, s2.p, s2.n);
    rc = th_hvq(&out, &err, "verify", "--json", sd, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(out, "\"ok\": false");
    th_assert_contains(err, "checksum mismatch");
    th_assert_contains(err, "tensor 'norm.weight'");
    free(out);
    free(err);
    free(s2.p);
}
END_TEST

/* Replaces `from` (which must occur) in a container's JSON header with
 * `to` of any length, and pads the header again to a multiple of 8. */
static void b_rehead(bytes *b, const char *from, const char *to)
{
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | b->p[i];
    size_t end = 8 + (size_t)hl, at = b_find(b, from, strlen(from), 8);
    ck_assert_uint_lt(at, end);
    while (end > 8 && b->p[end - 1] == ' ')
        end--;
    bytes n = {0};
    b_put(&n, b->p + 8, at - 8);
    b_str(&n, to);
    b_put(&n, b->p + at + strlen(from), end - at - strlen(from));
    while (n.n % 8)
        b_str(&n, " ");
    bytes o = {0};
    b_u64(&o, n.n);
    b_put(&o, n.p, n.n);
    b_put(&o, b->p + 8 + (size_t)hl, b->n - 8 - (size_t)hl);
    free(n.p);
    free(b->p);
    *b = o;
}

/* A container whose few bytes claim a huge tensor (k-means with one
 * centroid stores no index bits; with two, one bit a vector) is refused
 * when it is opened, before a decoded tensor is allocated: exit 2 naming
 * the tensor, never an allocation failure (exit 1) or gigabytes written. */
START_TEST(container_size_claims)
{
    static const st_t ts[] = {{"one.weight", 2, {1, 2}}, {"two.weight", 2, {4, 16}}};
    bytes st = st_build(ts, 2, NULL, 0, 0);
    const char *src = gpath("claims.safetensors");
    th_write_file(src, st.p, st.n);
    free(st.p);
    const char *pipe = gpath("km1.yaml");
    write_text(pipe, "name: km1\nseed: 1\nselect:\n  include: [\"*.weight\"]\nstages:\n"
                     "  clusterer: { plugin: kmeans, block_size: 2, centroids: 2, fit: shrink }\n"
                     "  residual: none\n  writer: hvq\n");
    static char b_o[PATH_MAX];
    const char *o = keep(b_o, gpath("claims.hvq"));
    ok_run("one centroid for one vector", "run", "-q", pipe, "-i", src, "-o", o,
           (const char *)NULL);
    char *out, *err;
    /* one vector, one centroid, 0-bit indices: valid, and decodes */
    int rc = th_hvq(&out, &err, "verify", o, (const char *)NULL);
    ck_assert_msg(rc == 0, "verify: %d\n%s", rc, err);
    free(out);
    free(err);
    bytes base = b_file(o);
    static tmpl ver = {"verify", "@IN@", NULL};
    static tmpl dec = {"decode", "-q", "@IN@", "-o", "@OUT@", NULL};
    static tmpl ins = {"inspect", "@IN@", NULL};
    const char *const *cmds[3] = {ver, dec, ins};
    static const char *const cname[3] = {"verify", "decode", "inspect"};
    /* 1 GiB and 4 TiB of float32 claimed by one.weight's 6 bytes */
    static const char *const cols[2] = {"268435456", "1099511627776"};
    static const char *const vecs[2] = {"134217728", "549755813888"};
    for (int v = 0; v < 2; v++)
        for (int k = 0; k < 3; k++) {
            bytes c = b_copy(&base);
            char shape[64], rc_[64], vc[64], lab[128];
            snprintf(shape, sizeof shape, "\\\"shape\\\":[1,%s]", cols[v]);
            snprintf(rc_, sizeof rc_, "\\\"rows\\\":1,\\\"cols\\\":%s,", cols[v]);
            snprintf(vc, sizeof vc, "\\\"vectors\\\":\\\"%s\\\"", vecs[v]);
            b_rehead(&c, "\\\"shape\\\":[1,2]", shape);
            b_rehead(&c, "\\\"rows\\\":1,\\\"cols\\\":2,", rc_);
            b_rehead(&c, "\\\"vectors\\\":\\\"1\\\"", vc);
            snprintf(lab, sizeof lab, "%s: one centroid claims %s columns", cname[k], cols[v]);
            bad(lab, cmds[k], "c.hvq", &c, "only valid for a single vector");
            free(c.p);
        }
    /* two centroids (1-bit indices): 4 stored index bytes cannot hold
     * 2 x 1600 vectors */
    for (int k = 0; k < 3; k++) {
        bytes c = b_copy(&base);
        char lab[128];
        b_rehead(&c, "\\\"shape\\\":[4,16]", "\\\"shape\\\":[4,1600]");
        b_rehead(&c, "\\\"rows\\\":4,\\\"cols\\\":16,", "\\\"rows\\\":4,\\\"cols\\\":1600,");
        b_rehead(&c, "\\\"vectors\\\":\\\"32\\\"", "\\\"vectors\\\":\\\"3200\\\"");
        snprintf(lab, sizeof lab, "%s: indices too few for the claimed vectors", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "indices must be U8 [400]");
        free(c.p);
    }
    /* a zero dimension beside dimensions whose product overflows: 0
     * elements, but rows or columns computed from the others would wrap
     * (found by the GGUF fuzzer in another reader) */
    for (int k = 0; k < 3; k++) {
        bytes c = b_copy(&base);
        char lab[128];
        b_rehead(&c, "\\\"shape\\\":[4,16]",
                 "\\\"shape\\\":[0,4294967296,4294967296,16]");
        snprintf(lab, sizeof lab, "%s: a zero dimension beside an overflowing product", cname[k]);
        bad(lab, cmds[k], "c.hvq", &c, "non-zero ones multiply to at most 2^63 - 1");
        free(c.p);
    }
    free(base.p);
}
END_TEST

START_TEST(corrupt_container_eval)
{
    /* a Llama container (stories260K, rtn) evaluated on the fly */
    const char *o = gpath("llama.hvq");
    ok_run("stories container", "run", "-q", th_src("pipelines/int4-rtn.yaml"), "-i", model_dir(),
           "-o", o, "-r", "", "-s", "stages.writer.plugin=hvq", (const char *)NULL);
    bytes base = b_file(o);
    const char *cfg = th_src("models/stories260K/config.json");
    const char *tok = th_src("models/stories260K/tinystories-calib.tok512.npy");
    char *out, *err;
    int rc = th_hvq(&out, &err, "eval", o, "--tokens", tok, "--ctx", "16", "--max-windows", "1",
                 "--config", cfg, (const char *)NULL);
    ck_assert_msg(rc == 0, "eval: %d\n%s", rc, err);
    free(out);
    free(err);
    const char *t[] = {"eval", "@IN@", "--tokens", tok, "--ctx", "16", "--max-windows", "1",
                       "--config", cfg, NULL};
    /* a few cuts (each loads the whole model) */
    size_t cuts[] = {0, 7, 100, base.n / 3, base.n / 2, base.n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char lab[64];
        snprintf(lab, sizeof lab, "eval container cut at %zu", cuts[i]);
        bad_in(lab, t, "c.hvq", base.p, cuts[i], PH_TRUNC, NULL, NULL);
    }
    bytes c = b_copy(&base);
    c.p[base.n - 5] ^= 0x40;
    bad("eval container flipped byte", t, "c.hvq", &c, "checksum mismatch");
    free(c.p);
    free(base.p);
}
END_TEST

/* ---- write failures ---------------------------------------------------------- */

/* Runs hvqconv with RLIMIT_FSIZE at limit bytes and SIGXFSZ ignored, so
 * that a write past the limit fails with EFBIG. */
static int run_limited(char **err, rlim_t limit, const char *const *args)
{
    char exe[PATH_MAX], errp[PATH_MAX];
    snprintf(exe, sizeof exe, "%s/hvqconv", th_builddir());
    snprintf(errp, sizeof errp, "%s/tests/tmp-lim-err-XXXXXX", th_builddir());
    int efd = mkstemp(errp);
    ck_assert_int_ge(efd, 0);
    size_t n = 0;
    while (args[n])
        n++;
    char **argv = calloc(n + 2, sizeof *argv);
    argv[0] = exe;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(efd, 2);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(126);
        execv(exe, argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    free(argv);
    lseek(efd, 0, SEEK_SET);
    struct stat sb;
    fstat(efd, &sb);
    *err = calloc(1, (size_t)sb.st_size + 1);
    ck_assert_int_eq(read(efd, *err, (size_t)sb.st_size), (ssize_t)sb.st_size);
    close(efd);
    unlink(errp);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void limited_fails(const char *label, const char *outdir, const char *names,
                          size_t n_before, const char *const *args)
{
    char *err;
    int rc = run_limited(&err, 64 * 1024, args);
    if (show())
        fprintf(stderr, "[%s] rc=%d %s", label, rc, err);
    ck_assert_msg(rc == 1, "%s: exit status %d (expected 1, not 2: the input is fine):\n%s",
                  label, rc, err);
    ck_assert_msg(has_phrase(err, names), "%s: the message does not name %s:\n%s", label, names,
                  err);
    ck_assert_msg(has_phrase(err, "write|File too large|too large"), "%s:\n%s", label, err);
    char first[256] = "";
    size_t left = dir_entries(outdir, first, sizeof first);
    ck_assert_msg(left == n_before, "%s: %zu files in %s (expected %zu; '%s')", label, left,
                  outdir, n_before, first);
    free(err);
}

START_TEST(write_failures)
{
    static char b_od[PATH_MAX], b_o[PATH_MAX], b_pipe[PATH_MAX], b_on[PATH_MAX], b_og[PATH_MAX],
        b_oh[PATH_MAX], b_cont[PATH_MAX], b_model[PATH_MAX];
    const char *od = keep(b_od, gpath("wf"));
    ck_assert_int_eq(mkdir(od, 0755), 0);
    const char *o = keep(b_o, th_join(od, "o.safetensors"));
    const char *pipe = keep(b_pipe, th_src("pipelines/int4-rtn.yaml"));
#define model_dir() keep(b_model, th_src("models/stories260K"))
    const char *a1[] = {"run", "-q", pipe, "-i", model_dir(), "-o", o, "-r", "", NULL};
    limited_fails("run, safetensors", od, o, 0, a1);
    const char *on = keep(b_on, th_join(od, "o.npz"));
    const char *a2[] = {"run", "-q", pipe, "-i", model_dir(), "-o", on, "-r", "", NULL};
    limited_fails("run, npz", od, on, 0, a2);
    const char *og = keep(b_og, th_join(od, "o.gguf"));
    const char *a3[] = {"run", "-q", pipe, "-i", model_dir(), "-o", og, "-r", "", NULL};
    limited_fails("run, gguf", od, og, 0, a3);
    /* the container: in memory, streamed from the first byte, sharded */
    const char *oh = keep(b_oh, th_join(od, "o.hvq"));
    const char *a4[] = {"run", "-q", pipe, "-i", model_dir(), "-o", oh, "-r", "", "-s",
                        "stages.writer.plugin=hvq", NULL};
    limited_fails("run, hvq", od, oh, 0, a4);
    const char *a5[] = {"run", "-q", pipe, "-i", model_dir(), "-o", oh, "-r", "", "-s",
                        "stages.writer.plugin=hvq", "-s", "stages.writer.header_reserve=64", NULL};
    limited_fails("run, hvq streamed", od, oh, 0, a5);
    const char *a6[] = {"run", "-q", pipe, "-i", model_dir(), "-o", oh, "-r", "", "-s",
                        "stages.writer.plugin=hvq", "-s", "stages.writer.max_shard_size=40000",
                        NULL};
    limited_fails("run, hvq sharded", od, "o.hvq|o-0000", 0, a6);

    /* decode of a good container */
    const char *cont = keep(b_cont, gpath("full.hvq"));
    ok_run("container", "run", "-q", pipe, "-i", model_dir(), "-o", cont, "-r", "", "-s",
           "stages.writer.plugin=hvq", (const char *)NULL);
    const char *d1[] = {"decode", "-q", cont, "-o", o, NULL};
    limited_fails("decode", od, o, 0, d1);
    const char *d2[] = {"decode", "-q", cont, "-o", o, "--max-shard-size", "30000", NULL};
    limited_fails("decode sharded", od, "model-0000|o-0000|o.safetensors", 0, d2);

    /* --force: an existing output keeps its bytes */
    th_write_file(o, "old bytes", 9);
    const char *f1[] = {"run", "-q", "--force", pipe, "-i", model_dir(), "-o", o, "-r", "", NULL};
    limited_fails("run --force", od, o, 1, f1);
    const char *f2[] = {"decode", "-q", "--force", cont, "-o", o, NULL};
    limited_fails("decode --force", od, o, 1, f2);
    size_t n;
    char *now = th_read_file(o, &n);
    ck_assert(now && n == 9 && memcmp(now, "old bytes", 9) == 0);
    free(now);
#undef model_dir
}
END_TEST

/* ---- reproducibility ----------------------------------------------------------- */

START_TEST(reproducible)
{
    const char *p1 = gpath("repro.yaml"), *p2 = gpath("sub-repro.yaml");
    const char *yaml = "name: repro\nseed: 11\nselect:\n  include: [\"*.weight\"]\n"
                       "  exclude: [\"*norm*\", \"*embed_tokens*\"]\n"
                       "stages:\n  importance: hasvq\n"
                       "  clusterer: { plugin: kmeans, block_size: 2, centroids: 16 }\n"
                       "  residual: { plugin: coo16, sparsity: 0.01 }\n  writer: hvq\n";
    write_text(p1, yaml);
    write_text(p2, yaml);
    const char *d2 = gpath("other");
    ck_assert_int_eq(mkdir(d2, 0755), 0);
    const char *o1 = gpath("a.hvq"), *o2 = th_join(d2, "b-different-name.hvq");
    ok_run("repro 1", "run", "-q", p1, "-i", model_dir(), "-o", o1, "-t", "1", "-r",
           gpath("r1.json"), (const char *)NULL);
    ok_run("repro 2", "run", "-q", p2, "-i", model_dir(), "-o", o2, "-t", "2",
           (const char *)NULL);
    size_t n1, n2;
    char *b1 = th_read_file(o1, &n1), *b2 = th_read_file(o2, &n2);
    ck_assert_msg(n1 == n2 && memcmp(b1, b2, n1) == 0,
                  "two runs differing only in output name, pipeline file and thread count "
                  "wrote different bytes");
    /* what is recorded: the pipeline with seed and every parameter, plugin
     * versions, the hvqconv version, the input as given; not the output,
     * the report or the pipeline file */
    th_assert_contains(b1 + 8, "seed: 11");
    th_assert_contains(b1 + 8, "stability: 200");
    th_assert_contains(b1 + 8, "# plugins: source safetensors ");
    th_assert_contains(b1 + 8, "clusterer kmeans 1.");
    th_assert_contains(b1 + 8, "recorded by hvqconv " PACKAGE_VERSION);
    th_assert_contains(b1 + 8, "\"hvq.producer\":\"hvqconv " PACKAGE_VERSION "\"");
    th_assert_contains(b1 + 8, "\"hvq.source_metadata\"");
    ck_assert_msg(strstr(b1 + 8, "a.hvq") == NULL, "the output name is recorded");
    ck_assert_msg(strstr(b1 + 8, "repro.yaml") == NULL, "the pipeline file is recorded");
    th_assert_contains(b1 + 8, "input: "); /* eval finds config.json there */
    ck_assert_msg(strstr(b1 + 8, "r1.json") == NULL, "the report path is recorded");
    free(b1);
    free(b2);
    /* the dequantized model too */
    const char *q1 = gpath("q1.safetensors"), *q2 = th_join(d2, "q2.safetensors");
    ok_run("dequant 1", "run", "-q", p1, "-i", model_dir(), "-o", q1, "-t", "1", "-s",
           "stages.writer.plugin=dequant", (const char *)NULL);
    ok_run("dequant 2", "run", "-q", p1, "-i", model_dir(), "-o", q2, "-t", "2", "-s",
           "stages.writer.plugin=dequant", (const char *)NULL);
    b1 = th_read_file(q1, &n1);
    b2 = th_read_file(q2, &n2);
    ck_assert(n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("corrupt");
    TCase *tc = tcase_create("readers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, corrupt_safetensors);
    tcase_add_test(tc, corrupt_safetensors_dir_and_shards);
    tcase_add_test(tc, corrupt_gguf);
    tcase_add_test(tc, corrupt_npy);
    tcase_add_test(tc, corrupt_npz);
    tcase_add_test(tc, corrupt_imatrix);
    tcase_add_test(tc, corrupt_hessian_file);
    tcase_add_test(tc, corrupt_pipeline);
    tcase_add_test(tc, valid_oddities);
    tcase_add_test(tc, too_small_for_clusterer);
    tcase_add_test(tc, corrupt_container);
    tcase_add_test(tc, corrupt_container_eval);
    tcase_add_test(tc, container_size_claims);
    tcase_add_test(tc, write_failures);
    tcase_add_test(tc, reproducible);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("claims");
    tcase_add_checked_fixture(tm, setup, teardown);
    tcase_set_timeout(tm, 600);
    tcase_add_test(tm, npz_size_claims);
    suite_add_tcase(s, tm);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
