/* Unit tests of the core's plugin loading and of the small pieces the
 * driver is built on:
 *   - hvq_plugin_validate on descriptors built in memory (every refusal
 *     reason, with its exact message);
 *   - hvq_registry_load_file on the plugins of tests/broken/ (one defect
 *     each) and on the header compile tests, with the exact one-line
 *     messages; hvq_registry_load_dir on that directory (good ones load,
 *     each bad one is one warning line); duplicates; lookups, suggestions,
 *     kind names, format detection;
 *   - hvq_top_k against a brute-force reference, hvq_tensor_seed;
 *   - dtype conversion against independent references (exhaustive for
 *     fp16 -> f32), glob matching, edit distance. */
#include "config.h"

#include "harness.h"

#include "driver.h"
#include "dtype.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ck_assert_msg for hot loops: Check records every passing assertion (a
 * write to its message channel), which costs seconds over millions. */
#define assert_fast(cond, ...)                                                \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg(__VA_ARGS__);                                        \
    } while (0)

/* ---- helpers ------------------------------------------------------------- */

/* tests/broken/.libs (where libtool puts the broken plugins) in a static
 * buffer. */
static const char *broken_dir(void)
{
    static char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/tests/broken/.libs", th_builddir());
    return dir;
}

/* "BROKEN_DIR/name" in a rotating static buffer. */
static const char *broken(const char *name)
{
    static char bufs[4][PATH_MAX];
    static int k;
    char *b = bufs[k++ % 4];
    int n = snprintf(b, PATH_MAX, "%s/%s", broken_dir(), name);
    ck_assert(n > 0 && n < PATH_MAX);
    return b;
}

static const char *build(const char *rel)
{
    static char bufs[4][PATH_MAX];
    static int k;
    char *b = bufs[k++ % 4];
    int n = snprintf(b, PATH_MAX, "%s/%s", th_builddir(), rel);
    ck_assert(n > 0 && n < PATH_MAX);
    return b;
}

/* Redirects stderr (fd 2) into a temporary file until capture_end, which
 * returns what was written (malloc'd). */
typedef struct capture {
    int saved_fd, fd;
    char path[PATH_MAX];
} capture;

static void capture_begin(capture *c)
{
    snprintf(c->path, sizeof c->path, "%s/tests/tmp-stderr-XXXXXX", th_builddir());
    c->fd = mkstemp(c->path);
    ck_assert_msg(c->fd >= 0, "mkstemp %s: %s", c->path, strerror(errno));
    fflush(stderr);
    c->saved_fd = dup(2);
    ck_assert_int_ge(c->saved_fd, 0);
    ck_assert_int_ge(dup2(c->fd, 2), 0);
}

