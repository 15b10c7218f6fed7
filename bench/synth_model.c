/* synth_model: writes a synthetic model with SmolLM2-1.7B's shapes (or one
 * matrix) as F16 safetensors, plus a file of Hessian diagonals, for the
 * benchmarks in this folder. Deterministic: the same seed gives the same
 * bytes, whatever the number of threads. A benchmark tool, not part of
 * `make check`; bench/run.sh builds it with:
 *
 *   cc -O2 -std=c11 -pthread bench/synth_model.c -o synth_model -lm
 *
 * Usage:
 *   synth_model [--layers N] [--seed S] [--threads T] OUTDIR
 *   synth_model --matrix ROWSxCOLS [--seed S] [--threads T] OUTDIR
 *   synth_model --spec FILE [--seed S] [--threads T] OUTDIR
 *
 * Writes OUTDIR/model.safetensors and OUTDIR/hessian.safetensors (OUTDIR is
 * created if needed; the files are written under temporary names and
 * renamed when complete).
 *
 * The model: SmolLM2-1.7B's architecture (Llama): hidden 2048,
 * intermediate 8192, 32 attention heads and 32 key/value heads (q, k, v, o
 * all 2048x2048), a tied 49152x2048 embedding, RMSNorm weights, with
 * Hugging Face names (model.embed_tokens.weight,
 * model.layers.N.self_attn.q_proj.weight, model.layers.N.mlp.gate_proj.weight,
 * model.layers.N.input_layernorm.weight, model.norm.weight, ...), in name
 * order as Hugging Face writes them. 24 layers give 1,711,376,384
 * parameters; --layers 2 a 0.23 B model for quick runs.
 *
 * The weights: Student-t with 5 degrees of freedom (heavy tails, as trained
 * LLM weights have), scaled to a standard deviation of 0.02 (0.0125 for the
 * MLP's down projection); each output row gets its own scale exp(0.3 N(0,1))
 * (per-row variation, which the per-row normalization absorbs); one entry
 * in 65,536 on average is an outlier of 20 to 60 standard deviations. The t
 * samples come from a 65,536-bin table of the exact t(5) quantiles with
 * linear interpolation inside a bin and Pareto tails of index 5 beyond the
 * outermost bins. Norm weights are 1 + 0.05 N(0,1).
 *
 * The Hessian file: for every linear weight (not the embedding, not the
 * norms) a 1-D F32 tensor of its input width under the weight's name,
 * log-normal exp(1.2 N(0,1)) with 1 % hot columns 20 to 200 times larger,
 * as real activation statistics look (a few channels carry outliers). The
 * k, q and v projections of a layer share one input and so one diagonal, as
 * do gate and up.
 *
 * --matrix ROWSxCOLS: one tensor "layer.weight" of that shape with the same
 * weight statistics, and its diagonal.
 *
 * --spec FILE: the tensors FILE lists, one a line "NAME ROWS COLS SD" (SD the
 * standard deviation before the row scales; blank lines and lines starting
 * with # are skipped), with the same weight statistics, each with its own
 * diagonal; any names and shapes (bench/rd_matrices.sh uses llama.cpp's
 * names and TinyLlama-1.1B's shapes).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ---- random numbers: splitmix64 seeds, xoshiro256** streams ------------ */

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct rng {
    uint64_t s[4];
} rng;

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in (0, 1). */
static inline double rng_unif(rng *r) { return ((rng_next(r) >> 11) + 0.5) * 0x1p-53; }

