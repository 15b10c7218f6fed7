/* The residual coder "rice":
 *   - the plugin beside coo16 (stage harness): the same count, the same
 *     reconstruction bit for bit, compact positions, corrupt components
 *     refused;
 *   - the position code (rice_code.c, linked in) against a scalar reference
 *     written here from docs/FORMAT.md, one bit at a time: the same k, the
 *     same length, the same bytes, and positions read back, for random,
 *     clustered, empty, full, first/last-only sets and tensors beyond 2^32
 *     (and 2^62) entries;
 *   - corrupt streams refused (truncated at every length, bad k, runs of
 *     ones, positions out of range, left-over bits), read from buffers of
 *     exactly the stream's size so that ASan/valgrind see any overrun;
 *   - the real binary: high-fidelity with rice decodes to the same weights
 *     as with coo16, in a smaller container. */
#include "config.h"

#include "params.h"
#include "rice_code.h"
#include "stage.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the scalar reference ------------------------------------------------ */

typedef struct ref_stream {
    uint8_t *b; /* NULL: only count */
    uint64_t n;
} ref_stream;

static void ref_bit(ref_stream *s, int bit)
{
    if (s->b && bit)
        s->b[s->n / 8] |= (uint8_t)(1u << (s->n % 8));
    s->n++;
}

/* The smallest w >= 1 with numel - 1 < 2^w. */
static unsigned ref_width(uint64_t numel)
{
    unsigned w = 1;
    while (w < 64 && ((numel - 1) >> w) != 0)
        w++;
    return w;
}

/* The stream of pos[0..n) with parameter k, one bit at a time; its length. */
static uint64_t ref_encode(const uint64_t *pos, uint64_t n, uint64_t numel, unsigned k,
                           uint8_t *out)
{
    ref_stream s = {out, 0};
    unsigned w = ref_width(numel);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t g = i == 0 ? pos[0] : pos[i] - pos[i - 1] - 1;
        uint64_t q = g >> k;
        if (q < 32) {
            for (uint64_t j = 0; j < q; j++)
                ref_bit(&s, 1);
            ref_bit(&s, 0);
            for (unsigned j = 0; j < k; j++)
                ref_bit(&s, (int)((g >> j) & 1));
        } else {
            for (int j = 0; j < 32; j++)
                ref_bit(&s, 1);
            for (unsigned j = 0; j < w; j++)
                ref_bit(&s, (int)((g >> j) & 1));
        }
    }
    return s.n;
}

/* The shortest stream's k (the smallest on a tie) by trying every one. */
static unsigned ref_best_k(const uint64_t *pos, uint64_t n, uint64_t numel, uint64_t *bits)
{
    unsigned best = 0;
    *bits = ref_encode(pos, n, numel, 0, NULL);
    for (unsigned k = 1; k <= ref_width(numel); k++) {
        uint64_t b = ref_encode(pos, n, numel, k, NULL);
        if (b < *bits) {
            *bits = b;
            best = k;
        }
    }
    return best;
}

/* ---- position sets ------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return rng_state >> 11;
}
static double urand(void) { return ((double)rnd() + 0.5) / 9007199254740992.0; }

typedef struct pset {
    const char *what;
    uint64_t numel, n;
    uint64_t *pos;
} pset;

/* Each position of [0, numel) with probability p. */
static pset random_set(uint64_t numel, double p, uint64_t seed)
{
    pset s = {"random", numel, 0, malloc((size_t)numel * sizeof(uint64_t) + 8)};
    rng_state = seed;
    for (uint64_t i = 0; i < numel; i++)
        if (urand() < p)
            s.pos[s.n++] = i;
    return s;
}

/* Runs of 1 to 40 consecutive positions with gaps of 0 to 100000 between. */
static pset clustered_set(uint64_t seed)
{
    enum { CAP = 20000 };
    pset s = {"clustered", 0, 0, malloc(CAP * sizeof(uint64_t))};
    rng_state = seed;
    uint64_t at = rnd() % 1000;
    while (s.n + 40 < CAP) {
        for (uint64_t r = 1 + rnd() % 40; r > 0; r--)
            s.pos[s.n++] = at++;
        at += rnd() % 100001;
    }
    s.numel = at + rnd() % 5;
    return s;
}

