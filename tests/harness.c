/* Test harness shared by the Check test programs. */
#include "config.h"

#include "harness.h"
#include "params.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

hvq_ctx *th_ctx(void)
{
    hvq_ctx_opts o = {.quiet = 1, .threads = 1};
    hvq_ctx *ctx = hvq_ctx_new(&o);
    ck_assert_ptr_nonnull(ctx);
    return ctx;
}

const hvq_plugin *th_plugin(hvq_registry *reg, uint32_t kind, const char *name)
{
    const hvq_loaded_plugin *lp = hvq_registry_find(reg, kind, name);
    ck_assert_msg(lp != NULL, "plugin %s not found in the build tree", name);
    return &lp->desc;
}

void th_params_make(th_params *tp, const hvq_plugin *d, const char *const *kv)
{
    char why[256];
    int given[16] = {0};
    size_t n = hvq_param_count(d->params);
    ck_assert_uint_le(n, 16);
    memset(tp->v, 0, sizeof tp->v);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(!d->params[i].default_value ||
                          hvq_param_parse(&d->params[i], d->params[i].default_value, &tp->v[i],
                                          why, sizeof why) == HVQ_OK,
                      "default of %s: %s", d->params[i].name, why);
        tp->v[i].is_default = 1;
    }
    for (size_t k = 0; kv && kv[k]; k++) {
        const char *eq = strchr(kv[k], '=');
        ck_assert_msg(eq != NULL, "override '%s' is not key=value", kv[k]);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[k]), kv[k]);
        long idx = hvq_param_index(d->params, key);
        ck_assert_int_ge(idx, 0);
        ck_assert_int_eq(hvq_param_parse(&d->params[idx], eq + 1, &tp->v[idx], why, sizeof why),
                         HVQ_OK);
        tp->v[idx].is_default = 0;
        given[idx] = 1;
    }
    for (size_t i = 0; i < n; i++) /* a parameter without a default must be given */
        ck_assert_msg(d->params[i].default_value || given[i], "%s: parameter '%s' not given",
                      d->name, d->params[i].name);
    tp->p.count = n;
    tp->p.values = tp->v;
    tp->p.specs = d->params;
}

const char *th_srcdir(void)
{
    const char *s = getenv("HVQ_TOP_SRCDIR");
    return s && *s ? s : HVQ_BUILDDIR; /* srcdir == builddir outside make check */
}

const char *th_builddir(void)
{
    const char *s = getenv("HVQ_TOP_BUILDDIR");
    return s && *s ? s : HVQ_BUILDDIR;
}

const char *th_src(const char *rel)
{
    static char bufs[8][PATH_MAX];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, PATH_MAX, "%s/%s", th_srcdir(), rel);
    return b;
}

hvq_registry *th_registry(hvq_ctx *ctx)
{
    hvq_registry *reg = hvq_registry_new();
    ck_assert_ptr_nonnull(reg);
    static const char *const sub[] = {"formats/.libs", "plugins/.libs"};
    for (int i = 0; i < 2; i++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/%s", th_builddir(), sub[i]);
        ck_assert_int_eq(hvq_registry_load_dir(reg, ctx, dir), HVQ_OK);
    }
    ck_assert_msg(hvq_registry_count(reg) > 0, "no plugin found in the build tree %s",
                  th_builddir());
    hvq_ctx_set_registry(ctx, reg);
    return reg;
}

const char *th_shared_data(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("HVQ_SHARED_DATA");
    if (env && *env)
        snprintf(path, sizeof path, "%s", env);
    else
        snprintf(path, sizeof path, "%s/../shared/data", th_srcdir());
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return NULL;
    return path;
}

char *th_tmpdir(const char *tag)
{
    char base[PATH_MAX / 2];
    snprintf(base, sizeof base, "%s/tests/tmp", th_builddir());
    mkdir(base, 0755);
    char *path = malloc(PATH_MAX);
    ck_assert_ptr_nonnull(path);
    snprintf(path, PATH_MAX, "%s/%.64s-XXXXXX", base, tag);
    ck_assert_msg(mkdtemp(path) != NULL, "mkdtemp %s: %s", path, strerror(errno));
    return path;
}

