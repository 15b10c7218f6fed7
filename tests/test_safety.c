/* Nothing lost, whatever the user or the machine does (issue 14): the
 * real binary on real files. No output ever writes or removes a file the
 * run reads; --force replaces only what hvqconv wrote for that output; a
 * commit puts every file in place or none; FIFOs, devices and symbolic
 * links are never replaced; concurrent runs leave a whole output; signals
 * and an input shrinking under the run leave nothing and exit as
 * documented. Failures of the machine come from tests/fault (preloaded). */
#include "config.h"

#include "harness.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *g_dir;
static void fault_off(void);
static char *g_kept[256]; /* paths that outlive th_join's rotating buffers */
static size_t g_n_kept;

/* "g_dir/name", valid until the test ends. */
static const char *P(const char *name)
{
    ck_assert_uint_lt(g_n_kept, 256);
    return g_kept[g_n_kept++] = strdup(th_join(g_dir, name));
}
static const char *model(void) { return th_src("models/stories260K"); }
static const char *rtn(void) { return th_src("pipelines/int4-rtn.yaml"); }

static void setup(void)
{
    g_dir = th_tmpdir("safety");
    fault_off();
}

static void teardown(void)
{
    th_rmtree(g_dir);
    free(g_dir);
    while (g_n_kept)
        free(g_kept[--g_n_kept]);
}

static void make_dir(const char *path) { ck_assert_int_eq(mkdir(path, 0755), 0); }

/* ---- a directory's entries and bytes ---------------------------------- */

#define SNAP_MAX 64
typedef struct snap {
    size_t n;
    char *name[SNAP_MAX];
    char *data[SNAP_MAX];
    size_t len[SNAP_MAX];
} snap;

static void snap_take(snap *s, const char *dir)
{
    memset(s, 0, sizeof *s);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        ck_assert_uint_lt(s->n, SNAP_MAX);
        s->name[s->n] = strdup(e->d_name);
        s->data[s->n] = th_read_file(th_join(dir, e->d_name), &s->len[s->n]);
        s->n++;
    }
    closedir(d);
}

static void snap_free(snap *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->name[i]);
        free(s->data[i]);
    }
    s->n = 0;
}

/* Asserts dir holds s's files with the same bytes, and, when exact,
 * nothing else (no hidden temporary either). */
static void snap_check(const snap *s, const char *dir, int exact)
{
    snap now;
    snap_take(&now, dir);
    for (size_t i = 0; i < s->n; i++) {
        size_t j = 0;
        while (j < now.n && strcmp(now.name[j], s->name[i]) != 0)
            j++;
        ck_assert_msg(j < now.n, "%s/%s is gone", dir, s->name[i]);
        ck_assert_msg(now.len[j] == s->len[i] &&
                          (!s->data[i] || memcmp(now.data[j], s->data[i], s->len[i]) == 0),
                      "%s/%s changed", dir, s->name[i]);
    }
    ck_assert_msg(!exact || now.n == s->n, "%s holds %zu files, %zu before", dir, now.n, s->n);
    snap_free(&now);
}

/* The first entry of dir whose name starts with prefix (static). */
static const char *entry_with(const char *dir, const char *prefix)
{
    static char found[NAME_MAX + 1];
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    found[0] = '\0';
    while ((e = readdir(d)) != NULL && !found[0])
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            snprintf(found, sizeof found, "%s", e->d_name);
    closedir(d);
    ck_assert_msg(found[0], "no %s* in %s", prefix, dir);
    return found;
}

/* ---- faults (tests/fault, preloaded) ------------------------------------ */

static void fault_on(const char *var, const char *value)
{
    char lib[PATH_MAX];
    snprintf(lib, sizeof lib, "%s/tests/fault/.libs/fault.so", th_builddir());
    ck_assert_msg(th_exists(lib), "%s not built", lib);
    setenv("LD_PRELOAD", lib, 1);
    /* the sanitizer build: its runtime need not come first */
    setenv("ASAN_OPTIONS", "verify_asan_link_order=0", 1);
    setenv(var, value, 1);
}