static pset list_set(const char *what, uint64_t numel, const uint64_t *pos, uint64_t n)
{
    pset s = {what, numel, n, malloc((size_t)n * sizeof(uint64_t) + 8)};
    if (n)
        memcpy(s.pos, pos, (size_t)n * sizeof(uint64_t));
    return s;
}

/* Every position of [0, numel). */
static pset full_set(uint64_t numel)
{
    pset s = {"all positions", numel, numel, malloc((size_t)numel * sizeof(uint64_t))};
    for (uint64_t i = 0; i < numel; i++)
        s.pos[i] = i;
    return s;
}

/* ---- the code against the reference ------------------------------------- */

/* Encodes s with rice_code and the reference, checks both agree, reads the
 * stream back (in chunks of `chunk`), and returns the stream (malloc'd,
 * exactly its size) with its k and bits. */
static uint8_t *check_round_trip(const pset *s, size_t chunk, unsigned *k, uint64_t *bits)
{
    uint64_t bad = 0, ref_bits;
    unsigned ref_k = ref_best_k(s->pos, s->n, s->numel, &ref_bits);
    ck_assert_msg(rice_plan(s->pos, s->n, s->numel, k, bits, &bad), "%s: plan refused entry %llu",
                  s->what, (unsigned long long)bad);
    ck_assert_msg(*k == ref_k && *bits == ref_bits, "%s: k %u, %llu bits; reference k %u, %llu",
                  s->what, *k, (unsigned long long)*bits, ref_k, (unsigned long long)ref_bits);
    ck_assert_uint_eq(rice_length(s->pos, s->n, s->numel, *k), *bits);
    size_t nbytes = (size_t)((*bits + 7) / 8);
    uint8_t *got = calloc(nbytes + 1, 1), *want = calloc(nbytes + 1, 1);
    ck_assert_uint_eq(rice_write(s->pos, s->n, s->numel, *k, got, nbytes), *bits);
    ck_assert_uint_eq(ref_encode(s->pos, s->n, s->numel, *k, want), *bits);
    ck_assert_msg(memcmp(got, want, nbytes) == 0, "%s: stream differs from the reference",
                  s->what);
    if (nbytes) /* one byte short: refused, nothing written past the end */
        ck_assert_uint_eq(rice_write(s->pos, s->n, s->numel, *k, got, nbytes - 1), UINT64_MAX);
    free(got);
    uint8_t *exact = malloc(nbytes ? nbytes : 1);
    memcpy(exact, want, nbytes);
    free(want);

    rice_reader rd;
    ck_assert_int_eq(rice_reader_init(&rd, exact, nbytes, *bits, *k, s->numel, s->n), RICE_OK);
    uint64_t *back = malloc(chunk * sizeof *back);
    for (uint64_t i = 0; i < s->n; i += chunk) {
        size_t m = s->n - i < chunk ? (size_t)(s->n - i) : chunk, done;
        ck_assert_int_eq(rice_read(&rd, back, m, &done), RICE_OK);
        ck_assert_uint_eq(done, m);
        for (size_t j = 0; j < m; j++)
            ck_assert_msg(back[j] == s->pos[i + j], "%s: entry %llu read %llu, wrote %llu",
                          s->what, (unsigned long long)(i + j), (unsigned long long)back[j],
                          (unsigned long long)s->pos[i + j]);
    }
    ck_assert_int_eq(rice_reader_end(&rd), RICE_OK);
    free(back);
    return exact;
}

static void round_trip(pset s, size_t chunk, unsigned want_k_min)
{
    unsigned k;
    uint64_t bits;
    free(check_round_trip(&s, chunk, &k, &bits));
    ck_assert_uint_ge(k, want_k_min);
    free(s.pos);
}

