/* Tests of the hessian "imatrix" plugin (llama.cpp importance matrices):
 *
 *   - the real stories260K imatrix.dat (tests/data/imatrix/), against a
 *     reference decoded here with plain fread: 35 entries, blk.0..4 x
 *     attn_q/k/v/output and ffn_gate/up/down, ncall 393, value / ncall;
 *   - the Hugging Face names of every 2-D weight of models/stories260K
 *     mapped to llama.cpp names (35 found; the tied embedding has no entry),
 *     and names: llama / hf;
 *   - the tinyllama-1.1b .dat of ../shared/data when present (154 entries
 *     of 2048 or 5632 values);
 *   - the GGUF layout when the gguf format plugin is built: the shared
 *     imatrix.gguf equals the .dat of the same llama-imatrix run, and small
 *     hand-built GGUF files (a stack of expert matrices, a count of 0, a
 *     missing .counts, general.type 'llama', a model file);
 *   - corrupt .dat files (truncated in each field, negative or huge counts
 *     and lengths, ncall 0, duplicate names, NaN/inf/negative values, junk
 *     after the entries or the trailer) refused with the path and reason;
 *   - the exact length-mismatch message, missing: error versus uniform and
 *     the single summary warning at close (stderr captured);
 *   - end to end: `hvqconv run pipelines/mid.yaml` with the imatrix Hessian
 *     on the demo model, whose Hessian-weighted error differs from the
 *     uniform run's. */
#include "config.h"

#include "harness.h"
#include "json.h"
#include "params.h"

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a reference decoder of the legacy .dat, written with plain fread ---- */

typedef struct ref_entry {
    char name[256];
    int32_t ncall, n;
    float *v;          /* the raw stored values (mean(x^2) * ncall) */
    long off;          /* offset of the entry (its name length) */
    long off_ncall;    /* offset of ncall */
    long off_values;   /* offset of the first value */
} ref_entry;

typedef struct ref_dat {
    int32_t count;
    ref_entry *e;
    long end;          /* offset just after the last entry */
    long size;
} ref_dat;

static int32_t rd32(FILE *f)
{
    unsigned char b[4];
    ck_assert_uint_eq(fread(b, 1, 4, f), 4);
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                 (uint32_t)b[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

static void ref_read(const char *path, ref_dat *r)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    r->count = rd32(f);
    ck_assert_int_gt(r->count, 0);
    r->e = calloc((size_t)r->count, sizeof *r->e);
    ck_assert_ptr_nonnull(r->e);
    for (int32_t k = 0; k < r->count; k++) {
        ref_entry *e = &r->e[k];
        e->off = ftell(f);
        int32_t len = rd32(f);
        ck_assert(len > 0 && len < (int32_t)sizeof e->name);
        ck_assert_uint_eq(fread(e->name, 1, (size_t)len, f), (size_t)len);
        e->off_ncall = ftell(f);
        e->ncall = rd32(f);
        e->n = rd32(f);
        e->off_values = ftell(f);
        e->v = malloc((size_t)e->n * sizeof *e->v);
        ck_assert_ptr_nonnull(e->v);
        unsigned char *raw = malloc((size_t)e->n * 4);
        ck_assert_ptr_nonnull(raw);
        ck_assert_uint_eq(fread(raw, 4, (size_t)e->n, f), (size_t)e->n);
        for (int32_t j = 0; j < e->n; j++) {
            const unsigned char *q = raw + 4 * (size_t)j;
            uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                         (uint32_t)q[3] << 24;
            memcpy(&e->v[j], &u, 4);
        }
        free(raw);
    }
    r->end = ftell(f);
    fseek(f, 0, SEEK_END);
    r->size = ftell(f);
    fclose(f);
}

static void ref_free(ref_dat *r)
{
    for (int32_t k = 0; k < r->count; k++)
        free(r->e[k].v);
    free(r->e);
}

static const ref_entry *ref_find(const ref_dat *r, const char *name)
{
    for (int32_t k = 0; k < r->count; k++)
        if (strcmp(r->e[k].name, name) == 0)
            return &r->e[k];
    return NULL;
}

/* The diagonal the plugin must give: value / ncall, rounded once. */
static float ref_diag(const ref_entry *e, int32_t j) { return (float)((double)e->v[j] / e->ncall); }

/* ---- the plugin under test ------------------------------------------------ */

static hvq_ctx *ctx;
static hvq_registry *reg;
static const hvq_plugin *imx;
static char *tmp; /* a scratch directory per test */

/* The plugins are loaded once (an unchecked fixture: forked tests inherit
 * them), which keeps the test quick under valgrind; each test gets its own
 * scratch directory. */
static void load(void)
{
    ctx = th_ctx();
    reg = th_registry(ctx);
    imx = th_plugin(reg, HVQ_KIND_HESSIAN, "imatrix");
}

static void unload(void)
{
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
}

static void setup(void) { tmp = th_tmpdir("imatrix"); }

static void teardown(void)
{
    th_rmtree(tmp);
    free(tmp);
}

static const char *fixture(void) { return th_src("tests/data/imatrix/stories260K.imatrix.dat"); }

static int have_gguf(void) { return hvq_registry_find(reg, HVQ_KIND_SOURCE, "gguf") != NULL; }

/* "tmp/name" in a rotating static buffer. */
static const char *tpath(const char *name)
{
    static char bufs[8][PATH_MAX];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, PATH_MAX, "%s/%s", tmp, name);
    return b;
}