static void fault_off(void)
{
    unsetenv("LD_PRELOAD");
    unsetenv("ASAN_OPTIONS");
    unsetenv("HVQ_FAULT_RENAME");
    unsetenv("HVQ_FAULT_SHRINK");
    unsetenv("HVQ_FAULT_SIGNAL");
    unsetenv("HVQ_FAULT_NO_TMPFILE");
    unsetenv("HVQ_FAULT_WRITE_SIGNAL");
}

/* Runs the binary, expecting exit status want and err to contain
 * needle (unless NULL). */
#define expect(want, needle, ...)                                                    \
    do {                                                                             \
        char *out_ = NULL, *err_ = NULL;                                             \
        int rc_ = th_hvq(&out_, &err_, __VA_ARGS__, (const char *)NULL);             \
        ck_assert_msg(rc_ == (want), "exit %d, want %d:\n%s", rc_, (want), err_);    \
        const char *needle_ = (needle);                                              \
        if (needle_ != NULL)                                                         \
            th_assert_contains(err_, needle_);                                       \
        free(out_);                                                                  \
        free(err_);                                                                  \
    } while (0)

/* ---- 1: no output writes or removes an input ---------------------------- */

START_TEST(inputs_never_written)
{
    /* a sharded input: one of its shards, or its single form, as output */
    const char *d = P("in");
    make_dir(d);
    expect(0, NULL, "run", rtn(), "-q", "-i", model(), "-o", P("in/m.safetensors"), "-r",
           P("r0.json"), "--set", "stages.writer.max_shard_size=300KB");
    char shard[NAME_MAX + 1];
    snprintf(shard, sizeof shard, "%s", entry_with(d, "m-00001-of-"));
    snap before;
    snap_take(&before, d);
    const char *index = P("in/m.safetensors.index.json");
    expect(2, "is a file this run reads", "run", rtn(), "-q", "--force", "-i", index, "-o",
           th_join(d, shard), "-r", P("r1.json"));
    expect(2, "is a file this run reads", "run", rtn(), "-q", "--force", "-i", index, "-o",
           P("in/m.safetensors"), "-r", P("r1.json"));
    snap_check(&before, d, 1);
    snap_free(&before);

    /* an output whose shard would take an input's name */
    const char *x = P("x");
    make_dir(x);
    th_copy_file(th_join(model(), "model.safetensors"), P("x/y-00001-of-00002.safetensors"),
                 SIZE_MAX);
    snap_take(&before, x);
    expect(2, "y-00001-of-00002.safetensors is a file this run reads", "run", rtn(), "-q",
           "--force", "-i", P("x/y-00001-of-00002.safetensors"), "-o",
           P("x/y.safetensors"), "-r", P("r2.json"), "--set",
           "stages.writer.max_shard_size=600KB");
    snap_check(&before, x, 1);
    snap_free(&before);

    /* a sharded container decoded into one of its own shards */
    const char *c = P("c");
    make_dir(c);
    expect(0, NULL, "run", rtn(), "-q", "-i", model(), "-o", P("c/c.hvq"), "-r",
           P("r3.json"), "--set", "stages.writer.plugin=hvq", "--set",
           "stages.writer.max_shard_size=100KB");
    snprintf(shard, sizeof shard, "%s", entry_with(c, "c-00002-of-"));
    snap_take(&before, c);
    expect(2, "is a file this run reads", "decode", P("c/c.hvq.index.json"), "-o",
           th_join(c, shard), "--force");
    expect(2, NULL, "decode", c, "-o", th_join(c, shard), "--force");
    snap_check(&before, c, 1);
    snap_free(&before);
}
END_TEST

