/* Pipelines: YAML loading, --set, validation against declared parameters,
 * overrides, selection and the YAML round trip; and typed parameter
 * parsing. Uses fake plugin descriptors, except emit_golden (the shipped
 * pipelines validated against the build tree's plugins). */
#include "config.h"

#include "harness.h"
#include "params.h"
#include "pipeline.h"
#include "util.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Fake plugins: every mandatory callback of their kind, doing nothing.
 * ---------------------------------------------------------------------- */

static hvq_status f_hessian_open(hvq_ctx *c, const hvq_params *p,
                                 const char *model, void **state)
{
    *state = NULL;
    return HVQ_OK;
}
static hvq_status f_hessian_get(hvq_ctx *c, void *state,
                                const hvq_tensor_info *t, uint64_t rows,
                                uint64_t cols, float *h)
{
    return HVQ_OK;
}
static void f_close(hvq_ctx *c, void *state) {}
static hvq_status f_score(hvq_ctx *c, const hvq_params *p, const float *w,
                          uint64_t rows, uint64_t cols, const float *h,
                          float *score)
{
    return HVQ_OK;
}
static hvq_status f_cluster_encode(hvq_ctx *c, const hvq_params *p,
                                   const hvq_cluster_input *in, float *recon,
                                   hvq_encoded *enc)
{
    return HVQ_OK;
}
static hvq_status f_decode(hvq_ctx *c, const hvq_encoded *enc, uint64_t rows,
                           uint64_t cols, float *recon)
{
    return HVQ_OK;
}
static uint64_t f_residual_count(const hvq_params *p, uint64_t numel)
{
    return 0;
}
static hvq_status f_residual_encode(hvq_ctx *c, const hvq_params *p,
                                    hvq_residual_input *in, hvq_encoded *enc)
{
    return HVQ_OK;
}
static hvq_status f_writer_open(hvq_ctx *c, const hvq_params *p,
                                const hvq_writer_setup *setup, void **state)
{
    *state = NULL;
    return HVQ_OK;
}
static hvq_status f_writer_tensor(hvq_ctx *c, void *state,
                                  const hvq_result *r)
{
    return HVQ_OK;
}
static hvq_status f_finish(hvq_ctx *c, void *state) { return HVQ_OK; }

#define HESSIAN_CB                                                            \
    .hessian_open = f_hessian_open, .hessian_get = f_hessian_get,             \
    .hessian_close = f_close
#define CLUSTER_CB .cluster_encode = f_cluster_encode, .cluster_decode = f_decode
#define RESIDUAL_CB                                                           \
    .residual_count = f_residual_count,                                       \
    .residual_encode = f_residual_encode, .residual_decode = f_decode
#define WRITER_CB                                                             \
    .writer_open = f_writer_open, .writer_tensor = f_writer_tensor,           \
    .writer_finish = f_finish, .writer_close = f_close
#define META(n) .name = n, .version = "1.0.0", .summary = "test " n, .license = "MIT"