/* An open instance: its resolved parameters live as long as it does. */
typedef struct inst {
    hvq_value v[8];
    hvq_params p;
    char path[PATH_MAX];
    char text[8][64];
    void *st;
    hvq_ctx *ctx;
} inst;

/* Opens the plugin on path with "key=value" options (missing, names);
 * returns the status. The instance must be closed with inst_close. */
static hvq_status inst_open_ctx(inst *in, hvq_ctx *c, const char *path, const char *const *kv)
{
    char why[256];
    memset(in, 0, sizeof *in);
    in->ctx = c;
    snprintf(in->path, sizeof in->path, "%s", path);
    size_t n = hvq_param_count(imx->params);
    ck_assert_uint_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        const char *text = imx->params[i].default_value;
        if (strcmp(imx->params[i].name, "path") == 0)
            text = in->path;
        ck_assert_ptr_nonnull(text);
        ck_assert_msg(hvq_param_parse(&imx->params[i], text, &in->v[i], why, sizeof why) ==
                          HVQ_OK,
                      "%s: %s", imx->params[i].name, why);
    }
    for (size_t k = 0; kv && kv[k]; k++) {
        const char *eq = strchr(kv[k], '=');
        ck_assert_ptr_nonnull(eq);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[k]), kv[k]);
        long idx = hvq_param_index(imx->params, key);
        ck_assert_int_ge(idx, 0);
        snprintf(in->text[k], sizeof in->text[k], "%s", eq + 1);
        ck_assert_int_eq(hvq_param_parse(&imx->params[idx], in->text[k], &in->v[idx], why,
                                         sizeof why),
                         HVQ_OK);
    }
    in->p.count = n;
    in->p.values = in->v;
    in->p.specs = imx->params;
    hvq_ctx_clear_error(c);
    return imx->hessian_open(c, &in->p, "model", &in->st);
}

static hvq_status inst_open(inst *in, const char *path, const char *const *kv)
{
    return inst_open_ctx(in, ctx, path, kv);
}

static void inst_close(inst *in) { imx->hessian_close(in->ctx, in->st); }

/* hessian_get for a 2-D tensor named name with cols input columns. */
static hvq_status inst_get(inst *in, const char *name, uint64_t cols, float *h)
{
    hvq_tensor_info t = {.name = name, .dtype = HVQ_DTYPE_F32, .dtype_name = "F32", .ndim = 2,
                         .shape = {7, (int64_t)cols}, .nbytes = 7 * cols * 4};
    hvq_ctx_clear_error(in->ctx);
    return imx->hessian_get(in->ctx, in->st, &t, 7, cols, h);
}

/* Opening path must fail with HVQ_E_INPUT and a message starting with the
 * path and holding reason. */
static void open_fails(const char *path, const char *reason)
{
    inst in;
    hvq_status st = inst_open(&in, path, NULL);
    const char *msg = hvq_ctx_error(ctx);
    ck_assert_msg(st == HVQ_E_INPUT, "%s: status %d (expected %d), message: %s", reason, st,
                  HVQ_E_INPUT, msg);
    ck_assert_msg(strncmp(msg, path, strlen(path)) == 0 && msg[strlen(path)] == ':',
                  "message does not start with the path %s: %s", path, msg);
    th_assert_contains(msg, reason);
    inst_close(&in);
}

/* Checks every entry of ref through the plugin opened on path (names:
 * llama), equal to value / ncall within rel (0: exactly). */
static void check_all_entries(const ref_dat *r, const char *path, double rel)
{
    static const char *const llama[] = {"names=llama", "missing=error", NULL};
    inst in;
    ck_assert_msg(inst_open(&in, path, llama) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    for (int32_t k = 0; k < r->count; k++) {
        const ref_entry *e = &r->e[k];
        float *h = malloc((size_t)e->n * sizeof *h);
        ck_assert_ptr_nonnull(h);
        ck_assert_msg(inst_get(&in, e->name, (uint64_t)e->n, h) == HVQ_OK, "%s",
                      hvq_ctx_error(ctx));
        for (int32_t j = 0; j < e->n; j++) {
            double want = ref_diag(e, j);
            if (!(fabs(h[j] - want) <= rel * fabs(want))) /* ck_assert only on failure: fast */
                ck_abort_msg("%s[%d]: %.9g != %.9g", e->name, j, (double)h[j], want);
        }
        free(h);
    }
    inst_close(&in);
}

/* ---- the real stories260K imatrix ---------------------------------------- */

static const char *const kinds[] = {"attn_q",   "attn_k", "attn_v", "attn_output",
                                    "ffn_gate", "ffn_up", "ffn_down"};

START_TEST(stories_dat_entries)
{
    ref_dat r;
    ref_read(fixture(), &r);
    ck_assert_int_eq(r.count, 35);
    /* The reference decoder against figures read off the file by hand. */
    const ref_entry *q0 = ref_find(&r, "blk.0.attn_q.weight");
    ck_assert_ptr_nonnull(q0);
    ck_assert_int_eq(q0->ncall, 393);
    ck_assert_int_eq(q0->n, 64);
    ck_assert(q0->v[0] == 166.2197723388672f);
    for (int l = 0; l < 5; l++)
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, kinds[k]);
            const ref_entry *e = ref_find(&r, name);
            ck_assert_msg(e != NULL, "no %s in the fixture", name);
            ck_assert_int_eq(e->ncall, 393);
            ck_assert_int_eq(e->n, strcmp(kinds[k], "ffn_down") == 0 ? 172 : 64);
        }
    check_all_entries(&r, fixture(), 0);
    /* One value through the plugin, against the hand-read figure. */
    inst in;
    float h[64];
    ck_assert_int_eq(inst_open(&in, fixture(), NULL), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "blk.0.attn_q.weight", 64, h), HVQ_OK);
    ck_assert(h[0] == (float)(166.2197723388672 / 393));
    inst_close(&in);
    ref_free(&r);
}
END_TEST

