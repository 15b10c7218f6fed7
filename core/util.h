/* Small utilities shared by the core. */
#ifndef HVQ_CORE_UTIL_H
#define HVQ_CORE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "checked.h"

/* Shell-style glob, fnmatch(3) with FNM_NOESCAPE: '*' any run (also '/'
 * and '.'), '?' one byte, [abc], [a-z], [!abc] or [^abc], [[:digit:]];
 * a backslash and an unterminated '[' stand for themselves. */
int hvq_glob_match(const char *pattern, const char *s);

/* Levenshtein distance, capped at cap+1 for speed. */
size_t hvq_edit_distance(const char *a, const char *b, size_t cap);

/* The candidate closest to word, or NULL when none is within
 * max(2, strlen(word)/3) edits. */
const char *hvq_nearest(const char *word, const char *const *candidates,
                        size_t n);

/* Overflow-checked arithmetic; return 0 on overflow. */
/* s as it may reach a terminal: itself when it holds no control character,
 * else a copy in buf (cap bytes, truncated) with each control character
 * other than newline and tab written as \xHH (a tensor name or path in a
 * file must not move the cursor or change colours). */
const char *hvq_printable(const char *s, char *buf, size_t cap);

/* "dir/name", malloc'd (NULL when out of memory). */
char *hvq_path_join(const char *dir, const char *name);


/* The names in directory dir that keep(name) accepts (every name not
 * starting with '.' when keep is NULL), sorted by strcmp: *names
 * (malloc'd, each name too; free with hvq_names_free_list) and *n. 0, or
 * -1 with errno set (ENOMEM, or opendir's). */
int hvq_dir_sorted(const char *dir, int (*keep)(const char *name), char ***names, size_t *n);
void hvq_names_free_list(char **names, size_t n);

/* Seconds since an arbitrary epoch (monotonic). */
double hvq_now(void);

/* Worker threads when none were asked for: the online cores, at most 256. */
int hvq_default_threads(void);

/* The value of command-line option opt (e.g. "--threads") as a whole number
 * from lo to hi. On a bad value prints "hvqconv: error: OPT ARG: expected a
 * number from LO to HI" to stderr and returns 0. */
int hvq_parse_count(const char *opt, const char *arg, long lo, long hi, int *out);

/* The value of --threads, from 1 to 1024 (hvq_parse_count's message). */
int hvq_parse_threads(const char *arg, int *out);

#endif