static double rng_normal(rng *r)
{
    double u = rng_unif(r), v = rng_unif(r);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* ---- Student-t(5) by table ------------------------------------------- */

#define T_DF 5.0
#define T_BITS 16
#define T_BINS (1u << T_BITS)
static double t_q[T_BINS + 1]; /* quantiles at i / T_BINS (ends unused) */
static double t_sd;            /* sqrt(df / (df - 2)) */

/* The t(5) distribution function in closed form: with th = atan(t/sqrt(5)),
 * F(t) = 1/2 + (th + sin th cos th (1 + 2/3 cos^2 th)) / pi. */
static double t5_cdf(double t)
{
    double th = atan(t / sqrt(T_DF)), c = cos(th), s = sin(th);
    return 0.5 + (th + s * c * (1.0 + 2.0 / 3.0 * c * c)) / M_PI;
}

static void t_table(void)
{
    t_sd = sqrt(T_DF / (T_DF - 2.0));
    t_q[T_BINS / 2] = 0.0;
    for (uint32_t i = 1; i < T_BINS / 2; i++) {
        double p = (double)i / T_BINS, lo = -1e4, hi = 0.0;
        for (int it = 0; it < 200 && hi - lo > 1e-13 * (1.0 + fabs(lo)); it++) {
            double mid = 0.5 * (lo + hi);
            if (t5_cdf(mid) < p)
                lo = mid;
            else
                hi = mid;
        }
        t_q[i] = 0.5 * (lo + hi);
        t_q[T_BINS - i] = -t_q[i];
    }
}

/* A t(5) sample divided by its standard deviation, from the top 48 bits
 * of u (16 for the bin, 32 for the place inside it). */
static inline double t_sample(uint64_t u)
{
    uint32_t bin = (uint32_t)(u >> (64 - T_BITS));
    double frac = (((u >> 16) & 0xffffffffu) + 0.5) * 0x1p-32;
    double t;
    if (bin == 0)
        t = t_q[1] * pow(frac, -1.0 / T_DF);          /* lower Pareto tail */
    else if (bin == T_BINS - 1)
        t = t_q[T_BINS - 1] * pow(frac, -1.0 / T_DF); /* upper */
    else
        t = t_q[bin] + (t_q[bin + 1] - t_q[bin]) * frac;
    return t / t_sd;
}

/* ---- fp16 (round to nearest even) ------------------------------------ */

static inline uint16_t to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, e = (x >> 23) & 0xffu, m = x & 0x7fffffu;
    if (e == 0xffu)
        return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
    int32_t he = (int32_t)e - 112;
    if (he >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (he <= 0) {
        if (he < -10)
            return (uint16_t)sign;
        m |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - he), h = m >> shift, rem = m & ((1u << shift) - 1),
                 half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)he << 10) | (m >> 13), rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

/* ---- tensors ------------------------------------------------------------ */

enum { K_WEIGHT, K_NORM, K_HESS };

typedef struct tensor {
    char name[96];
    int kind;
    uint64_t rows, cols; /* a norm or a diagonal: rows = 1 */
    int ndim;
    double sd;           /* weights */
    char hkey[96];       /* diagonals: the name whose statistics they share */
    uint64_t offset, nbytes;
} tensor;

typedef struct list {
    tensor *t;
    size_t n, cap;
} list;

static tensor *add(list *l, const char *name, int kind, uint64_t rows, uint64_t cols, int ndim,
                   double sd)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->t = realloc(l->t, l->cap * sizeof *l->t);
        if (!l->t) {
            fprintf(stderr, "synth_model: out of memory\n");
            exit(1);
        }
    }
    tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->hkey, sizeof t->hkey, "%s", name);
    t->kind = kind;
    t->rows = rows;
    t->cols = cols;
    t->ndim = ndim;
    t->sd = sd;
    return t;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const tensor *)a)->name, ((const tensor *)b)->name);
}

/* ---- generation, rows in parallel ---------------------------------------- */

typedef struct gen {
    const tensor *t;
    uint64_t seed;
    void *out;           /* F16 for weights and norms, F32 for diagonals */
    uint64_t next_row;   /* shared counter */
    pthread_mutex_t mu;
} gen;

#define ROWS_PER_TAKE 16

static void gen_row(const gen *g, uint64_t r)
{
    const tensor *t = g->t;
    rng R;
    rng_seed(&R, g->seed ^ (name_hash(t->hkey) * 0x9e3779b97f4a7c15ull) ^ (r * 0xd1b54a32d192ed03ull));
    if (t->kind == K_WEIGHT) {
        uint16_t *o = (uint16_t *)g->out + r * t->cols;
        double scale = t->sd * exp(0.3 * rng_normal(&R));
        for (uint64_t c = 0; c < t->cols; c++) {
            uint64_t u = rng_next(&R);
            double v = t_sample(u) * scale;
            if ((u & 0xffffu) == 0) { /* the low 16 bits: one entry in 65,536 */
                double mag = 20.0 + 40.0 * rng_unif(&R);
                v = (v < 0 ? -mag : mag) * scale;
            }
            o[c] = to_f16((float)v);
        }
    } else if (t->kind == K_NORM) {
        uint16_t *o = (uint16_t *)g->out;
        for (uint64_t c = 0; c < t->cols; c++)
            o[c] = to_f16((float)(1.0 + 0.05 * rng_normal(&R)));
    } else {
        float *o = (float *)g->out;
        for (uint64_t c = 0; c < t->cols; c++) {
            double h = exp(1.2 * rng_normal(&R));
            if (rng_unif(&R) < 0.01)
                h *= 20.0 + 180.0 * rng_unif(&R);
            o[c] = (float)h;
        }
    }
}