/* The llama.cpp name of a Hugging Face one, written independently of the
 * plugin; "" when it has none. */
static void expected_llama(const char *hf, char *out, size_t cap)
{
    static const char *const hfk[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                      "mlp.down_proj"};
    int layer, used = 0;
    char rest[128];
    out[0] = '\0';
    if (strcmp(hf, "model.embed_tokens.weight") == 0) {
        snprintf(out, cap, "token_embd.weight");
        return;
    }
    if (sscanf(hf, "model.layers.%d.%127s%n", &layer, rest, &used) != 2)
        return;
    for (size_t k = 0; k < 7; k++) {
        char w[96];
        snprintf(w, sizeof w, "%s.weight", hfk[k]);
        if (strcmp(rest, w) == 0)
            snprintf(out, cap, "blk.%d.%s.weight", layer, kinds[k]);
    }
}

START_TEST(hf_names_map)
{
    ref_dat r;
    ref_read(fixture(), &r);
    hvq_model *m = ctx->host->model_open(ctx, th_src("models/stories260K"));
    ck_assert_msg(m != NULL, "%s", hvq_ctx_error(ctx));
    static const char *const modes[][3] = {{"names=auto", "missing=error", NULL},
                                           {"names=hf", "missing=error", NULL},
                                           {"names=llama", "missing=error", NULL}};
    for (int mode = 0; mode < 3; mode++) {
        inst in;
        ck_assert_int_eq(inst_open(&in, fixture(), modes[mode]), HVQ_OK);
        size_t n2d = 0, found = 0;
        for (size_t i = 0; i < ctx->host->model_count(m); i++) {
            hvq_tensor_info info;
            ck_assert_int_eq(ctx->host->model_info(m, i, &info), HVQ_OK);
            if (info.ndim != 2)
                continue;
            n2d++;
            uint64_t cols = (uint64_t)info.shape[1];
            float *h = malloc(cols * sizeof *h);
            ck_assert_ptr_nonnull(h);
            char want[128];
            expected_llama(info.name, want, sizeof want);
            ck_assert_msg(want[0], "no expected llama.cpp name for %s", info.name);
            const ref_entry *e = ref_find(&r, want);
            hvq_tensor_info t = info;
            hvq_ctx_clear_error(ctx);
            hvq_status st = imx->hessian_get(ctx, in.st, &t, (uint64_t)info.shape[0], cols, h);
            if (mode == 2 || !e) { /* exact names only, or no entry at all */
                ck_assert_int_eq(st, HVQ_E_INPUT);
                th_assert_contains(hvq_ctx_error(ctx), info.name);
                if (mode != 2)
                    th_assert_contains(hvq_ctx_error(ctx), want);
            } else {
                ck_assert_msg(st == HVQ_OK, "%s: %s", info.name, hvq_ctx_error(ctx));
                ck_assert_int_eq(e->n, (int32_t)cols);
                for (uint64_t j = 0; j < cols; j++)
                    ck_assert_msg(h[j] == ref_diag(e, (int32_t)j), "%s (%s)[%llu]", info.name,
                                  want, (unsigned long long)j);
                found++;
            }
            free(h);
        }
        ck_assert_uint_eq(n2d, 36); /* 35 linear layers and the embedding */
        ck_assert_uint_eq(found, mode == 2 ? 0 : 35);
        inst_close(&in);
    }
    ctx->host->model_close(ctx, m);
    /* An exact llama.cpp name works with names: auto too, not with hf. */
    inst in;
    float h[64];
    static const char *const hf[] = {"names=hf", "missing=error", NULL};
    ck_assert_int_eq(inst_open(&in, fixture(), hf), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "blk.2.attn_v.weight", 64, h), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "it has no llama.cpp name to look for");
    ck_assert_int_eq(inst_get(&in, "model.layers.2.self_attn.v_proj.weight", 64, h), HVQ_OK);
    ck_assert(h[0] == ref_diag(ref_find(&r, "blk.2.attn_v.weight"), 0));
    /* Not a layer number: no mapping. */
    ck_assert_int_eq(inst_get(&in, "model.layers.02.self_attn.v_proj.weight", 64, h),
                     HVQ_E_INPUT);
    ck_assert_int_eq(inst_get(&in, "model.layers.x.self_attn.v_proj.weight", 64, h), HVQ_E_INPUT);
    inst_close(&in);
    ck_assert_int_eq(inst_open(&in, fixture(), NULL), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "blk.2.attn_v.weight", 64, h), HVQ_OK);
    ck_assert(h[0] == ref_diag(ref_find(&r, "blk.2.attn_v.weight"), 0));
    inst_close(&in);
    ref_free(&r);
}
END_TEST