START_TEST(stage_files_never_written)
{
    /* an imatrix the run reads, named as the report or the output */
    const char *im = P("im.dat");
    th_copy_file(th_src("tests/data/imatrix/stories260K.imatrix.dat"), im, SIZE_MAX);
    snap before;
    snap_take(&before, g_dir);
    char set[PATH_MAX + 64];
    snprintf(set, sizeof set, "stages.hessian.path=%s", im);
    expect(2, "names the run's report", "run", rtn(), "-q", "--force", "-i", model(), "-o",
           P("o.safetensors"), "-r", im, "--set", "stages.hessian.plugin=imatrix", "--set", set);
    expect(2, "names the run's output", "run", rtn(), "-q", "--force", "-i", model(), "-o", im,
           "-r", P("r.json"), "--set", "stages.hessian.plugin=imatrix", "--set", set);
    snap_check(&before, g_dir, 1);

    /* calibrate's saved imatrix may not be the output */
    snprintf(set, sizeof set, "stages.hessian.save=%s", P("o.gguf"));
    expect(2, "names the run's output", "run", rtn(), "-q", "-i", model(), "-o", P("o.gguf"),
           "-r", P("r.json"), "--set", "stages.hessian.plugin=calibrate", "--set",
           "stages.hessian.tokens=tokens.npy", "--set", set);
    snap_check(&before, g_dir, 1);

    /* compare's report may not be its input */
    const char *m = P("m.safetensors");
    th_copy_file(th_join(model(), "model.safetensors"), m, SIZE_MAX);
    snap_free(&before);
    snap_take(&before, g_dir);
    expect(2, "is a file this run reads", "compare", rtn(), "-q", "--no-eval", "--force", "-i",
           m, "--report", m);
    snap_check(&before, g_dir, 1);
    snap_free(&before);
}
END_TEST

/* ---- 2: --force replaces only what hvqconv wrote for the output ---------- */

/* Makes dir/model.safetensors a sharded model hvqconv did not write (its
 * index without "written_by"), as a Hugging Face download is. */
static void make_foreign_sharded(const char *dir)
{
    expect(0, NULL, "run", rtn(), "-q", "-i", model(), "-o", th_join(dir, "model.safetensors"),
           "-r", P("foreign.json"), "--set", "stages.writer.max_shard_size=300KB");
    const char *index = th_join(dir, "model.safetensors.index.json");
    size_t n;
    char *text = th_read_file(index, &n);
    static const char mark[] = ",\n    \"written_by\": \"hvqconv\"";
    char *at = strstr(text, mark);
    if (at)
        memmove(at, at + sizeof mark - 1, strlen(at + sizeof mark - 1) + 1);
    th_write_file(index, text, strlen(text));
    free(text);
}

START_TEST(force_replaces_only_ours)
{
    const char *hf = P("hf");
    make_dir(hf);
    make_foreign_sharded(hf);
    expect(0, NULL, "run", rtn(), "-q", "-i", model(), "-o", P("c.hvq"), "-r", P("c.json"),
           "--set", "stages.writer.plugin=hvq");
    snap before;
    snap_take(&before, hf);
    /* a single file beside them: written, theirs left alone with a warning */
    expect(0, "left alone", "decode", P("c.hvq"), "-o", P("hf/model.safetensors"),
           "--force", "-q");
    snap_check(&before, hf, 0);
    ck_assert(th_exists(P("hf/model.safetensors")));
    /* shards over theirs: refused, nothing changed */
    snap_free(&before);
    snap_take(&before, hf);
    expect(2, "hvqconv did not write it", "run", rtn(), "-q", "--force", "-i", model(), "-o",
           P("hf/model.safetensors"), "-r", P("r.json"), "--set",
           "stages.writer.max_shard_size=300KB");
    snap_check(&before, hf, 1);
    snap_free(&before);

    /* ours: an earlier sharded output is replaced whole, its shards removed */
    const char *o = P("o");
    make_dir(o);
    expect(0, NULL, "run", rtn(), "-q", "-i", model(), "-o", P("o/m.safetensors"), "-r",
           P("r1.json"), "--set", "stages.writer.max_shard_size=300KB");
    expect(0, NULL, "run", rtn(), "-q", "--force", "-i", model(), "-o",
           P("o/m.safetensors"), "-r", P("r2.json"));
    th_assert_dir_holds(o, "m.safetensors", (const char *)NULL);
}
END_TEST

/* ---- 3: all or nothing ------------------------------------------------- */