static void *gen_thread(void *p)
{
    gen *g = p;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        uint64_t r0 = g->next_row;
        g->next_row += ROWS_PER_TAKE;
        pthread_mutex_unlock(&g->mu);
        if (r0 >= g->t->rows)
            return NULL;
        for (uint64_t r = r0; r < r0 + ROWS_PER_TAKE && r < g->t->rows; r++)
            gen_row(g, r);
    }
}

static void generate(const tensor *t, uint64_t seed, void *out, int threads)
{
    gen g = {.t = t, .seed = seed, .out = out};
    pthread_mutex_init(&g.mu, NULL);
    pthread_t tid[256];
    int n = 0;
    for (int i = 1; i < threads && i < 256; i++)
        if (pthread_create(&tid[n], NULL, gen_thread, &g) == 0)
            n++;
    gen_thread(&g);
    for (int i = 0; i < n; i++)
        pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&g.mu);
}

/* ---- safetensors -------------------------------------------------------- */

static void die(const char *what, const char *path)
{
    fprintf(stderr, "synth_model: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void write_file(const char *dir, const char *base, list *l, int hessian, uint64_t seed,
                       int threads)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, base);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    size_t esize = hessian ? 4 : 2;
    uint64_t off = 0, biggest = 0;
    for (size_t i = 0; i < l->n; i++) {
        tensor *t = &l->t[i];
        t->offset = off;
        t->nbytes = t->rows * t->cols * esize;
        off += t->nbytes;
        biggest = t->nbytes > biggest ? t->nbytes : biggest;
    }
    size_t cap = 256 + l->n * 256, len = 0;
    char *h = malloc(cap);
    if (!h)
        die("out of memory for", path);
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < l->n; i++) {
        const tensor *t = &l->t[i];
        if (t->ndim == 1)
            len += (size_t)snprintf(h + len, cap - len,
                                    ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu],"
                                    "\"data_offsets\":[%llu,%llu]}",
                                    t->name, hessian ? "F32" : "F16",
                                    (unsigned long long)t->cols, (unsigned long long)t->offset,
                                    (unsigned long long)(t->offset + t->nbytes));
        else
            len += (size_t)snprintf(h + len, cap - len,
                                    ",\"%s\":{\"dtype\":\"F16\",\"shape\":[%llu,%llu],"
                                    "\"data_offsets\":[%llu,%llu]}",
                                    t->name, (unsigned long long)t->rows,
                                    (unsigned long long)t->cols, (unsigned long long)t->offset,
                                    (unsigned long long)(t->offset + t->nbytes));
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8)
        h[len++] = ' ';
    FILE *f = fopen(tmp, "wb");
    if (!f)
        die("cannot create", tmp);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(h, 1, len, f) != len)
        die("cannot write", tmp);
    free(h);
    void *buf = malloc(biggest ? biggest : 1);
    if (!buf)
        die("out of memory for", path);
    for (size_t i = 0; i < l->n; i++) {
        const tensor *t = &l->t[i];
        generate(t, seed, buf, threads);
        if (fwrite(buf, 1, t->nbytes, f) != t->nbytes)
            die("cannot write", tmp);
    }
    free(buf);
    if (fclose(f) != 0)
        die("cannot write", tmp);
    if (rename(tmp, path) != 0)
        die("cannot rename to", path);
    printf("%s: %zu tensors, %llu bytes\n", path, l->n,
           (unsigned long long)(8 + len + off));
}

/* mkdir -p */
static void mkdir_p(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *c = p + 1; *c; c++)
        if (*c == '/') {
            *c = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST)
                die("cannot create", p);
            *c = '/';
        }
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
        die("cannot create", p);
}

static void usage(FILE *f)
{
    fputs("Usage: synth_model [--layers N] [--seed S] [--threads T] OUTDIR\n"
          "       synth_model --matrix ROWSxCOLS [--seed S] [--threads T] OUTDIR\n"
          "       synth_model --spec FILE [--seed S] [--threads T] OUTDIR\n"
          "Writes OUTDIR/model.safetensors (F16, SmolLM2-1.7B's shapes: 24 layers by\n"
          "default, or one ROWSxCOLS matrix \"layer.weight\", or the tensors FILE lists\n"
          "one a line as \"NAME ROWS COLS SD\") and OUTDIR/hessian.safetensors\n"
          "(an F32 diagonal per linear weight).\n",
          f);
}