START_TEST(tinyllama_dat)
{
    const char *shared = th_shared_data();
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/imatrix/tinyllama-1.1b.imatrix.dat", shared ? shared : "");
    if (!shared || !th_exists(path)) {
        fprintf(stderr, "test_imatrix: skipped tinyllama_dat: %s not found\n",
                shared ? path : "the shared data folder");
        return;
    }
    ref_dat r;
    ref_read(path, &r);
    ck_assert_int_eq(r.count, 154);
    int n5632 = 0;
    for (int32_t k = 0; k < r.count; k++) {
        ck_assert_msg(r.e[k].n == 2048 || r.e[k].n == 5632, "%s: %d values", r.e[k].name,
                      r.e[k].n);
        n5632 += r.e[k].n == 5632;
    }
    ck_assert_int_eq(n5632, 22); /* ffn_down of each of the 22 layers */
    check_all_entries(&r, path, 0);
    /* A Hugging Face name of the last layer. */
    inst in;
    float *h = malloc(5632 * sizeof *h);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(inst_open(&in, path, NULL), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "model.layers.21.mlp.down_proj.weight", 5632, h), HVQ_OK);
    const ref_entry *e = ref_find(&r, "blk.21.ffn_down.weight");
    ck_assert_ptr_nonnull(e);
    ck_assert(h[5631] == ref_diag(e, 5631));
    inst_close(&in);
    free(h);
    ref_free(&r);
}
END_TEST

/* ---- the GGUF layout ------------------------------------------------------ */

/* A minimal GGUF v3 writer for hand-built imatrix files. */
typedef struct gtensor {
    const char *name;
    int ndim;
    uint64_t ne[2]; /* ggml order: ne[0] innermost */
    const float *data;
} gtensor;

typedef struct gbuf {
    unsigned char *p;
    size_t n, cap;
} gbuf;

static void gput(gbuf *b, const void *src, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void gu32(gbuf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    gput(b, x, 4);
}
static void gu64(gbuf *b, uint64_t v)
{
    gu32(b, (uint32_t)v);
    gu32(b, (uint32_t)(v >> 32));
}
static void gstr(gbuf *b, const char *s)
{
    gu64(b, strlen(s));
    gput(b, s, strlen(s));
}
static void gpad(gbuf *b)
{
    static const unsigned char z[32];
    gput(b, z, (32 - b->n % 32) % 32);
}

/* Writes a GGUF file with string metadata (key, value pairs; NULL ends)
 * and F32 tensors. */
static void write_gguf(const char *path, const char *const *kv, const gtensor *t, size_t nt)
{
    gbuf b = {0}, data = {0};
    size_t nkv = 0;
    while (kv && kv[2 * nkv])
        nkv++;
    gput(&b, "GGUF", 4);
    gu32(&b, 3);
    gu64(&b, nt);
    gu64(&b, nkv);
    for (size_t i = 0; i < nkv; i++) {
        gstr(&b, kv[2 * i]);
        gu32(&b, 8); /* string */
        gstr(&b, kv[2 * i + 1]);
    }
    for (size_t i = 0; i < nt; i++) {
        gstr(&b, t[i].name);
        gu32(&b, (uint32_t)t[i].ndim);
        uint64_t n = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            gu64(&b, t[i].ne[d]);
            n *= t[i].ne[d];
        }
        gu32(&b, 0); /* F32 */
        gpad(&data);
        gu64(&b, data.n);
        for (uint64_t j = 0; j < n; j++) {
            uint32_t u;
            memcpy(&u, &t[i].data[j], 4);
            gu32(&data, u);
        }
    }
    gpad(&b);
    gput(&b, data.p, data.n);
    th_write_file(path, b.p, b.n);
    free(b.p);
    free(data.p);
}

START_TEST(gguf_shared_matches_dat)
{
    const char *shared = th_shared_data();
    char gg[PATH_MAX], dat[PATH_MAX];
    snprintf(gg, sizeof gg, "%s/stories260K/imatrix.gguf", shared ? shared : "");
    snprintf(dat, sizeof dat, "%s/stories260K/imatrix.dat", shared ? shared : "");
    if (!shared || !th_exists(gg)) {
        fprintf(stderr, "test_imatrix: skipped gguf_shared_matches_dat: %s not found\n",
                shared ? gg : "the shared data folder");
        return;
    }
    if (!have_gguf()) {
        /* Without a GGUF reader the file is refused cleanly. */
        inst in;
        ck_assert_int_eq(inst_open(&in, gg, NULL), HVQ_E_INPUT);
        inst_close(&in);
        fprintf(stderr, "test_imatrix: skipped gguf_shared_matches_dat: no gguf format plugin "
                        "in the build tree\n");
        return;
    }
    ref_dat r;
    ref_read(th_exists(dat) ? dat : fixture(), &r);
    /* Both come from the same llama-imatrix run: equal to float rounding. */
    check_all_entries(&r, gg, 1e-6);
    /* And through the Hugging Face names. */
    inst in;
    float h[172];
    ck_assert_int_eq(inst_open(&in, gg, NULL), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "model.layers.4.mlp.down_proj.weight", 172, h), HVQ_OK);
    const ref_entry *e = ref_find(&r, "blk.4.ffn_down.weight");
    for (int j = 0; j < 172; j++)
        ck_assert(fabs(h[j] - ref_diag(e, j)) <= 1e-6 * fabs(ref_diag(e, j)));
    inst_close(&in);
    /* A model file is not an importance matrix. */
    char model[PATH_MAX];
    snprintf(model, sizeof model, "%s/stories260K/stories260K.f32.gguf", shared);
    if (th_exists(model))
        open_fails(model, "a GGUF file but not an importance matrix (no general.type; "
                          "general.architecture is 'llama')");
    ref_free(&r);
}
END_TEST