static char *capture_end(capture *c)
{
    fflush(stderr);
    ck_assert_int_ge(dup2(c->saved_fd, 2), 0);
    close(c->saved_fd);
    close(c->fd);
    char *text = th_read_file(c->path, NULL);
    unlink(c->path);
    ck_assert_ptr_nonnull(text);
    return text;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- descriptors in memory ---------------------------------------------- */

/* Stubs of every callback type, so that a descriptor can carry all of them. */
static int st_probe(const char *p, const unsigned char *h, size_t n)
{
    (void)p; (void)h; (void)n;
    return 0;
}
static hvq_status st_open(hvq_ctx *c, const char *p, void **s)
{
    (void)c; (void)p; (void)s;
    return HVQ_OK;
}
static size_t st_count(void *s)
{
    (void)s;
    return 0;
}
static hvq_status st_info(void *s, size_t i, hvq_tensor_info *t)
{
    (void)s; (void)i; (void)t;
    return HVQ_OK;
}
static hvq_status st_read(hvq_ctx *c, void *s, size_t i, hvq_tensor *t)
{
    (void)c; (void)s; (void)i; (void)t;
    return HVQ_OK;
}
static void st_close(hvq_ctx *c, void *s)
{
    (void)c; (void)s;
}
static hvq_status sk_create(hvq_ctx *c, const char *p, const hvq_meta *m, size_t nm,
                            const hvq_tensor_info *t, size_t n, void **s)
{
    (void)c; (void)p; (void)m; (void)nm; (void)t; (void)n; (void)s;
    return HVQ_OK;
}
static hvq_status sk_write(hvq_ctx *c, void *s, const hvq_tensor *t)
{
    (void)c; (void)s; (void)t;
    return HVQ_OK;
}
static hvq_status sk_finish(hvq_ctx *c, void *s)
{
    (void)c; (void)s;
    return HVQ_OK;
}
static hvq_status h_open(hvq_ctx *c, const hvq_params *p, const char *m, void **s)
{
    (void)c; (void)p; (void)m; (void)s;
    return HVQ_OK;
}
static hvq_status h_get(hvq_ctx *c, void *s, const hvq_tensor_info *t, uint64_t r,
                        uint64_t k, float *h)
{
    (void)c; (void)s; (void)t; (void)r; (void)k; (void)h;
    return HVQ_OK;
}
static hvq_status i_score(hvq_ctx *c, const hvq_params *p, const float *w, uint64_t r,
                          uint64_t k, const float *h, float *s)
{
    (void)c; (void)p; (void)w; (void)r; (void)k; (void)h; (void)s;
    return HVQ_OK;
}
static hvq_status c_encode(hvq_ctx *c, const hvq_params *p, const hvq_cluster_input *in,
                           float *r, hvq_encoded *e)
{
    (void)c; (void)p; (void)in; (void)r; (void)e;
    return HVQ_OK;
}
static hvq_status c_decode(hvq_ctx *c, const hvq_encoded *e, uint64_t r, uint64_t k,
                           float *o)
{
    (void)c; (void)e; (void)r; (void)k; (void)o;
    return HVQ_OK;
}
static uint64_t r_count(const hvq_params *p, uint64_t n)
{
    (void)p; (void)n;
    return 0;
}
static hvq_status r_encode(hvq_ctx *c, const hvq_params *p, hvq_residual_input *in,
                           hvq_encoded *e)
{
    (void)c; (void)p; (void)in; (void)e;
    return HVQ_OK;
}
static hvq_status w_open(hvq_ctx *c, const hvq_params *p, const hvq_writer_setup *s,
                         void **st)
{
    (void)c; (void)p; (void)s; (void)st;
    return HVQ_OK;
}
static hvq_status w_tensor(hvq_ctx *c, void *s, const hvq_result *r)
{
    (void)c; (void)s; (void)r;
    return HVQ_OK;
}

/* A descriptor with every callback set; kinds chosen by the caller. */
/* Model callbacks (never called: the descriptor is only validated). */
static const hvq_model_linear m_linears[] = {{"w", "l.%d.w", "blk.%d.w", 0}, {NULL, NULL, NULL, 0}};
static hvq_status m_open(hvq_ctx *c, const hvq_params *p, const hvq_model_input *in, void **st)
{
    (void)c, (void)p, (void)in, (void)st;
    return HVQ_E_INTERNAL;
}
static void m_info(void *st, hvq_model_info *info)
{
    (void)st;
    memset(info, 0, sizeof *info);
}
static hvq_status m_window(hvq_ctx *c, void *st, const int32_t *t, int n, double *nll,
                           uint64_t *k)
{
    (void)c, (void)st, (void)t, (void)n, (void)nll, (void)k;
    return HVQ_E_INTERNAL;
}

static hvq_plugin full_desc(uint32_t kinds, const char *name)
{
    hvq_plugin d = {
        HVQ_PLUGIN_HEADER,
        .kinds = kinds,
        .name = name,
        .version = "1.0.0",
        .summary = "test descriptor",
        .license = "MIT",
        .probe = st_probe,
        .source_open = st_open,
        .source_count = st_count,
        .source_info = st_info,
        .source_read = st_read,
        .source_close = st_close,
        .sink_create = sk_create,
        .sink_write = sk_write,
        .sink_finish = sk_finish,
        .sink_close = st_close,
        .extensions = ".test",
        .hessian_open = h_open,
        .hessian_get = h_get,
        .hessian_close = st_close,
        .importance_score = i_score,
        .cluster_encode = c_encode,
        .cluster_decode = c_decode,
        .residual_count = r_count,
        .residual_encode = r_encode,
        .residual_decode = c_decode,
        .writer_open = w_open,
        .writer_tensor = w_tensor,
        .writer_finish = sk_finish,
        .writer_close = st_close,
        .architectures = "test",
        .model_linears = m_linears,
        .model_open = m_open,
        .model_info = m_info,
        .model_window = m_window,
        .model_close = st_close,
    };
    return d;
}

/* Validates d, expecting a refusal with exactly `want`. */
#define assert_refused(d, want)                                               \
    do {                                                                      \
        char why_[512] = "";                                                  \
        hvq_plugin dd_ = (d);                                                 \
        ck_assert_int_eq(hvq_plugin_validate(&dd_, why_, sizeof why_), HVQ_E_INPUT); \
        ck_assert_str_eq(why_, (want));                                       \
    } while (0)

#define assert_valid(d)                                                       \
    do {                                                                      \
        char why_[512] = "";                                                  \
        hvq_plugin dd_ = (d);                                                 \
        ck_assert_msg(hvq_plugin_validate(&dd_, why_, sizeof why_) == HVQ_OK,  \
                      "refused: %s", why_);                                   \
    } while (0)

START_TEST(validate_good)
{
    static const uint32_t kinds[] = {
        HVQ_KIND_SOURCE,     HVQ_KIND_SINK,      HVQ_KIND_SOURCE | HVQ_KIND_SINK,
        HVQ_KIND_HESSIAN,    HVQ_KIND_IMPORTANCE, HVQ_KIND_CLUSTERER,
        HVQ_KIND_RESIDUAL,   HVQ_KIND_WRITER,     HVQ_KIND_MODEL};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        assert_valid(full_desc(kinds[i], "good"));
    /* names: [a-z][a-z0-9_-]*, at most 64 characters */
    assert_valid(full_desc(HVQ_KIND_CLUSTERER, "a"));
    assert_valid(full_desc(HVQ_KIND_CLUSTERER, "k-means_2"));
    char name64[65];
    memset(name64, 'x', 64);
    name64[64] = '\0';
    assert_valid(full_desc(HVQ_KIND_CLUSTERER, name64));
    /* only the kind's own callbacks are needed */
    hvq_plugin d = {HVQ_PLUGIN_HEADER, .kinds = HVQ_KIND_IMPORTANCE, .name = "imp",
                    .version = "1", .summary = "s", .importance_score = i_score};
    assert_valid(d);
    /* parameters of every type */
    static const char *const ch[] = {"a", "b", NULL};
    static const hvq_param_spec ps[] = {
        {"i", HVQ_PARAM_INT, "1", 0, 4, NULL, "h"},
        {"f", HVQ_PARAM_FLOAT, "0.5", 0, 1, NULL, "h"},
        {"b", HVQ_PARAM_BOOL, "no", 0, 0, NULL, "h"},
        {"s", HVQ_PARAM_STRING, "", 0, 0, NULL, "h"},
        {"c", HVQ_PARAM_CHOICE, "a", 0, 0, ch, "h"},
        {"p_2", HVQ_PARAM_PATH, NULL, 0, 0, NULL, "h"},
        {NULL, 0, NULL, 0, 0, NULL, NULL},
    };
    d.params = ps;
    assert_valid(d);
}
END_TEST

START_TEST(validate_header)
{
    hvq_plugin d = full_desc(HVQ_KIND_CLUSTERER, "x");
    d.abi_version = HVQ_ABI_VERSION + 1;
    assert_refused(d, "built for plugin ABI 2, this hvqconv uses ABI 1");
    d.abi_version = 0;
    assert_refused(d, "built for plugin ABI 0, this hvqconv uses ABI 1");

    char want[256];
    d = full_desc(HVQ_KIND_CLUSTERER, "x");
    d.struct_size = (uint32_t)HVQ_PLUGIN_MIN_SIZE - 1;
    snprintf(want, sizeof want, "descriptor is %u bytes, shorter than the %zu bytes of ABI 1",
             (unsigned)HVQ_PLUGIN_MIN_SIZE - 1, (size_t)HVQ_PLUGIN_MIN_SIZE);
    assert_refused(d, want);
    d.struct_size = 8;
    snprintf(want, sizeof want, "descriptor is 8 bytes, shorter than the %zu bytes of ABI 1",
             (size_t)HVQ_PLUGIN_MIN_SIZE);
    assert_refused(d, want);
    d.struct_size = (uint32_t)HVQ_PLUGIN_MIN_SIZE;
    assert_valid(d);
    d.struct_size = (uint32_t)sizeof(hvq_plugin) + 64; /* a newer, bigger descriptor */
    assert_valid(d);
}
END_TEST

START_TEST(validate_names)
{
    assert_refused(full_desc(HVQ_KIND_CLUSTERER, "Bad Name"),
                   "invalid plugin name 'Bad Name' (want [a-z][a-z0-9_-]*)");
    assert_refused(full_desc(HVQ_KIND_CLUSTERER, NULL),
                   "invalid plugin name '(null)' (want [a-z][a-z0-9_-]*)");
    assert_refused(full_desc(HVQ_KIND_CLUSTERER, ""),
                   "invalid plugin name '' (want [a-z][a-z0-9_-]*)");
    assert_refused(full_desc(HVQ_KIND_CLUSTERER, "2bit"),
                   "invalid plugin name '2bit' (want [a-z][a-z0-9_-]*)");
    assert_refused(full_desc(HVQ_KIND_CLUSTERER, "-x"),
                   "invalid plugin name '-x' (want [a-z][a-z0-9_-]*)");
    assert_refused(full_desc(HVQ_KIND_CLUSTERER, "a.b"),
                   "invalid plugin name 'a.b' (want [a-z][a-z0-9_-]*)");
    char name65[66], want[160];
    memset(name65, 'x', 65);
    name65[65] = '\0';
    snprintf(want, sizeof want, "invalid plugin name '%s' (want [a-z][a-z0-9_-]*)", name65);
    assert_refused(full_desc(HVQ_KIND_CLUSTERER, name65), want);

    hvq_plugin d = full_desc(HVQ_KIND_CLUSTERER, "x");
    d.version = NULL;
    assert_refused(d, "plugin 'x' lacks a version or a summary");
    d.version = "";
    assert_refused(d, "plugin 'x' lacks a version or a summary");
    d = full_desc(HVQ_KIND_CLUSTERER, "x");
    d.summary = "";
    assert_refused(d, "plugin 'x' lacks a version or a summary");
}
END_TEST

START_TEST(validate_kinds)
{
    assert_refused(full_desc(0, "x"), "plugin 'x' declares invalid kinds 0x0");
    assert_refused(full_desc(1u << 8, "x"), "plugin 'x' declares invalid kinds 0x100");
    /* a model plugin also names its architectures and its linear layers,
     * and its descriptor reaches the model fields */
    hvq_plugin m = full_desc(HVQ_KIND_MODEL, "x");
    m.architectures = "";
    assert_refused(m, "model plugin 'x' lacks its architectures or its model_linears table");
    m = full_desc(HVQ_KIND_MODEL, "x");
    m.model_linears = NULL;
    assert_refused(m, "model plugin 'x' lacks its architectures or its model_linears table");
    m = full_desc(HVQ_KIND_MODEL, "x");
    m.struct_size = (uint32_t)offsetof(hvq_plugin, architectures);
    char short_why[200];
    snprintf(short_why, sizeof short_why, "model plugin 'x': descriptor is %u bytes, too short "
             "for the model callbacks (built for an older plugin.h?)", (unsigned)m.struct_size);
    assert_refused(m, short_why);
    assert_refused(full_desc(HVQ_KIND_CLUSTERER | (1u << 20), "x"),
                   "plugin 'x' declares invalid kinds 0x100010");
    static const uint32_t bad[] = {
        HVQ_KIND_CLUSTERER | HVQ_KIND_RESIDUAL,
        HVQ_KIND_HESSIAN | HVQ_KIND_IMPORTANCE,
        HVQ_KIND_SOURCE | HVQ_KIND_CLUSTERER,
        HVQ_KIND_SINK | HVQ_KIND_WRITER,
        HVQ_KIND_SOURCE | HVQ_KIND_SINK | HVQ_KIND_WRITER,
        0x7f,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_refused(full_desc(bad[i], "x"),
                       "plugin 'x' declares several kinds; only source and sink combine");
}
END_TEST

START_TEST(validate_callbacks)
{
    /* Every mandatory callback of every kind, removed one at a time. */
    static const struct {
        uint32_t kind;
        const char *kind_name, *field;
        size_t off;
    } need[] = {
#define N(k, kn, f) {k, kn, #f, offsetof(hvq_plugin, f)}
        N(HVQ_KIND_SOURCE, "source", source_open),
        N(HVQ_KIND_SOURCE, "source", source_count),
        N(HVQ_KIND_SOURCE, "source", source_info),
        N(HVQ_KIND_SOURCE, "source", source_read),
        N(HVQ_KIND_SOURCE, "source", source_close),
        N(HVQ_KIND_SINK, "sink", sink_create),
        N(HVQ_KIND_SINK, "sink", sink_write),
        N(HVQ_KIND_SINK, "sink", sink_finish),
        N(HVQ_KIND_SINK, "sink", sink_close),
        N(HVQ_KIND_HESSIAN, "hessian", hessian_open),
        N(HVQ_KIND_HESSIAN, "hessian", hessian_get),
        N(HVQ_KIND_HESSIAN, "hessian", hessian_close),
        N(HVQ_KIND_IMPORTANCE, "importance", importance_score),
        N(HVQ_KIND_CLUSTERER, "clusterer", cluster_encode),
        N(HVQ_KIND_CLUSTERER, "clusterer", cluster_decode),
        N(HVQ_KIND_RESIDUAL, "residual", residual_count),
        N(HVQ_KIND_RESIDUAL, "residual", residual_encode),
        N(HVQ_KIND_RESIDUAL, "residual", residual_decode),
        N(HVQ_KIND_WRITER, "writer", writer_open),
        N(HVQ_KIND_WRITER, "writer", writer_tensor),
        N(HVQ_KIND_WRITER, "writer", writer_finish),
        N(HVQ_KIND_WRITER, "writer", writer_close),
        N(HVQ_KIND_MODEL, "model", model_open),
        N(HVQ_KIND_MODEL, "model", model_info),
        N(HVQ_KIND_MODEL, "model", model_window),
        N(HVQ_KIND_MODEL, "model", model_close),
#undef N
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        char want[160];
        snprintf(want, sizeof want, "%s plugin lacks the mandatory callback %s",
                 need[i].kind_name, need[i].field);
        hvq_plugin d = full_desc(need[i].kind, "x");
        memset((char *)&d + need[i].off, 0, sizeof(void (*)(void)));
        assert_refused(d, want);
        /* a source+sink plugin needs both sets */
        if (need[i].kind == HVQ_KIND_SOURCE || need[i].kind == HVQ_KIND_SINK) {
            d.kinds = HVQ_KIND_SOURCE | HVQ_KIND_SINK;
            assert_refused(d, want);
        }
    }
    /* optional ones may be absent */
    hvq_plugin d = full_desc(HVQ_KIND_SOURCE | HVQ_KIND_SINK, "x");
    d.probe = NULL;
    d.source_meta = NULL;
    d.extensions = NULL;
    assert_valid(d);
}
END_TEST

START_TEST(validate_params)
{
    static const char *const none[] = {NULL};
    static const hvq_param_spec bad_name[] = {{"Group", HVQ_PARAM_INT, "0", 0, 0, NULL, ""},
                                              {NULL, 0, NULL, 0, 0, NULL, NULL}};
    static const hvq_param_spec bad_name2[] = {{"a-b", HVQ_PARAM_INT, "0", 0, 0, NULL, ""},
                                               {NULL, 0, NULL, 0, 0, NULL, NULL}};
    static const hvq_param_spec bad_type[] = {{"n", (hvq_param_type)0, "0", 0, 0, NULL, ""},
                                              {NULL, 0, NULL, 0, 0, NULL, NULL}};
    static const hvq_param_spec bad_type2[] = {{"n", (hvq_param_type)99, "0", 0, 0, NULL, ""},
                                               {NULL, 0, NULL, 0, 0, NULL, NULL}};
    static const hvq_param_spec no_choices[] = {{"m", HVQ_PARAM_CHOICE, "a", 0, 0, NULL, ""},
                                                {NULL, 0, NULL, 0, 0, NULL, NULL}};
    static const hvq_param_spec empty_choices[] = {
        {"m", HVQ_PARAM_CHOICE, "a", 0, 0, none, ""}, {NULL, 0, NULL, 0, 0, NULL, NULL}};
    static const hvq_param_spec reserved1[] = {{"plugin", HVQ_PARAM_STRING, "", 0, 0, NULL, ""},
                                               {NULL, 0, NULL, 0, 0, NULL, NULL}};
    static const hvq_param_spec reserved2[] = {{"match", HVQ_PARAM_STRING, "", 0, 0, NULL, ""},
                                               {NULL, 0, NULL, 0, 0, NULL, NULL}};
    static const hvq_param_spec twice[] = {{"k", HVQ_PARAM_INT, "1", 0, 0, NULL, ""},
                                           {"j", HVQ_PARAM_INT, "1", 0, 0, NULL, ""},
                                           {"k", HVQ_PARAM_FLOAT, "1", 0, 0, NULL, ""},
                                           {NULL, 0, NULL, 0, 0, NULL, NULL}};
    hvq_plugin d = full_desc(HVQ_KIND_CLUSTERER, "x");
    d.params = bad_name;
    assert_refused(d, "plugin 'x': invalid parameter name 'Group'");
    d.params = bad_name2;
    assert_refused(d, "plugin 'x': invalid parameter name 'a-b'");
    d.params = bad_type;
    assert_refused(d, "plugin 'x': parameter 'n' has unknown type 0");
    d.params = bad_type2;
    assert_refused(d, "plugin 'x': parameter 'n' has unknown type 99");
    d.params = no_choices;
    assert_refused(d, "plugin 'x': choice parameter 'm' has no choices");
    d.params = empty_choices;
    assert_refused(d, "plugin 'x': choice parameter 'm' has no choices");
    d.params = reserved1;
    assert_refused(d, "plugin 'x': parameter name 'plugin' is reserved");
    d.params = reserved2;
    assert_refused(d, "plugin 'x': parameter name 'match' is reserved");
    d.params = twice;
    assert_refused(d, "plugin 'x': parameter 'k' declared twice");
}
END_TEST

START_TEST(validate_short_why)
{
    /* A small buffer truncates the reason but never overflows it. */
    char why[8];
    memset(why, 'z', sizeof why);
    hvq_plugin d = full_desc(HVQ_KIND_CLUSTERER, "Bad Name");
    ck_assert_int_eq(hvq_plugin_validate(&d, why, sizeof why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "invalid");
}
END_TEST

/* ---- hvq_registry_add ---------------------------------------------------- */

START_TEST(add_in_memory)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = hvq_registry_new();
    ck_assert_ptr_nonnull(reg);
    hvq_plugin a = full_desc(HVQ_KIND_CLUSTERER, "alpha");
    ck_assert_int_eq(hvq_registry_add(reg, ctx, &a, "<test a>"), HVQ_OK);
    /* the registry keeps a copy: changing the original changes nothing */
    a.name = "changed";
    const hvq_loaded_plugin *lp = hvq_registry_find(reg, HVQ_KIND_CLUSTERER, "alpha");
    ck_assert_ptr_nonnull(lp);
    ck_assert_str_eq(lp->path, "<test a>");
    ck_assert_ptr_null(lp->dl);

    /* same name, same kind: refused with both origins */
    hvq_plugin b = full_desc(HVQ_KIND_CLUSTERER, "alpha");
    ck_assert_int_eq(hvq_registry_add(reg, ctx, &b, "<test b>"), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx),
                     "<test b>: plugin refused: duplicate clusterer plugin name 'alpha' "
                     "(already loaded from <test a>)");
    hvq_ctx_clear_error(ctx);
    /* same name, another kind: fine (names are unique per kind) */
    hvq_plugin c = full_desc(HVQ_KIND_RESIDUAL, "alpha");
    ck_assert_int_eq(hvq_registry_add(reg, ctx, &c, "<test c>"), HVQ_OK);
    /* a sink named like an existing source+sink clashes on the sink kind */
    hvq_plugin f = full_desc(HVQ_KIND_SOURCE | HVQ_KIND_SINK, "fmt");
    ck_assert_int_eq(hvq_registry_add(reg, ctx, &f, "<fmt>"), HVQ_OK);
    hvq_plugin g = full_desc(HVQ_KIND_SINK, "fmt");
    ck_assert_int_eq(hvq_registry_add(reg, ctx, &g, "<fmt2>"), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx),
                     "<fmt2>: plugin refused: duplicate sink plugin name 'fmt' "
                     "(already loaded from <fmt>)");
    /* an invalid one */
    hvq_plugin bad = full_desc(HVQ_KIND_CLUSTERER, "Bad Name");
    ck_assert_int_eq(hvq_registry_add(reg, ctx, &bad, "<bad>"), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx),
                     "<bad>: plugin refused: invalid plugin name 'Bad Name' "
                     "(want [a-z][a-z0-9_-]*)");
    ck_assert_uint_eq(hvq_registry_count(reg), 3);

    /* a descriptor from a newer header (bigger struct_size) is copied up to
     * what the host knows */
    unsigned char *big = calloc(1, sizeof(hvq_plugin) + 64);
    ck_assert_ptr_nonnull(big);
    hvq_plugin n = full_desc(HVQ_KIND_IMPORTANCE, "newer");
    n.struct_size = (uint32_t)sizeof(hvq_plugin) + 64;
    memcpy(big, &n, sizeof n);
    memset(big + sizeof n, 0xee, 64);
    ck_assert_int_eq(hvq_registry_add(reg, ctx, (const hvq_plugin *)big, "<newer>"), HVQ_OK);
    free(big);
    lp = hvq_registry_find(reg, HVQ_KIND_IMPORTANCE, "newer");
    ck_assert_ptr_nonnull(lp);
    ck_assert_ptr_eq(lp->desc.importance_score, i_score);
    ck_assert_uint_eq(hvq_registry_count(reg), 4);

    /* the registry's kind filter in lookups */
    ck_assert_ptr_null(hvq_registry_find(reg, HVQ_KIND_HESSIAN, "alpha"));
    ck_assert_ptr_nonnull(hvq_registry_find(reg, HVQ_KIND_RESIDUAL, "alpha"));
    ck_assert_ptr_nonnull(hvq_registry_find(reg, HVQ_KIND_SOURCE, "fmt"));
    ck_assert_ptr_eq(hvq_registry_find(reg, HVQ_KIND_SINK, "fmt"),
                     hvq_registry_find(reg, HVQ_KIND_SOURCE, "fmt"));
    ck_assert_str_eq(hvq_registry_find_any(reg, "alpha")->path, "<test a>");
    ck_assert_ptr_null(hvq_registry_find_any(reg, "nosuch"));
    ck_assert_ptr_null(hvq_registry_at(reg, 4));
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