START_TEST(commit_all_or_nothing)
{
    const char *o = P("o");
    make_dir(o);
    const char *m = P("o/m.safetensors"), *r = P("o/r.json");
    expect(0, NULL, "run", rtn(), "-q", "-i", model(), "-o", m, "-r", r, "--set",
           "stages.writer.max_shard_size=300KB");
    snap before;
    snap_take(&before, o);
    ck_assert_uint_ge(before.n, 4); /* shards, index, report */
    /* the 1st, 3rd or last rename fails: every file as it was */
    char at[16];
    size_t cases[] = {1, 3, before.n};
    for (size_t k = 0; k < 3; k++) {
        snprintf(at, sizeof at, "%zu", cases[k]);
        fault_on("HVQ_FAULT_RENAME", at);
        expect(1, "every file is as it was before the run", "run", rtn(), "-q", "--force", "-i",
               model(), "-o", m, "-r", r, "--set", "stages.writer.max_shard_size=300KB",
               "--set", "stages.clusterer.group_size=32");
        fault_off();
        snap_check(&before, o, 1);
    }
    /* a destination that cannot be replaced is found before any rename */
    char *keep = strdup(th_join(o, entry_with(o, "m-00002-of-")));
    ck_assert_int_eq(unlink(keep), 0);
    make_dir(keep);
    snap_free(&before);
    snap_take(&before, o);
    expect(2, "is a directory", "run", rtn(), "-q", "--force", "-i", model(), "-o", m, "-r", r,
           "--set", "stages.writer.max_shard_size=300KB", "--set",
           "stages.clusterer.group_size=32");
    snap_check(&before, o, 1);
    snap_free(&before);
    free(keep);
}
END_TEST

/* ---- 12: special outputs ------------------------------------------------ */

START_TEST(special_outputs_refused)
{
    const char *fifo = P("fifo.safetensors");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    expect(2, "not a regular file", "run", rtn(), "-q", "--force", "-i", model(), "-o", fifo,
           "-r", P("r.json"));
    struct stat sb;
    ck_assert(lstat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode));

    const char *target = P("target.bin"), *link = P("link.safetensors");
    th_write_file(target, "keep", 4);
    ck_assert_int_eq(symlink(target, link), 0);
    expect(2, "is a symbolic link", "run", rtn(), "-q", "--force", "-i", model(), "-o", link,
           "-r", P("r.json"));
    ck_assert(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    size_t n;
    char *t = th_read_file(target, &n);
    ck_assert(n == 4 && memcmp(t, "keep", 4) == 0);
    free(t);

    const char *dangling = P("dangling.safetensors");
    ck_assert_int_eq(symlink(P("nowhere"), dangling), 0);
    expect(2, "already exists", "run", rtn(), "-q", "-i", model(), "-o", dangling, "-r",
           P("r.json"));
    ck_assert(lstat(dangling, &sb) == 0 && S_ISLNK(sb.st_mode) && !th_exists(P("nowhere")));

    expect(2, NULL, "run", rtn(), "-q", "--force", "-i", model(), "-o", "/dev/null", "-r",
           P("r.json"));
    ck_assert(stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode));

    /* a path too long: the message keeps its reason */
    static char lng[6000];
    int k = snprintf(lng, sizeof lng, "%s", g_dir);
    while (k < 5000) {
        lng[k++] = '/';
        for (int i = 0; i < 200; i++)
            lng[k++] = 'a';
    }
    snprintf(lng + k, sizeof lng - (size_t)k, "/x.safetensors");
    expect(2, "File name too long", "run", rtn(), "-q", "-i", model(), "-o", lng, "-r",
           P("r.json"));
    th_assert_dir_holds(g_dir, "fifo.safetensors", "target.bin", "link.safetensors",
                        "dangling.safetensors", (const char *)NULL);
}
END_TEST

/* Two runs at once to one output, one sharded: both succeed, and what is
 * left is one whole output (a single file, or an index with every shard it
 * lists and no other). */