START_TEST(gguf_hand_built)
{
    static const char *const imatrix_kv[] = {"general.type", "imatrix", NULL};
    static const char *const llama_kv[] = {"general.type", "llama", NULL};
    /* A 1-D entry, a stack of 3 expert matrices of 4 columns, and
     * tensors with other suffixes (ignored). */
    const float sum1[5] = {2, 4, 6, 8, 0};
    const float cnt1[1] = {2};
    const float sum3[12] = {1, 2, 3, 4, /**/ 10, 20, 30, 40, /**/ 0, 0, 0, 0};
    const float cnt3[3] = {1, 4, 0}; /* an expert never routed to */
    const float other[2] = {-1, NAN};
    const gtensor good[] = {
        {"blk.0.attn_q.weight.in_sum2", 1, {5, 0}, sum1},
        {"blk.0.attn_q.weight.counts", 1, {1, 0}, cnt1},
        {"blk.0.ffn_down_exps.weight.in_sum2", 2, {4, 3}, sum3},
        {"blk.0.ffn_down_exps.weight.counts", 1, {3, 0}, cnt3},
        {"blk.0.attn_q.weight.other", 1, {2, 0}, other},
    };
    const char *path = tpath("good.gguf");
    write_gguf(path, imatrix_kv, good, 5);
    if (!have_gguf()) {
        inst in;
        ck_assert_int_eq(inst_open(&in, path, NULL), HVQ_E_INPUT);
        inst_close(&in);
        fprintf(stderr, "test_imatrix: skipped gguf_hand_built: no gguf format plugin in the "
                        "build tree\n");
        return;
    }
    static const char *const strict[] = {"missing=error", NULL};
    inst in;
    float h[5];
    ck_assert_msg(inst_open(&in, path, strict) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    ck_assert_int_eq(inst_get(&in, "blk.0.attn_q.weight", 5, h), HVQ_OK);
    for (int j = 0; j < 5; j++)
        ck_assert(h[j] == sum1[j] / 2);
    ck_assert_int_eq(inst_get(&in, "blk.0.ffn_down_exps.weight", 4, h), HVQ_OK);
    for (int j = 0; j < 4; j++) /* (sum over matrices) / (total count 5) */
        ck_assert_msg(h[j] == (float)((sum3[j] + sum3[4 + j]) / 5.0), "[%d] %g", j, (double)h[j]);
    ck_assert_int_eq(inst_get(&in, "blk.0.attn_q.weight", 4, h), HVQ_E_INPUT);
    ck_assert_int_eq(inst_get(&in, "blk.0.attn_q.weight.other", 2, h), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "no entry for tensor 'blk.0.attn_q.weight.other'");
    inst_close(&in);

    write_gguf(path, llama_kv, good, 2);
    open_fails(path, "a GGUF file but not an importance matrix (general.type is 'llama')");
    write_gguf(path, NULL, good, 2);
    open_fails(path, "a GGUF file but not an importance matrix (no general.type)");

    const float zero[1] = {0};
    const gtensor zero_count[] = {{"w.in_sum2", 1, {5, 0}, sum1}, {"w.counts", 1, {1, 0}, zero}};
    write_gguf(path, imatrix_kv, zero_count, 2);
    open_fails(path, "entry 'w' has a count of 0");
    write_gguf(path, imatrix_kv, zero_count, 1);
    open_fails(path, "'w.in_sum2' has no matching 'w.counts'");
    write_gguf(path, imatrix_kv, zero_count + 1, 1);
    open_fails(path, "'w.counts' has no matching 'w.in_sum2'");
    const gtensor wrong_counts[] = {{"w.in_sum2", 2, {4, 3}, sum3}, {"w.counts", 1, {1, 0}, cnt1}};
    write_gguf(path, imatrix_kv, wrong_counts, 2);
    open_fails(path, "'w.counts' has 1 values; 'w.in_sum2' holds 3 matrices");
    const gtensor nan_sum[] = {{"w.in_sum2", 1, {2, 0}, other}, {"w.counts", 1, {1, 0}, cnt1}};
    write_gguf(path, imatrix_kv, nan_sum, 2);
    open_fails(path, "'w.in_sum2' has the invalid value -1 at index 0");
    write_gguf(path, imatrix_kv, good + 4, 1);
    open_fails(path, "the importance matrix has no entries");
}
END_TEST

/* ---- corrupt legacy files ------------------------------------------------- */

static unsigned char *fixture_bytes(size_t *n)
{
    unsigned char *b = (unsigned char *)th_read_file(fixture(), n);
    ck_assert_ptr_nonnull(b);
    return b;
}

static void put32(unsigned char *p, int32_t v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    p[0] = (unsigned char)u;
    p[1] = (unsigned char)(u >> 8);
    p[2] = (unsigned char)(u >> 16);
    p[3] = (unsigned char)(u >> 24);
}

/* Writes bytes (n of them) as tmp/bad.dat and expects open to fail with reason. */
static void bad(const unsigned char *bytes, size_t n, const char *reason)
{
    const char *path = tpath("bad.dat");
    th_write_file(path, bytes, n);
    open_fails(path, reason);
}

START_TEST(corrupt_dat)
{
    ref_dat r;
    ref_read(fixture(), &r);
    size_t n;
    unsigned char *orig = fixture_bytes(&n);
    unsigned char *b = malloc(n + 64);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq((long)n, r.size);
    const ref_entry *last = &r.e[r.count - 1], *e1 = &r.e[0], *e3 = &r.e[2];
    char msg[512];

    /* Truncated in each field of the last entry. */
    bad(orig, (size_t)last->off + 2, "truncated in entry 35 of 35: the name length needs 4 bytes");
    bad(orig, (size_t)last->off + 10, "truncated in entry 35 of 35: the name needs 19 bytes");
    bad(orig, (size_t)last->off_ncall + 1,
        "truncated in entry 35 of 35: the ncall of 'blk.4.ffn_up.weight' needs 4 bytes");
    bad(orig, (size_t)last->off_ncall + 6,
        "truncated in entry 35 of 35: the value count of 'blk.4.ffn_up.weight' needs 4 bytes");
    snprintf(msg, sizeof msg,
             "truncated in entry 35 of 35: 'blk.4.ffn_up.weight' with 64 values needs 256 bytes "
             "at offset %ld but the file ends at %ld",
             last->off_values, last->off_values + 100);
    bad(orig, (size_t)last->off_values + 100, msg);
    /* ... in the middle of the file (the count then exceeds what is left). */
    bad(orig, 300, "entry count 35 is more than a file of 300 bytes can hold");
    bad(orig, 0, "0 bytes, too short for an importance matrix");
    bad(orig, 3, "3 bytes, too short for an importance matrix");
    /* ... in the trailer. */
    bad(orig, (size_t)r.end + 5, "5 bytes of trailing data at offset");
    bad(orig, (size_t)r.end + 20, "are not a trailer (last chunk 393, dataset name length 42, "
                                  "12 bytes left for the name)");
    /* No trailer at all is fine. */
    th_write_file(tpath("notrailer.dat"), orig, (size_t)r.end);
    inst in;
    ck_assert_int_eq(inst_open(&in, tpath("notrailer.dat"), NULL), HVQ_OK);
    inst_close(&in);
    /* Junk after the trailer, or after the entries. */
    memcpy(b, orig, n);
    memcpy(b + n, "xyz", 3);
    bad(b, n + 3, "are not a trailer (last chunk 393, dataset name length 42, 45 bytes left");
    memcpy(b + r.end, "xyz", 3);
    bad(b, (size_t)r.end + 3, "3 bytes of trailing data at offset");
    put32(b + r.end, -1);
    put32(b + r.end + 4, 0);
    bad(b, (size_t)r.end + 8, "are not a trailer (last chunk -1");

    /* Counts. */
    memcpy(b, orig, n);
    put32(b, -1);
    bad(b, n, "negative entry count -1");
    put32(b, INT32_MAX);
    bad(b, n, "entry count 2147483647 is more than a file of");
    put32(b, 36);
    bad(b, n, "truncated in entry 36 of 36");
    put32(b, 0);
    bad(b, 4, "the importance matrix has no entries");

    /* Name lengths. */
    memcpy(b, orig, n);
    put32(b + e1->off, -5);
    bad(b, n, "entry 1 of 35: invalid name length -5 at offset 4");
    put32(b + e1->off, 0);
    bad(b, n, "entry 1 of 35: invalid name length 0");
    put32(b + e1->off, 5000);
    bad(b, n, "entry 1 of 35: invalid name length 5000 at offset 4 (1 to 4096 accepted)");
    put32(b + e1->off, 100000);
    bad(b, n, "invalid name length 100000");
    memcpy(b, orig, n);
    b[e1->off + 4 + 3] = '\0';
    bad(b, n, "entry 1 of 35: the name holds a NUL byte");

    /* ncall and value counts. */
    memcpy(b, orig, n);
    put32(b + e1->off_ncall, 0);
    bad(b, n, "entry 'blk.0.attn_k.weight' (1 of 35): ncall is 0 (must be > 0)");
    put32(b + e1->off_ncall, -7);
    bad(b, n, "entry 'blk.0.attn_k.weight' (1 of 35): ncall is -7 (must be > 0)");
    memcpy(b, orig, n);
    put32(b + e1->off_ncall + 4, -1);
    bad(b, n, "entry 'blk.0.attn_k.weight' (1 of 35): the value count is -1 (must be > 0)");
    put32(b + e1->off_ncall + 4, 0);
    bad(b, n, "the value count is 0");
    put32(b + e1->off_ncall + 4, 1000000000);
    bad(b, n, "'blk.0.attn_k.weight' with 1000000000 values needs 4000000000 bytes");
    put32(b + e1->off_ncall + 4, 65);
    bad(b, n, "invalid name length"); /* the next entry starts one value late */

    /* Duplicate names: entry 3 renamed to entry 1's name (same length). */
    memcpy(b, orig, n);
    ck_assert_str_eq(e3->name, "blk.0.attn_q.weight");
    memcpy(b + e3->off + 4, e1->name, strlen(e1->name));
    bad(b, n, "duplicate entry 'blk.0.attn_k.weight' (entries 1 and 3 of 35)");

    /* Values. */
    static const float badv[] = {NAN, INFINITY, -INFINITY, -1.0f};
    static const char *const badt[] = {"nan", "inf", "-inf", "-1"};
    for (int k = 0; k < 4; k++) {
        memcpy(b, orig, n);
        memcpy(b + e3->off_values + 4 * 5, &badv[k], 4);
        snprintf(msg, sizeof msg,
                 "'blk.0.attn_q.weight.in_sum2' has the invalid value %s at index 5 (values "
                 "must be finite and >= 0)",
                 badt[k]);
        bad(b, n, msg);
    }

    /* Not a file; a file far too large (sparse: takes no disk space). */
    open_fails(tpath("absent.dat"), "cannot open an importance matrix: No such file or directory");
    open_fails(tmp, "not a regular file");
    int fd = open(tpath("huge.dat"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    int sparse = ftruncate(fd, (off_t)(2ll << 30) + 1) == 0;
    close(fd);
    if (sparse)
        open_fails(tpath("huge.dat"), "2147483649 bytes, too large for an importance matrix");
    unlink(tpath("huge.dat"));

    free(b);
    free(orig);
    ref_free(&r);
}
END_TEST

/* A hand-made file of one entry and no trailer; a value of 0 is legal. */
START_TEST(small_valid_dat)
{
    unsigned char b[64];
    size_t o = 0;
    put32(b + o, 1), o += 4;
    put32(b + o, 1), o += 4;
    b[o++] = 'w';
    put32(b + o, 4), o += 4; /* ncall */
    put32(b + o, 2), o += 4; /* values */
    float v[2] = {0.0f, 6.0f};
    memcpy(b + o, v, 8), o += 8;
    th_write_file(tpath("one.dat"), b, o);
    inst in;
    float h[2];
    ck_assert_int_eq(inst_open(&in, tpath("one.dat"), NULL), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "w", 2, h), HVQ_OK);
    ck_assert(h[0] == 0.0f && h[1] == 1.5f);
    inst_close(&in);
}
END_TEST

/* ---- messages, missing entries, the closing warning ----------------------- */

START_TEST(length_mismatch_message)
{
    inst in;
    float h[172];
    ck_assert_int_eq(inst_open(&in, fixture(), NULL), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "model.layers.0.mlp.down_proj.weight", 64, h), HVQ_E_INPUT);
    char want[PATH_MAX + 256];
    snprintf(want, sizeof want,
             "%s: entry 'blk.0.ffn_down.weight' has 172 values but tensor "
             "'model.layers.0.mlp.down_proj.weight' has 64 input columns",
             fixture());
    ck_assert_str_eq(hvq_ctx_error(ctx), want);
    ck_assert_int_eq(inst_get(&in, "model.layers.0.self_attn.q_proj.weight", 172, h),
                     HVQ_E_INPUT);
    snprintf(want, sizeof want,
             "%s: entry 'blk.0.attn_q.weight' has 64 values but tensor "
             "'model.layers.0.self_attn.q_proj.weight' has 172 input columns",
             fixture());
    ck_assert_str_eq(hvq_ctx_error(ctx), want);
    inst_close(&in);
}
END_TEST

/* stderr of a block of code, into a malloc'd string. */
typedef struct capture {
    int saved;
    char path[PATH_MAX];
} capture;

static void cap_begin(capture *c)
{
    snprintf(c->path, sizeof c->path, "%s/stderr.txt", tmp);
    fflush(stderr);
    int fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    c->saved = dup(2);
    ck_assert_int_ge(c->saved, 0);
    ck_assert_int_ge(dup2(fd, 2), 0);
    close(fd);
}

static char *cap_end(capture *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    char *s = th_read_file(c->path, NULL);
    ck_assert_ptr_nonnull(s);
    return s;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

START_TEST(missing_entries)
{
    /* A context that is not quiet, so warnings and info reach stderr. */
    hvq_ctx_opts o = {.quiet = 0, .threads = 1};
    hvq_ctx *loud = hvq_ctx_new(&o);
    ck_assert_ptr_nonnull(loud);
    hvq_ctx_set_registry(loud, reg);
    float h[64];
    inst in;

    /* missing: error names the tensor and the llama.cpp name tried. */
    static const char *const err_opts[] = {"missing=error", NULL};
    ck_assert_int_eq(inst_open_ctx(&in, loud, fixture(), err_opts), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "model.layers.7.self_attn.q_proj.weight", 64, h),
                     HVQ_E_INPUT);
    char want[PATH_MAX + 256];
    snprintf(want, sizeof want,
             "%s: no entry for tensor 'model.layers.7.self_attn.q_proj.weight' (looked for it "
             "and its llama.cpp name 'blk.7.attn_q.weight'); set missing: uniform to use H = 1 "
             "for it",
             fixture());
    ck_assert_str_eq(hvq_ctx_error(loud), want);
    ck_assert_int_eq(inst_get(&in, "lm_head.weight", 64, h), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(loud), "its llama.cpp name 'output.weight'");
    capture c;
    cap_begin(&c);
    inst_close(&in);
    char *err = cap_end(&c);
    ck_assert_str_eq(err, ""); /* nothing was replaced by H = 1 */
    free(err);

    /* missing: uniform (the default): H = 1 and one warning at close. */
    ck_assert_int_eq(inst_open_ctx(&in, loud, fixture(), NULL), HVQ_OK);
    char names[12][64];
    for (int k = 0; k < 12; k++) {
        snprintf(names[k], sizeof names[k], "model.layers.%d.mlp.up_proj.weight", 10 + k);
        for (int j = 0; j < 64; j++)
            h[j] = -3;
        cap_begin(&c);
        ck_assert_int_eq(inst_get(&in, names[k], 64, h), HVQ_OK);
        if (k == 3) /* asked twice: listed once */
            ck_assert_int_eq(inst_get(&in, names[k], 64, h), HVQ_OK);
        err = cap_end(&c);
        ck_assert_str_eq(err, ""); /* nothing per tensor */
        free(err);
        for (int j = 0; j < 64; j++)
            ck_assert(h[j] == 1.0f);
    }
    ck_assert_int_eq(inst_get(&in, "model.layers.1.mlp.up_proj.weight", 64, h), HVQ_OK);
    ck_assert(h[0] != 1.0f);
    cap_begin(&c);
    inst_close(&in);
    err = cap_end(&c);
    ck_assert_uint_eq(count_lines(err), 1);
    snprintf(want, sizeof want,
             "hvqconv: warning: %s: no entry for 12 tensors, H = 1 was used for them: "
             "'model.layers.10.mlp.up_proj.weight', 'model.layers.11.mlp.up_proj.weight', "
             "'model.layers.12.mlp.up_proj.weight', 'model.layers.13.mlp.up_proj.weight', "
             "'model.layers.14.mlp.up_proj.weight', 'model.layers.15.mlp.up_proj.weight', "
             "'model.layers.16.mlp.up_proj.weight', 'model.layers.17.mlp.up_proj.weight', "
             "'model.layers.18.mlp.up_proj.weight', 'model.layers.19.mlp.up_proj.weight' "
             "and 2 more\n",
             fixture());
    ck_assert_str_eq(err, want);
    free(err);

    /* One tensor. */
    ck_assert_int_eq(inst_open_ctx(&in, loud, fixture(), NULL), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "model.embed_tokens.weight", 64, h), HVQ_OK);
    cap_begin(&c);
    inst_close(&in);
    err = cap_end(&c);
    snprintf(want, sizeof want,
             "hvqconv: warning: %s: no entry for 1 tensor, H = 1 was used for it: "
             "'model.embed_tokens.weight'\n",
             fixture());
    ck_assert_str_eq(err, want);
    free(err);
    hvq_ctx_free(loud);
}
END_TEST