START_TEST(code_matches_reference)
{
    static const double p[] = {0.001, 0.005, 0.02, 0.3, 0.9};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        round_trip(random_set(200000, p[i], 10 + i), 1000, 0);
    round_trip(clustered_set(3), 777, 0);
    round_trip(list_set("empty", 1000, NULL, 0), 10, 0);
    round_trip(full_set(5000), 64, 0);
    const uint64_t first_last[] = {0, 999999}, last[] = {999999}, first[] = {0}, one[] = {0};
    round_trip(list_set("first and last", 1000000, first_last, 2), 1, 0);
    round_trip(list_set("last only", 1000000, last, 1), 1, 0);
    round_trip(list_set("first only", 1000000, first, 1), 1, 0);
    round_trip(list_set("one element", 1, one, 1), 1, 0);
    /* Dense runs and a few huge gaps: small k, the huge gaps escaped. */
    uint64_t mix[3000];
    for (int i = 0; i < 3000; i++)
        mix[i] = (uint64_t)i + (i >= 1000 ? 40000000 : 0) + (i >= 2000 ? 900000000 : 0);
    round_trip(list_set("dense with escapes", 1000000000, mix, 3000), 500, 0);
    /* Gaps of 32 to 63 among dense runs: with k = 0 these are just past the
     * unary limit, escaped (32 + w bits) rather than coded (q + 1). */
    uint64_t at = 0;
    for (int i = 0; i < 3000; i++) {
        mix[i] = at;
        at += 1 + (i % 50 == 49 ? 32 + (uint64_t)(i / 50) % 32 : 0);
    }
    round_trip(list_set("gaps past the unary limit", at, mix, 3000), 100, 0);
}
END_TEST

/* Beyond 32-bit positions (coo16 cannot store these). */
START_TEST(code_handles_tensors_beyond_2_32)
{
    const uint64_t g40 = 1ull << 40, g62 = 1ull << 62;
    const uint64_t a[] = {5, (1ull << 33) + 7, (1ull << 33) + 8, g40 - 1};
    round_trip(list_set("2^40 entries", g40, a, 4), 3, 0);
    const uint64_t b[] = {0, g62, INT64_MAX - 1};
    round_trip(list_set("2^63-1 entries", INT64_MAX, b, 3), 2, 0);
    /* Evenly spread, 2^35 apart: k near 35. */
    uint64_t c[64];
    for (int i = 0; i < 64; i++)
        c[i] = (uint64_t)i << 35;
    round_trip(list_set("gaps of 2^35", 64ull << 35, c, 64), 64, 30);
    ck_assert_uint_eq(rice_width(g40), 40);
    ck_assert_uint_eq(rice_width(g40 + 1), 41);
    ck_assert_uint_eq(rice_width(1), 1);
    /* Not ascending, or out of range: refused by the plan. */
    const uint64_t dup[] = {3, 3}, out[] = {1, 10};
    unsigned k;
    uint64_t bits, bad = 99;
    ck_assert(!rice_plan(dup, 2, 10, &k, &bits, &bad));
    ck_assert_uint_eq(bad, 1);
    ck_assert(!rice_plan(out, 2, 10, &k, &bits, &bad));
    ck_assert_uint_eq(bad, 1);
}
END_TEST

/* ---- corrupt streams ----------------------------------------------------- */

/* Reads n entries of a stream (in an exact-size copy) to the end. */
static rice_err read_all(const uint8_t *data, uint64_t nbytes, uint64_t bits, unsigned k,
                         uint64_t numel, uint64_t n)
{
    uint8_t *copy = malloc(nbytes ? (size_t)nbytes : 1);
    memcpy(copy, data, (size_t)nbytes);
    rice_reader rd;
    rice_err e = rice_reader_init(&rd, copy, nbytes, bits, k, numel, n);
    uint64_t pos[64];
    for (uint64_t i = 0; e == RICE_OK && i < n; i += 64) {
        size_t done;
        e = rice_read(&rd, pos, n - i < 64 ? (size_t)(n - i) : 64, &done);
    }
    if (e == RICE_OK)
        e = rice_reader_end(&rd);
    free(copy);
    return e;
}