START_TEST(concurrent_force_runs)
{
    const char *o = P("o");
    make_dir(o);
    const char *m = P("o/m.safetensors");
    char exe[PATH_MAX];
    snprintf(exe, sizeof exe, "%s/hvqconv", th_builddir());
    /* slow renames: the two commits overlap unless they take turns */
    fault_on("HVQ_FAULT_SLOW_RENAME", "100");
    for (int round = 0; round < 3; round++) {
        pid_t pid[2];
        for (int k = 0; k < 2; k++) {
            char rep[32];
            snprintf(rep, sizeof rep, "r%d-%d.json", round, k);
            char *rp = strdup(P(rep));
            fflush(NULL);
            pid[k] = fork();
            ck_assert_int_ge(pid[k], 0);
            if (pid[k] == 0) {
                freopen("/dev/null", "w", stderr);
                execl(exe, exe, "run", rtn(), "-q", "--force", "-i", model(), "-o", m, "-r",
                      rp, "--set",
                      k ? "stages.writer.max_shard_size=300KB" : "stages.writer.dtype=same",
                      (char *)NULL);
                _exit(127);
            }
            free(rp);
        }
        for (int k = 0; k < 2; k++) {
            int status;
            ck_assert_int_eq(waitpid(pid[k], &status, 0), pid[k]);
            ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "round %d run %d", round,
                          k);
        }
        snap now;
        snap_take(&now, o);
        int single = th_exists(m), index = th_exists(th_join(o, "m.safetensors.index.json"));
        ck_assert_msg(single != index, "round %d: %s", round, single ? "both forms" : "neither");
        if (index) {
            /* every file is listed, and every shard listed is there */
            char *text = th_read_file(th_join(o, "m.safetensors.index.json"), NULL);
            for (size_t i = 0; i < now.n; i++)
                if (strcmp(now.name[i], "m.safetensors.index.json") != 0)
                    th_assert_contains(text, now.name[i]);
            for (const char *q = strstr(text, "\"m-"); q; q = strstr(q + 1, "\"m-")) {
                char shard[64];
                ck_assert_int_eq(sscanf(q + 1, "%63[^\"]", shard), 1);
                ck_assert_msg(th_exists(th_join(o, shard)), "round %d: %s listed, missing",
                              round, shard);
            }
            free(text);
        } else {
            ck_assert_uint_eq(now.n, 1);
        }
        snap_free(&now);
    }
    fault_off();
}
END_TEST

/* compare's temporary directory goes, sharded outputs and all. */
START_TEST(compare_removes_its_directory)
{
    const char *tmp = P("tmp");
    make_dir(tmp);
    setenv("TMPDIR", tmp, 1);
    expect(0, NULL, "compare", rtn(), th_src("pipelines/int4-g32.yaml"), "-q", "--no-eval", "-i",
           model(), "--set", "stages.writer.max_shard_size=300KB");
    unsetenv("TMPDIR");
    th_assert_dir_holds(tmp, (const char *)NULL);
}
END_TEST

/* ---- 5, 6: signals and a shrinking input -------------------------------- */

START_TEST(signals_leave_nothing)
{
    static const struct {
        int sig;
        const char *name;
    } sigs[] = {{SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"},
                {SIGPIPE, "SIGPIPE"}, {SIGTERM, "SIGTERM"}, {SIGUSR1, "SIGUSR1"},
                {SIGUSR2, "SIGUSR2"}, {SIGALRM, "SIGALRM"}};
    const char *o = P("o");
    make_dir(o);
    for (int tmpfile = 0; tmpfile < 2; tmpfile++)
        for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
            char num[8], want[64];
            snprintf(num, sizeof num, "%d", sigs[i].sig);
            snprintf(want, sizeof want, "interrupted (%s)", sigs[i].name);
            fault_on("HVQ_FAULT_SIGNAL", num);
            if (!tmpfile)
                setenv("HVQ_FAULT_NO_TMPFILE", "1", 1);
            expect(128 + sigs[i].sig, want, "run", rtn(), "-q", "-i", model(), "-o",
                   P("o/m.safetensors"), "-r", P("o/r.json"));
            fault_off();
            th_assert_dir_holds(o, (const char *)NULL);
        }
}
END_TEST

/* SIGKILL while an output is written: with O_TMPFILE nothing is left;
 * without it, a hidden temporary that the next run reports (and leaves). */