void th_rmtree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char sub[PATH_MAX];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
                chmod(sub, 0755);
                th_rmtree(sub);
            } else {
                unlink(sub);
            }
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

void th_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

char *th_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    size_t r;
    while ((r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
    }
    fclose(f);
    buf[len] = '\0';
    if (n)
        *n = len;
    return buf;
}

int th_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static char *slurp_fd(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    for (;;) {
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
    }
    buf[len] = '\0';
    return buf;
}

int th_run(char **out, char **err, const char *const *args)
{
    return th_run_rss(out, err, args, NULL);
}

int th_run_rss(char **out, char **err, const char *const *args, long *max_rss_kb)
{
    char exe[PATH_MAX];
    snprintf(exe, sizeof exe, "%s/hvqconv", th_builddir());
    char outp[PATH_MAX], errp[PATH_MAX];
    snprintf(outp, sizeof outp, "%s/tests/tmp-run-out-XXXXXX", th_builddir());
    snprintf(errp, sizeof errp, "%s/tests/tmp-run-err-XXXXXX", th_builddir());
    int ofd = mkstemp(outp), efd = mkstemp(errp);
    ck_assert_msg(ofd >= 0 && efd >= 0, "mkstemp: %s", strerror(errno));
    size_t n = 0;
    while (args[n])
        n++;
    char **argv = calloc(n + 2, sizeof *argv);
    ck_assert_ptr_nonnull(argv);
    argv[0] = exe;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(ofd, 1);
        dup2(efd, 2);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        execv(exe, argv);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    if (max_rss_kb)
        *max_rss_kb = ru.ru_maxrss;
    free(argv);
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    if (out)
        *out = slurp_fd(ofd);
    if (err)
        *err = slurp_fd(efd);
    close(ofd);
    close(efd);
    unlink(outp);
    unlink(errp);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

int th_hvq(char **out, char **err, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, err);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        ck_assert_uint_lt(n, 63);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return th_run(out, err, args);
}

const char *th_join(const char *dir, const char *name)
{
    static char bufs[32][PATH_MAX];
    static int k;
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s/%s", dir, name); /* dir may be a slot */
    ck_assert(n > 0 && n < PATH_MAX);
    char *b = bufs[k++ % 32];
    memcpy(b, tmp, (size_t)n + 1);
    return b;
}

void th_assert_dir_holds(const char *dir, ...)
{
    const char *want[16];
    size_t n_want = 0;
    va_list ap;
    va_start(ap, dir);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n_want < 16)
        want[n_want++] = a;
    va_end(ap);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
    struct dirent *e;
    size_t found = 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        int ok = 0;
        for (size_t i = 0; i < n_want; i++)
            ok |= strcmp(e->d_name, want[i]) == 0;
        if (!ok) {
            char name[256];
            snprintf(name, sizeof name, "%s", e->d_name);
            closedir(d);
            ck_abort_msg("unexpected file '%s' in %s", name, dir);
        }
        found++;
    }
    closedir(d);
    ck_assert_msg(found == n_want, "%s holds %zu of the %zu expected files", dir, found, n_want);
}

void th_copy_file(const char *from, const char *to, size_t max_bytes)
{
    size_t n;
    char *data = th_read_file(from, &n);
    ck_assert_msg(data != NULL, "cannot read %s", from);
    th_write_file(to, data, n < max_bytes ? n : max_bytes);
    free(data);
}

int th_same_bytes(const char *a, const char *b)
{
    size_t na, nb;
    char *da = th_read_file(a, &na), *db = th_read_file(b, &nb);
    ck_assert_msg(da != NULL && db != NULL, "cannot read %s or %s", a, b);
    int same = na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

int th_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

const char *th_model_meta(hvq_ctx *ctx, hvq_model *m, const char *key)
{
    const hvq_meta *meta;
    size_t n;
    ctx->host->model_meta(m, &meta, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(meta[i].key, key) == 0)
            return meta[i].value;
    return NULL;
}