START_TEST(corrupt_streams_are_refused)
{
    pset s = random_set(20000, 0.02, 7);
    unsigned k;
    uint64_t bits;
    uint8_t *st = check_round_trip(&s, 64, &k, &bits);
    uint64_t nbytes = (bits + 7) / 8;
    ck_assert_int_eq(read_all(st, nbytes, bits, k, s.numel, s.n), RICE_OK);
    /* Truncated at every length: never accepted. */
    for (uint64_t b = 0; b < bits; b++) {
        rice_err e = read_all(st, (b + 7) / 8, b, k, s.numel, s.n);
        ck_assert_msg(e == RICE_TRUNCATED || e == RICE_BAD_LENGTH,
                      "cut to %llu of %llu bits: %s", (unsigned long long)b,
                      (unsigned long long)bits, rice_strerror(e));
    }
    /* Lengths that disagree; a bad k; more entries than bits. */
    ck_assert_int_eq(read_all(st, nbytes - 1, bits, k, s.numel, s.n), RICE_BAD_LENGTH);
    ck_assert_int_eq(read_all(st, nbytes, bits, rice_width(s.numel) + 1, s.numel, s.n),
                     RICE_BAD_K);
    ck_assert_int_eq(read_all(st, nbytes, bits, 200, s.numel, s.n), RICE_BAD_K);
    ck_assert_int_eq(read_all(st, nbytes, bits, k, s.numel, bits + 1), RICE_BAD_LENGTH);
    /* Fewer entries than the stream holds; a stray padding bit. */
    ck_assert_int_eq(read_all(st, nbytes, bits, k, s.numel, s.n - 1), RICE_TRAILING);
    if (bits % 8) {
        st[nbytes - 1] |= 0x80;
        ck_assert_int_eq(read_all(st, nbytes, bits, k, s.numel, s.n), RICE_TRAILING);
    }
    /* A smaller tensor than the positions need. */
    ck_assert_int_eq(read_all(st, nbytes, bits, k, s.pos[s.n - 1], s.n), RICE_RANGE);
    free(st);
    free(s.pos);

    /* All ones: every unary part stops at 32, then an escaped gap of all
     * ones; the first is in range only when numel is a power of two. */
    uint8_t ones[64];
    memset(ones, 0xff, sizeof ones);
    ck_assert_int_eq(read_all(ones, 64, 512, 0, 1000, 5), RICE_RANGE);
    ck_assert_int_eq(read_all(ones, 64, 512, 0, 1u << 20, 5), RICE_RANGE);
    ck_assert_int_eq(read_all(ones, 64, 512, 0, 1u << 20, 1), RICE_TRAILING);
    ck_assert_int_eq(read_all(ones, 4, 31, 0, 1u << 20, 1), RICE_TRUNCATED);
    ck_assert_int_eq(read_all(ones, 64, 512, 3, (1u << 20) + 1, 9), RICE_RANGE);
    /* Two ones with the largest k: q << k wraps to 0, which must not pass
     * for a gap of 0 (the stream is otherwise complete: 3 + 63 bits). */
    uint8_t wrap[16] = {0x03};
    ck_assert_int_eq(read_all(wrap, 9, 66, 63, INT64_MAX, 1), RICE_RANGE);
    ck_assert_int_eq(read_all(wrap, 16, 128, 63, INT64_MAX, 1), RICE_RANGE);
    /* Zero-length stream with entries claimed. */
    ck_assert_int_eq(read_all(ones, 0, 0, 0, 100, 1), RICE_BAD_LENGTH);
    ck_assert_int_eq(read_all(ones, 0, 0, 0, 100, 0), RICE_OK);
}
END_TEST

/* ---- through the binary -------------------------------------------------- */

/* Runs high-fidelity on the demo model with residual `plugin` into
 * dir/NAME.hvq and decodes it to dir/NAME.safetensors; returns the
 * container's size. */
static size_t run_and_decode(const char *dir, const char *plugin)
{
    char hvq[4096], json[4096], st[4096], set[64], *err = NULL;
    snprintf(hvq, sizeof hvq, "%s/%s.hvq", dir, plugin);
    snprintf(json, sizeof json, "%s/%s.json", dir, plugin);
    snprintf(st, sizeof st, "%s/%s.safetensors", dir, plugin);
    snprintf(set, sizeof set, "stages.residual.plugin=%s", plugin);
    const char *run[] = {"run", th_src("pipelines/high-fidelity.yaml"), "-q",
                         "--input", th_src("models/stories260K"), "--set", set,
                         "--set", "stages.residual.sparsity=0.02", "-o", hvq, "-r", json, NULL};
    ck_assert_msg(th_run(NULL, &err, run) == 0, "run with %s: %s", plugin, err);
    free(err);
    const char *dec[] = {"decode", hvq, "-o", st, "-q", NULL};
    ck_assert_msg(th_run(NULL, &err, dec) == 0, "decode of %s: %s", plugin, err);
    free(err);
    size_t n;
    free(th_read_file(hvq, &n));
    return n;
}