/* ---- loading shared objects ---------------------------------------------- */

/* Loads one broken plugin into a registry holding the build tree's plugins
 * and checks the exact message and that nothing was added. */
static void expect_refused(const char *file, const char *reason)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    size_t before = hvq_registry_count(reg);
    const char *path = broken(file);
    char want[PATH_MAX + 512];
    snprintf(want, sizeof want, "%s: plugin refused: %s", path, reason);
    ck_assert_int_eq(hvq_registry_load_file(reg, ctx, path), HVQ_E_INPUT);
    ck_assert_int_eq(hvq_ctx_status(ctx), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), want);
    ck_assert_uint_eq(hvq_registry_count(reg), before);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}

START_TEST(load_wrong_abi)
{
    expect_refused("wrong_abi.so", "built for plugin ABI 2, this hvqconv uses ABI 1");
}
END_TEST

START_TEST(load_no_entry)
{
    expect_refused("no_entry.so", "no entry point hvq_plugin_entry()");
}
END_TEST

START_TEST(load_null_entry)
{
    expect_refused("null_entry.so", "hvq_plugin_entry() returned NULL");
}
END_TEST

START_TEST(load_short_desc)
{
    char reason[160];
    snprintf(reason, sizeof reason, "descriptor is %zu bytes, shorter than the %zu bytes of ABI 1",
             offsetof(hvq_plugin, writer_open), (size_t)HVQ_PLUGIN_MIN_SIZE);
    expect_refused("short_desc.so", reason);
}
END_TEST

START_TEST(load_bad_name)
{
    expect_refused("bad_name.so", "invalid plugin name 'Bad Name' (want [a-z][a-z0-9_-]*)");
}
END_TEST

START_TEST(load_no_decode)
{
    expect_refused("no_decode.so", "clusterer plugin lacks the mandatory callback cluster_decode");
}
END_TEST

START_TEST(load_two_kinds)
{
    expect_refused("two_kinds.so",
                   "plugin 'two-kinds' declares several kinds; only source and sink combine");
}
END_TEST

