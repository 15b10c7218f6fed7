/* The driver: the flow between stages.
 *
 * For every tensor of the source, in file order:
 *   pass-through tensors go to the writer untouched;
 *   selected tensors are converted to float32 and checked (finite values),
 *   get their Hessian diagonal, are normalized per row (s_i = max_j |W_ij|,
 *   stored as fp16), scored by the importance plugin, split into the top-k
 *   sparse set Omega and the body B, quantized by the clusterer, corrected
 *   by the residual coder, reconstructed (W_hat = (Q(B) + S) * s), measured,
 *   and handed to the writer.
 * Only one tensor is in memory at a time (plus what the source maps). All
 * files are written through atomic outputs and renamed into place only at
 * the end of a successful run.
 */
#include "config.h"

#include "driver.h"
#include "ctx.h"
#include "dtype.h"
#include "report.h"
#include "util.h"

#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

volatile sig_atomic_t hvq_interrupted = 0;

/* ---- seeds and top-k ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t hvq_tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return splitmix64(seed ^ splitmix64(h));
}

/* a ranks before b: higher score, then lower index. */
static int ranks_before(const float *score, uint64_t a, uint64_t b)
{
    return score[a] > score[b] || (score[a] == score[b] && a < b);
}

static void swap_u64(uint64_t *a, uint64_t *b)
{
    uint64_t t = *a;
    *a = *b;
    *b = t;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

hvq_status hvq_top_k(hvq_ctx *ctx, const float *score, uint64_t n, uint64_t k, uint64_t *pos)
{
    if (k == 0)
        return HVQ_OK;
    if (k > n)
        return hvq_error(ctx, HVQ_E_INTERNAL, "top-k: k %llu > n %llu",
                         (unsigned long long)k, (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++)
        if (isnan(score[i]))
            return hvq_error(ctx, HVQ_E_INPUT, "importance score is NaN at entry %llu",
                             (unsigned long long)i);
    uint64_t *idx = hvq_alloc(ctx, (size_t)n * sizeof *idx);
    if (!idx)
        return HVQ_E_NOMEM;
    for (uint64_t i = 0; i < n; i++)
        idx[i] = i;
    /* Quickselect on the total order "ranks_before": afterwards idx[0..k)
     * holds the k best. The order is strict (indices differ), so the set is
     * unique and deterministic. */
    uint64_t lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        /* median of three into idx[mid] */
        if (ranks_before(score, idx[mid], idx[lo]))
            swap_u64(&idx[mid], &idx[lo]);
        if (ranks_before(score, idx[hi], idx[lo]))
            swap_u64(&idx[hi], &idx[lo]);
        if (ranks_before(score, idx[hi], idx[mid]))
            swap_u64(&idx[hi], &idx[mid]);
        uint64_t pivot = idx[mid];
        swap_u64(&idx[mid], &idx[hi]);
        uint64_t store = lo;
        for (uint64_t i = lo; i < hi; i++)
            if (ranks_before(score, idx[i], pivot))
                swap_u64(&idx[i], &idx[store++]);
        swap_u64(&idx[store], &idx[hi]);
        if (store == target)
            break;
        if (store < target)
            lo = store + 1;
        else
            hi = store - 1;
    }
    memcpy(pos, idx, (size_t)k * sizeof *pos);
    free(idx);
    qsort(pos, (size_t)k, sizeof *pos, cmp_u64);
    return HVQ_OK;
}

/* ---- progress ------------------------------------------------------------ */

typedef struct progress {
    int tty, quiet;
    double start;
    uint64_t total_units, done_units;
    size_t n_tensors;
} progress;

static void progress_tensor(hvq_ctx *ctx, progress *pg, size_t i, const char *name,
                            const hvq_tensor_report *tr)
{
    if (pg->quiet)
        return;
    double el = hvq_now() - pg->start;
    if (pg->tty) {
        double frac = pg->total_units ? (double)pg->done_units / (double)pg->total_units : 1.0;
        char bar[21];
        int fill = (int)(frac * 20.0 + 0.5);
        for (int b = 0; b < 20; b++)
            bar[b] = b < fill ? '#' : '.';
        bar[20] = '\0';
        double eta = frac > 0.0 ? el / frac - el : 0.0;
        fprintf(stderr, "\r\033[K[%s] %3d%% %zu/%zu %.48s  ETA %.0fs", bar,
                (int)(frac * 100.0), i + 1, pg->n_tensors, name, eta);
        fflush(stderr);
        hvq_ctx_line_dirty(ctx, 1);
    } else if (tr->compressed) {
        hvq_log(ctx, HVQ_LOG_INFO, "[%zu/%zu] %s %llux%llu %s: rel. error %.4g (%.3f s)", i + 1,
                pg->n_tensors, name, (unsigned long long)tr->rows,
                (unsigned long long)tr->cols, tr->clusterer, tr->rel_fro, tr->seconds);
    }
}

static void progress_end(hvq_ctx *ctx, progress *pg)
{
    if (pg->tty && !pg->quiet) {
        fputs("\r\033[K", stderr);
        hvq_ctx_line_dirty(ctx, 0);
    }
}

/* ---- hessian instances (one per plugin and parameter set) --------------- */

typedef struct hess_inst {
    const hvq_loaded_plugin *plugin;
    const hvq_value *values;
    void *state;
} hess_inst;

typedef struct run_state {
    hvq_ctx *ctx;
    const hvq_pipeline *p;
    hess_inst hess[16];
    size_t n_hess;
} run_state;

static hvq_status hessian_for(run_state *rs, const hvq_loaded_plugin *pl,
                              const hvq_params *params, void **state)
{
    for (size_t i = 0; i < rs->n_hess; i++)
        if (rs->hess[i].plugin == pl && rs->hess[i].values == params->values) {
            *state = rs->hess[i].state;
            return HVQ_OK;
        }
    if (rs->n_hess == sizeof rs->hess / sizeof rs->hess[0])
        return hvq_error(rs->ctx, HVQ_E_INPUT, "too many distinct hessian stages");
    void *st = NULL;
    hvq_status s = pl->desc.hessian_open(rs->ctx, params, rs->p->input, &st);
    if (s != HVQ_OK) {
        pl->desc.hessian_close(rs->ctx, st);
        return s;
    }
    rs->hess[rs->n_hess].plugin = pl;
    rs->hess[rs->n_hess].values = params->values;
    rs->hess[rs->n_hess].state = st;
    rs->n_hess++;
    *state = st;
    return HVQ_OK;
}

/* ---- one tensor ---------------------------------------------------------- */

typedef struct work {
    float *w, *recon, *h, *x, *score, *scale, *target;
    uint64_t *pos;
    size_t cap;   /* elements allocated in the matrix-sized buffers */
    size_t hcap;  /* elements in h */
    size_t scap;  /* elements in scale */
} work;

static void work_free(work *wk)
{
    free(wk->w);
    free(wk->recon);
    free(wk->h);
    free(wk->x);
    free(wk->score);
    free(wk->scale);
    free(wk->target);
    free(wk->pos);
    memset(wk, 0, sizeof *wk);
}

static int grow(hvq_ctx *ctx, void **p, size_t n, size_t elem)
{
    size_t bytes = n * elem;
    void *q = realloc(*p, bytes ? bytes : 1);
    if (!q) {
        hvq_error(ctx, HVQ_E_NOMEM, "out of memory (%zu bytes for one tensor)", bytes);
        return 0;
    }
    *p = q;
    return 1;
}

static hvq_status work_reserve(hvq_ctx *ctx, work *wk, size_t numel, size_t rows, size_t cols)
{
    if (numel > wk->cap) {
        if (!grow(ctx, (void **)&wk->w, numel, sizeof(float)) ||
            !grow(ctx, (void **)&wk->recon, numel, sizeof(float)) ||
            !grow(ctx, (void **)&wk->x, numel, sizeof(float)) ||
            !grow(ctx, (void **)&wk->score, numel, sizeof(float)))
            return HVQ_E_NOMEM;
        wk->cap = numel;
    }
    if (cols > wk->hcap) {
        if (!grow(ctx, (void **)&wk->h, cols, sizeof(float)))
            return HVQ_E_NOMEM;
        wk->hcap = cols;
    }
    if (rows > wk->scap) {
        if (!grow(ctx, (void **)&wk->scale, rows, sizeof(float)))
            return HVQ_E_NOMEM;
        wk->scap = rows;
    }
    return HVQ_OK;
}

static float round_f16(float v) { return hvq_f16_to_f32(hvq_f32_to_f16(v)); }

static hvq_status compress_tensor(run_state *rs, const hvq_tensor *t, work *wk,
                                  hvq_tensor_report *tr, hvq_encoded *cenc,
                                  hvq_encoded *renc, hvq_result *res)
{
    hvq_ctx *ctx = rs->ctx;
    const char *name = t->info.name;
    const hvq_loaded_plugin *hp, *ip, *cp, *rp;
    hvq_params hpar, ipar, cpar, rpar;
    hvq_status st;
    double t0 = hvq_now();

    if ((st = hvq_pipeline_stage_for(ctx, rs->p, HVQ_STAGE_HESSIAN, name, &hp, &hpar)) ||
        (st = hvq_pipeline_stage_for(ctx, rs->p, HVQ_STAGE_IMPORTANCE, name, &ip, &ipar)) ||
        (st = hvq_pipeline_stage_for(ctx, rs->p, HVQ_STAGE_CLUSTERER, name, &cp, &cpar)) ||
        (st = hvq_pipeline_stage_for(ctx, rs->p, HVQ_STAGE_RESIDUAL, name, &rp, &rpar)))
        return st;
    snprintf(tr->hessian, sizeof tr->hessian, "%s", hp->desc.name);
    snprintf(tr->importance, sizeof tr->importance, "%s", ip->desc.name);
    snprintf(tr->clusterer, sizeof tr->clusterer, "%s", cp->desc.name);
    snprintf(tr->residual, sizeof tr->residual, "%s", rp->desc.name);

    uint64_t rows = (uint64_t)t->info.shape[0];
    uint64_t numel = hvq_numel(&t->info);
    uint64_t cols = numel / rows;
    tr->rows = rows;
    tr->cols = cols;
    if ((st = work_reserve(ctx, wk, (size_t)numel, (size_t)rows, (size_t)cols)) != HVQ_OK)
        return st;

    /* float32 copy, checked finite */
    if ((st = hvq_convert(ctx, HVQ_DTYPE_F32, wk->w, t->info.dtype, t->data, (size_t)numel)))
        return st;
    for (uint64_t i = 0; i < numel; i++)
        if (!isfinite(wk->w[i]))
            return hvq_error(ctx, HVQ_E_INPUT, "tensor '%s': %s value at [%llu, %llu]", name,
                             isnan(wk->w[i]) ? "NaN" : "infinite",
                             (unsigned long long)(i / cols), (unsigned long long)(i % cols));

    /* Hessian diagonal */
    void *hstate = NULL;
    if ((st = hessian_for(rs, hp, &hpar, &hstate)) != HVQ_OK)
        return st;
    st = hp->desc.hessian_get(ctx, hstate, &t->info, rows, cols, wk->h);
    if (st != HVQ_OK)
        return st;
    for (uint64_t j = 0; j < cols; j++)
        if (!(wk->h[j] >= 0.0f) || !isfinite(wk->h[j]))
            return hvq_error(ctx, HVQ_E_INPUT,
                             "tensor '%s': hessian '%s' gave an invalid value %g at column %llu",
                             name, hp->desc.name, (double)wk->h[j], (unsigned long long)j);

    int raw = (cp->desc.flags & HVQ_CLUSTERER_RAW) != 0;
    uint64_t k = rp->desc.residual_count(&rpar, numel);
    if (k > numel)
        return hvq_error(ctx, HVQ_E_INTERNAL, "residual '%s' asked for %llu of %llu entries",
                         rp->desc.name, (unsigned long long)k, (unsigned long long)numel);
    if (raw && k > 0)
        return hvq_error(ctx, HVQ_E_INPUT,
                         "tensor '%s': clusterer '%s' quantizes raw weights and takes no "
                         "sparse residual, but residual '%s' asks for %llu entries",
                         name, cp->desc.name, rp->desc.name, (unsigned long long)k);
    tr->n_sparse = k;

    /* Normalization: s_i = max_j |W_ij| rounded to fp16 (what is stored). */
    const float *x = wk->w;
    if (!raw) {
        for (uint64_t r = 0; r < rows; r++) {
            float m = 0.0f;
            const float *row = wk->w + r * cols;
            for (uint64_t c = 0; c < cols; c++)
                if (fabsf(row[c]) > m)
                    m = fabsf(row[c]);
            float s = round_f16(m);
            if (isinf(s))
                return hvq_error(ctx, HVQ_E_INPUT,
                                 "tensor '%s': row %llu has magnitude %g, beyond the fp16 "
                                 "range of the row scales",
                                 name, (unsigned long long)r, (double)m);
            wk->scale[r] = s;
            float *xr = wk->x + r * cols;
            for (uint64_t c = 0; c < cols; c++)
                xr[c] = s > 0.0f ? row[c] / s : 0.0f;
        }
        x = wk->x;
    }

    /* Decoupling: Omega = top-k importance; B = W_norm with Omega zeroed. */
    if (k > 0) {
        if (!grow(ctx, (void **)&wk->pos, (size_t)k, sizeof *wk->pos) ||
            !grow(ctx, (void **)&wk->target, (size_t)k, sizeof *wk->target))
            return HVQ_E_NOMEM;
        if ((st = ip->desc.importance_score(ctx, &ipar, wk->x, rows, cols, wk->h, wk->score)))
            return st;
        if ((st = hvq_top_k(ctx, wk->score, numel, k, wk->pos)) != HVQ_OK) {
            hvq_error_prefix(ctx, "tensor '%s': importance '%s'", name, ip->desc.name);
            return st;
        }
        for (uint64_t i = 0; i < k; i++) {
            wk->target[i] = wk->x[wk->pos[i]];
            wk->x[wk->pos[i]] = 0.0f;
        }
    }

    /* Body quantization */
    hvq_cluster_input cin = {
        .tensor_name = name, .x = x, .rows = rows, .cols = cols, .hessian = wk->h,
        .row_scale = raw ? NULL : wk->scale, .sparse_pos = k ? wk->pos : NULL,
        .n_sparse = k, .seed = hvq_tensor_seed(rs->p->seed, name),
    };
    if ((st = cp->desc.cluster_encode(ctx, &cpar, &cin, wk->recon, cenc)) != HVQ_OK)
        return st;

    /* Residual */
    hvq_residual_input rin = {
        .tensor_name = name, .rows = rows, .cols = cols, .pos = k ? wk->pos : NULL,
        .target = k ? wk->target : NULL, .n = k, .recon = wk->recon,
    };
    if ((st = rp->desc.residual_encode(ctx, &rpar, &rin, renc)) != HVQ_OK)
        return st;

    /* Reconstruction and metrics */
    if (!raw)
        for (uint64_t r = 0; r < rows; r++) {
            float s = wk->scale[r];
            float *o = wk->recon + r * cols;
            for (uint64_t c = 0; c < cols; c++)
                o[c] *= s;
        }
    double e2 = 0, w2 = 0, he2 = 0, hw2 = 0, maxs = 0;
    for (uint64_t r = 0; r < rows; r++) {
        const float *w = wk->w + r * cols, *o = wk->recon + r * cols;
        for (uint64_t c = 0; c < cols; c++) {
            double e = (double)w[c] - (double)o[c];
            e2 += e * e;
            w2 += (double)w[c] * w[c];
            he2 += wk->h[c] * e * e;
            hw2 += wk->h[c] * (double)w[c] * w[c];
        }
    }
    for (uint64_t i = 0; i < k; i++) {
        double e = fabs((double)wk->w[wk->pos[i]] - wk->recon[wk->pos[i]]);
        if (e > maxs)
            maxs = e;
    }
    tr->rel_fro = w2 > 0 ? sqrt(e2 / w2) : (e2 > 0 ? INFINITY : 0.0);
    tr->rel_hessian = hw2 > 0 ? he2 / hw2 : (he2 > 0 ? INFINITY : 0.0);
    tr->sqnr_db = e2 > 0 ? 10.0 * log10(w2 / e2) : INFINITY;
    tr->max_abs_err_sparse = maxs;
    tr->err2 = e2;
    tr->w2 = w2;
    tr->herr2 = he2;
    tr->hw2 = hw2;
    double bits = raw ? 0.0 : 16.0 * (double)rows;
    uint64_t bytes = raw ? 0 : 2 * rows;
    for (size_t i = 0; i < cenc->n_components; i++) {
        bits += (double)cenc->components[i].paper_bits;
        bytes += cenc->components[i].nbytes;
    }
    for (size_t i = 0; i < renc->n_components; i++) {
        bits += (double)renc->components[i].paper_bits;
        bytes += renc->components[i].nbytes;
    }
    tr->paper_bits = bits;
    tr->stored_bytes = bytes;
    tr->seconds = hvq_now() - t0;

    res->compressed = 1;
    res->recon = wk->recon;
    res->rows = rows;
    res->cols = cols;
    res->row_scale = raw ? NULL : wk->scale;
    res->clusterer = cp->desc.name;
    res->residual = rp->desc.name;
    res->clusterer_version = cp->desc.version;
    res->residual_version = rp->desc.version;
    res->cluster_enc = cenc;
    res->residual_enc = renc;
    return HVQ_OK;
}

/* ---- the run ------------------------------------------------------------- */

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Whether paths a and b name the same directory entry, whether or not it
 * exists yet ("x" and "./x"): same directory and same last component. */
static int same_target(const char *a, const char *b)
{
    char *da = strdup(a), *db = strdup(b), *ba = strdup(a), *bb = strdup(b);
    int same = da && db && ba && bb && strcmp(basename(ba), basename(bb)) == 0 &&
               same_file(dirname(da), dirname(db));
    free(da);
    free(db);
    free(ba);
    free(bb);
    return same || strcmp(a, b) == 0;
}

/* Whether path is an existing entry of the directory dir: when the input is
 * a model directory, such a file may be one the source reads. */
static int in_input_dir(const char *path, const char *dir)
{
    struct stat sd, sp;
    if (stat(dir, &sd) != 0 || !S_ISDIR(sd.st_mode) || stat(path, &sp) != 0)
        return 0;
    char *d = strdup(path);
    int in = d && same_file(dirname(d), dir);
    free(d);
    return in;
}

/* Refuses, before any work, a raw clusterer paired with a residual coder
 * that keeps entries (base stages and every override). */
static hvq_status check_stage_pairs(hvq_ctx *ctx, const hvq_pipeline *p)
{
    for (size_t o = 0; o <= p->n_overrides; o++) {
        const hvq_stage_cfg *cs = &p->stages[HVQ_STAGE_CLUSTERER];
        const hvq_stage_cfg *rs = &p->stages[HVQ_STAGE_RESIDUAL];
        if (o < p->n_overrides) {
            const hvq_override *ov = &p->overrides[o];
            if (!ov->stages[HVQ_STAGE_CLUSTERER].present &&
                !ov->stages[HVQ_STAGE_RESIDUAL].present)
                continue;
            if (ov->stages[HVQ_STAGE_CLUSTERER].present)
                cs = &ov->stages[HVQ_STAGE_CLUSTERER];
            if (ov->stages[HVQ_STAGE_RESIDUAL].present)
                rs = &ov->stages[HVQ_STAGE_RESIDUAL];
        }
        if (!cs->resolved || !rs->resolved)
            continue;
        hvq_params rp = {rs->n_values, rs->values, rs->resolved->desc.params};
        if ((cs->resolved->desc.flags & HVQ_CLUSTERER_RAW) &&
            rs->resolved->desc.residual_count(&rp, 1000000) > 0)
            return hvq_error(ctx, HVQ_E_INPUT,
                             "%s: clusterer '%s' quantizes raw weights and takes no sparse "
                             "residual; set the residual stage to 'none' (it is '%s')",
                             p->path, cs->resolved->desc.name, rs->resolved->desc.name);
    }
    return HVQ_OK;
}

hvq_status hvq_run_pipeline(hvq_ctx *ctx, const hvq_registry *reg, const hvq_pipeline *p,
                            hvq_run_report *rep)
{
    hvq_status st = HVQ_OK;
    memset(rep, 0, sizeof *rep);
    rep->pipeline = p;
    rep->threads = hvq_ctx_options(ctx)->threads;
    double t_start = hvq_now();

    if (!p->input || !*p->input)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: no input (set 'input:' or --input)", p->path);
    if (!p->output || !*p->output)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: no output (set 'output:' or --output)", p->path);
    if (same_file(p->input, p->output) || (p->report && same_file(p->input, p->report)))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: the output may not be the input", p->output);
    if (in_input_dir(p->output, p->input) || (p->report && in_input_dir(p->report, p->input)))
        return hvq_error(ctx, HVQ_E_INPUT,
                         "%s: the output may not replace a file of the input directory %s",
                         in_input_dir(p->output, p->input) ? p->output : p->report, p->input);
    if (p->report && same_target(p->report, p->output))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: the report may not be the output", p->report);
    if ((st = check_stage_pairs(ctx, p)) != HVQ_OK)
        return st;

    const hvq_loaded_plugin *src = hvq_registry_detect(reg, ctx, p->input);
    if (!src)
        return hvq_ctx_status(ctx);
    rep->source_format = strdup(src->desc.name);
    const hvq_loaded_plugin *wp = p->stages[HVQ_STAGE_WRITER].resolved;
    rep->writer = strdup(wp->desc.name);
    if (!rep->source_format || !rep->writer)
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");

    void *sstate = NULL, *wstate = NULL;
    hvq_tensor_info *infos = NULL;
    unsigned char *selected = NULL;
    char *yaml = NULL;
    run_state rs = {.ctx = ctx, .p = p};
    work wk = {0};
    int writer_opened = 0, source_opened = 1;

    if ((st = src->desc.source_open(ctx, p->input, &sstate)) != HVQ_OK)
        goto done;
    size_t n = src->desc.source_count(sstate);
    infos = hvq_calloc(ctx, n ? n : 1, sizeof *infos);
    selected = hvq_calloc(ctx, n ? n : 1, 1);
    rep->t = hvq_calloc(ctx, n ? n : 1, sizeof *rep->t);
    if (!infos || !selected || !rep->t) {
        st = HVQ_E_NOMEM;
        goto done;
    }
    rep->n = n;
    progress pg = {.tty = isatty(2), .quiet = hvq_ctx_options(ctx)->quiet,
                   .start = hvq_now(), .n_tensors = n};
    for (size_t i = 0; i < n; i++) {
        if ((st = src->desc.source_info(sstate, i, &infos[i])) != HVQ_OK)
            goto done;
        hvq_tensor_report *tr = &rep->t[i];
        tr->name = strdup(infos[i].name);
        if (!tr->name) {
            st = hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
            goto done;
        }
        snprintf(tr->dtype, sizeof tr->dtype, "%s", infos[i].dtype_name ? infos[i].dtype_name
                                                          : hvq_dtype_name(infos[i].dtype));
        tr->ndim = infos[i].ndim;
        memcpy(tr->shape, infos[i].shape, sizeof tr->shape);
        tr->params = hvq_numel(&infos[i]);
        rep->total_params += tr->params;
        if (!hvq_pipeline_selects(p, infos[i].name)) {
            tr->why_passed = "not selected";
        } else if (!hvq_dtype_is_float(infos[i].dtype)) {
            tr->why_passed = "not a float tensor";
        } else if (infos[i].ndim < 2) {
            tr->why_passed = "not a matrix (fewer than 2 dimensions)";
        } else if (tr->params == 0) {
            tr->why_passed = "empty";
        } else {
            selected[i] = 1;
            pg.total_units += tr->params;
        }
        if (tr->why_passed && strcmp(tr->why_passed, "not selected") != 0)
            hvq_log(ctx, HVQ_LOG_WARN, "%s: tensor '%s' matches the selection but is %s; "
                    "passed through unchanged", p->input, infos[i].name, tr->why_passed);
    }

    yaml = hvq_pipeline_to_yaml(p);
    hvq_writer_setup setup = {
        .output_path = p->output, .source_path = p->input, .source_format = src->desc.name,
        .tensors = infos, .compressed = selected, .n_tensors = n,
        .pipeline_yaml = yaml ? yaml : "",
    };
    if (src->desc.source_meta)
        src->desc.source_meta(sstate, &setup.source_meta, &setup.n_source_meta);
    const hvq_stage_cfg *wc = &p->stages[HVQ_STAGE_WRITER];
    hvq_params wpar = {wc->n_values, wc->values, wp->desc.params};
    writer_opened = 1;
    if ((st = wp->desc.writer_open(ctx, &wpar, &setup, &wstate)) != HVQ_OK)
        goto done;

    for (size_t i = 0; i < n; i++) {
        if (hvq_interrupted) {
            st = hvq_error(ctx, HVQ_E_IO, "interrupted");
            goto done;
        }
        hvq_tensor t;
        if ((st = src->desc.source_read(ctx, sstate, i, &t)) != HVQ_OK)
            goto done;
        hvq_result res = {.original = t};
        hvq_encoded cenc, renc;
        hvq_encoded_init(&cenc);
        hvq_encoded_init(&renc);
        if (selected[i]) {
            st = compress_tensor(&rs, &t, &wk, &rep->t[i], &cenc, &renc, &res);
            if (st != HVQ_OK) {
                if (!strstr(hvq_ctx_error(ctx), p->input))
                    hvq_error_prefix(ctx, "%s", p->input);
            } else {
                rep->t[i].compressed = 1;
                rep->compressed_params += rep->t[i].params;
                rep->paper_bits_compressed += rep->t[i].paper_bits;
                rep->stored_bytes_compressed += rep->t[i].stored_bytes;
                rep->err2 += rep->t[i].err2;
                rep->w2 += rep->t[i].w2;
                rep->herr2 += rep->t[i].herr2;
                rep->hw2 += rep->t[i].hw2;
                pg.done_units += rep->t[i].params;
            }
        }
        if (st == HVQ_OK)
            st = wp->desc.writer_tensor(ctx, wstate, &res);
        hvq_encoded_clear(&cenc);
        hvq_encoded_clear(&renc);
        if (st != HVQ_OK)
            goto done;
        progress_tensor(ctx, &pg, i, infos[i].name, &rep->t[i]);
    }
    progress_end(ctx, &pg);
    if ((st = wp->desc.writer_finish(ctx, wstate)) != HVQ_OK)
        goto done;
    rep->output_bytes = hvq_outputs_size(ctx);
    rep->seconds = hvq_now() - t_start;

    if (p->report && *p->report) {
        hvq_output *ro = hvq_output_open(ctx, p->report);
        if (!ro) {
            st = hvq_ctx_status(ctx);
            goto done;
        }
        hvq_buf b;
        hvq_buf_init(&b);
        hvq_report_json(&b, rep);
        if (b.oom)
            st = hvq_error(ctx, HVQ_E_NOMEM, "out of memory writing the report");
        else
            st = ctx->host->output_write(ctx, ro, b.data, b.len);
        hvq_buf_free(&b);
        if (st != HVQ_OK)
            goto done;
    }
    st = hvq_outputs_commit(ctx);

done:
    if (writer_opened)
        wp->desc.writer_close(ctx, wstate);
    for (size_t i = 0; i < rs.n_hess; i++)
        rs.hess[i].plugin->desc.hessian_close(ctx, rs.hess[i].state);
    if (source_opened)
        src->desc.source_close(ctx, sstate);
    if (st != HVQ_OK)
        hvq_outputs_abort(ctx);
    work_free(&wk);
    free(infos);
    free(selected);
    free(yaml);
    return st;
}

void hvq_run_report_free(hvq_run_report *rep)
{
    for (size_t i = 0; i < rep->n; i++)
        free(rep->t[i].name);
    free(rep->t);
    free(rep->source_format);
    free(rep->writer);
    memset(rep, 0, sizeof *rep);
}