START_TEST(pipeline_decodes_like_coo16)
{
    char *dir = th_tmpdir("rice");
    size_t rice = run_and_decode(dir, "rice"), coo16 = run_and_decode(dir, "coo16");
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/rice.safetensors", dir);
    snprintf(b, sizeof b, "%s/coo16.safetensors", dir);
    size_t na, nb;
    char *da = th_read_file(a, &na), *db = th_read_file(b, &nb);
    ck_assert_ptr_nonnull(da);
    ck_assert_ptr_nonnull(db);
    ck_assert_msg(na == nb && memcmp(da, db, na) == 0,
                  "the decoded weights differ between rice and coo16");
    /* 2 % of 4,096 to 11,008 entries per matrix: about 7 bits of position
     * instead of 32 each; 16-bit values alike */
    ck_assert_msg(rice < coo16, "rice container %zu bytes, coo16 %zu", rice, coo16);
    free(da);
    free(db);
    th_rmtree(dir);
    free(dir);
}
END_TEST

#define ctx th_env_ctx()

/* ---- residual rice: the same entries as coo16, compact positions ---------- */

static const hvq_plugin *residual(const char *name)
{
    return th_env_plugin(HVQ_KIND_RESIDUAL, name);
}

/* The plugin's parameters with sparsity set (its one parameter, as coo16's). */
static void sparsity(th_params *tp, const hvq_plugin *d, const char *value)
{
    char kv[64];
    snprintf(kv, sizeof kv, "sparsity=%s", value);
    const char *const list[] = {kv, NULL};
    ck_assert_uint_eq(hvq_param_count(d->params), 1);
    th_params_make(tp, d, list);
}

START_TEST(rice_count_is_coo16s)
{
    const hvq_plugin *r = residual("rice"), *c = residual("coo16");
    static const char *const rho[] = {"0", "0.005", "1.5%", "0.02", "0.5", "1"};
    static const uint64_t numel[] = {0, 1, 10, 4096, 2048ull * 2048, 8192ull * 2048, 1ull << 40};
    for (size_t i = 0; i < sizeof rho / sizeof *rho; i++) {
        th_params tr, tc;
        sparsity(&tr, r, rho[i]);
        sparsity(&tc, c, rho[i]);
        for (size_t j = 0; j < sizeof numel / sizeof *numel; j++)
            ck_assert_uint_eq(r->residual_count(&tr.p, numel[j]),
                              c->residual_count(&tc.p, numel[j]));
    }
    th_params tr;
    sparsity(&tr, r, "0.02");
    ck_assert_uint_eq(r->residual_count(&tr.p, 2048ull * 2048), 83886);
}
END_TEST

/* A fixture: body (the clusterer's recon) and targets at chosen positions. */
typedef struct fixture {
    uint64_t rows, cols, n;
    float *body, *target;
    uint64_t *pos;
} fixture;

static fixture make_fixture(uint64_t rows, uint64_t cols, double p, uint64_t seed)
{
    fixture f = {rows, cols, 0, malloc(rows * cols * sizeof(float)),
                 malloc(rows * cols * sizeof(float)), malloc(rows * cols * sizeof(uint64_t))};
    th_rng_state = seed;
    for (uint64_t i = 0; i < rows * cols; i++) {
        f.body[i] = (float)(th_urand() * 2 - 1) * 0.1f;
        int keep = th_urand() < p || i == 0 || i == rows * cols - 1;
        if (keep && p > 0) {
            double t = th_urand() * 2 - 1;
            if (f.n % 7 == 3)
                t = f.body[i] + 1e-7; /* tiny corrections: fp16 subnormals */
            if (f.n % 11 == 5)
                t = f.body[i]; /* none at all */
            f.pos[f.n] = i;
            f.target[f.n++] = (float)t;
        }
    }
    return f;
}

static void free_fixture(fixture *f)
{
    free(f->body);
    free(f->target);
    free(f->pos);
}