START_TEST(load_duplicate)
{
    char reason[PATH_MAX + 128];
    snprintf(reason, sizeof reason,
             "duplicate clusterer plugin name 'rtn' (already loaded from %s)",
             build("plugins/.libs/clusterer_rtn.so"));
    expect_refused("dup_rtn.so", reason);

    /* The other way round: whichever comes second is refused. */
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = hvq_registry_new();
    ck_assert_int_eq(hvq_registry_load_file(reg, ctx, broken("dup_rtn.so")), HVQ_OK);
    const char *rtn = build("plugins/.libs/clusterer_rtn.so");
    ck_assert_int_eq(hvq_registry_load_file(reg, ctx, rtn), HVQ_E_INPUT);
    char want[2 * PATH_MAX + 128];
    snprintf(want, sizeof want,
             "%s: plugin refused: duplicate clusterer plugin name 'rtn' (already loaded from %s)",
             rtn, broken("dup_rtn.so"));
    ck_assert_str_eq(hvq_ctx_error(ctx), want);
    ck_assert_uint_eq(hvq_registry_count(reg), 1);
    ck_assert_str_eq(hvq_registry_at(reg, 0)->desc.version, "0.0.1");
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(load_not_a_plugin)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = hvq_registry_new();
    char *dir = th_tmpdir("registry");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/garbage.so", dir);
    th_write_file(path, "not a shared object\n", 20);
    char prefix[PATH_MAX + 64];
    snprintf(prefix, sizeof prefix, "%s: plugin refused: cannot load: ", path);
    ck_assert_int_eq(hvq_registry_load_file(reg, ctx, path), HVQ_E_INPUT);
    ck_assert_msg(strncmp(hvq_ctx_error(ctx), prefix, strlen(prefix)) == 0, "got: %s",
                  hvq_ctx_error(ctx));
    ck_assert_msg(strchr(hvq_ctx_error(ctx), '\n') == NULL, "not one line: %s",
                  hvq_ctx_error(ctx));
    hvq_ctx_clear_error(ctx);
    snprintf(path, sizeof path, "%s/missing.so", dir);
    snprintf(prefix, sizeof prefix, "%s: plugin refused: cannot load: ", path);
    ck_assert_int_eq(hvq_registry_load_file(reg, ctx, path), HVQ_E_INPUT);
    ck_assert_msg(strncmp(hvq_ctx_error(ctx), prefix, strlen(prefix)) == 0, "got: %s",
                  hvq_ctx_error(ctx));
    ck_assert_uint_eq(hvq_registry_count(reg), 0);
    th_rmtree(dir);
    free(dir);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(load_good_ones)
{
    /* The good test plugin and both header compile tests load. */
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = hvq_registry_new();
    ck_assert_int_eq(hvq_registry_load_file(reg, ctx, broken("fp16.so")), HVQ_OK);
    ck_assert_int_eq(hvq_registry_load_file(reg, ctx, build("tests/.libs/header_c99.so")),
                     HVQ_OK);
    ck_assert_int_eq(hvq_registry_load_file(reg, ctx, build("tests/.libs/header_cxx.so")),
                     HVQ_OK);
    ck_assert_uint_eq(hvq_registry_count(reg), 3);
    const hvq_loaded_plugin *fp = hvq_registry_find(reg, HVQ_KIND_CLUSTERER, "fp16");
    ck_assert_ptr_nonnull(fp);
    ck_assert_str_eq(fp->path, broken("fp16.so"));
    ck_assert_ptr_nonnull(fp->dl);
    ck_assert_uint_eq(fp->desc.flags, HVQ_CLUSTERER_RAW);
    const hvq_loaded_plugin *c99 = hvq_registry_find(reg, HVQ_KIND_IMPORTANCE, "obd-c99");
    ck_assert_ptr_nonnull(c99);
    ck_assert_str_eq(c99->desc.params[0].name, "hessian_power");
    ck_assert_ptr_null(c99->desc.params[1].name);
    const hvq_loaded_plugin *cxx = hvq_registry_find(reg, HVQ_KIND_HESSIAN, "flat-cxx");
    ck_assert_ptr_nonnull(cxx);
    ck_assert_uint_eq(cxx->desc.struct_size, sizeof(hvq_plugin));
    ck_assert_ptr_null(cxx->desc.importance_score);

    /* and they work: the C++ Hessian through its open/get/close */
    hvq_value v = {.type = HVQ_PARAM_FLOAT, .f = 2.5, .s = "2.5"};
    hvq_params p = {1, &v, cxx->desc.params};
    void *state = NULL;
    ck_assert_int_eq(cxx->desc.hessian_open(ctx, &p, "model", &state), HVQ_OK);
    hvq_tensor_info ti = {.name = "w", .dtype = HVQ_DTYPE_F32, .ndim = 2, .shape = {2, 3}};
    float h[3] = {0};
    ck_assert_int_eq(cxx->desc.hessian_get(ctx, state, &ti, 2, 3, h), HVQ_OK);
    ck_assert(h[0] == 2.5f && h[1] == 2.5f && h[2] == 2.5f);
    cxx->desc.hessian_close(ctx, state);

    /* the fp16 clusterer round-trips through its components */
    const float x[6] = {1.0f, -2.5f, 0.1f, 65504.0f, -1e-7f, 3.0f};
    float recon[6], dec[6];
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    hvq_value none;
    memset(&none, 0, sizeof none);
    hvq_params np = {0, &none, NULL};
    hvq_cluster_input in = {.tensor_name = "w", .x = x, .rows = 2, .cols = 3};
    ck_assert_int_eq(fp->desc.cluster_encode(ctx, &np, &in, recon, &enc), HVQ_OK);
    ck_assert_int_eq(fp->desc.cluster_decode(ctx, &enc, 2, 3, dec), HVQ_OK);
    for (int i = 0; i < 6; i++) {
        ck_assert(recon[i] == hvq_f16_to_f32(hvq_f32_to_f16(x[i])));
        ck_assert(dec[i] == recon[i]);
    }
    ck_assert_uint_eq(enc.components[0].paper_bits, 6 * 16);
    hvq_encoded_clear(&enc);
    const float big[2] = {1.0f, 70000.0f};
    hvq_cluster_input in2 = {.tensor_name = "w.big", .x = big, .rows = 1, .cols = 2};
    hvq_encoded_init(&enc);
    ck_assert_int_eq(fp->desc.cluster_encode(ctx, &np, &in2, recon, &enc), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx),
                     "tensor 'w.big': value 70000 at [0, 1] is beyond the fp16 range");
    hvq_encoded_clear(&enc);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

/* The lines load_dir prints for tests/broken/.libs, in file-name order,
 * given the path of the plugin a dup_rtn.so clashes with (NULL: none). */
static char *expected_dir_warnings(const char *rtn_path)
{
    hvq_buf b;
    hvq_buf_init(&b);
    const char *w = "hvqconv: warning: ";
    hvq_buf_printf(&b, "%s%s: plugin refused: invalid plugin name 'Bad Name' "
                       "(want [a-z][a-z0-9_-]*)\n", w, broken("bad_name.so"));
    if (rtn_path)
        hvq_buf_printf(&b, "%s%s: plugin refused: duplicate clusterer plugin name 'rtn' "
                           "(already loaded from %s)\n", w, broken("dup_rtn.so"), rtn_path);
    hvq_buf_printf(&b, "%s%s: plugin refused: clusterer plugin lacks the mandatory callback "
                       "cluster_decode\n", w, broken("no_decode.so"));
    hvq_buf_printf(&b, "%s%s: plugin refused: no entry point hvq_plugin_entry()\n", w,
                   broken("no_entry.so"));
    hvq_buf_printf(&b, "%s%s: plugin refused: hvq_plugin_entry() returned NULL\n", w,
                   broken("null_entry.so"));
    hvq_buf_printf(&b, "%s%s: plugin refused: descriptor is %zu bytes, shorter than the %zu "
                       "bytes of ABI 1\n", w, broken("short_desc.so"),
                   offsetof(hvq_plugin, writer_open), (size_t)HVQ_PLUGIN_MIN_SIZE);
    hvq_buf_printf(&b, "%s%s: plugin refused: plugin 'two-kinds' declares several kinds; "
                       "only source and sink combine\n", w, broken("two_kinds.so"));
    hvq_buf_printf(&b, "%s%s: plugin refused: built for plugin ABI 2, this hvqconv uses "
                       "ABI 1\n", w, broken("wrong_abi.so"));
    ck_assert(!b.oom);
    return b.data;
}

START_TEST(load_dir_alone)
{
    /* Alone, the directory gives three plugins (asym, fp16 and the second
     * "rtn", which clashes with nothing) and one warning per broken
     * plugin. */
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = hvq_registry_new();
    capture c;
    capture_begin(&c);
    hvq_status st = hvq_registry_load_dir(reg, ctx, broken_dir());
    char *err = capture_end(&c);
    ck_assert_int_eq(st, HVQ_OK);
    ck_assert_int_eq(hvq_ctx_status(ctx), HVQ_OK); /* refusals are only logged */
    char *want = expected_dir_warnings(NULL);
    ck_assert_str_eq(err, want);
    ck_assert_uint_eq(count_lines(err), 7);
    ck_assert_uint_eq(hvq_registry_count(reg), 3);
    /* asym_h.so < dup_rtn.so < fp16.so */
    ck_assert_str_eq(hvq_registry_at(reg, 0)->desc.name, "asym");
    ck_assert_str_eq(hvq_registry_at(reg, 1)->desc.name, "rtn");
    ck_assert_str_eq(hvq_registry_at(reg, 2)->desc.name, "fp16");
    free(err);
    free(want);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(load_dir_after_builtin)
{
    /* After the build tree's plugins, the second "rtn" is refused too. */
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    size_t before = hvq_registry_count(reg);
    capture c;
    capture_begin(&c);
    hvq_status st = hvq_registry_load_dir(reg, ctx, broken_dir());
    char *err = capture_end(&c);
    ck_assert_int_eq(st, HVQ_OK);
    char *want = expected_dir_warnings(build("plugins/.libs/clusterer_rtn.so"));
    ck_assert_str_eq(err, want);
    ck_assert_uint_eq(count_lines(err), 8);
    ck_assert_uint_eq(hvq_registry_count(reg), before + 2);
    ck_assert_ptr_nonnull(hvq_registry_find(reg, HVQ_KIND_CLUSTERER, "fp16"));
    ck_assert_ptr_nonnull(hvq_registry_find(reg, HVQ_KIND_HESSIAN, "asym"));
    ck_assert_str_eq(hvq_registry_find(reg, HVQ_KIND_CLUSTERER, "rtn")->path,
                     build("plugins/.libs/clusterer_rtn.so"));
    free(err);
    free(want);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(load_dir_twice)
{
    /* The same files seen twice (a directory listed twice, or reached
     * through two paths) are the same plugins: no duplicate warnings. */
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    size_t before = hvq_registry_count(reg);
    char other[PATH_MAX];
    snprintf(other, sizeof other, "%s/plugins/../plugins/.libs", th_builddir());
    capture c;
    capture_begin(&c);
    ck_assert_int_eq(hvq_registry_load_dir(reg, ctx, build("plugins/.libs")), HVQ_OK);
    ck_assert_int_eq(hvq_registry_load_dir(reg, ctx, other), HVQ_OK);
    char *err = capture_end(&c);
    ck_assert_str_eq(err, "");
    ck_assert_uint_eq(hvq_registry_count(reg), before);
    free(err);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(load_dir_missing)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = hvq_registry_new();
    ck_assert_int_eq(hvq_registry_load_dir(reg, ctx, "/nonexistent/hvqconv/plugins"), HVQ_OK);
    ck_assert_uint_eq(hvq_registry_count(reg), 0);
    ck_assert_str_eq(hvq_ctx_error(ctx), "");
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

/* ---- lookups ------------------------------------------------------------- */

START_TEST(lookups)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    const hvq_loaded_plugin *st = hvq_registry_find(reg, HVQ_KIND_SOURCE, "safetensors");
    ck_assert_ptr_nonnull(st);
    ck_assert_uint_eq(st->desc.kinds, HVQ_KIND_SOURCE | HVQ_KIND_SINK);
    ck_assert_ptr_eq(hvq_registry_find(reg, HVQ_KIND_SINK, "safetensors"), st);
    ck_assert_str_eq(st->path, build("formats/.libs/safetensors.so"));
    static const struct {
        uint32_t kind;
        const char *name, *file;
    } builtin[] = {
        {HVQ_KIND_HESSIAN, "uniform", "plugins/.libs/hessian_uniform.so"},
        {HVQ_KIND_IMPORTANCE, "magnitude", "plugins/.libs/importance_magnitude.so"},
        {HVQ_KIND_CLUSTERER, "rtn", "plugins/.libs/clusterer_rtn.so"},
        {HVQ_KIND_RESIDUAL, "none", "plugins/.libs/residual_none.so"},
        {HVQ_KIND_WRITER, "dequant", "plugins/.libs/writer_dequant.so"},
    };
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        const hvq_loaded_plugin *lp = hvq_registry_find(reg, builtin[i].kind, builtin[i].name);
        ck_assert_msg(lp != NULL, "%s not found", builtin[i].name);
        ck_assert_str_eq(lp->path, build(builtin[i].file));
        ck_assert_uint_eq(lp->desc.kinds, builtin[i].kind);
        ck_assert_ptr_eq(hvq_registry_find_any(reg, builtin[i].name), lp);
        /* the kind filter */
        ck_assert_ptr_null(hvq_registry_find(reg, HVQ_KIND_SOURCE, builtin[i].name));
    }
    ck_assert_ptr_null(hvq_registry_find(reg, HVQ_KIND_CLUSTERER, "RTN"));
    ck_assert_ptr_nonnull(hvq_registry_find(reg, ~0u, "rtn"));
    for (size_t i = 0; i < hvq_registry_count(reg); i++)
        ck_assert_ptr_nonnull(hvq_registry_at(reg, i));
    ck_assert_ptr_null(hvq_registry_at(reg, hvq_registry_count(reg)));

    /* suggestions, restricted to the kind */
    ck_assert_str_eq(hvq_registry_suggest(reg, HVQ_KIND_CLUSTERER, "rnt"), "rtn");
    ck_assert_str_eq(hvq_registry_suggest(reg, HVQ_KIND_CLUSTERER, "rtm"), "rtn");
    ck_assert_str_eq(hvq_registry_suggest(reg, HVQ_KIND_HESSIAN, "unifrom"), "uniform");
    ck_assert_str_eq(hvq_registry_suggest(reg, HVQ_KIND_WRITER, "dequnt"), "dequant");
    ck_assert_str_eq(hvq_registry_suggest(reg, HVQ_KIND_SINK, "safetensor"), "safetensors");
    ck_assert_str_eq(hvq_registry_suggest(reg, ~0u, "magnitud"), "magnitude");
    ck_assert_ptr_null(hvq_registry_suggest(reg, HVQ_KIND_HESSIAN, "rtn"));
    ck_assert_ptr_null(hvq_registry_suggest(reg, HVQ_KIND_CLUSTERER, "completely-different"));

    /* format detection and sinks by extension */
    ck_assert_ptr_eq(hvq_registry_detect(reg, ctx, th_src("models/stories260K")), st);
    ck_assert_ptr_eq(
        hvq_registry_detect(reg, ctx, th_src("models/stories260K/model.safetensors")), st);
    const char *cfg = th_src("models/stories260K/config.json");
    ck_assert_ptr_null(hvq_registry_detect(reg, ctx, cfg));
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "%s: not a model file of any supported format (", cfg);
    ck_assert_msg(strncmp(hvq_ctx_error(ctx), want, strlen(want)) == 0, "got: %s",
                  hvq_ctx_error(ctx));
    th_assert_contains(hvq_ctx_error(ctx), "safetensors");
    ck_assert_int_eq(hvq_ctx_status(ctx), HVQ_E_INPUT);
    hvq_ctx_clear_error(ctx);
    ck_assert_ptr_null(hvq_registry_detect(reg, ctx, "/nonexistent/model.safetensors"));
    ck_assert_str_eq(hvq_ctx_error(ctx),
                     "/nonexistent/model.safetensors: cannot open: No such file or directory");
    hvq_ctx_clear_error(ctx);
    ck_assert_ptr_eq(hvq_registry_sink_for(reg, ctx, "out/x.safetensors"), st);
    ck_assert_ptr_eq(hvq_registry_sink_for(reg, ctx, "x.safetensors"), st);
    ck_assert_ptr_null(hvq_registry_sink_for(reg, ctx, "out/x.weights"));
    th_assert_contains(hvq_ctx_error(ctx), "out/x.weights: cannot tell the output format from "
                                           "the file name (output formats: ");
    th_assert_contains(hvq_ctx_error(ctx), "safetensors");
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(kind_names)
{
    char buf[128];
    ck_assert_str_eq(hvq_kind_names(HVQ_KIND_SOURCE | HVQ_KIND_SINK, buf, sizeof buf),
                     "source,sink");
    ck_assert_str_eq(hvq_kind_names(HVQ_KIND_CLUSTERER, buf, sizeof buf), "clusterer");
    ck_assert_str_eq(hvq_kind_names(HVQ_KIND_HESSIAN, buf, sizeof buf), "hessian");
    ck_assert_str_eq(hvq_kind_names(HVQ_KIND_IMPORTANCE, buf, sizeof buf), "importance");
    ck_assert_str_eq(hvq_kind_names(HVQ_KIND_RESIDUAL, buf, sizeof buf), "residual");
    ck_assert_str_eq(hvq_kind_names(HVQ_KIND_WRITER, buf, sizeof buf), "writer");
    ck_assert_str_eq(hvq_kind_names(0x7f, buf, sizeof buf),
                     "source,sink,hessian,importance,clusterer,residual,writer");
    ck_assert_str_eq(hvq_kind_names(0, buf, sizeof buf), "");
    ck_assert_str_eq(hvq_kind_names(1u << 9, buf, sizeof buf), ""); /* unknown bits */
    /* a short buffer stays terminated */
    char small[5];
    hvq_kind_names(HVQ_KIND_CLUSTERER, small, sizeof small);
    ck_assert_uint_lt(strlen(small), sizeof small);
}
END_TEST

/* ---- top-k --------------------------------------------------------------- */

static const float *ref_scores;

static int ref_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    float sx = ref_scores[x], sy = ref_scores[y];
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Brute force: sort all indices by (score desc, index asc), keep k, sort. */
static void ref_top_k(const float *s, uint64_t n, uint64_t k, uint64_t *out)
{
    uint64_t *idx = malloc((n ? n : 1) * sizeof *idx);
    ck_assert_ptr_nonnull(idx);
    for (uint64_t i = 0; i < n; i++)
        idx[i] = i;
    ref_scores = s;
    qsort(idx, n, sizeof *idx, ref_cmp);
    memcpy(out, idx, k * sizeof *out);
    qsort(out, k, sizeof *out, u64_cmp);
    free(idx);
}

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void check_top_k(hvq_ctx *ctx, const float *s, uint64_t n, uint64_t k)
{
    uint64_t *got = malloc((k ? k : 1) * sizeof *got), *want = malloc((k ? k : 1) * sizeof *want);
    ck_assert(got && want);
    ck_assert_int_eq(hvq_top_k(ctx, s, n, k, got), HVQ_OK);
    ref_top_k(s, n, k, want);
    for (uint64_t i = 0; i < k; i++)
        assert_fast(got[i] == want[i], "n=%llu k=%llu: pos[%llu] = %llu, want %llu",
                    (unsigned long long)n, (unsigned long long)k, (unsigned long long)i,
                    (unsigned long long)got[i], (unsigned long long)want[i]);
    free(got);
    free(want);
}

START_TEST(top_k_random)
{
    hvq_ctx *ctx = th_ctx();
    static const uint64_t sizes[] = {1, 2, 3, 10, 257, 4096};
    float *s = malloc(4096 * sizeof *s);
    ck_assert_ptr_nonnull(s);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        uint64_t n = sizes[si];
        for (int variant = 0; variant < 4; variant++) {
            for (uint64_t i = 0; i < n; i++) {
                switch (variant) {
                case 0: /* distinct-ish reals */
                    s[i] = (float)((double)(rng() >> 11) / 9007199254740992.0);
                    break;
                case 1: /* heavy ties: 5 levels */
                    s[i] = (float)(rng() % 5);
                    break;
                case 2: /* sorted ascending: worst case for a naive pivot */
                    s[i] = (float)i;
                    break;
                default: /* negatives, infinities, signed zeros */
                    switch (rng() % 6) {
                    case 0: s[i] = -INFINITY; break;
                    case 1: s[i] = INFINITY; break;
                    case 2: s[i] = -0.0f; break;
                    case 3: s[i] = 0.0f; break;
                    default: s[i] = -(float)(rng() % 100);
                    }
                }
            }
            const uint64_t ks[] = {0, 1, n / 3, n / 2, n - 1, n};
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
                check_top_k(ctx, s, n, ks[ki]);
        }
    }
    free(s);
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(top_k_ties_and_edges)
{
    hvq_ctx *ctx = th_ctx();
    /* all equal: the lowest indices win */
    float eq[8];
    uint64_t pos[8];
    for (int i = 0; i < 8; i++)
        eq[i] = 0.5f;
    ck_assert_int_eq(hvq_top_k(ctx, eq, 8, 3, pos), HVQ_OK);
    ck_assert(pos[0] == 0 && pos[1] == 1 && pos[2] == 2);
    /* a tie across the cut: index 1 beats index 4 */
    const float t[6] = {1.0f, 3.0f, 2.0f, 5.0f, 3.0f, 0.0f};
    ck_assert_int_eq(hvq_top_k(ctx, t, 6, 2, pos), HVQ_OK);
    ck_assert(pos[0] == 1 && pos[1] == 3);
    ck_assert_int_eq(hvq_top_k(ctx, t, 6, 3, pos), HVQ_OK);
    ck_assert(pos[0] == 1 && pos[1] == 3 && pos[2] == 4);
    /* -0 and +0 are equal scores */
    const float z[2] = {-0.0f, 0.0f};
    ck_assert_int_eq(hvq_top_k(ctx, z, 2, 1, pos), HVQ_OK);
    ck_assert_uint_eq(pos[0], 0);
    /* k = n: everything, ascending */
    ck_assert_int_eq(hvq_top_k(ctx, t, 6, 6, pos), HVQ_OK);
    for (uint64_t i = 0; i < 6; i++)
        ck_assert_uint_eq(pos[i], i);
    /* k = 0 writes nothing (and n = 0 is fine) */
    pos[0] = 12345;
    ck_assert_int_eq(hvq_top_k(ctx, t, 6, 0, pos), HVQ_OK);
    ck_assert_uint_eq(pos[0], 12345);
    ck_assert_int_eq(hvq_top_k(ctx, NULL, 0, 0, pos), HVQ_OK);
    /* k > n is a bug in the caller */
    ck_assert_int_eq(hvq_top_k(ctx, t, 6, 7, pos), HVQ_E_INTERNAL);
    hvq_ctx_clear_error(ctx);
    /* a NaN score is bad input, wherever it is */
    float nan_s[5] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
    nan_s[3] = NAN;
    ck_assert_int_eq(hvq_top_k(ctx, nan_s, 5, 2, pos), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), "importance score is NaN at entry 3");
    hvq_ctx_clear_error(ctx);
    nan_s[3] = 4.0f;
    nan_s[0] = -NAN;
    ck_assert_int_eq(hvq_top_k(ctx, nan_s, 5, 5, pos), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), "importance score is NaN at entry 0");
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(top_k_large)
{
    /* 2^20 scores with heavy ties, k in the middle: exact and quick. */
    hvq_ctx *ctx = th_ctx();
    uint64_t n = 1u << 20, k = 12345;
    float *s = malloc(n * sizeof *s);
    ck_assert_ptr_nonnull(s);
    for (uint64_t i = 0; i < n; i++)
        s[i] = (float)(rng() % 1000) * 0.25f;
    check_top_k(ctx, s, n, k);
    /* descending input */
    for (uint64_t i = 0; i < n; i++)
        s[i] = (float)(n - i);
    check_top_k(ctx, s, n, k);
    free(s);
    hvq_ctx_free(ctx);
}
END_TEST

/* ---- seeds --------------------------------------------------------------- */

START_TEST(tensor_seed)
{
    /* Reference values from an independent implementation of the
     * documented mix (FNV-1a of the name, splitmix64): the seeds of a
     * pipeline must not change between versions or machines. */
    ck_assert_uint_eq(hvq_tensor_seed(42, "model.layers.0.self_attn.q_proj.weight"),
                      0xbc20ff1efede7a9dull);
    ck_assert_uint_eq(hvq_tensor_seed(0, ""), 0x21fa69a58f3d62f5ull);
    ck_assert_uint_eq(hvq_tensor_seed(7, "lm_head.weight"), 0x869db4fa916b5f46ull);
    ck_assert_uint_eq(hvq_tensor_seed(42, "lm_head.weight"), 0xf16d76ab802a624bull);
    /* deterministic, and sensitive to both inputs */
    ck_assert_uint_eq(hvq_tensor_seed(1, "a"), hvq_tensor_seed(1, "a"));
    ck_assert_uint_ne(hvq_tensor_seed(1, "a"), hvq_tensor_seed(2, "a"));
    ck_assert_uint_ne(hvq_tensor_seed(1, "a"), hvq_tensor_seed(1, "b"));
    ck_assert_uint_ne(hvq_tensor_seed(1, "ab"), hvq_tensor_seed(1, "ba"));
    /* no collisions among the names of a model */
    uint64_t seen[64];
    for (int i = 0; i < 64; i++) {
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", i);
        seen[i] = hvq_tensor_seed(42, name);
        for (int j = 0; j < i; j++)
            ck_assert_uint_ne(seen[i], seen[j]);
    }
}
END_TEST

/* ---- dtypes -------------------------------------------------------------- */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* fp16 value of h, computed with ldexp: an independent decoder. */
static double ref_f16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0x1f)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, -24);
    else
        v = ldexp((double)(m | 0x400), e - 25);
    return s ? -v : v;
}

