/* A main() for the fuzz targets without libFuzzer: runs the target once
 * over each file given (directories: every file in them, sorted by name).
 * Without arguments, over fuzz/corpus/NAME/ and fuzz/regress/NAME/ of the
 * source tree ($HVQ_TOP_SRCDIR, set by make check), NAME being the
 * program's name without "fuzz_": so `make check` replays every seed and
 * every input that once crashed. A crash fails the test. */
#include "config.h"

#include "fuzz.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static size_t g_runs;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "%s: out of memory\n", path);
        return 1;
    }
    /* An exact-size copy, so that ASan sees a read past the input. */
    unsigned char *in = malloc(len ? len : 1);
    if (!in) {
        free(buf);
        return 1;
    }
    memcpy(in, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(in, len);
    free(in);
    g_runs++;
    return 0;
}

/* missing_ok: a directory that does not exist is no error. */
static int run_path(const char *path, int missing_ok)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (missing_ok && errno == ENOENT)
            return 0;
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(sb.st_mode))
        return run_file(path);
    char **names;
    size_t n;
    if (hvq_dir_sorted(path, NULL, &names, &n) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", path, names[i]);
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
            bad |= run_file(p);
    }
    hvq_names_free_list(names, n);
    return bad;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    int bad = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            bad |= run_path(argv[i], 0);
    } else {
        const char *name = strrchr(argv[0], '/');
        name = name ? name + 1 : argv[0];
        if (strncmp(name, "lt-", 3) == 0)
            name += 3;
        if (strncmp(name, "fuzz_", 5) == 0)
            name += 5;
        const char *src = getenv("HVQ_TOP_SRCDIR");
        if (!src || !*src)
            src = HVQ_BUILDDIR;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/fuzz/corpus/%s", src, name);
        bad |= run_path(p, 0);
        snprintf(p, sizeof p, "%s/fuzz/regress/%s", src, name);
        bad |= run_path(p, 1);
    }
    printf("%s: %zu inputs run%s\n", argv[0], g_runs, bad ? ", some could not be read" : "");
    return bad ? 1 : 0;
}
