/* Small utilities shared by the core. */
#include "config.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* fnmatch(3) without FNM_PATHNAME or FNM_PERIOD ('*' and '?' also match '/'
 * and '.') and with FNM_NOESCAPE (a backslash is an ordinary character, as
 * tensor names may hold one). hvqconv never calls setlocale, so this
 * matches bytes. */
int hvq_glob_match(const char *pat, const char *s)
{
    return fnmatch(pat, s, FNM_NOESCAPE) == 0;
}

size_t hvq_edit_distance(const char *a, const char *b, size_t cap)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > lb ? la - lb > cap : lb - la > cap)
        return cap + 1;
    size_t *row = malloc((lb + 1) * sizeof *row);
    if (!row)
        return cap + 1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        size_t best = row[0];
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t v = diag + cost;
            if (up + 1 < v)
                v = up + 1;
            if (row[j - 1] + 1 < v)
                v = row[j - 1] + 1;
            row[j] = v;
            diag = up;
            if (v < best)
                best = v;
        }
        if (best > cap) {
            free(row);
            return cap + 1;
        }
    }
    size_t d = row[lb];
    free(row);
    return d;
}

const char *hvq_nearest(const char *word, const char *const *cand, size_t n)
{
    size_t limit = strlen(word) / 3;
    if (limit < 2)
        limit = 2;
    const char *best = NULL;
    size_t best_d = limit + 1;
    for (size_t i = 0; i < n; i++) {
        if (!cand[i])
            continue;
        size_t d = hvq_edit_distance(word, cand[i], limit);
        if (d < best_d) {
            best_d = d;
            best = cand[i];
        }
    }
    return best;
}

double hvq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int hvq_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > 256 ? 256 : n) : 1;
}

int hvq_parse_count(const char *opt, const char *arg, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (!*arg || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "hvqconv: error: %s %s: expected a number from %ld to %ld\n", opt, arg,
                lo, hi);
        return 0;
    }
    *out = (int)v;
    return 1;
}

int hvq_parse_threads(const char *arg, int *out)
{
    return hvq_parse_count("--threads", arg, 1, 1024, out);
}

static int is_ctl(unsigned char c) { return (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f; }

const char *hvq_printable(const char *s, char *buf, size_t cap)
{
    const unsigned char *u = (const unsigned char *)s;
    while (*u && !is_ctl(*u))
        u++;
    if (!*u || cap == 0)
        return s;
    size_t k = 0;
    for (u = (const unsigned char *)s; *u && k + 5 < cap; u++) {
        if (is_ctl(*u))
            k += (size_t)snprintf(buf + k, cap - k, "\\x%02x", *u);
        else
            buf[k++] = (char)*u;
    }
    buf[k] = '\0';
    return buf;
}

char *hvq_path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void hvq_names_free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int hvq_dir_sorted(const char *dir, int (*keep)(const char *name), char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    size_t cap = 0;
    struct dirent *e;
    int bad = 0;
    while (!bad && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || (keep && !keep(e->d_name)))
            continue;
        if (*n == cap) {
            char **grown = realloc(*names, (cap = cap ? 2 * cap : 32) * sizeof *grown);
            if (!grown) {
                bad = 1;
                break;
            }
            *names = grown;
        }
        if (!((*names)[*n] = strdup(e->d_name)))
            bad = 1;
        else
            (*n)++;
    }
    closedir(d);
    if (bad) {
        hvq_names_free_list(*names, *n);
        *names = NULL;
        *n = 0;
        errno = ENOMEM;
        return -1;
    }
    if (*n)
        qsort(*names, *n, sizeof **names, cmp_name);
    return 0;
}