/* Round-to-nearest-even of a finite float to fp16, by arithmetic on the
 * value (not on the bit layout): an independent encoder. */
static uint16_t ref_f32_to_f16(float f)
{
    double v = fabs((double)f);
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (isnan(f))
        return 0x7e00;
    if (isinf(f))
        return sign | 0x7c00;
    if (v == 0.0)
        return sign;
    int e;
    frexp(v, &e); /* v = m * 2^e, m in [0.5, 1) */
    int ulp = e - 11 < -24 ? -24 : e - 11;
    double q = nearbyint(ldexp(v, -ulp)); /* default rounding: to nearest even */
    double r = ldexp(q, ulp);
    if (r > 65504.0)
        return sign | 0x7c00;
    if (r < ldexp(1.0, -14)) /* subnormal (or zero): mantissa in units of 2^-24 */
        return sign | (uint16_t)ldexp(r, 24);
    int re;
    double rm = frexp(r, &re); /* r = rm * 2^re, rm in [0.5, 1) */
    uint16_t exp = (uint16_t)(re - 1 + 15);
    uint16_t man = (uint16_t)(ldexp(rm, 11) - 1024.0);
    return sign | (uint16_t)(exp << 10) | man;
}

/* Round-to-nearest-even of a finite float to bf16: the nearer of the two
 * truncations, ties to the even one. */