/* Encodes f with plugin d into enc; returns the reconstruction (malloc'd). */
static float *encode(const hvq_plugin *d, const fixture *f, hvq_encoded *enc)
{
    th_params tp;
    sparsity(&tp, d, "0.02");
    float *recon = malloc(f->rows * f->cols * sizeof(float) + 4);
    memcpy(recon, f->body, f->rows * f->cols * sizeof(float));
    hvq_residual_input in = {.tensor_name = "t", .rows = f->rows, .cols = f->cols,
                             .pos = f->pos, .target = f->target, .n = f->n, .recon = recon};
    hvq_encoded_init(enc);
    ck_assert_msg(d->residual_encode(ctx, &tp.p, &in, enc) == HVQ_OK, "%s: %s", d->name,
                  hvq_ctx_error(ctx));
    return recon;
}

/* Decodes enc onto the body; the status, the result in *out (malloc'd). */
static hvq_status decode(const hvq_plugin *d, const fixture *f, const hvq_encoded *enc,
                         float **out)
{
    *out = malloc(f->rows * f->cols * sizeof(float) + 4);
    memcpy(*out, f->body, f->rows * f->cols * sizeof(float));
    return d->residual_decode(ctx, enc, f->rows, f->cols, *out);
}

static void check_same_as_coo16(uint64_t rows, uint64_t cols, double p, uint64_t seed)
{
    fixture f = make_fixture(rows, cols, p, seed);
    hvq_encoded er, ec;
    float *rr = encode(residual("rice"), &f, &er), *rc = encode(residual("coo16"), &f, &ec);
    size_t bytes = rows * cols * sizeof(float);
    ck_assert_msg(memcmp(rr, rc, bytes) == 0, "%llux%llu: rice's recon differs from coo16's",
                  (unsigned long long)rows, (unsigned long long)cols);
    const hvq_component *vr = ctx->host->enc_get(&er, "values"),
                        *vc = ctx->host->enc_get(&ec, "values");
    ck_assert_uint_eq(vr->nbytes, 2 * f.n);
    ck_assert_int_eq(memcmp(vr->data, vc->data, vr->nbytes), 0);
    /* the real bits: the stream's length, below coo16's 32 per entry */
    const hvq_component *pr = ctx->host->enc_get(&er, "positions");
    ck_assert_uint_eq(pr->dtype, HVQ_DTYPE_U8);
    ck_assert_ptr_nonnull(ctx->host->enc_attr_get(&er, "bits"));
    ck_assert_uint_eq(pr->paper_bits, strtoull(ctx->host->enc_attr_get(&er, "bits"), NULL, 10));
    ck_assert_uint_eq(pr->nbytes, (pr->paper_bits + 7) / 8);
    ck_assert_uint_le(pr->paper_bits, 32 * f.n);
    float *dr, *dc;
    ck_assert_int_eq(decode(residual("rice"), &f, &er, &dr), HVQ_OK);
    ck_assert_int_eq(decode(residual("coo16"), &f, &ec, &dc), HVQ_OK);
    ck_assert_int_eq(memcmp(dr, rr, bytes), 0);
    ck_assert_int_eq(memcmp(dc, rc, bytes), 0);
    free(rr);
    free(rc);
    free(dr);
    free(dc);
    hvq_encoded_clear(&er);
    hvq_encoded_clear(&ec);
    free_fixture(&f);
}

START_TEST(rice_reconstruction_is_coo16s_bit_for_bit)
{
    check_same_as_coo16(64, 96, 0.02, 1);
    check_same_as_coo16(300, 257, 0.005, 2);
    check_same_as_coo16(1, 5000, 0.03, 3); /* one row */
    check_same_as_coo16(40, 40, 1.0, 4);   /* every entry */
    check_same_as_coo16(16, 16, 0.0, 5);   /* none */
}
END_TEST

/* Sets attribute key of enc to value and expects decode to refuse it with a
 * message containing `says`; restores old. */
static void expect_refused(const fixture *f, hvq_encoded *enc, const char *says)
{
    float *out;
    ck_assert_int_eq(decode(residual("rice"), f, enc, &out), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), says);
    free(out);
}