static const hvq_param_spec file_params[] = {
    {"path", HVQ_PARAM_PATH, NULL, 0, 0, NULL, "the diagonals"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const hvq_param_spec coo16_params[] = {
    {"sparsity", HVQ_PARAM_FLOAT, "0.02", 0, 0.5, NULL, "fraction kept"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const char *const group_choices[] = {"per-row", "128", "32", NULL};
static const hvq_param_spec rtn_params[] = {
    {"group_size", HVQ_PARAM_CHOICE, "per-row", 0, 0, group_choices, "groups"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const hvq_param_spec kmeans_params[] = {
    {"block_size", HVQ_PARAM_INT, "4", 1, 16, NULL, "values per vector"},
    {"centroids", HVQ_PARAM_INT, "2048", 1, 65536, NULL, "codebook size"},
    {"iterations", HVQ_PARAM_INT, "15", 0, 0, NULL, "Lloyd iterations"},
    {"stability", HVQ_PARAM_INT, "200", 0, 0, NULL, "sample factor"},
    {"tolerance", HVQ_PARAM_FLOAT, "0.001", 0, 1, NULL, "early stop"},
    {"relocate", HVQ_PARAM_BOOL, "true", 0, 0, NULL, "relocate dead"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const char *const dtype_choices[] = {"f16", "bf16", "f32", NULL};
static const hvq_param_spec dequant_params[] = {
    {"dtype", HVQ_PARAM_CHOICE, "f16", 0, 0, dtype_choices, "element type"},
    {"format", HVQ_PARAM_STRING, "auto", 0, 0, NULL, "sink format"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const hvq_param_spec buggy_params[] = {
    {"level", HVQ_PARAM_INT, "abc", 0, 0, NULL, "a broken default"},
    {NULL, 0, NULL, 0, 0, NULL, NULL}};

static const hvq_plugin p_uniform = {
    HVQ_PLUGIN_HEADER, .kinds = HVQ_KIND_HESSIAN, META("uniform"), HESSIAN_CB};
static const hvq_plugin p_file = {HVQ_PLUGIN_HEADER, .kinds = HVQ_KIND_HESSIAN,
                                  META("file"), .params = file_params,
                                  HESSIAN_CB};
static const hvq_plugin p_magnitude = {HVQ_PLUGIN_HEADER,
                                       .kinds = HVQ_KIND_IMPORTANCE,
                                       META("magnitude"),
                                       .importance_score = f_score};
static const hvq_plugin p_none = {HVQ_PLUGIN_HEADER,
                                  .kinds = HVQ_KIND_RESIDUAL, META("none"),
                                  RESIDUAL_CB};
static const hvq_plugin p_coo16 = {HVQ_PLUGIN_HEADER,
                                   .kinds = HVQ_KIND_RESIDUAL, META("coo16"),
                                   .params = coo16_params, RESIDUAL_CB};
static const hvq_plugin p_rtn = {HVQ_PLUGIN_HEADER,
                                 .kinds = HVQ_KIND_CLUSTERER, META("rtn"),
                                 .params = rtn_params, CLUSTER_CB};
static const hvq_plugin p_kmeans = {HVQ_PLUGIN_HEADER,
                                    .kinds = HVQ_KIND_CLUSTERER,
                                    META("kmeans"), .params = kmeans_params,
                                    CLUSTER_CB};
static const hvq_plugin p_dequant = {HVQ_PLUGIN_HEADER,
                                     .kinds = HVQ_KIND_WRITER,
                                     META("dequant"),
                                     .params = dequant_params, WRITER_CB};
static const hvq_plugin p_hvq = {HVQ_PLUGIN_HEADER, .kinds = HVQ_KIND_WRITER,
                                 META("hvq"), WRITER_CB};
static const hvq_plugin p_buggy = {HVQ_PLUGIN_HEADER,
                                   .kinds = HVQ_KIND_CLUSTERER,
                                   META("buggy"), .params = buggy_params,
                                   CLUSTER_CB};

/* ------------------------------------------------------------------------
 * Fixture.
 * ---------------------------------------------------------------------- */

static hvq_ctx *ctx;
static hvq_registry *reg;
static char *tmp;
static char case_path[4096];

static void add(hvq_registry *r, const hvq_plugin *d)
{
    hvq_status st = hvq_registry_add(r, ctx, d, "test");
    ck_assert_msg(st == HVQ_OK, "registry_add %s: %s", d->name,
                  hvq_ctx_error(ctx));
}

static void setup(void)
{
    ctx = th_ctx();
    reg = hvq_registry_new();
    ck_assert_ptr_nonnull(reg);
    add(reg, &p_uniform);
    add(reg, &p_file);
    add(reg, &p_magnitude);
    add(reg, &p_none);
    add(reg, &p_coo16);
    add(reg, &p_rtn);
    add(reg, &p_kmeans);
    add(reg, &p_dequant);
    add(reg, &p_hvq);
    tmp = th_tmpdir("pipeline");
    snprintf(case_path, sizeof case_path, "%s/case.yaml", tmp);
}

static void teardown(void)
{
    th_rmtree(tmp);
    free(tmp);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}

/* tmpl with every "FILE" replaced by path (malloc'd). */
static char *expand(const char *tmpl, const char *path)
{
    size_t cap = strlen(tmpl) + 1, n = 0;
    const char *q;
    char *out;
    for (q = tmpl; (q = strstr(q, "FILE")); q += 4)
        cap += strlen(path);
    out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    for (q = tmpl; *q;) {
        if (strncmp(q, "FILE", 4) == 0) {
            memcpy(out + n, path, strlen(path));
            n += strlen(path);
            q += 4;
        } else {
            out[n++] = *q++;
        }
    }
    out[n] = '\0';
    return out;
}

static void check_error(hvq_status st, hvq_status want, const char *tmpl,
                        const char *path)
{
    char *exp = expand(tmpl, path);
    ck_assert_msg(st == want, "status %d, want %d; message: %s", (int)st,
                  (int)want, hvq_ctx_error(ctx));
    ck_assert_str_eq(hvq_ctx_error(ctx), exp);
    free(exp);
}

static hvq_status load_text(const char *yaml, hvq_pipeline **p)
{
    th_write_file(case_path, yaml, strlen(yaml));
    return hvq_pipeline_load(ctx, case_path, p);
}

static hvq_pipeline *load_ok_path(const char *path)
{
    hvq_pipeline *p = NULL;
    hvq_status st = hvq_pipeline_load(ctx, path, &p);
    ck_assert_msg(st == HVQ_OK, "load %s: %s", path, hvq_ctx_error(ctx));
    ck_assert_ptr_nonnull(p);
    return p;
}

static hvq_pipeline *load_ok(const char *yaml)
{
    th_write_file(case_path, yaml, strlen(yaml));
    return load_ok_path(case_path);
}

static void set_ok(hvq_pipeline *p, const char *arg)
{
    hvq_status st = hvq_pipeline_set(ctx, p, arg);
    ck_assert_msg(st == HVQ_OK, "--set %s: %s", arg, hvq_ctx_error(ctx));
}

static void validate_ok(hvq_pipeline *p)
{
    hvq_status st = hvq_pipeline_validate(ctx, p, reg);
    ck_assert_msg(st == HVQ_OK, "validate: %s", hvq_ctx_error(ctx));
}

/* Loading yaml fails with exactly tmpl (FILE = the case's path). */
static void load_fails(const char *yaml, const char *tmpl)
{
    hvq_pipeline *p = NULL;
    hvq_status st = load_text(yaml, &p);
    check_error(st, HVQ_E_INPUT, tmpl, case_path);
    ck_assert_ptr_null(p);
}

/* yaml loads, the --set arguments (NULL-terminated, or NULL) apply, and
 * validation fails with exactly tmpl. */
static void validate_fails(const char *yaml, const char *const *sets,
                           hvq_status want, const char *tmpl)
{
    hvq_pipeline *p = load_ok(yaml);
    hvq_status st;
    for (; sets && *sets; sets++)
        set_ok(p, *sets);
    st = hvq_pipeline_validate(ctx, p, reg);
    check_error(st, want, tmpl, case_path);
    hvq_pipeline_free(p);
}

static void set_fails(const char *arg, const char *expected)
{
    hvq_pipeline *p = load_ok_path(th_src("tests/data/pipelines/minimal.yaml"));
    hvq_status st = hvq_pipeline_set(ctx, p, arg);
    check_error(st, HVQ_E_INPUT, expected, "");
    hvq_pipeline_free(p);
}

/* The resolved value of param for tensor's stage. */
static const hvq_value *value_for(const hvq_pipeline *p, int stage,
                                  const char *tensor, const char *param,
                                  const char **plugin)
{
    const hvq_loaded_plugin *pl = NULL;
    hvq_params params;
    hvq_status st = hvq_pipeline_stage_for(ctx, p, stage, tensor, &pl, &params);
    ck_assert_msg(st == HVQ_OK, "stage_for: %s", hvq_ctx_error(ctx));
    ck_assert_ptr_nonnull(pl);
    if (plugin)
        *plugin = pl->desc.name;
    ck_assert_ptr_eq(params.specs, pl->desc.params);
    return param ? hvq_param_lookup(&params, param) : NULL;
}

static const char *plugin_for(const hvq_pipeline *p, int stage,
                              const char *tensor)
{
    const char *name = NULL;
    value_for(p, stage, tensor, NULL, &name);
    return name;
}

#define MINIMAL_STAGES "  clusterer: rtn\n  writer: hvq\n"
#define MINIMAL "stages:\n" MINIMAL_STAGES

/* ------------------------------------------------------------------------
 * Parameters.
 * ---------------------------------------------------------------------- */

static hvq_status parse(const hvq_param_spec *spec, const char *text,
                        hvq_value *v, char *why)
{
    return hvq_param_parse(spec, text, v, why, 256);
}

START_TEST(param_int)
{
    const hvq_param_spec *centroids = &kmeans_params[1];
    const hvq_param_spec *iters = &kmeans_params[2];
    hvq_value v;
    char why[256];

    ck_assert_int_eq(parse(centroids, "4096", &v, why), HVQ_OK);
    ck_assert_int_eq(v.type, HVQ_PARAM_INT);
    ck_assert_int_eq(v.i, 4096);
    ck_assert(v.f == 4096.0);
    ck_assert_str_eq(v.s, "4096");
    ck_assert_int_eq(parse(centroids, "+7", &v, why), HVQ_OK);
    ck_assert_int_eq(v.i, 7);
    ck_assert_int_eq(parse(iters, "-3", &v, why), HVQ_OK);
    ck_assert_int_eq(v.i, -3);
    ck_assert_int_eq(parse(iters, "9223372036854775807", &v, why), HVQ_OK);

    ck_assert_int_eq(parse(centroids, "abc", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected an integer, got 'abc'");
    ck_assert_int_eq(parse(centroids, "12x", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected an integer, got '12x'");
    ck_assert_int_eq(parse(centroids, "", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected an integer, got ''");
    ck_assert_int_eq(parse(centroids, "0x10", &v, why), HVQ_E_INPUT);
    ck_assert_int_eq(parse(centroids, "1.5", &v, why), HVQ_E_INPUT);
    ck_assert_int_eq(parse(centroids, " 5", &v, why), HVQ_E_INPUT);
    ck_assert_int_eq(parse(centroids, "300000", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "300000 is above the maximum 65536");
    ck_assert_int_eq(parse(centroids, "0", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "0 is below the minimum 1");
    ck_assert_int_eq(parse(iters, "99999999999999999999", &v, why),
                     HVQ_E_INPUT);
    ck_assert_str_eq(why,
                     "99999999999999999999 is out of the range of a 64-bit "
                     "integer");
}
END_TEST

START_TEST(param_float)
{
    const hvq_param_spec *sparsity = &coo16_params[0];
    const hvq_param_spec unbounded = {"x", HVQ_PARAM_FLOAT, "0", 0, 0, NULL,
                                      "x"};
    hvq_value v;
    char why[256];

    ck_assert_int_eq(parse(sparsity, "0.02", &v, why), HVQ_OK);
    ck_assert(v.f == 0.02);
    ck_assert_int_eq(parse(sparsity, "1.5%", &v, why), HVQ_OK);
    ck_assert(fabs(v.f - 0.015) < 1e-15);
    ck_assert_str_eq(v.s, "1.5%");
    ck_assert_int_eq(parse(sparsity, "2%", &v, why), HVQ_OK);
    ck_assert(fabs(v.f - 0.02) < 1e-15);
    ck_assert_int_eq(parse(sparsity, "5e-2", &v, why), HVQ_OK);
    ck_assert(fabs(v.f - 0.05) < 1e-15);
    ck_assert_int_eq(parse(&unbounded, "-1e300", &v, why), HVQ_OK);

    ck_assert_int_eq(parse(sparsity, "0.6", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "0.6 is above the maximum 0.5");
    ck_assert_int_eq(parse(sparsity, "60%", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "60% (0.6) is above the maximum 0.5");
    ck_assert_int_eq(parse(sparsity, "-1", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "-1 is below the minimum 0");
    ck_assert_int_eq(parse(sparsity, "half", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected a number, got 'half'");
    ck_assert_int_eq(parse(&unbounded, "nan", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected a number, got 'nan'");
    ck_assert_int_eq(parse(&unbounded, "inf", &v, why), HVQ_E_INPUT);
    ck_assert_int_eq(parse(&unbounded, "0x1p3", &v, why), HVQ_E_INPUT);
    ck_assert_int_eq(parse(&unbounded, "%", &v, why), HVQ_E_INPUT);
    ck_assert_int_eq(parse(&unbounded, "1%%", &v, why), HVQ_E_INPUT);
    ck_assert_int_eq(parse(&unbounded, "1.5.2", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected a number, got '1.5.2'");
    ck_assert_int_eq(parse(&unbounded, "1e999", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected a finite number, got '1e999'");
}
END_TEST

START_TEST(param_bool_string_choice_path)
{
    const hvq_param_spec *relocate = &kmeans_params[5];
    const hvq_param_spec *group = &rtn_params[0];
    const hvq_param_spec *format = &dequant_params[1];
    const hvq_param_spec *path = &file_params[0];
    static const char *const yes[] = {"true", "TRUE", "Yes", "on", "1"};
    static const char *const no[] = {"false", "No", "OFF", "0"};
    hvq_value v;
    char why[256];
    size_t k;

    for (k = 0; k < sizeof yes / sizeof yes[0]; k++) {
        ck_assert_int_eq(parse(relocate, yes[k], &v, why), HVQ_OK);
        ck_assert_int_eq(v.i, 1);
    }
    for (k = 0; k < sizeof no / sizeof no[0]; k++) {
        ck_assert_int_eq(parse(relocate, no[k], &v, why), HVQ_OK);
        ck_assert_int_eq(v.i, 0);
    }
    ck_assert_int_eq(parse(relocate, "2", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected a boolean (true/false, yes/no, on/off, "
                          "1/0), got '2'");

    ck_assert_int_eq(parse(format, "", &v, why), HVQ_OK);
    ck_assert_str_eq(v.s, "");
    ck_assert_int_eq(parse(format, "any: thing", &v, why), HVQ_OK);

    ck_assert_int_eq(parse(group, "128", &v, why), HVQ_OK);
    ck_assert_int_eq(v.i, 1);
    ck_assert_str_eq(v.s, "128");
    ck_assert_int_eq(parse(group, "64", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected one of: per-row, 128, 32; got '64'");
    ck_assert_int_eq(parse(group, "per_row", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected one of: per-row, 128, 32; got 'per_row'; "
                          "did you mean 'per-row'?");
    ck_assert_int_eq(parse(group, "Per-Row", &v, why), HVQ_E_INPUT);

    ck_assert_int_eq(parse(path, "a/b.npz", &v, why), HVQ_OK);
    ck_assert_str_eq(v.s, "a/b.npz");
    ck_assert_int_eq(parse(path, "", &v, why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "expected a path, got an empty string");
}
END_TEST

START_TEST(param_helpers)
{
    hvq_value vals[2];
    hvq_params params;
    char why[256];

    ck_assert_uint_eq(hvq_param_count(kmeans_params), 6);
    ck_assert_uint_eq(hvq_param_count(NULL), 0);
    ck_assert_int_eq(hvq_param_index(kmeans_params, "stability"), 3);
    ck_assert_int_eq(hvq_param_index(kmeans_params, "nope"), -1);
    ck_assert_int_eq(hvq_param_index(NULL, "x"), -1);
    ck_assert_str_eq(hvq_param_type_name(HVQ_PARAM_INT), "int");
    ck_assert_str_eq(hvq_param_type_name(HVQ_PARAM_FLOAT), "float");
    ck_assert_str_eq(hvq_param_type_name(HVQ_PARAM_BOOL), "bool");
    ck_assert_str_eq(hvq_param_type_name(HVQ_PARAM_STRING), "string");
    ck_assert_str_eq(hvq_param_type_name(HVQ_PARAM_CHOICE), "choice");
    ck_assert_str_eq(hvq_param_type_name(HVQ_PARAM_PATH), "path");

    ck_assert_int_eq(parse(&dequant_params[0], "bf16", &vals[0], why), HVQ_OK);
    ck_assert_int_eq(parse(&dequant_params[1], "npz", &vals[1], why), HVQ_OK);
    params.count = 2;
    params.values = vals;
    params.specs = dequant_params;
    ck_assert_ptr_eq(hvq_param_lookup(&params, "format"), &vals[1]);
    ck_assert_ptr_eq(hvq_param_lookup(&params, "dtype"), &vals[0]);
    ck_assert_ptr_null(hvq_param_lookup(&params, "nope"));
    ck_assert_ptr_null(hvq_param_lookup(NULL, "dtype"));
}
END_TEST

/* ------------------------------------------------------------------------
 * Loading and validation: success paths.
 * ---------------------------------------------------------------------- */

START_TEST(defaults_applied)
{
    hvq_pipeline *p =
        load_ok_path(th_src("tests/data/pipelines/minimal.yaml"));
    const hvq_value *v;
    const char *name;

    ck_assert_ptr_null(p->name);
    ck_assert_ptr_null(p->input);
    ck_assert_ptr_null(p->output);
    ck_assert_ptr_null(p->report);
    ck_assert_uint_eq(p->seed, 0);
    ck_assert_int_eq(p->stages[HVQ_STAGE_HESSIAN].present, 0);
    ck_assert_int_eq(p->stages[HVQ_STAGE_CLUSTERER].present, 1);
    ck_assert_str_eq(p->stages[HVQ_STAGE_CLUSTERER].plugin, "rtn");
    ck_assert_int_eq(p->stages[HVQ_STAGE_CLUSTERER].mark.line, 3);
    ck_assert_int_eq(p->stages[HVQ_STAGE_CLUSTERER].mark.col, 14);
    validate_ok(p);

    ck_assert_str_eq(p->stages[HVQ_STAGE_HESSIAN].resolved->desc.name,
                     "uniform");
    ck_assert_str_eq(p->stages[HVQ_STAGE_IMPORTANCE].resolved->desc.name,
                     "magnitude");
    ck_assert_str_eq(p->stages[HVQ_STAGE_RESIDUAL].resolved->desc.name,
                     "none");
    ck_assert_str_eq(p->stages[HVQ_STAGE_WRITER].resolved->desc.name, "hvq");
    ck_assert_uint_eq(p->stages[HVQ_STAGE_HESSIAN].n_values, 0);
    ck_assert_uint_eq(p->stages[HVQ_STAGE_CLUSTERER].n_values, 1);

    v = value_for(p, HVQ_STAGE_CLUSTERER, "x.weight", "group_size", &name);
    ck_assert_str_eq(name, "rtn");
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(v->s, "per-row");
    ck_assert_int_eq(v->is_default, 1);
    ck_assert_int_eq(v->type, HVQ_PARAM_CHOICE);
    ck_assert_str_eq(plugin_for(p, HVQ_STAGE_HESSIAN, "x.weight"), "uniform");

    /* Everything is selected without select:. */
    ck_assert(hvq_pipeline_selects(p, "anything"));
    ck_assert(hvq_pipeline_selects(p, "model.norm.weight"));

    /* Validating twice gives the same result. */
    validate_ok(p);
    ck_assert_str_eq(plugin_for(p, HVQ_STAGE_CLUSTERER, "x"), "rtn");
    hvq_pipeline_free(p);
}
END_TEST

START_TEST(full_pipeline)
{
    const char *path = th_src("tests/data/pipelines/full.yaml");
    hvq_pipeline *p = load_ok_path(path);
    const hvq_stage_cfg *c = &p->stages[HVQ_STAGE_CLUSTERER];
    const hvq_value *v;

    ck_assert_str_eq(p->path, path);
    ck_assert_str_eq(p->name, "high-fidelity");
    ck_assert_str_eq(p->input, "models/stories260K");
    ck_assert_str_eq(p->output, "out/stories260K-high.hvq");
    ck_assert_str_eq(p->report, "out/stories260K-high.json");
    ck_assert_str_eq(p->input_mark.file, path);
    ck_assert_int_eq(p->input_mark.line, 3);
    ck_assert_int_eq(p->input_mark.col, 8);
    ck_assert_uint_eq(p->seed, 42);
    ck_assert_uint_eq(p->n_include, 1);
    ck_assert_str_eq(p->include[0], "*.weight");
    ck_assert_uint_eq(p->n_exclude, 3);
    ck_assert_str_eq(p->exclude[2], "lm_head.weight");
    ck_assert_str_eq(c->plugin, "kmeans");
    ck_assert_uint_eq(c->n_settings, 4);
    ck_assert_str_eq(c->settings[1].key, "centroids");
    ck_assert_str_eq(c->settings[1].value, "2048");
    ck_assert_int_eq(c->settings[1].key_mark.line, 13);
    ck_assert_int_eq(c->settings[1].key_mark.col, 48);
    ck_assert_int_eq(c->settings[1].value_mark.col, 59);
    ck_assert_uint_eq(p->n_overrides, 3);
    ck_assert_str_eq(p->overrides[1].match, "*.mlp.*");
    ck_assert_str_eq(p->overrides[1].stages[HVQ_STAGE_CLUSTERER].plugin, "rtn");
    ck_assert_int_eq(p->overrides[1].stages[HVQ_STAGE_HESSIAN].present, 0);

    validate_ok(p);
    ck_assert_uint_eq(c->n_values, 6);
    ck_assert_int_eq(c->values[0].i, 2);
    ck_assert_int_eq(c->values[0].is_default, 0);
    ck_assert_int_eq(c->values[4].is_default, 1);
    ck_assert(c->values[4].f == 0.001);
    ck_assert_int_eq(c->values[5].i, 1);

    /* Percent floats. */
    v = value_for(p, HVQ_STAGE_RESIDUAL, "a.weight", "sparsity", NULL);
    ck_assert(fabs(v->f - 0.015) < 1e-15);
    ck_assert_str_eq(v->s, "1.5%");

    /* Selection. */
    ck_assert(hvq_pipeline_selects(p, "model.layers.0.mlp.up_proj.weight"));
    ck_assert(!hvq_pipeline_selects(p, "model.layers.0.mlp.up_proj.bias"));
    ck_assert(!hvq_pipeline_selects(p, "model.layers.0.input_norm.weight"));
    ck_assert(!hvq_pipeline_selects(p, "model.embed_tokens.weight"));
    ck_assert(!hvq_pipeline_selects(p, "lm_head.weight"));
    hvq_pipeline_free(p);
}
END_TEST

START_TEST(overrides_first_match)
{
    hvq_pipeline *p =
        load_ok_path(th_src("tests/data/pipelines/full.yaml"));
    const char *down = "model.layers.0.mlp.down_proj.weight";
    const char *up = "model.layers.0.mlp.up_proj.weight";
    const char *attn = "model.layers.0.attn.down_proj.weight";
    const char *other = "model.layers.0.attn.q_proj.weight";
    const hvq_value *v;
    const char *name;

    validate_ok(p);

    /* down_proj: the first override wins; base values carried over. */
    v = value_for(p, HVQ_STAGE_CLUSTERER, down, "centroids", &name);
    ck_assert_str_eq(name, "kmeans");
    ck_assert_int_eq(v->i, 4096);
    ck_assert_int_eq(v->is_default, 0);
    v = value_for(p, HVQ_STAGE_CLUSTERER, down, "block_size", NULL);
    ck_assert_int_eq(v->i, 2);
    v = value_for(p, HVQ_STAGE_CLUSTERER, down, "tolerance", NULL);
    ck_assert_int_eq(v->is_default, 1);
    /* Its residual: the first override with a residual stage (*.mlp.*). */
    ck_assert_str_eq(plugin_for(p, HVQ_STAGE_RESIDUAL, down), "none");
    /* Stages no override names stay the base ones. */
    ck_assert_str_eq(plugin_for(p, HVQ_STAGE_HESSIAN, down), "uniform");
    ck_assert_str_eq(plugin_for(p, HVQ_STAGE_WRITER, down), "hvq");

    /* up_proj: the plugin swap; the new plugin's defaults plus settings. */
    v = value_for(p, HVQ_STAGE_CLUSTERER, up, "group_size", &name);
    ck_assert_str_eq(name, "rtn");
    ck_assert_str_eq(v->s, "128");
    ck_assert_ptr_null(value_for(p, HVQ_STAGE_CLUSTERER, up, "centroids", NULL));

    /* attn down_proj: the third override, merged with the base. */
    v = value_for(p, HVQ_STAGE_CLUSTERER, attn, "centroids", &name);
    ck_assert_str_eq(name, "kmeans");
    ck_assert_int_eq(v->i, 16);
    v = value_for(p, HVQ_STAGE_CLUSTERER, attn, "relocate", NULL);
    ck_assert_int_eq(v->i, 0);
    v = value_for(p, HVQ_STAGE_RESIDUAL, attn, "sparsity", &name);
    ck_assert_str_eq(name, "coo16");
    ck_assert(fabs(v->f - 0.05) < 1e-15);

    /* No override matches. */
    v = value_for(p, HVQ_STAGE_CLUSTERER, other, "centroids", &name);
    ck_assert_str_eq(name, "kmeans");
    ck_assert_int_eq(v->i, 2048);
    v = value_for(p, HVQ_STAGE_RESIDUAL, other, "sparsity", NULL);
    ck_assert(fabs(v->f - 0.015) < 1e-15);

    /* The stored merged values. */
    ck_assert_uint_eq(p->overrides[0].stages[HVQ_STAGE_CLUSTERER].n_values, 6);
    ck_assert_ptr_eq(p->overrides[1].stages[HVQ_STAGE_CLUSTERER].resolved->desc.params,
                     rtn_params);
    hvq_pipeline_free(p);
}
END_TEST

START_TEST(select_globs)
{
    hvq_pipeline *p = load_ok("select:\n"
                              "  include: \"*.weight\"\n"
                              "  exclude:\n"
                              "    - \"*.layers.1?.*\"\n"
                              "    - \"*norm*\"\n" MINIMAL);
    ck_assert_uint_eq(p->n_include, 1);
    ck_assert(hvq_pipeline_selects(p, "m.layers.3.q.weight"));
    ck_assert(!hvq_pipeline_selects(p, "m.layers.12.q.weight"));
    ck_assert(!hvq_pipeline_selects(p, "m.layers.3.q.bias"));
    ck_assert(!hvq_pipeline_selects(p, "m.norm.weight"));

    /* --set replaces a list with one glob; an empty value clears it. */
    set_ok(p, "select.include=m.layers.1*");
    set_ok(p, "select.exclude=");
    ck_assert_uint_eq(p->n_include, 1);
    ck_assert_uint_eq(p->n_exclude, 0);
    ck_assert(hvq_pipeline_selects(p, "m.layers.12.q.weight"));
    ck_assert(hvq_pipeline_selects(p, "m.layers.1.norm"));
    ck_assert(!hvq_pipeline_selects(p, "m.layers.3.q.weight"));
    hvq_pipeline_free(p);

    /* An empty sequence and null are no include: everything. */
    p = load_ok("select: {include: [], exclude: ~}\n" MINIMAL);
    ck_assert(hvq_pipeline_selects(p, "x"));
    hvq_pipeline_free(p);
}
END_TEST

/* The globs are fnmatch(3)'s with FNM_NOESCAPE: '*' and '?' cross '.' and
 * '/', a backslash is itself, POSIX bracket expressions work. */
START_TEST(glob_semantics)
{
    static const struct {
        const char *pat, *s;
        int want;
    } tab[] = {
        {"*", "a.b/c", 1},
        {"a?b", "a.b", 1},
        {"a?b", "a/b", 1},
        {"*.weight", ".weight", 1},
        {"a\\*", "a\\xyz", 1},
        {"a\\*", "a*", 0},
        {"a\\?", "a\\x", 1},
        {"*.[[:digit:]].*", "m.3.w", 1},
        {"*.[[:digit:]].*", "m.x.w", 0},
        {"*.[^0-2].*", "m.3.w", 1},
        {"*.[!0-2].*", "m.1.w", 0},
        {"x[", "x[", 1},
        {"", "", 1},
        {"", "a", 0},
    };
    size_t i;
    for (i = 0; i < sizeof tab / sizeof tab[0]; i++)
        ck_assert_msg(hvq_glob_match(tab[i].pat, tab[i].s) == tab[i].want,
                      "glob '%s' on '%s': want %d", tab[i].pat, tab[i].s,
                      tab[i].want);
}
END_TEST

START_TEST(set_overrides_file)
{
    hvq_pipeline *p =
        load_ok_path(th_src("tests/data/pipelines/full.yaml"));
    const hvq_value *v;

    set_ok(p, "input=other/model.safetensors");
    set_ok(p, "output=x.hvq");
    set_ok(p, "report=");
    set_ok(p, "name=a=b");
    set_ok(p, "seed=18446744073709551615");
    set_ok(p, "stages.clusterer.centroids=256");
    set_ok(p, "stages.clusterer.centroids=512"); /* the last one wins */
    set_ok(p, "stages.residual.sparsity=3%");
    set_ok(p, "stages.hessian.plugin=uniform"); /* same plugin: no change */
    ck_assert_str_eq(p->input, "other/model.safetensors");
    ck_assert_ptr_null(p->input_mark.file);
    ck_assert_str_eq(p->input_mark.origin, "input=other/model.safetensors");
    ck_assert_str_eq(p->output, "x.hvq");
    ck_assert_ptr_null(p->report);
    ck_assert_str_eq(p->name, "a=b");
    ck_assert_uint_eq(p->seed, UINT64_MAX);
    validate_ok(p);

    v = value_for(p, HVQ_STAGE_CLUSTERER, "q.weight", "centroids", NULL);
    ck_assert_int_eq(v->i, 512);
    ck_assert_int_eq(v->is_default, 0);
    v = value_for(p, HVQ_STAGE_CLUSTERER, "q.weight", "block_size", NULL);
    ck_assert_int_eq(v->i, 2); /* from the file */
    v = value_for(p, HVQ_STAGE_RESIDUAL, "q.weight", "sparsity", NULL);
    ck_assert(fabs(v->f - 0.03) < 1e-15);
    /* Overrides merge with the --set base values. */
    v = value_for(p, HVQ_STAGE_CLUSTERER, "m.mlp.down_proj.weight",
                  "centroids", NULL);
    ck_assert_int_eq(v->i, 4096);
    v = value_for(p, HVQ_STAGE_CLUSTERER, "m.attn.down_proj.weight",
                  "iterations", NULL);
    ck_assert_int_eq(v->i, 15);
    hvq_pipeline_free(p);
}
END_TEST

START_TEST(set_plugin_swap)
{
    hvq_pipeline *p =
        load_ok_path(th_src("tests/data/pipelines/full.yaml"));
    const hvq_stage_cfg *c = &p->stages[HVQ_STAGE_CLUSTERER];
    const hvq_value *v;
    const char *name;

    /* A --set parameter given before the swap survives it; the file's
     * kmeans parameters do not. */
    set_ok(p, "stages.clusterer.group_size=32");
    set_ok(p, "stages.clusterer.plugin=rtn");
    ck_assert_uint_eq(c->n_settings, 1);
    ck_assert_str_eq(c->settings[0].key, "group_size");
    ck_assert_ptr_null(c->mark.file);
    ck_assert_str_eq(c->mark.origin, "stages.clusterer.plugin=rtn");
    /* The file's overrides name kmeans parameters, now unknown. */
    {
        hvq_status st = hvq_pipeline_validate(ctx, p, reg);
        check_error(st, HVQ_E_INPUT,
                    "FILE:20:18: override '*.mlp.down_proj.weight': stage "
                    "'clusterer' (plugin 'rtn'): unknown parameter "
                    "'centroids' (parameters: group_size)",
                    p->path);
    }
    hvq_pipeline_free(p);

    p = load_ok("stages:\n"
                "  clusterer: {plugin: kmeans, centroids: 16}\n"
                "  writer: hvq\n");
    set_ok(p, "stages.clusterer.group_size=32");
    set_ok(p, "stages.clusterer.plugin=rtn");
    set_ok(p, "stages.hessian.plugin=file");
    set_ok(p, "stages.hessian.path=diag.npz");
    validate_ok(p);
    v = value_for(p, HVQ_STAGE_CLUSTERER, "w", "group_size", &name);
    ck_assert_str_eq(name, "rtn");
    ck_assert_str_eq(v->s, "32");
    v = value_for(p, HVQ_STAGE_HESSIAN, "w", "path", &name);
    ck_assert_str_eq(name, "file");
    ck_assert_str_eq(v->s, "diag.npz");

    /* Swapping the writer of a file-named plugin, then back. */
    set_ok(p, "stages.writer.plugin=dequant");
    set_ok(p, "stages.writer.dtype=bf16");
    validate_ok(p);
    v = value_for(p, HVQ_STAGE_WRITER, "w", "dtype", &name);
    ck_assert_str_eq(name, "dequant");
    ck_assert_str_eq(v->s, "bf16");
    v = value_for(p, HVQ_STAGE_WRITER, "w", "format", NULL);
    ck_assert_str_eq(v->s, "auto");
    ck_assert_int_eq(v->is_default, 1);
    hvq_pipeline_free(p);

    /* A pipeline built in code from --set alone. */
    ck_assert_int_eq(hvq_pipeline_new(ctx, &p), HVQ_OK);
    ck_assert_str_eq(p->path, "<none>");
    set_ok(p, "stages.clusterer.plugin=kmeans");
    set_ok(p, "stages.writer.plugin=hvq");
    validate_ok(p);
    ck_assert_str_eq(plugin_for(p, HVQ_STAGE_CLUSTERER, "w"), "kmeans");
    hvq_pipeline_free(p);
}
END_TEST

/* Compares the effective configuration of two validated pipelines. */
static void assert_same_stage(const hvq_stage_cfg *a, const hvq_stage_cfg *b)
{
    size_t k;
    ck_assert_int_eq(a->present, b->present);
    if (!a->present && !a->resolved)
        return;
    ck_assert_ptr_eq(a->resolved, b->resolved);
    ck_assert_uint_eq(a->n_values, b->n_values);
    for (k = 0; k < a->n_values; k++) {
        ck_assert_str_eq(a->values[k].s, b->values[k].s);
        ck_assert_int_eq(a->values[k].i, b->values[k].i);
        ck_assert(a->values[k].f == b->values[k].f);
    }
}

static void assert_same(const hvq_pipeline *a, const hvq_pipeline *b)
{
    size_t k;
    int s;
    ck_assert_str_eq(a->name ? a->name : "(null)", b->name ? b->name : "(null)");
    ck_assert_str_eq(a->input ? a->input : "(null)",
                     b->input ? b->input : "(null)");
    ck_assert_str_eq(a->output ? a->output : "(null)",
                     b->output ? b->output : "(null)");
    ck_assert_str_eq(a->report ? a->report : "(null)",
                     b->report ? b->report : "(null)");
    ck_assert_uint_eq(a->seed, b->seed);
    ck_assert_uint_eq(a->n_include, b->n_include);
    for (k = 0; k < a->n_include; k++)
        ck_assert_str_eq(a->include[k], b->include[k]);
    ck_assert_uint_eq(a->n_exclude, b->n_exclude);
    for (k = 0; k < a->n_exclude; k++)
        ck_assert_str_eq(a->exclude[k], b->exclude[k]);
    for (s = 0; s < HVQ_STAGE_COUNT; s++) {
        ck_assert_ptr_eq(a->stages[s].resolved, b->stages[s].resolved);
        assert_same_stage(&a->stages[s], &b->stages[s]);
    }
    ck_assert_uint_eq(a->n_overrides, b->n_overrides);
    for (k = 0; k < a->n_overrides; k++) {
        ck_assert_str_eq(a->overrides[k].match, b->overrides[k].match);
        for (s = 0; s < HVQ_STAGE_COUNT; s++)
            assert_same_stage(&a->overrides[k].stages[s],
                              &b->overrides[k].stages[s]);
    }
}

START_TEST(to_yaml_round_trip)
{
    hvq_pipeline *p =
        load_ok_path(th_src("tests/data/pipelines/full.yaml"));
    hvq_pipeline *q;
    char path[4096];
    char *y1, *y2;

    set_ok(p, "name=odd \"name\": #1\\ \t'x' \xc3\xa9\xc2\x85\xe2\x80\xa8\x01");
    set_ok(p, "input=null");
    set_ok(p, "report=~");
    set_ok(p, "seed=7");
    set_ok(p, "select.exclude=*: [x]");
    set_ok(p, "stages.writer.plugin=dequant");
    set_ok(p, "stages.writer.format=- a: b, {c} # d\n&e *f");
    set_ok(p, "stages.hessian.plugin=file");
    set_ok(p, "stages.hessian.path=dir with space/diag.npz");
    validate_ok(p);
    y1 = hvq_pipeline_to_yaml(p);
    ck_assert_ptr_nonnull(y1);

    snprintf(path, sizeof path, "%s/effective.yaml", tmp);
    th_write_file(path, y1, strlen(y1));
    q = load_ok_path(path);
    validate_ok(q);
    assert_same(p, q);
    ck_assert_str_eq(q->name,
                     "odd \"name\": #1\\ \t'x' \xc3\xa9\xc2\x85\xe2\x80\xa8\x01");
    ck_assert_str_eq(q->input, "null");
    ck_assert_str_eq(q->report, "~");
    ck_assert_str_eq(q->stages[HVQ_STAGE_WRITER].values[1].s,
                     "- a: b, {c} # d\n&e *f");

    /* Every resolved value is written, so the text is a fixed point (past
     * the comment naming the source file). */
    y2 = hvq_pipeline_to_yaml(q);
    ck_assert_ptr_nonnull(y2);
    ck_assert_str_eq(strchr(y1, '\n'), strchr(y2, '\n'));
    th_assert_contains(y1, "\n  clusterer:\n    plugin: kmeans\n"
                           "    block_size: 2\n    centroids: 2048\n"
                           "    iterations: 15\n    stability: 200\n"
                           "    tolerance: 0.001\n    relocate: true\n");
    th_assert_contains(y1, "    sparsity: 1.5%\n");
    hvq_pipeline_free(q);
    hvq_pipeline_free(p);
    free(y1);
    free(y2);

    /* An unvalidated pipeline is written as given. */
    p = load_ok_path(th_src("tests/data/pipelines/minimal.yaml"));
    y1 = hvq_pipeline_to_yaml(p);
    ck_assert_str_eq(strchr(y1, '\n'),
                     "\nseed: 0\nstages:\n  clusterer:\n    plugin: rtn\n"
                     "  writer:\n    plugin: hvq\n");
    free(y1);
    hvq_pipeline_free(p);
}
END_TEST

START_TEST(yaml_forms)
{
    /* Comments, quoting styles, explicit document markers, block scalars. */
    hvq_pipeline *p = load_ok("%YAML 1.1\n"
                              "---\n"
                              "name: 'single ''quoted'''\n"
                              "input: |\n"
                              "  literal\n"
                              "seed: 000123  # comment\n"
                              "stages: {clusterer: {plugin: kmeans,"
                              " centroids: \"16\"}, writer: hvq}\n"
                              "overrides: []\n"
                              "...\n");
    ck_assert_str_eq(p->name, "single 'quoted'");
    ck_assert_str_eq(p->input, "literal\n");
    ck_assert_uint_eq(p->seed, 123);
    ck_assert_uint_eq(p->n_overrides, 0);
    validate_ok(p);
    ck_assert_int_eq(value_for(p, HVQ_STAGE_CLUSTERER, "w", "centroids", NULL)->i,
                     16);
    hvq_pipeline_free(p);

    /* Null top-level strings are unset. */
    p = load_ok("name: ~\nreport:\n" MINIMAL);
    ck_assert_ptr_null(p->name);
    ck_assert_ptr_null(p->report);
    hvq_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Errors, with their exact text.
 * ---------------------------------------------------------------------- */

START_TEST(err_unknown_key)
{
    hvq_pipeline *p = NULL;
    const char *path = th_src("tests/data/pipelines/unknown-key.yaml");
    hvq_status st = hvq_pipeline_load(ctx, path, &p);
    check_error(st, HVQ_E_INPUT,
                "FILE:2:1: unknown key 'stagez'; did you mean 'stages'?", path);
    ck_assert_ptr_null(p);

    load_fails("colour: red\n",
               "FILE:1:1: unknown key 'colour' (valid keys: name, input, "
               "output, report, seed, select, stages, overrides, evaluate, target, "
               "candidates, on_error)");
    load_fails("select:\n  inclde: x\n",
               "FILE:2:3: unknown key 'inclde' in 'select'; did you mean "
               "'include'?");
    load_fails("overrides:\n  - match: x\n    clusterr: rtn\n",
               "FILE:3:5: unknown key 'clusterr' in override; did you mean "
               "'clusterer'?");
}
END_TEST

START_TEST(err_unknown_stage)
{
    load_fails("stages:\n  clusterer: rtn\n  clusterr: rtn\n",
               "FILE:3:3: unknown stage 'clusterr'; did you mean "
               "'clusterer'?");
    load_fails("stages:\n  quantizer: rtn\n",
               "FILE:2:3: unknown stage 'quantizer' (valid stages: hessian, "
               "importance, clusterer, residual, writer)");
}
END_TEST

START_TEST(err_unknown_plugin)
{
    validate_fails("stages:\n  clusterer: {plugin: kmean}\n  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:2:23: stage 'clusterer': unknown plugin 'kmean'; did "
                   "you mean 'kmeans'? (available: rtn, kmeans)");
    validate_fails("stages:\n  clusterer: rtn\n  writer: zzz\n", NULL,
                   HVQ_E_INPUT,
                   "FILE:3:11: stage 'writer': unknown plugin 'zzz' "
                   "(available: dequant, hvq)");
    validate_fails("stages:\n  clusterer: rtn\n  writer: kmeans\n", NULL,
                   HVQ_E_INPUT,
                   "FILE:3:11: stage 'writer': 'kmeans' is a clusterer plugin, "
                   "not a writer plugin (available: dequant, hvq)");
    validate_fails("stages:\n  clusterer: {centroids: 4}\n  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:2:3: stage 'clusterer' names no plugin; available "
                   "clusterer plugins: rtn, kmeans");
    validate_fails("stages:\n  clusterer: rtn\n  writer: hvq\n"
                   "overrides:\n  - match: '*.mlp.*'\n"
                   "    clusterer: {plugin: rtm}\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:6:25: override '*.mlp.*': stage 'clusterer': unknown "
                   "plugin 'rtm'; did you mean 'rtn'? (available: rtn, "
                   "kmeans)");
}
END_TEST

START_TEST(err_unknown_parameter)
{
    validate_fails("stages:\n"
                   "  clusterer:\n"
                   "    plugin: rtn\n"
                   "    group_sise: 128\n"
                   "  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:4:5: stage 'clusterer' (plugin 'rtn'): unknown "
                   "parameter 'group_sise'; did you mean 'group_size'?");
    validate_fails("stages:\n"
                   "  clusterer: {plugin: kmeans, k: 4}\n"
                   "  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:2:31: stage 'clusterer' (plugin 'kmeans'): unknown "
                   "parameter 'k' (parameters: block_size, centroids, "
                   "iterations, stability, tolerance, relocate)");
    validate_fails("stages:\n"
                   "  hessian: {plugin: uniform, path: x}\n" MINIMAL_STAGES,
                   NULL, HVQ_E_INPUT,
                   "FILE:2:30: stage 'hessian' (plugin 'uniform'): unknown "
                   "parameter 'path'; the plugin takes no parameters");
    validate_fails("stages:\n  clusterer: kmeans\n  writer: hvq\n"
                   "overrides:\n  - match: '*.mlp.*'\n"
                   "    clusterer: {centroid: 4}\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:6:17: override '*.mlp.*': stage 'clusterer' (plugin "
                   "'kmeans'): unknown parameter 'centroid'; did you mean "
                   "'centroids'?");
    /* An override's swapped plugin does not take the base's parameters. */
    validate_fails("stages:\n  clusterer: kmeans\n  writer: hvq\n"
                   "overrides:\n  - match: '*.mlp.*'\n"
                   "    clusterer: {plugin: rtn, centroids: 4}\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:6:30: override '*.mlp.*': stage 'clusterer' (plugin "
                   "'rtn'): unknown parameter 'centroids' (parameters: "
                   "group_size)");
}
END_TEST

START_TEST(err_wrong_type)
{
    load_fails("seed: [1, 2]\n", "FILE:1:7: 'seed' must be a scalar, not a "
                                 "sequence");
    load_fails("input:\n  path: x\n",
               "FILE:2:3: 'input' must be a scalar, not a mapping");
    load_fails("stages: [clusterer]\n",
               "FILE:1:9: 'stages' must be a mapping, not a sequence");
    load_fails("select: '*.weight'\n",
               "FILE:1:9: 'select' must be a mapping, not a scalar");
    load_fails("select:\n  include: [[a]]\n",
               "FILE:2:13: each entry of 'select.include' must be a glob, not "
               "a sequence");
    load_fails("select:\n  exclude: {a: b}\n",
               "FILE:2:12: 'select.exclude' must be a glob or a sequence of "
               "globs, not a mapping");
    load_fails("stages:\n  clusterer: [rtn]\n",
               "FILE:2:14: stage 'clusterer' must be a plugin name or a "
               "mapping with 'plugin:', not a sequence");
    load_fails("stages:\n  clusterer:\n",
               "FILE:2:13: stage 'clusterer' must be a plugin name or a "
               "mapping with 'plugin:', not empty");
    load_fails("stages:\n  clusterer: {plugin: [rtn]}\n",
               "FILE:2:23: 'plugin' of stage 'clusterer' must be a plugin "
               "name, not a sequence");
    load_fails("stages:\n  clusterer: {plugin: kmeans, centroids: [1]}\n",
               "FILE:2:42: parameter 'centroids' of stage 'clusterer' must be "
               "a scalar, not a sequence");
    load_fails("overrides: {match: x}\n",
               "FILE:1:12: 'overrides' must be a sequence, not a mapping");
    load_fails("overrides:\n  - '*.weight'\n",
               "FILE:2:5: each entry of 'overrides' must be a mapping with "
               "'match:', not a scalar");
    load_fails("overrides:\n  - clusterer: rtn\n",
               "FILE:2:5: override without 'match: GLOB'");
    load_fails("overrides:\n  - match: [a]\n",
               "FILE:2:12: 'match' must be a glob, not a sequence");
    load_fails("overrides:\n  - match: ''\n",
               "FILE:2:12: 'match' must be a glob, not empty");
    load_fails("stages:\n  clusterer: {plugin: \"\"}\n",
               "FILE:2:23: 'plugin' of stage 'clusterer' must be a plugin "
               "name, not empty");
    load_fails("stages:\n  clusterer: ''\n",
               "FILE:2:14: stage 'clusterer' must be a plugin name or a "
               "mapping with 'plugin:', not empty");
    load_fails("? [a, b]\n: c\n",
               "FILE:1:3: a mapping key must be a scalar, not a sequence");
    load_fails("- stages\n",
               "FILE:1:1: a pipeline must be a mapping (name:, input:, "
               "output:, stages:, ...), not a sequence");
}
END_TEST

START_TEST(err_out_of_range_and_bad_values)
{
    validate_fails("stages:\n"
                   "  clusterer: {plugin: kmeans, centroids: 300000}\n"
                   "  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:2:42: stage 'clusterer' (plugin 'kmeans'): parameter "
                   "'centroids': 300000 is above the maximum 65536");
    validate_fails("stages:\n"
                   "  clusterer:\n"
                   "    plugin: kmeans\n"
                   "    block_size: two\n"
                   "  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:4:17: stage 'clusterer' (plugin 'kmeans'): parameter "
                   "'block_size': expected an integer, got 'two'");
    validate_fails("stages:\n"
                   "  clusterer: {plugin: rtn, group_size: 64}\n"
                   "  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:2:40: stage 'clusterer' (plugin 'rtn'): parameter "
                   "'group_size': expected one of: per-row, 128, 32; got '64'");
    validate_fails("stages:\n"
                   "  residual: {plugin: coo16, sparsity: 60%}\n" MINIMAL_STAGES,
                   NULL, HVQ_E_INPUT,
                   "FILE:2:39: stage 'residual' (plugin 'coo16'): parameter "
                   "'sparsity': 60% (0.6) is above the maximum 0.5");
    validate_fails("stages:\n"
                   "  clusterer: {plugin: kmeans, relocate: maybe}\n"
                   "  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:2:41: stage 'clusterer' (plugin 'kmeans'): parameter "
                   "'relocate': expected a boolean (true/false, yes/no, "
                   "on/off, 1/0), got 'maybe'");
    validate_fails("stages:\n  clusterer: kmeans\n  writer: hvq\n"
                   "overrides:\n  - match: '*.mlp.*'\n"
                   "    clusterer: {block_size: 17}\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:6:29: override '*.mlp.*': stage 'clusterer' (plugin "
                   "'kmeans'): parameter 'block_size': 17 is above the "
                   "maximum 16");
}
END_TEST

START_TEST(err_missing_stage_and_parameter)
{
    validate_fails("stages:\n  clusterer: rtn\n", NULL, HVQ_E_INPUT,
                   "FILE: missing stage 'writer'; available writer plugins: "
                   "dequant, hvq");
    validate_fails("name: x\n", NULL, HVQ_E_INPUT,
                   "FILE: missing stage 'clusterer'; available clusterer "
                   "plugins: rtn, kmeans");
    validate_fails("stages:\n  hessian: file\n  clusterer: rtn\n"
                   "  writer: hvq\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:2:12: stage 'hessian' (plugin 'file'): missing "
                   "required parameter 'path'");
    validate_fails("stages:\n  hessian: {plugin: file, path: ''}\n" MINIMAL_STAGES,
                   NULL, HVQ_E_INPUT,
                   "FILE:2:33: stage 'hessian' (plugin 'file'): parameter "
                   "'path': expected a path, got an empty string");
    validate_fails("stages:\n  clusterer: rtn\n  writer: hvq\n"
                   "overrides:\n  - match: '*.mlp.*'\n"
                   "    hessian: file\n",
                   NULL, HVQ_E_INPUT,
                   "FILE:6:14: override '*.mlp.*': stage 'hessian' (plugin "
                   "'file'): missing required parameter 'path'");
    {
        static const char *const sets[] = {"stages.hessian.plugin=file", NULL};
        validate_fails(MINIMAL, sets, HVQ_E_INPUT,
                       "--set stages.hessian.plugin=file: stage 'hessian' "
                       "(plugin 'file'): missing required parameter 'path'");
    }
}
END_TEST

START_TEST(err_duplicate_key)
{
    load_fails("seed: 1\nname: x\nseed: 2\n",
               "FILE:3:1: duplicate key 'seed' (first at line 1, column 1)");
    load_fails("stages:\n  clusterer: {plugin: rtn, plugin: kmeans}\n",
               "FILE:2:28: duplicate key 'plugin' (first at line 2, column "
               "15)");
    load_fails("stages:\n  clusterer:\n    plugin: kmeans\n"
               "    centroids: 1\n    centroids: 2\n",
               "FILE:5:5: duplicate key 'centroids' (first at line 4, column "
               "5)");
    load_fails("stages:\n  writer: hvq\n  writer: dequant\n",
               "FILE:3:3: duplicate key 'writer' (first at line 2, column 3)");
    /* The first duplicate in the file is reported, against the first
     * occurrence. */
    load_fails("b: 1\na: 1\nc: 1\na: 2\nb: 2\na: 3\n",
               "FILE:4:1: duplicate key 'a' (first at line 2, column 1)");
    {
        /* A large mapping. */
        hvq_buf b;
        int k;
        hvq_buf_init(&b);
        hvq_buf_puts(&b, "stages:\n  clusterer:\n");
        for (k = 0; k < 20000; k++)
            hvq_buf_printf(&b, "    p%d: %d\n", k, k);
        hvq_buf_puts(&b, "    p17: 1\n");
        load_fails(b.data,
                   "FILE:20003:5: duplicate key 'p17' (first at line 20, "
                   "column 5)");
        hvq_buf_free(&b);
    }
}
END_TEST

START_TEST(err_yaml_syntax)
{
    hvq_pipeline *p = NULL;
    const char *path = th_src("tests/data/pipelines/syntax-error.yaml");
    hvq_status st = hvq_pipeline_load(ctx, path, &p);
    check_error(st, HVQ_E_INPUT,
                "FILE:3:9: YAML syntax error: did not find expected ',' or "
                "'}' (while parsing a flow mapping at line 2, column 14)",
                path);
    ck_assert_ptr_null(p);

    load_fails("stages:\n  clusterer: rtn\n writer: hvq\n",
               "FILE:3:2: YAML syntax error: did not find expected key "
               "(while parsing a block mapping at line 1, column 1)");
    load_fails("name: \"open\n",
               "FILE:2:1: YAML syntax error: found unexpected end of stream "
               "(while scanning a quoted scalar at line 1, column 7)");
    load_fails("name: a\tb: c\n",
               "FILE:1:10: YAML syntax error: mapping values are not allowed "
               "in this context");
    load_fails("name: \"\\xff\"\nbad: \x01\n",
               "FILE:2:6: invalid YAML text: control characters are not "
               "allowed (byte 0x01)");
}
END_TEST

START_TEST(err_documents)
{
    load_fails("", "FILE:1:1: the pipeline is empty (expected a mapping with "
                   "'stages:')");
    load_fails("# only a comment\n\n",
               "FILE:1:1: the pipeline is empty (expected a mapping with "
               "'stages:')");
    load_fails("---\n",
               "FILE:2:1: the pipeline is empty (expected a mapping with "
               "'stages:')");
    load_fails(MINIMAL "---\n" MINIMAL,
               "FILE:4:1: a second YAML document; a pipeline file holds "
               "exactly one");
    load_fails("base: &b {plugin: rtn}\n",
               "FILE:1:7: YAML anchors and aliases are not supported in a "
               "pipeline");
    load_fails("stages:\n  clusterer: &c rtn\n  writer: *c\n",
               "FILE:2:14: YAML anchors and aliases are not supported in a "
               "pipeline");
    load_fails("name: *x\n",
               "FILE:1:7: YAML anchors and aliases are not supported in a "
               "pipeline");
    load_fails("name: \"a\\0b\"\n",
               "FILE:1:7: a NUL character is not allowed in a value");
}
END_TEST

START_TEST(err_unreadable)
{
    hvq_pipeline *p = NULL;
    char path[4096];
    hvq_status st;

    snprintf(path, sizeof path, "%s/missing.yaml", tmp);
    st = hvq_pipeline_load(ctx, path, &p);
    check_error(st, HVQ_E_INPUT,
                "FILE: cannot open pipeline: No such file or directory", path);
    ck_assert_ptr_null(p);

    st = hvq_pipeline_load(ctx, tmp, &p);
    check_error(st, HVQ_E_INPUT, "FILE: cannot open pipeline: Is a directory",
                tmp);
    ck_assert_ptr_null(p);
}
END_TEST

START_TEST(err_seed)
{
    load_fails("seed: -1\n", "FILE:1:7: 'seed' must be an unsigned 64-bit "
                             "integer, got '-1'");
    load_fails("seed: 18446744073709551616\n",
               "FILE:1:7: 'seed' must be an unsigned 64-bit integer, got "
               "'18446744073709551616'");
    load_fails("seed: 4.2\n", "FILE:1:7: 'seed' must be an unsigned 64-bit "
                              "integer, got '4.2'");
    load_fails("seed:\n", "FILE:1:6: 'seed' must be an unsigned 64-bit "
                          "integer, got ''");
}
END_TEST

START_TEST(err_set)
{
    hvq_pipeline *p;
    hvq_status st;

    set_fails("seed", "--set seed: expected KEY=VALUE");
    set_fails("=3", "--set =3: expected KEY=VALUE");
    set_fails("seed=abc", "--set seed=abc: 'seed' must be an unsigned 64-bit "
                          "integer, got 'abc'");
    set_fails("inptu=x", "--set inptu=x: unknown key 'inptu'; did you mean "
                         "'input'?");
    set_fails("stage.clusterer.plugin=rtn",
              "--set stage.clusterer.plugin=rtn: unknown key "
              "'stage.clusterer.plugin'; did you mean "
              "'stages.clusterer.plugin'?");
    set_fails("select.inlcude=*",
              "--set select.inlcude=*: unknown key 'select.inlcude'; did you "
              "mean 'select.include'?");
    set_fails("colour=red",
              "--set colour=red: unknown key 'colour' (valid keys: input, "
              "output, report, seed, name, select.include, select.exclude, "
              "stages.STAGE.plugin, stages.STAGE.PARAMETER, evaluate.tokens, "
              "evaluate.ctx, evaluate.windows, target.bpw, target.size, "
              "target.metric, target.sample, on_error)");
    set_fails("stages.clusterr.plugin=rtn",
              "--set stages.clusterr.plugin=rtn: unknown stage 'clusterr'; "
              "did you mean 'clusterer'?");
    set_fails("stages.clusterer=rtn",
              "--set stages.clusterer=rtn: expected stages.STAGE.plugin or "
              "stages.STAGE.PARAMETER");
    set_fails("stages.clusterer.plugin=",
              "--set stages.clusterer.plugin=: the plugin name is empty");
    set_fails("input=", "--set input=: 'input' must not be empty");
    set_fails("name=\xff", "--set name=\xff: not valid UTF-8 text");
    set_fails("overrides.0.match=x",
              "--set overrides.0.match=x: overrides cannot be set from the "
              "command line; edit the pipeline file");

    /* Errors found by validation name the --set argument too. */
    {
        static const char *const s1[] = {"stages.clusterer.plugin=kmean",
                                         NULL};
        static const char *const s2[] = {"stages.clusterer.plugin=kmeans",
                                         "stages.clusterer.centroids=0",
                                         NULL};
        static const char *const s3[] = {"stages.clusterer.group_sise=32",
                                         NULL};
        validate_fails(MINIMAL, s1, HVQ_E_INPUT,
                       "--set stages.clusterer.plugin=kmean: stage "
                       "'clusterer': unknown plugin 'kmean'; did you mean "
                       "'kmeans'? (available: rtn, kmeans)");
        validate_fails(MINIMAL, s2, HVQ_E_INPUT,
                       "--set stages.clusterer.centroids=0: stage "
                       "'clusterer' (plugin 'kmeans'): parameter "
                       "'centroids': 0 is below the minimum 1");
        validate_fails(MINIMAL, s3, HVQ_E_INPUT,
                       "--set stages.clusterer.group_sise=32: stage "
                       "'clusterer' (plugin 'rtn'): unknown parameter "
                       "'group_sise'; did you mean 'group_size'?");
    }

    /* A failed --set leaves the pipeline usable. */
    p = load_ok(MINIMAL);
    st = hvq_pipeline_set(ctx, p, "seed=x");
    ck_assert_int_eq(st, HVQ_E_INPUT);
    set_ok(p, "seed=5");
    validate_ok(p);
    ck_assert_uint_eq(p->seed, 5);
    hvq_pipeline_free(p);
}
END_TEST

START_TEST(err_writer_override)
{
    hvq_pipeline *p = NULL;
    const char *path = th_src("tests/data/pipelines/writer-override.yaml");
    hvq_status st = hvq_pipeline_load(ctx, path, &p);
    check_error(st, HVQ_E_INPUT,
                "FILE:6:5: stage 'writer' may not be overridden per tensor",
                path);
    ck_assert_ptr_null(p);
}
END_TEST

START_TEST(err_internal_default)
{
    hvq_registry *r2 = hvq_registry_new();
    hvq_pipeline *p;
    hvq_status st;

    add(r2, &p_hvq);
    add(r2, &p_uniform);
    add(r2, &p_magnitude);
    add(r2, &p_none);
    add(r2, &p_buggy);
    p = load_ok("stages:\n  clusterer: buggy\n  writer: hvq\n");
    st = hvq_pipeline_validate(ctx, p, r2);
    check_error(st, HVQ_E_INTERNAL,
                "plugin 'buggy' (test): the default value 'abc' of parameter "
                "'level' is invalid: expected an integer, got 'abc' (a bug in "
                "the plugin)",
                "");
    /* The stage query refuses an unvalidated pipeline. */
    st = hvq_pipeline_stage_for(ctx, p, HVQ_STAGE_CLUSTERER, "w", NULL, NULL);
    ck_assert_int_eq(st, HVQ_E_INTERNAL);
    hvq_pipeline_free(p);

    /* A registry without the default plugins. */
    {
        hvq_registry *r3 = hvq_registry_new();
        add(r3, &p_rtn);
        add(r3, &p_hvq);
        p = load_ok(MINIMAL);
        st = hvq_pipeline_validate(ctx, p, r3);
        check_error(st, HVQ_E_INPUT,
                    "FILE: stage 'hessian': the default plugin 'uniform' is "
                    "not available (no hessian plugins are loaded)",
                    case_path);
        hvq_pipeline_free(p);
        hvq_registry_free(r3);
    }
    p = load_ok("stages:\n  clusterer: buggy\n  writer: hvq\n"
                "  hessian: nope\n");
    st = hvq_pipeline_validate(ctx, p, r2);
    check_error(st, HVQ_E_INPUT,
                "FILE:4:12: stage 'hessian': unknown plugin 'nope' "
                "(available: uniform)",
                case_path);
    hvq_pipeline_free(p);
    hvq_registry_free(r2);
}
END_TEST

START_TEST(stage_names)
{
    ck_assert_str_eq(hvq_stage_name(HVQ_STAGE_HESSIAN), "hessian");
    ck_assert_str_eq(hvq_stage_name(HVQ_STAGE_IMPORTANCE), "importance");
    ck_assert_str_eq(hvq_stage_name(HVQ_STAGE_CLUSTERER), "clusterer");
    ck_assert_str_eq(hvq_stage_name(HVQ_STAGE_RESIDUAL), "residual");
    ck_assert_str_eq(hvq_stage_name(HVQ_STAGE_WRITER), "writer");
    ck_assert_str_eq(hvq_stage_name(HVQ_STAGE_COUNT), "unknown");
    ck_assert_uint_eq(hvq_stage_kind(HVQ_STAGE_HESSIAN), HVQ_KIND_HESSIAN);
    ck_assert_uint_eq(hvq_stage_kind(HVQ_STAGE_IMPORTANCE),
                      HVQ_KIND_IMPORTANCE);
    ck_assert_uint_eq(hvq_stage_kind(HVQ_STAGE_CLUSTERER), HVQ_KIND_CLUSTERER);
    ck_assert_uint_eq(hvq_stage_kind(HVQ_STAGE_RESIDUAL), HVQ_KIND_RESIDUAL);
    ck_assert_uint_eq(hvq_stage_kind(HVQ_STAGE_WRITER), HVQ_KIND_WRITER);
    ck_assert_uint_eq(hvq_stage_kind(-1), 0);
}
END_TEST

/* on_error: the key at the top and in overrides, --set, the errors, and
 * the effective text (written only when it is not the default). */
START_TEST(on_error_key)
{
    hvq_pipeline *p = load_ok("overrides:\n"
                              "  - match: \"*.a\"\n"
                              "    on_error: passthrough\n"
                              "  - match: \"*\"\n"
                              "    on_error: abort\n"
                              "    clusterer: { group_size: 32 }\n" MINIMAL);
    char *y;
    ck_assert_int_eq(p->on_error, HVQ_ON_ERROR_UNSET);
    ck_assert(hvq_pipeline_passthrough(p, "x.a"));
    ck_assert(!hvq_pipeline_passthrough(p, "x.b"));
    set_ok(p, "on_error=passthrough");
    ck_assert(!hvq_pipeline_passthrough(p, "x.b")); /* the override's abort */
    validate_ok(p);
    y = hvq_pipeline_to_yaml(p);
    th_assert_contains(y, "\nseed: 0\non_error: passthrough\nstages:\n");
    th_assert_contains(y, "  - match: \"*.a\"\n    on_error: passthrough\n");
    th_assert_contains(y, "  - match: \"*\"\n    on_error: abort\n    clusterer:\n");
    free(y);
    set_ok(p, "on_error=abort");
    y = hvq_pipeline_to_yaml(p);
    ck_assert_ptr_null(strstr(y, "\non_error:"));
    free(y);
    hvq_pipeline_free(p);

    p = load_ok("on_error: passthrough\n" MINIMAL);
    ck_assert(hvq_pipeline_passthrough(p, "anything"));
    hvq_pipeline_free(p);

    load_fails("on_error: maybe\n" MINIMAL,
               "FILE:1:11: 'on_error' must be abort or passthrough, got 'maybe'");
    load_fails("on_error: [abort]\n" MINIMAL,
               "FILE:1:11: 'on_error' must be a scalar, not a sequence");
    load_fails("overrides:\n  - match: x\n    on_error: Abort\n" MINIMAL,
               "FILE:3:15: 'on_error' must be abort or passthrough, got 'Abort'");
    load_fails("candidates:\n  - on_error: abort\n" MINIMAL,
               "FILE:2:5: unknown key 'on_error' in candidate (valid keys: name, "
               "hessian, importance, clusterer, residual)");
    load_fails("on_eror: abort\n" MINIMAL,
               "FILE:1:1: unknown key 'on_eror'; did you mean 'on_error'?");
    set_fails("on_error=skip",
              "--set on_error=skip: 'on_error' must be abort or passthrough, got 'skip'");
}
END_TEST

/* The bytes of tensor name in the model at path, read by its source
 * plugin (malloc'd, *n bytes). */
static void *model_tensor(hvq_registry *real, hvq_ctx *c, const char *path,
                          const char *name, size_t *n)
{
    const hvq_loaded_plugin *src = hvq_registry_detect(real, c, path);
    void *state = NULL, *copy = NULL;
    size_t i, count;
    ck_assert_msg(src != NULL, "%s: %s", path, hvq_ctx_error(c));
    ck_assert_int_eq(src->desc.source_open(c, path, &state), HVQ_OK);
    count = src->desc.source_count(state);
    for (i = 0; i < count && !copy; i++) {
        hvq_tensor t;
        ck_assert_int_eq(src->desc.source_read(c, state, i, &t), HVQ_OK);
        if (strcmp(t.info.name, name) != 0)
            continue;
        *n = (size_t)t.info.nbytes;
        copy = malloc(*n ? *n : 1);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, t.data, *n);
    }
    src->desc.source_close(c, state);
    ck_assert_msg(copy != NULL, "%s holds no tensor '%s'", path, name);
    return copy;
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t k = 0;
    for (const char *q = hay; (q = strstr(q, needle)); q += strlen(needle))
        k++;
    return k;
}

/* The real binary: ggml q4_0 cannot encode the demo model's MLP down
 * projections (rows of 172 columns, blocks of 32). By default the run stops
 * (exit 2, nothing written); with on_error: passthrough those five tensors
 * are stored unchanged, each with a warning and a mark in the report; an
 * override's on_error applies to its tensors only. */
START_TEST(on_error_run)
{
    char *dir = th_tmpdir("on-error");
    const char *yaml = th_join(dir, "p.yaml"), *out = th_join(dir, "out.hvq");
    const char *rep = th_join(dir, "out.json"), *dec = th_join(dir, "dec.safetensors");
    const char *model = th_src("models/stories260K");
    const char *down0 = "model.layers.0.mlp.down_proj.weight";
    char text[4096], *o = NULL, *e = NULL, *json;
    hvq_ctx *rctx = th_ctx();
    hvq_registry *real = th_registry(rctx);
    size_t n_in, n_out;
    void *in, *got;

    snprintf(text, sizeof text,
             "input: %s\noutput: %s\nreport: %s\n"
             "select: { include: [\"*.weight\"], exclude: [\"*norm*\", \"*embed_tokens*\"] }\n"
             "stages:\n  clusterer: { plugin: ggml, type: q4_0 }\n  writer: hvq\n",
             model, out, rep);
    th_write_file(yaml, text, strlen(text));
    ck_assert_int_eq(th_hvq(&o, &e, "run", "-q", yaml, (const char *)NULL), 2);
    th_assert_contains(e, "tensor 'model.layers.0.mlp.down_proj.weight': rows of 172 "
                          "columns are not a multiple of the q4_0 block size 32");
    th_assert_dir_holds(dir, "p.yaml", (const char *)NULL);
    free(o);
    free(e);

    ck_assert_int_eq(th_hvq(&o, &e, "run", "-q", yaml, "--set", "on_error=passthrough",
                            (const char *)NULL), 0);
    ck_assert_uint_eq(count_of(e, "warning:"), 5);
    th_assert_contains(e, "warning: ");
    th_assert_contains(e, "tensor 'model.layers.4.mlp.down_proj.weight' passed through "
                          "unchanged (on_error: passthrough): tensor "
                          "'model.layers.4.mlp.down_proj.weight': rows of 172 columns");
    json = th_read_file(rep, NULL);
    ck_assert_ptr_nonnull(json);
    ck_assert_uint_eq(count_of(json, "\"fallback\": \"passthrough\""), 5);
    th_assert_contains(json, "\"name\": \"model.layers.0.mlp.down_proj.weight\", "
                             "\"dtype\": \"F32\", \"shape\": [64, 172], \"params\": 11008, "
                             "\"compressed\": false, \"passed_through\": \"compression failed\", "
                             "\"fallback\": \"passthrough\", \"error\": \"tensor "
                             "'model.layers.0.mlp.down_proj.weight': rows of 172 columns");
    th_assert_contains(json, "on_error: passthrough\\n");
    free(json);
    free(o);
    free(e);

    /* the tensor is the input's, byte for byte; a compressed one is not */
    ck_assert_int_eq(th_hvq(&o, &e, "decode", "-q", out, "-o", dec, (const char *)NULL), 0);
    free(o);
    free(e);
    in = model_tensor(real, rctx, model, down0, &n_in);
    got = model_tensor(real, rctx, dec, down0, &n_out);
    ck_assert_uint_eq(n_in, n_out);
    ck_assert(memcmp(in, got, n_in) == 0);
    free(in);
    free(got);
    in = model_tensor(real, rctx, model, "model.layers.0.mlp.up_proj.weight", &n_in);
    got = model_tensor(real, rctx, dec, "model.layers.0.mlp.up_proj.weight", &n_out);
    ck_assert(n_in == n_out && memcmp(in, got, n_in) != 0);
    free(in);
    free(got);

    /* a writer that declared the tensor converted (dequant to f16 of an
     * f32 model) cannot take it unchanged: the run stops and says why */
    unlink(out);
    unlink(rep);
    unlink(dec);
    ck_assert_int_eq(th_hvq(&o, &e, "run", "-q", yaml, "--set", "on_error=passthrough", "--set",
                            "stages.writer.plugin=dequant", "--set", "stages.writer.dtype=f16",
                            "--output", dec, (const char *)NULL), 1);
    th_assert_contains(e, "error: tensor 'model.layers.0.mlp.down_proj.weight' failed to "
                          "compress and was to pass through unchanged (on_error: passthrough), "
                          "which writer 'dequant' did not take: ");
    th_assert_dir_holds(dir, "p.yaml", (const char *)NULL);
    free(o);
    free(e);

    /* an override's on_error: layer 0 passes through, layer 1 stops the run */
    snprintf(text + strlen(text), sizeof text - strlen(text),
             "overrides:\n  - match: \"*.layers.0.*\"\n    on_error: passthrough\n");
    th_write_file(yaml, text, strlen(text));
    ck_assert_int_eq(th_hvq(&o, &e, "run", "-q", yaml, (const char *)NULL), 2);
    ck_assert_uint_eq(count_of(e, "warning:"), 1);
    th_assert_contains(e, "tensor 'model.layers.0.mlp.down_proj.weight' passed through");
    th_assert_contains(e, "error: ");
    th_assert_contains(e, "tensor 'model.layers.1.mlp.down_proj.weight': rows of 172");
    th_assert_dir_holds(dir, "p.yaml", (const char *)NULL);
    free(o);
    free(e);

    /* a bad value is a pipeline error with its place */
    snprintf(text, sizeof text, "on_error: skip\n" MINIMAL);
    th_write_file(yaml, text, strlen(text));
    ck_assert_int_eq(th_hvq(&o, &e, "run", "-q", yaml, (const char *)NULL), 2);
    th_assert_contains(e, "p.yaml:1:11: 'on_error' must be abort or passthrough, got 'skip'");
    free(o);
    free(e);

    hvq_registry_free(real);
    hvq_ctx_free(rctx);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------------------
 * The effective-pipeline text, byte for byte: every pipeline shipped and
 * the fixtures under tests/data/pipeline-emit/, loaded (as given), after
 * --set, validated against the real plugins, and as an output records it,
 * against tests/data/pipeline-emit/NAME.expected (written by the emitter
 * before it moved to core/pipeline_emit.c). The pipeline's path, the
 * version of hvqconv and the plugins' versions are masked so that the
 * files do not change with them. HVQ_EMIT_REGENERATE=1 rewrites the files
 * instead of comparing (only to record a deliberate change of format).
 * ---------------------------------------------------------------------- */

typedef struct emit_case {
    const char *name;      /* the .expected file's stem */
    const char *file;      /* the pipeline, relative to the source tree */
    const char *sets[8];   /* --set arguments, NULL-terminated */
} emit_case;

static const emit_case emit_cases[] = {
    {"best", "pipelines/best.yaml", {"target.bpw=4.8", NULL}},
    {"best-fast", "pipelines/best-fast.yaml", {"target.size=2MB", NULL}},
    {"high-fidelity", "pipelines/high-fidelity.yaml", {NULL}},
    {"int4-g128", "pipelines/int4-g128.yaml", {NULL}},
    {"int4-g32", "pipelines/int4-g32.yaml", {NULL}},
    {"int4-rtn", "pipelines/int4-rtn.yaml", {NULL}},
    {"mid", "pipelines/mid.yaml", {NULL}},
    {"q4_0", "pipelines/q4_0.yaml", {NULL}},
    {"q4_1", "pipelines/q4_1.yaml", {NULL}},
    {"q8_0", "pipelines/q8_0.yaml", {NULL}},
    {"full", "tests/data/pipelines/full.yaml", {NULL}},
    {"minimal", "tests/data/pipelines/minimal.yaml", {NULL}},
    {"minimal-set", "tests/data/pipelines/minimal.yaml",
     {"evaluate.tokens=t t.bin", "evaluate.windows=9", "target.bpw=3.25",
      "target.metric=relative", "report=r: x", "input=-", NULL}},
    {"validated", "tests/data/pipeline-emit/validated.yaml", {NULL}},
    {"adversarial", "tests/data/pipeline-emit/adversarial.yaml", {NULL}},
    {"adversarial-set", "tests/data/pipeline-emit/adversarial.yaml",
     {"name=ctl\x01\x1f\x7f \xc2\x85\xc2\xa0\xef\xbb\xbf", "report=",
      "evaluate=", "stages.writer.x=\xf0\x9f\x98\x80", "select.include=",
      "stages.clusterer.plugin=kmeans", "stages.hessian.k=- a: b\n#c",
      NULL}},
};

/* text with its first occurrence of from replaced by to, into b. */
static void emit_put_masked(hvq_buf *b, const char *text, const char *from,
                            const char *to)
{
    const char *at = from && from[0] ? strstr(text, from) : NULL;
    if (!at) {
        hvq_buf_puts(b, text);
        return;
    }
    hvq_buf_append(b, text, (size_t)(at - text));
    hvq_buf_puts(b, to);
    hvq_buf_puts(b, at + strlen(from));
}

/* A recorded pipeline with the versions masked. */
static void emit_put_record(hvq_buf *b, const char *rec)
{
    const char *plugins = strstr(rec, "\n# plugins:");
    const char *eol = plugins ? strchr(plugins + 1, '\n') : NULL;
    hvq_buf masked;
    ck_assert_ptr_nonnull(eol);
    hvq_buf_init(&masked);
    hvq_buf_append(&masked, rec, (size_t)(plugins - rec));
    hvq_buf_puts(&masked, "\n# plugins: (versions masked)");
    hvq_buf_puts(&masked, eol);
    emit_put_masked(b, masked.data, " " PACKAGE_VERSION " ", " @VERSION@ ");
    hvq_buf_free(&masked);
}

static char *emit_text(const emit_case *c, hvq_registry *real)
{
    hvq_pipeline *p = load_ok_path(th_src(c->file));
    hvq_buf b;
    char *y;
    size_t k;

    hvq_buf_init(&b);
    y = hvq_pipeline_to_yaml(p);
    ck_assert_ptr_nonnull(y);
    hvq_buf_puts(&b, "=== loaded\n");
    emit_put_masked(&b, y, p->path, "PATH");
    free(y);
    for (k = 0; c->sets[k]; k++)
        set_ok(p, c->sets[k]);
    if (k) {
        y = hvq_pipeline_to_yaml(p);
        ck_assert_ptr_nonnull(y);
        hvq_buf_puts(&b, "=== after --set\n");
        emit_put_masked(&b, y, p->path, "PATH");
        free(y);
    }
    if (hvq_pipeline_validate(ctx, p, real) == HVQ_OK) {
        y = hvq_pipeline_to_yaml(p);
        ck_assert_ptr_nonnull(y);
        hvq_buf_puts(&b, "=== validated\n");
        emit_put_masked(&b, y, p->path, "PATH");
        free(y);
        y = hvq_pipeline_record(p, "safetensors", "9.9");
        ck_assert_ptr_nonnull(y);
        hvq_buf_puts(&b, "=== recorded\n");
        emit_put_record(&b, y);
        free(y);
    } else {
        hvq_buf_puts(&b, "=== not valid\n");
    }
    hvq_pipeline_free(p);
    ck_assert(!b.oom && b.data);
    return b.data;
}

START_TEST(emit_golden)
{
    hvq_ctx *rctx = th_ctx();
    hvq_registry *real = th_registry(rctx);
    int regen = getenv("HVQ_EMIT_REGENERATE") != NULL;
    size_t i;

    for (i = 0; i < sizeof emit_cases / sizeof emit_cases[0]; i++) {
        char rel[256], *got, *want;
        snprintf(rel, sizeof rel, "tests/data/pipeline-emit/%s.expected",
                 emit_cases[i].name);
        got = emit_text(&emit_cases[i], real);
        if (regen) {
            th_write_file(th_src(rel), got, strlen(got));
        } else {
            want = th_read_file(th_src(rel), NULL);
            ck_assert_msg(want != NULL, "%s is missing", rel);
            ck_assert_msg(strcmp(got, want) == 0, "%s: the text differs:\n%s",
                          rel, got);
            free(want);
        }
        free(got);
    }
    hvq_registry_free(real);
    hvq_ctx_free(rctx);
}
END_TEST

static Suite *pipeline_suite(void)
{
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("params");
    tcase_add_test(tc, param_int);
    tcase_add_test(tc, param_float);
    tcase_add_test(tc, param_bool_string_choice_path);
    tcase_add_test(tc, param_helpers);
    tcase_add_test(tc, stage_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("load");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults_applied);
    tcase_add_test(tc, full_pipeline);
    tcase_add_test(tc, overrides_first_match);
    tcase_add_test(tc, select_globs);
    tcase_add_test(tc, glob_semantics);
    tcase_add_test(tc, set_overrides_file);
    tcase_add_test(tc, set_plugin_swap);
    tcase_add_test(tc, to_yaml_round_trip);
    tcase_add_test(tc, yaml_forms);
    tcase_add_test(tc, emit_golden);
    tcase_add_test(tc, on_error_key);
    tcase_add_test(tc, on_error_run);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, err_unknown_key);
    tcase_add_test(tc, err_unknown_stage);
    tcase_add_test(tc, err_unknown_plugin);
    tcase_add_test(tc, err_unknown_parameter);
    tcase_add_test(tc, err_wrong_type);
    tcase_add_test(tc, err_out_of_range_and_bad_values);
    tcase_add_test(tc, err_missing_stage_and_parameter);
    tcase_add_test(tc, err_duplicate_key);
    tcase_add_test(tc, err_yaml_syntax);
    tcase_add_test(tc, err_documents);
    tcase_add_test(tc, err_unreadable);
    tcase_add_test(tc, err_seed);
    tcase_add_test(tc, err_set);
    tcase_add_test(tc, err_writer_override);
    tcase_add_test(tc, err_internal_default);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pipeline_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