static uint16_t ref_f32_to_bf16(float f)
{
    uint32_t u = bits_of(f);
    if (isnan(f))
        return 0x7fc0;
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double dl = fabs((double)float_of(lo) - (double)f);
    double dh = isinf(float_of(hi)) || (hi & 0x7f800000u) == 0x7f800000u
                    ? fabs(ldexp(1.0, 128) - fabs((double)f)) /* the next step is inf */
                    : fabs((double)float_of(hi) - (double)f);
    if (dl < dh)
        return (uint16_t)(lo >> 16);
    if (dh < dl)
        return (uint16_t)(hi >> 16);
    return (uint16_t)(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

START_TEST(f16_reference_values)
{
    const struct {
        float f;
        uint16_t h;
    } tab[] = {
        {0.0f, 0x0000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {0.5f, 0x3800},
        {65504.0f, 0x7bff},                /* largest normal */
        {65519.99f, 0x7bff},               /* just below the halfway point */
        {65520.0f, 0x7c00},                /* halfway to 65536: ties to even = inf */
        {1e6f, 0x7c00},                    /* overflow to inf */
        {-1e6f, 0xfc00},
        {6.103515625e-05f, 0x0400},        /* 2^-14, smallest normal */
        {6.097555160522461e-05f, 0x03ff},  /* largest subnormal */
        {5.960464477539063e-08f, 0x0001},  /* 2^-24, smallest subnormal */
        {2.9802322387695312e-08f, 0x0000}, /* 2^-25: halfway, ties to even (0) */
        {nextafterf(0x1p-25f, 1.0f), 0x0001}, /* just above 2^-25 */
        {8.940696716308594e-08f, 0x0002},  /* 1.5 * 2^-24: tie, to even (2) */
        {1.4901161193847656e-07f, 0x0002}, /* 2.5 * 2^-24: tie, to even (2) */
        {1e-8f, 0x0000},                   /* underflow */
        {-1e-8f, 0x8000},                  /* underflow keeps the sign */
        {1.00048828125f, 0x3c00},          /* 1 + 2^-11: tie, to even */
        {1.00146484375f, 0x3c02},          /* 1 + 3*2^-11: tie, to even */
        {nextafterf(1.00048828125f, 2.0f), 0x3c01}, /* just above the tie */
        {nextafterf(1.00146484375f, 0.0f), 0x3c01}, /* just below the tie */
        {0.333333343f, 0x3555},
        {3.14159274f, 0x4248},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        ck_assert_msg(hvq_f32_to_f16(tab[i].f) == tab[i].h, "%a -> 0x%04x, want 0x%04x",
                      (double)tab[i].f, hvq_f32_to_f16(tab[i].f), tab[i].h);
    ck_assert_uint_eq(hvq_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(hvq_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(hvq_f32_to_f16(-INFINITY), 0xfc00);
    /* NaN stays NaN (quiet), also a signalling NaN with a low payload */
    uint16_t n = hvq_f32_to_f16(NAN);
    ck_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
    n = hvq_f32_to_f16(float_of(0x7f800001u));
    ck_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
    n = hvq_f32_to_f16(float_of(0xff800001u));
    ck_assert((n & 0xfc00) == 0xfc00 && (n & 0x3ff) != 0);
    ck_assert(isnan(hvq_f16_to_f32(0x7e00)));
    ck_assert(isnan(hvq_f16_to_f32(0x7c01)));
    ck_assert(hvq_f16_to_f32(0x7c00) == INFINITY);
    ck_assert(hvq_f16_to_f32(0xfc00) == -INFINITY);
    ck_assert(signbit(hvq_f16_to_f32(0x8000)) && hvq_f16_to_f32(0x8000) == 0.0f);
}
END_TEST

START_TEST(f16_exhaustive)
{
    /* Every fp16 value decodes to its exact value and encodes back to
     * itself. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = hvq_f16_to_f32((uint16_t)h);
        double want = ref_f16_value((uint16_t)h);
        if (isnan(want)) {
            assert_fast(isnan(f), "0x%04x", h);
            continue;
        }
        assert_fast((double)f == want && !signbit(f) == !signbit(want), "0x%04x -> %a", h,
                    (double)f);
        assert_fast(hvq_f32_to_f16(f) == h, "0x%04x round trip -> 0x%04x", h,
                    hvq_f32_to_f16(f));
    }
    /* Random floats of every exponent, and every tie point, against the
     * independent encoder. */
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)rng();
        float f = float_of(u);
        if (isnan(f))
            continue;
        assert_fast(hvq_f32_to_f16(f) == ref_f32_to_f16(f),
                    "%a (0x%08x) -> 0x%04x, want 0x%04x", (double)f, u, hvq_f32_to_f16(f),
                    ref_f32_to_f16(f));
    }
    for (uint32_t h = 0; h < 0x7bff; h++) {
        /* the midpoint between h and h+1 and its neighbours */
        double mid = (ref_f16_value((uint16_t)h) + ref_f16_value((uint16_t)(h + 1))) / 2;
        float f = (float)mid;
        if ((double)f != mid)
            continue;
        for (int d = -1; d <= 1; d++) {
            float g = float_of(bits_of(f) + (uint32_t)d);
            assert_fast(hvq_f32_to_f16(g) == ref_f32_to_f16(g), "%a -> 0x%04x, want 0x%04x",
                        (double)g, hvq_f32_to_f16(g), ref_f32_to_f16(g));
            assert_fast(hvq_f32_to_f16(-g) == ref_f32_to_f16(-g), "%a", (double)-g);
        }
    }
}
END_TEST

START_TEST(bf16_values)
{
    const struct {
        float f;
        uint16_t h;
    } tab[] = {
        {1.0f, 0x3f80},
        {-2.0f, 0xc000},
        {1.00390625f, 0x3f80},   /* 1 + 2^-8: tie, to even */
        {1.01171875f, 0x3f82},   /* 1 + 3*2^-8: tie, to even */
        {nextafterf(1.00390625f, 2.0f), 0x3f81}, /* just above the tie */
        {nextafterf(1.01171875f, 0.0f), 0x3f81}, /* just below the tie */
        {3.14159274f, 0x4049},
        {3.389531389e38f, 0x7f7f}, /* largest finite bf16 */
        {3.4028235e38f, 0x7f80},   /* FLT_MAX rounds up to inf */
        {1e-40f, 0x0001},          /* f32 subnormal -> bf16 subnormal */
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        ck_assert_msg(hvq_f32_to_bf16(tab[i].f) == tab[i].h, "%a -> 0x%04x, want 0x%04x",
                      (double)tab[i].f, hvq_f32_to_bf16(tab[i].f), tab[i].h);
    ck_assert_uint_eq(hvq_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert_uint_eq(hvq_f32_to_bf16(-INFINITY), 0xff80);
    ck_assert_uint_eq(hvq_f32_to_bf16(-0.0f), 0x8000);
    uint16_t n = hvq_f32_to_bf16(float_of(0x7f800001u)); /* sNaN: low payload only */
    ck_assert((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = hvq_bf16_to_f32((uint16_t)h);
        assert_fast(bits_of(f) == h << 16, "0x%04x", h);
        assert_fast(isnan(f) || hvq_f32_to_bf16(f) == h, "0x%04x round trip", h);
    }
    for (int i = 0; i < 2000000; i++) {
        float f = float_of((uint32_t)rng());
        if (isnan(f))
            continue;
        assert_fast(hvq_f32_to_bf16(f) == ref_f32_to_bf16(f), "%a -> 0x%04x, want 0x%04x",
                    (double)f, hvq_f32_to_bf16(f), ref_f32_to_bf16(f));
    }
}
END_TEST

START_TEST(convert_arrays)
{
    hvq_ctx *ctx = th_ctx();
    const float src[5] = {1.0f, -0.5f, 65520.0f, 1e-8f, 3.14159274f};
    uint16_t h[5];
    unsigned char hb[10];
    float back[5];
    double d[5];
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F16, h, HVQ_DTYPE_F32, src, 5), HVQ_OK);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(h[i], hvq_f32_to_f16(src[i]));
    /* unaligned source and destination buffers work (little-endian data in
     * a file need not be aligned) */
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F16, hb + 1, HVQ_DTYPE_F32, src, 4), HVQ_OK);
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F32, back, HVQ_DTYPE_F16, hb + 1, 4), HVQ_OK);
    ck_assert(back[0] == 1.0f && back[1] == -0.5f && isinf(back[2]) && back[3] == 0.0f);
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_BF16, h, HVQ_DTYPE_F32, src, 5), HVQ_OK);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(h[i], hvq_f32_to_bf16(src[i]));
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F32, back, HVQ_DTYPE_BF16, h, 5), HVQ_OK);
    for (int i = 0; i < 5; i++)
        ck_assert(back[i] == hvq_bf16_to_f32(h[i]));
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F64, d, HVQ_DTYPE_F32, src, 5), HVQ_OK);
    for (int i = 0; i < 5; i++)
        ck_assert(d[i] == (double)src[i]);
    d[0] = 0.1; /* F64 -> F32 rounds to nearest */
    d[1] = 1e300;
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F32, back, HVQ_DTYPE_F64, d, 2), HVQ_OK);
    ck_assert(back[0] == 0.1f && isinf(back[1]));
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F32, back, HVQ_DTYPE_F32, src, 5), HVQ_OK);
    ck_assert_mem_eq(back, src, sizeof src);
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F32, back, HVQ_DTYPE_F16, h, 0), HVQ_OK);

    /* other pairs are unsupported, with a message */
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F32, back, HVQ_DTYPE_I8, src, 1),
                     HVQ_E_UNSUPPORTED);
    ck_assert_str_eq(hvq_ctx_error(ctx), "no conversion from I8 to F32");
    ck_assert_int_eq(hvq_convert(ctx, HVQ_DTYPE_F16, h, HVQ_DTYPE_BF16, src, 1),
                     HVQ_E_UNSUPPORTED);
    ck_assert_str_eq(hvq_ctx_error(ctx), "no conversion from BF16 to F16");
    ck_assert_int_eq(hvq_convert(NULL, HVQ_DTYPE_I32, h, HVQ_DTYPE_F32, src, 1),
                     HVQ_E_UNSUPPORTED);
    /* through the host table, as plugins call it */
    ck_assert_int_eq(ctx->host->convert(ctx, HVQ_DTYPE_F16, h, HVQ_DTYPE_F32, src, 1), HVQ_OK);
    ck_assert_uint_eq(h[0], 0x3c00);
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(dtype_tables)
{
    static const struct {
        hvq_dtype t;
        size_t size;
        const char *name;
        int is_float;
    } tab[] = {
        {HVQ_DTYPE_OPAQUE, 0, "OPAQUE", 0}, {HVQ_DTYPE_F32, 4, "F32", 1},
        {HVQ_DTYPE_F16, 2, "F16", 1},       {HVQ_DTYPE_BF16, 2, "BF16", 1},
        {HVQ_DTYPE_F64, 8, "F64", 1},       {HVQ_DTYPE_I8, 1, "I8", 0},
        {HVQ_DTYPE_U8, 1, "U8", 0},         {HVQ_DTYPE_I16, 2, "I16", 0},
        {HVQ_DTYPE_U16, 2, "U16", 0},       {HVQ_DTYPE_I32, 4, "I32", 0},
        {HVQ_DTYPE_U32, 4, "U32", 0},       {HVQ_DTYPE_I64, 8, "I64", 0},
        {HVQ_DTYPE_U64, 8, "U64", 0},       {HVQ_DTYPE_BOOL, 1, "BOOL", 0},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        ck_assert_uint_eq(hvq_dtype_size(tab[i].t), tab[i].size);
        ck_assert_str_eq(hvq_dtype_name(tab[i].t), tab[i].name);
        ck_assert_int_eq(hvq_dtype_is_float(tab[i].t), tab[i].is_float);
    }
    ck_assert_str_eq(hvq_dtype_name((hvq_dtype)99), "OPAQUE");
    ck_assert_uint_eq(hvq_dtype_size((hvq_dtype)99), 0);
    ck_assert_int_eq(hvq_dtype_parse_float("f32"), HVQ_DTYPE_F32);
    ck_assert_int_eq(hvq_dtype_parse_float("Float32"), HVQ_DTYPE_F32);
    ck_assert_int_eq(hvq_dtype_parse_float("half"), HVQ_DTYPE_F16);
    ck_assert_int_eq(hvq_dtype_parse_float("F16"), HVQ_DTYPE_F16);
    ck_assert_int_eq(hvq_dtype_parse_float("bfloat16"), HVQ_DTYPE_BF16);
    ck_assert_int_eq(hvq_dtype_parse_float("f64"), HVQ_DTYPE_F64);
    ck_assert_int_eq(hvq_dtype_parse_float("int8"), HVQ_DTYPE_OPAQUE);
    ck_assert_int_eq(hvq_dtype_parse_float(""), HVQ_DTYPE_OPAQUE);
}
END_TEST