int main(int argc, char **argv)
{
    int layers = 24, threads = 0;
    uint64_t seed = 1, mrows = 0, mcols = 0;
    const char *dir = NULL, *spec = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--layers") && i + 1 < argc)
            layers = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--matrix") && i + 1 < argc) {
            unsigned long long r, c;
            if (sscanf(argv[++i], "%llux%llu", &r, &c) != 2 || !r || !c) {
                fprintf(stderr, "synth_model: --matrix wants ROWSxCOLS\n");
                return 2;
            }
            mrows = r;
            mcols = c;
        } else if (!strcmp(a, "--spec") && i + 1 < argc) {
            spec = argv[++i];
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-' || dir) {
            usage(stderr);
            return 2;
        } else
            dir = a;
    }
    if (!dir || layers < 1 || layers > 1000) {
        usage(stderr);
        return 2;
    }
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)(n > 256 ? 256 : n) : 1;
    }
    mkdir_p(dir);
    t_table();

    list model = {0}, hess = {0};
    const uint64_t H = 2048, I = 8192, V = 49152;
    char name[96], key[96];
    if (spec) {
        FILE *sf = fopen(spec, "r");
        if (!sf)
            die("cannot open", spec);
        char line[512];
        int ln = 0;
        while (fgets(line, sizeof line, sf)) {
            ln++;
            char nm[96];
            unsigned long long r, c;
            double sd;
            const char *p = line + strspn(line, " \t");
            if (*p == '#' || *p == '\n' || *p == '\0')
                continue;
            if (sscanf(p, "%95s %llu %llu %lf", nm, &r, &c, &sd) != 4 || !r || !c || !(sd > 0)) {
                fprintf(stderr, "synth_model: %s:%d: want \"NAME ROWS COLS SD\"\n", spec, ln);
                return 2;
            }
            add(&model, nm, K_WEIGHT, r, c, 2, sd);
            add(&hess, nm, K_HESS, 1, c, 1, 0);
        }
        fclose(sf);
        if (!model.n) {
            fprintf(stderr, "synth_model: %s lists no tensor\n", spec);
            return 2;
        }
    } else if (mrows) {
        add(&model, "layer.weight", K_WEIGHT, mrows, mcols, 2, 0.02);
        add(&hess, "layer.weight", K_HESS, 1, mcols, 1, 0);
    } else {
        add(&model, "model.embed_tokens.weight", K_WEIGHT, V, H, 2, 0.02);
        add(&model, "model.norm.weight", K_NORM, 1, H, 1, 0);
        for (int l = 0; l < layers; l++) {
            static const struct {
                const char *mod;
                int mlp;      /* 0 attention input, 1 mlp input, 2 down, 3 o */
            } lin[] = {{"self_attn.q_proj", 0}, {"self_attn.k_proj", 0},
                       {"self_attn.v_proj", 0}, {"self_attn.o_proj", 3},
                       {"mlp.gate_proj", 1},    {"mlp.up_proj", 1},
                       {"mlp.down_proj", 2}};
            for (size_t m = 0; m < sizeof lin / sizeof lin[0]; m++) {
                uint64_t rows = lin[m].mlp == 1 ? I : H, cols = lin[m].mlp == 2 ? I : H;
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, lin[m].mod);
                add(&model, name, K_WEIGHT, rows, cols, 2, lin[m].mlp == 2 ? 0.0125 : 0.02);
                tensor *d = add(&hess, name, K_HESS, 1, cols, 1, 0);
                /* q, k, v see the same input, gate and up too */
                snprintf(key, sizeof key, "model.layers.%d.%s", l,
                         lin[m].mlp == 0 ? "attn_in" : lin[m].mlp == 1 ? "mlp_in" : lin[m].mod);
                snprintf(d->hkey, sizeof d->hkey, "%s", key);
            }
            snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
            add(&model, name, K_NORM, 1, H, 1, 0);
            snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
            add(&model, name, K_NORM, 1, H, 1, 0);
        }
    }
    qsort(model.t, model.n, sizeof *model.t, by_name);
    qsort(hess.t, hess.n, sizeof *hess.t, by_name);
    uint64_t params = 0;
    for (size_t i = 0; i < model.n; i++)
        params += model.t[i].rows * model.t[i].cols;
    fflush(stdout);
    printf("synth_model: %zu tensors, %llu parameters, seed %llu, %d threads\n", model.n,
           (unsigned long long)params, (unsigned long long)seed, threads);
    write_file(dir, "hessian.safetensors", &hess, 1, seed ^ 0x4845535349414eull, threads);
    write_file(dir, "model.safetensors", &model, 0, seed, threads);
    free(model.t);
    free(hess.t);
    return 0;
}
