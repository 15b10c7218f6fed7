/* Test harness shared by the Check test programs: a quiet context, the
 * build tree's plugins, temporary directories, fixture paths, and a way to
 * run the real binary. */
#ifndef HVQ_TEST_HARNESS_H
#define HVQ_TEST_HARNESS_H

#include "ctx.h"
#include "registry.h"

#include <check.h>
#include <stddef.h>

/* A new quiet context (threads 1); free with hvq_ctx_free. */
hvq_ctx *th_ctx(void);

/* A registry with every plugin of the build tree (formats/ and plugins/);
 * aborts the test when none loads. Free with hvq_registry_free. The ctx's
 * registry is set to it. */
hvq_registry *th_registry(hvq_ctx *ctx);

/* The descriptor of the plugin of that kind and name in reg; aborts the
 * test when the build tree has none. */
const hvq_plugin *th_plugin(hvq_registry *reg, uint32_t kind, const char *name);

/* Resolved parameters of a plugin as the host would hand them over: the
 * declared defaults, then "key=value" overrides (a NULL-terminated list, or
 * NULL). Aborts the test on an unknown key, a bad value, or a parameter
 * without a default that is not given. */
typedef struct th_params {
    hvq_value v[16];
    hvq_params p;
} th_params;
void th_params_make(th_params *tp, const hvq_plugin *d, const char *const *kv);

/* $HVQ_TOP_SRCDIR and $HVQ_TOP_BUILDDIR (set by make check), falling back
 * to the configure-time paths. */
const char *th_srcdir(void);
const char *th_builddir(void);

/* "SRCDIR/rel" in a static rotating buffer (valid for the next 8 calls). */
const char *th_src(const char *rel);

/* The shared data folder (../shared/data beside the source tree), or NULL
 * when it is not there: tests that use it skip cleanly. */
const char *th_shared_data(void);

/* A fresh empty directory under the build tree (malloc'd path); removed
 * with everything in it by th_rmtree. */
char *th_tmpdir(const char *tag);
void th_rmtree(const char *path);

/* Writes n bytes to path; aborts the test on failure. */
void th_write_file(const char *path, const void *data, size_t n);
/* Reads a whole file (malloc'd, NUL-terminated); NULL when missing. */
char *th_read_file(const char *path, size_t *n);
int th_exists(const char *path);

/* Runs the built hvqconv with args (NULL-terminated), capturing stdout and
 * stderr (malloc'd, NUL-terminated, may be NULL to discard). Returns the
 * exit status (or 128+signal). */
int th_run(char **out, char **err, const char *const *args);
/* The same, and the child's peak resident set size in KiB (wait4's
 * ru_maxrss) into *max_rss_kb. */
int th_run_rss(char **out, char **err, const char *const *args, long *max_rss_kb);

/* Runs every test of s; the exit status for main (frees s). */
int th_run_suite(Suite *s);

/* th_run with the arguments as a NULL-terminated list. */
int th_hvq(char **out, char **err, ...);
/* "dir/name" in a rotating static buffer (valid for the next 31 calls). */
const char *th_join(const char *dir, const char *name);
/* Asserts that dir holds exactly the listed entries (NULL-terminated; no
 * temporary .NAME.tmp-* file or anything else). */
void th_assert_dir_holds(const char *dir, ...);
/* Copies the first max_bytes (SIZE_MAX: all) of from to to. */
void th_copy_file(const char *from, const char *to, size_t max_bytes);
/* Whether files a and b hold the same bytes. */
int th_same_bytes(const char *a, const char *b);
/* The value of metadata key of a model opened with host->model_open (the
 * format's own encoding: typed JSON text for GGUF), or NULL. */
const char *th_model_meta(hvq_ctx *ctx, hvq_model *m, const char *key);

/* ck_assert that haystack contains needle, printing both on failure. */
#define th_assert_contains(haystack, needle)                                  \
    ck_assert_msg((haystack) != NULL && strstr((haystack), (needle)) != NULL, \
                  "expected to find \"%s\" in:\n%s", (needle),                \
                  (haystack) ? (haystack) : "(null)")

#endif