/* hvq_shape_numel: the non-zero dimensions multiply to at most INT64_MAX,
 * whatever the order and wherever a zero stands; checked against the
 * product in 128 bits. */
START_TEST(shape_rule)
{
    const unsigned __int128 M = INT64_MAX;
    static const struct {
        int ndim;
        int64_t shape[4];
        int ok;
    } tab[] = {
        {0, {0}, 1},
        {1, {0}, 1},
        {2, {4, 16}, 1},
        {1, {INT64_MAX}, 1},
        {2, {1, INT64_MAX}, 1},
        {2, {2, INT64_C(1) << 62}, 0},          /* exactly 2^63 */
        {2, {INT64_C(1) << 31, INT64_C(1) << 32}, 0}, /* 2^63 again */
        {2, {INT64_C(1) << 31, INT64_C(1) << 31}, 1}, /* 2^62 */
        {3, {0, INT64_C(1) << 32, INT64_C(1) << 32}, 0}, /* zero first */
        {3, {INT64_C(1) << 32, INT64_C(1) << 32, 0}, 0}, /* zero last */
        {3, {INT64_C(1) << 32, 0, INT64_C(1) << 31}, 0},
        {3, {INT64_C(1) << 31, 0, INT64_C(1) << 31}, 1}, /* 2^62 */
        {2, {-1, 4}, 0},
        {2, {0, -1}, 0},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        /* the reference: the product of the non-zero dimensions in 128 bits */
        unsigned __int128 p = 1;
        int neg = 0, zero = 0;
        for (int d = 0; d < tab[i].ndim; d++) {
            if (tab[i].shape[d] < 0)
                neg = 1;
            else if (tab[i].shape[d] == 0)
                zero = 1;
            else if (p <= M)
                p *= (unsigned __int128)tab[i].shape[d];
        }
        int ref = !neg && p <= M;
        ck_assert_msg(ref == tab[i].ok, "table entry %zu disagrees with the reference", i);
        uint64_t n = 12345;
        ck_assert_msg(hvq_shape_numel(tab[i].ndim, tab[i].shape, &n) == tab[i].ok,
                      "entry %zu", i);
        if (tab[i].ok)
            ck_assert_uint_eq(n, zero ? 0 : (uint64_t)p);
    }
    int64_t s[HVQ_MAX_DIMS + 1] = {0};
    uint64_t n;
    ck_assert_int_eq(hvq_shape_numel(HVQ_MAX_DIMS + 1, s, &n), 0);
    ck_assert_int_eq(hvq_shape_numel(-1, s, &n), 0);
}
END_TEST