static void with_attr(const fixture *f, hvq_encoded *enc, const char *key, const char *value,
                      const char *says)
{
    char old[64];
    snprintf(old, sizeof old, "%s", ctx->host->enc_attr_get(enc, key));
    ck_assert_int_eq(ctx->host->enc_attr(ctx, enc, key, value), HVQ_OK);
    expect_refused(f, enc, says);
    ck_assert_int_eq(ctx->host->enc_attr(ctx, enc, key, old), HVQ_OK);
}

static hvq_component *component(hvq_encoded *enc, const char *name)
{
    for (size_t i = 0; i < enc->n_components; i++)
        if (strcmp(enc->components[i].name, name) == 0)
            return &enc->components[i];
    ck_abort_msg("no component %s", name);
    return NULL;
}

START_TEST(rice_decode_refuses_corrupt_components)
{
    fixture f = make_fixture(50, 70, 0.03, 9);
    hvq_encoded enc;
    free(encode(residual("rice"), &f, &enc));
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)f.n + 1);
    with_attr(&f, &enc, "count", buf, "does not match");
    with_attr(&f, &enc, "count", "-1", "is not a count");
    with_attr(&f, &enc, "count", "", "is not a count");
    with_attr(&f, &enc, "k", "13", "parameter k above");
    with_attr(&f, &enc, "k", "99999999999999999999999", "is not a count");
    with_attr(&f, &enc, "bits", "1", "stream length does not match");
    with_attr(&f, &enc, "bits", "12x", "is not a count");
    hvq_component *pc = component(&enc, "positions");
    /* a stream cut by one byte, its bits to match: an entry runs past */
    uint64_t bits = pc->paper_bits, cut = (pc->nbytes - 1) * 8;
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)cut);
    pc->nbytes--;
    pc->shape[0]--;
    with_attr(&f, &enc, "bits", buf, "runs past the end");
    pc->nbytes++;
    pc->shape[0]++;
    /* a stray bit after the last entry, when there is room */
    if (bits % 8) {
        ((uint8_t *)pc->data)[pc->nbytes - 1] ^= 0x80;
        expect_refused(&f, &enc, "left over");
        ((uint8_t *)pc->data)[pc->nbytes - 1] ^= 0x80;
    }
    /* a smaller tensor than the positions need (the last entry is the
     * last element) */
    float *out = malloc(f.rows * f.cols * sizeof(float));
    ck_assert_int_eq(residual("rice")->residual_decode(ctx, &enc, f.rows - 1, f.cols, out),
                     HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "beyond the tensor");
    free(out);
    pc->dtype = HVQ_DTYPE_I8;
    expect_refused(&f, &enc, "must be U8");
    pc->dtype = HVQ_DTYPE_U8;
    hvq_component *vc = component(&enc, "values");
    ((uint16_t *)vc->data)[2] = 0x7c00; /* +inf */
    expect_refused(&f, &enc, "entry 2 is not finite");
    vc->name[0] = 'x';
    expect_refused(&f, &enc, "missing positions or values");
    vc->name[0] = 'v';
    ((uint16_t *)vc->data)[2] = 0;
    ck_assert_int_eq(decode(residual("rice"), &f, &enc, &out), HVQ_OK);
    free(out);
    hvq_encoded_clear(&enc);
    free_fixture(&f);
}
END_TEST

#undef ctx

static Suite *suite(void)
{
    Suite *s = suite_create("rice");
    TCase *code = tcase_create("code");
    tcase_add_test(code, code_matches_reference);
    tcase_add_test(code, code_handles_tensors_beyond_2_32);
    tcase_add_test(code, corrupt_streams_are_refused);
    TCase *stage = tcase_create("stage");
    tcase_add_checked_fixture(stage, th_env_setup, th_env_teardown);
    tcase_add_test(stage, rice_count_is_coo16s);
    tcase_add_test(stage, rice_reconstruction_is_coo16s_bit_for_bit);
    tcase_add_test(stage, rice_decode_refuses_corrupt_components);
    suite_add_tcase(s, stage);
    suite_add_tcase(s, code);
    TCase *cli = tcase_create("binary");
    tcase_add_test(cli, pipeline_decodes_like_coo16);
    suite_add_tcase(s, cli);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