/* ---- end to end ------------------------------------------------------------ */

static double report_rel_hessian(const char *path)
{
    size_t n;
    char *text = th_read_file(path, &n);
    ck_assert_msg(text != NULL, "no report %s", path);
    hvq_json_error je;
    hvq_json_doc *doc = hvq_json_parse(text, n, 0, &je);
    ck_assert_msg(doc != NULL, "%s: %s", path, je.message);
    double v = -1;
    const hvq_json_value *totals = hvq_json_get(hvq_json_root(doc), "totals");
    ck_assert_int_eq(hvq_json_double(hvq_json_get(totals, "rel_hessian_error"), &v), 0);
    hvq_json_free(doc);
    free(text);
    return v;
}

START_TEST(end_to_end_mid)
{
    char path_set[PATH_MAX + 32];
    snprintf(path_set, sizeof path_set, "stages.hessian.path=%s", fixture());
    const char *out_i = tpath("imatrix.hvq"), *rep_i = tpath("imatrix.json");
    const char *args_i[] = {"run", th_src("pipelines/mid.yaml"), "--input",
                            th_src("models/stories260K"), "--set",
                            "stages.hessian.plugin=imatrix", "--set", path_set, "--output", out_i,
                            "--report", rep_i, "-q", NULL};
    char *out = NULL, *err = NULL;
    int rc = th_run(&out, &err, args_i);
    ck_assert_msg(rc == 0, "exit %d:\n%s%s", rc, out, err);
    ck_assert_msg(strstr(err, "H = 1 was used") == NULL, "%s", err); /* all 35 found */
    ck_assert(th_exists(out_i));
    free(out);
    free(err);

    const char *out_u = tpath("uniform.hvq"), *rep_u = tpath("uniform.json");
    const char *args_u[] = {"run", th_src("pipelines/mid.yaml"), "--input",
                            th_src("models/stories260K"), "--output", out_u, "--report", rep_u,
                            "-q", NULL};
    rc = th_run(&out, &err, args_u);
    ck_assert_msg(rc == 0, "exit %d:\n%s%s", rc, out, err);
    free(out);
    free(err);

    double hi = report_rel_hessian(rep_i), hu = report_rel_hessian(rep_u);
    ck_assert_msg(isfinite(hi) && hi > 0 && isfinite(hu) && hu > 0, "%g %g", hi, hu);
    ck_assert_msg(fabs(hi - hu) > 1e-6 * hu, "imatrix %g, uniform %g", hi, hu);

    /* A corrupt matrix stops the run with status 2 and names the file. */
    const char *badp = tpath("bad.dat");
    th_write_file(badp, "\x05\x00\x00\x00", 4);
    snprintf(path_set, sizeof path_set, "stages.hessian.path=%s", badp);
    const char *args_b[] = {"run", th_src("pipelines/mid.yaml"), "--input",
                            th_src("models/stories260K"), "--set",
                            "stages.hessian.plugin=imatrix", "--set", path_set, "--output",
                            tpath("bad.hvq"), "-q", NULL};
    rc = th_run(&out, &err, args_b);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, badp);
    ck_assert(!th_exists(tpath("bad.hvq")));
    free(out);
    free(err);

    /* describe lists the parameters. */
    const char *args_d[] = {"describe", "imatrix", NULL};
    rc = th_run(&out, &err, args_d);
    ck_assert_int_eq(rc, 0);
    th_assert_contains(out, "missing");
    th_assert_contains(out, "names");
    free(out);
    free(err);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("imatrix");
    TCase *tc = tcase_create("imatrix");
    tcase_add_unchecked_fixture(tc, load, unload);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, stories_dat_entries);
    tcase_add_test(tc, hf_names_map);
    tcase_add_test(tc, tinyllama_dat);
    tcase_add_test(tc, gguf_shared_matches_dat);
    tcase_add_test(tc, gguf_hand_built);
    tcase_add_test(tc, corrupt_dat);
    tcase_add_test(tc, small_valid_dat);
    tcase_add_test(tc, length_mismatch_message);
    tcase_add_test(tc, missing_entries);
    tcase_add_test(tc, end_to_end_mid);
    suite_add_tcase(s, tc);
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