START_TEST(sigkill_leaves_nothing_with_tmpfile)
{
    const char *o = P("o");
    make_dir(o);
    fault_on("HVQ_FAULT_WRITE_SIGNAL", "9");
    expect(128 + SIGKILL, NULL, "run", rtn(), "-q", "-i", model(), "-o", P("o/m.safetensors"),
           "-r", P("o/r.json"));
    th_assert_dir_holds(o, (const char *)NULL);
    setenv("HVQ_FAULT_NO_TMPFILE", "1", 1);
    expect(128 + SIGKILL, NULL, "run", rtn(), "-q", "-i", model(), "-o", P("o/m.safetensors"),
           "-r", P("o/r.json"));
    fault_off();
    const char *left = entry_with(o, ".m.safetensors.tmp-");
    ck_assert_ptr_nonnull(left);
    expect(0, "left by a run that was killed", "run", rtn(), "-q", "-i", model(), "-o",
           P("o/m.safetensors"), "-r", P("o/r.json"));
    ck_assert(th_exists(P("o/m.safetensors")));
}
END_TEST

START_TEST(file_size_limit)
{
    const char *o = P("o");
    make_dir(o);
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    char *err = NULL;
    const char *args[] = {"run", rtn(), "-q", "-i", model(), "-o", P("o/m.safetensors"),
                          "-r", P("o/r.json"), NULL};
    int rc = th_run(NULL, &err, args);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    ck_assert_msg(rc == 1, "exit %d:\n%s", rc, err);
    th_assert_contains(err, "File too large");
    free(err);
    th_assert_dir_holds(o, (const char *)NULL);
}
END_TEST

START_TEST(input_shrinks_during_run)
{
    const char *in = P("in"), *o = P("o");
    make_dir(in);
    make_dir(o);
    th_copy_file(th_join(model(), "config.json"), P("in/config.json"), SIZE_MAX);
    const char *wp = P("in/model.safetensors");
    for (int tmpfile = 0; tmpfile < 2; tmpfile++) {
        th_copy_file(th_join(model(), "model.safetensors"), wp, SIZE_MAX);
        fault_on("HVQ_FAULT_SHRINK", wp);
        if (!tmpfile)
            setenv("HVQ_FAULT_NO_TMPFILE", "1", 1);
        expect(2, "model.safetensors: the file shrank while it was read", "run", rtn(), "-q",
               "-i", in, "-o", P("o/m.safetensors"), "-r", P("o/r.json"));
        fault_off();
        th_assert_dir_holds(o, (const char *)NULL);
    }
}
END_TEST

/* ---- 12: control characters never reach the terminal raw ---------------- */

START_TEST(control_chars_escaped)
{
    /* a safetensors file with one 1-D tensor named "a<ESC>[31m.weight" */
    static const char hdr[] =
        "{\"a\\u001b[31m.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    size_t hl = (sizeof hdr - 1 + 7) / 8 * 8;
    unsigned char file[256] = {0};
    for (int i = 0; i < 8; i++)
        file[i] = (unsigned char)(hl >> (8 * i));
    memset(file + 8, ' ', hl);
    memcpy(file + 8, hdr, sizeof hdr - 1);
    th_write_file(P("esc.safetensors"), file, 8 + hl + 16);
    char *err = NULL;
    const char *args[] = {"run", rtn(), "-i", P("esc.safetensors"), "-o", P("o.safetensors"),
                          "-r", P("r.json"), NULL};
    th_run(NULL, &err, args);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strchr(err, '\033') == NULL, "a raw escape on stderr:\n%s", err);
    th_assert_contains(err, "a\\x1b[31m.weight");
    free(err);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("safety");
    TCase *tc = tcase_create("safety");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, inputs_never_written);
    tcase_add_test(tc, stage_files_never_written);
    tcase_add_test(tc, force_replaces_only_ours);
    tcase_add_test(tc, commit_all_or_nothing);
    tcase_add_test(tc, special_outputs_refused);
    tcase_add_test(tc, concurrent_force_runs);
    tcase_add_test(tc, compare_removes_its_directory);
    tcase_add_test(tc, signals_leave_nothing);
    tcase_add_test(tc, sigkill_leaves_nothing_with_tmpfile);
    tcase_add_test(tc, file_size_limit);
    tcase_add_test(tc, input_shrinks_during_run);
    tcase_add_test(tc, control_chars_escaped);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