/* hvq_tensor_check: what the host accepts from a source plugin. */
START_TEST(tensor_check)
{
    hvq_ctx *ctx = th_ctx();
    float data[8] = {0};
    hvq_tensor_info good = {.name = "w", .dtype = HVQ_DTYPE_F32, .ndim = 2, .shape = {2, 4},
                            .nbytes = 32};
    ck_assert_int_eq(hvq_tensor_check(ctx, "m.x", "src", &good, NULL), HVQ_OK);
    hvq_tensor t = {.info = good, .data = data};
    ck_assert_int_eq(hvq_tensor_check(ctx, "m.x", "src", &good, &t), HVQ_OK);
    hvq_tensor_info empty = {.name = "e", .dtype = HVQ_DTYPE_F16, .ndim = 2, .shape = {0, 9},
                             .nbytes = 0};
    hvq_tensor te = {.info = empty, .data = NULL};
    ck_assert_int_eq(hvq_tensor_check(ctx, "m.x", "src", &empty, &te), HVQ_OK);
    hvq_tensor_info opaque = {.name = "q", .dtype = HVQ_DTYPE_OPAQUE, .ndim = 1, .shape = {3},
                              .nbytes = 7};
    ck_assert_int_eq(hvq_tensor_check(ctx, "m.x", "src", &opaque, NULL), HVQ_OK);

    static const struct {
        const char *why;
    } want[] = {
        {"a tensor without a name"},
        {"a number of dimensions outside 0 to 8"},
        {"non-zero dimensions that multiply past 63 bits"},
        {"non-zero dimensions that multiply past 63 bits"},
        {"an unknown element type"},
        {"a byte size that does not match"},
        {"read with a different element type, shape or size"},
        {"read with a different element type, shape or size"},
        {"read without its data"},
    };
    for (int c = 0; c < (int)(sizeof want / sizeof want[0]); c++) {
        hvq_tensor_info i = good;
        hvq_tensor r = {.info = good, .data = data}, *rp = NULL;
        switch (c) {
        case 0: i.name = NULL; break;
        case 1: i.ndim = HVQ_MAX_DIMS + 1; break;
        case 2: i.shape[0] = -2; break;
        case 3: i.ndim = 3; i.shape[0] = 0; i.shape[1] = INT64_C(1) << 32;
                i.shape[2] = INT64_C(1) << 32; i.nbytes = 0; break;
        case 4: i.dtype = (hvq_dtype)99; break;
        case 5: i.nbytes = 31; break;
        case 6: r.info.shape[1] = 3; rp = &r; break;
        case 7: r.info.dtype = HVQ_DTYPE_BF16; rp = &r; break;
        case 8: r.data = NULL; rp = &r; break;
        }
        ck_assert_int_eq(hvq_tensor_check(ctx, "m.x", "src", &i, rp), HVQ_E_INPUT);
        const char *e = hvq_ctx_error(ctx);
        ck_assert_msg(strstr(e, want[c].why) && strstr(e, "m.x") && strstr(e, "src source"),
                      "case %d: %s", c, e);
        hvq_ctx_clear_error(ctx);
    }
    hvq_ctx_free(ctx);
}
END_TEST

/* ---- glob and edit distance --------------------------------------------- */

START_TEST(glob)
{
    static const struct {
        const char *pat, *s;
        int want;
    } tab[] = {
        {"*.weight", "model.layers.0.mlp.up_proj.weight", 1},
        {"*.weight", "model.norm.bias", 0},
        {"*norm*", "model.layers.3.input_layernorm.weight", 1},
        {"*norm*", "model.layers.3.mlp.up_proj.weight", 0},
        {"*embed_tokens*", "model.embed_tokens.weight", 1},
        {"lm_head.weight", "lm_head.weight", 1},
        {"lm_head.weight", "lm_head.weights", 0},
        {"lm_head.weight", "xlm_head.weight", 0},
        {"*", "", 1},
        {"*", "a/b.c", 1}, /* '*' crosses '/' and '.' */
        {"", "", 1},
        {"", "a", 0},
        {"a", "", 0},
        {"?", "a", 1},
        {"?", "", 0},
        {"??", "a", 0},
        {"a*b*c", "aXXbYYc", 1},
        {"a*b*c", "aXXbYY", 0},
        {"a*b", "abab", 1}, /* backtracking */
        {"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", 1},
        {"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
        {"*.layers.[0-2].*", "model.layers.1.mlp.up_proj.weight", 1},
        {"*.layers.[0-2].*", "model.layers.3.mlp.up_proj.weight", 0},
        {"*.[!0-2].*", "model.layers.3.x", 1},
        {"*.[!0-2].*", "model.layers.1.x", 0},
        {"*.[^0-2].*", "model.layers.1.x", 0},
        {"[abc]", "b", 1},
        {"[abc]", "d", 0},
        {"[]a]", "]", 1},
        {"[a-]", "-", 1},
        {"x[", "x[", 1}, /* unterminated class: a literal '[' */
        {"x[a", "x[a", 1},
        {"x[a", "xa", 0},
        {"*.mlp.*", "model.layers.0.mlp.down_proj.weight", 1},
        {"*.down_proj.weight", "model.layers.0.mlp.down_proj.weight", 1},
        {"*q_proj*", "model.layers.0.self_attn.k_proj.weight", 0},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        ck_assert_msg(hvq_glob_match(tab[i].pat, tab[i].s) == tab[i].want,
                      "glob '%s' on '%s': want %d", tab[i].pat, tab[i].s, tab[i].want);
}
END_TEST

START_TEST(edit_distance)
{
    static const struct {
        const char *a, *b;
        size_t d;
    } tab[] = {
        {"", "", 0},          {"abc", "abc", 0},        {"", "abc", 3},
        {"abc", "", 3},       {"kitten", "sitting", 3}, {"flaw", "lawn", 2},
        {"group_sise", "group_size", 1},                {"rnt", "rtn", 2},
        {"iterations", "iteration", 1},                 {"ab", "ba", 2},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        ck_assert_msg(hvq_edit_distance(tab[i].a, tab[i].b, 100) == tab[i].d,
                      "'%s' '%s': %zu, want %zu", tab[i].a, tab[i].b,
                      hvq_edit_distance(tab[i].a, tab[i].b, 100), tab[i].d);
        ck_assert_uint_eq(hvq_edit_distance(tab[i].b, tab[i].a, 100), tab[i].d);
        /* the cap: exact up to it, cap + 1 beyond */
        for (size_t cap = 0; cap < 5; cap++)
            ck_assert_uint_eq(hvq_edit_distance(tab[i].a, tab[i].b, cap),
                              tab[i].d <= cap ? tab[i].d : cap + 1);
    }
    ck_assert_uint_eq(hvq_edit_distance("a", "abcdefghijkl", 3), 4); /* length gap alone */

    static const char *const cand[] = {"group_size", "mode", NULL, "seed"};
    ck_assert_str_eq(hvq_nearest("group_sise", cand, 4), "group_size");
    ck_assert_str_eq(hvq_nearest("mod", cand, 4), "mode");
    ck_assert_str_eq(hvq_nearest("sed", cand, 4), "seed");
    ck_assert_ptr_null(hvq_nearest("iterations", cand, 4));
    ck_assert_ptr_null(hvq_nearest("x", cand, 0));
    /* within max(2, len/3) edits */
    static const char *const one[] = {"abcdefghijkl"};
    ck_assert_ptr_nonnull(hvq_nearest("abcdefghiXYZ", one, 1)); /* 3 of 12: 4 allowed */
    ck_assert_ptr_null(hvq_nearest("abcdefgXYZWV", one, 1));    /* 5 of 12 */
}
END_TEST

/* host->shared_get/shared_put: values live until the run ends
 * (hvq_ctx_shared_clear), released newest first, a key once. */
static int released[3];
static size_t n_released;
static void release_int(void *v)
{
    released[n_released++] = *(int *)v;
}

START_TEST(shared_values)
{
    hvq_ctx *ctx = hvq_ctx_new(NULL);
    const hvq_host *H = ctx->host;
    ck_assert(HVQ_HOST_HAS(H, shared_get) && HVQ_HOST_HAS(H, shared_put));
    static int one = 1, two = 2, three = 3;
    n_released = 0;
    ck_assert_ptr_null(H->shared_get(ctx, "x"));
    ck_assert_int_eq(H->shared_put(ctx, "x", &one, release_int), HVQ_OK);
    ck_assert_int_eq(H->shared_put(ctx, "y", &two, release_int), HVQ_OK);
    ck_assert_ptr_eq(H->shared_get(ctx, "x"), &one);
    ck_assert_ptr_eq(H->shared_get(ctx, "y"), &two);
    ck_assert_int_eq(H->shared_put(ctx, "x", &three, release_int), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), "shared_put: the key 'x' is taken in this run");
    ck_assert_int_eq(H->shared_put(ctx, "z", &three, NULL), HVQ_E_INTERNAL);
    hvq_ctx_shared_clear(ctx); /* the run ends */
    ck_assert_uint_eq(n_released, 2);
    ck_assert_int_eq(released[0], 2);
    ck_assert_int_eq(released[1], 1);
    ck_assert_ptr_null(H->shared_get(ctx, "x"));
    /* what a run leaves goes with the context */
    ck_assert_int_eq(H->shared_put(ctx, "x", &three, release_int), HVQ_OK);
    hvq_ctx_free(ctx);
    ck_assert_uint_eq(n_released, 3);
    ck_assert_int_eq(released[2], 3);
}
END_TEST

static Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("validate");
    tcase_add_test(tc, validate_good);
    tcase_add_test(tc, validate_header);
    tcase_add_test(tc, validate_names);
    tcase_add_test(tc, validate_kinds);
    tcase_add_test(tc, validate_callbacks);
    tcase_add_test(tc, validate_params);
    tcase_add_test(tc, validate_short_why);
    tcase_add_test(tc, add_in_memory);
    suite_add_tcase(s, tc);

    tc = tcase_create("load");
    tcase_add_test(tc, load_wrong_abi);
    tcase_add_test(tc, load_no_entry);
    tcase_add_test(tc, load_null_entry);
    tcase_add_test(tc, load_short_desc);
    tcase_add_test(tc, load_bad_name);
    tcase_add_test(tc, load_no_decode);
    tcase_add_test(tc, load_two_kinds);
    tcase_add_test(tc, load_duplicate);
    tcase_add_test(tc, load_not_a_plugin);
    tcase_add_test(tc, load_good_ones);
    tcase_add_test(tc, load_dir_alone);
    tcase_add_test(tc, load_dir_after_builtin);
    tcase_add_test(tc, load_dir_twice);
    tcase_add_test(tc, load_dir_missing);
    tcase_add_test(tc, lookups);
    tcase_add_test(tc, kind_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("driver");
    tcase_add_test(tc, top_k_random);
    tcase_add_test(tc, top_k_ties_and_edges);
    tcase_add_test(tc, top_k_large);
    tcase_add_test(tc, tensor_seed);
    suite_add_tcase(s, tc);

    tc = tcase_create("util");
    tcase_add_test(tc, f16_reference_values);
    tcase_add_test(tc, f16_exhaustive);
    tcase_add_test(tc, bf16_values);
    tcase_add_test(tc, convert_arrays);
    tcase_add_test(tc, dtype_tables);
    tcase_add_test(tc, shape_rule);
    tcase_add_test(tc, tensor_check);
    tcase_add_test(tc, glob);
    tcase_add_test(tc, edit_distance);
    tcase_add_test(tc, shared_values);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(registry_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
