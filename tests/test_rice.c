/* The residual coder "rice" (the plugin beside coo16 is tested in
 * test_stages.c):
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

#include "harness.h"
#include "rice_code.h"

#include <check.h>
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

static Suite *suite(void)
{
    Suite *s = suite_create("rice");
    TCase *code = tcase_create("code");
    tcase_add_test(code, code_matches_reference);
    tcase_add_test(code, code_handles_tensors_beyond_2_32);
    tcase_add_test(code, corrupt_streams_are_refused);
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
