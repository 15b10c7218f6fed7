/* Inputs and atomic outputs. Every file a run reads is recorded
 * (hvq_ctx_add_input, the host's input_open) so that no output replaces
 * it. Every file a run writes is an anonymous file (O_TMPFILE) in the
 * directory of its final name, or a hidden temporary there where the
 * filesystem has no O_TMPFILE; commit puts them all in place, or none. */
#include "config.h"

#include "ctx_int.h"
#include "registry.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct hvq_output {
    char *final_path; /* the name it gets on commit (output_rename may change it) */
    char *named;      /* the name it was opened under */
    char *dir;        /* the directory of both */
    char *tmp_path;   /* its hidden name on disk; NULL while anonymous (O_TMPFILE) */
    char *backup;     /* commit: a hidden name of the file it replaces, or NULL */
    int backed;       /* commit: BACKUP_LINKED or BACKUP_MOVED once done */
    int placed;       /* commit: renamed into place */
    int fd;
    uint64_t pos;
    struct hvq_output *next;
};

/* ---- temporaries a fatal signal removes ---------------------------------- */

/* The hidden names on disk of the open outputs, for a signal handler that
 * cannot walk the lists (hvq_outputs_unlink_temporaries). A name is freed
 * only after its slot is cleared. */
#define TMP_SLOTS 1024
static char *volatile tmp_slot[TMP_SLOTS];

static void tmp_track(const char *path)
{
    for (size_t i = 0; i < TMP_SLOTS; i++)
        if (!tmp_slot[i]) {
            tmp_slot[i] = (char *)path;
            return;
        }
}

static void tmp_untrack(const char *path)
{
    for (size_t i = 0; path && i < TMP_SLOTS; i++)
        if (tmp_slot[i] == path)
            tmp_slot[i] = NULL;
}

void hvq_outputs_unlink_temporaries(void)
{
    for (size_t i = 0; i < TMP_SLOTS; i++) {
        char *p = tmp_slot[i];
        if (p)
            unlink(p);
    }
}

/* ---- paths ------------------------------------------------------------- */

/* dirname and basename of path, as malloc'd copies (0 when out of memory). */
static int split_path(const char *path, char **dir, char **base)
{
    char *a = strdup(path), *b = strdup(path);
    *dir = a ? strdup(dirname(a)) : NULL;
    *base = b ? strdup(basename(b)) : NULL;
    free(a);
    free(b);
    if (*dir && *base)
        return 1;
    free(*dir);
    free(*base);
    return 0;
}

/* path with the symbolic links of its directory resolved (its last
 * component as it is): NULL when the directory does not exist. */
static char *resolve_dir_of(const char *path)
{
    char *dir, *base, *out = NULL;
    if (!split_path(path, &dir, &base))
        return NULL;
    char *rdir = realpath(dir, NULL);
    if (rdir)
        out = hvq_path_join(rdir, base);
    free(rdir);
    free(dir);
    free(base);
    return out;
}

/* Whether the existing entries a and b are one file (links not followed). */
static int same_entry(const char *a, const char *b)
{
    struct stat sa, sb;
    return lstat(a, &sa) == 0 && lstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* ---- the family of an output's name ------------------------------------ */

/* An output NAME.EXT exists in one of two forms: the file itself, or shards
 * NAME-ddddd-of-ddddd.EXT with an index NAME.EXT.index.json. Splits base
 * (either form's file name) into its family's stem and extension: stem
 * "NAME", ext ".EXT". Returns 0 for a name of no family (no extension). */
static int family_of(const char *base, size_t *stem_len, const char **ext, size_t *ext_len)
{
    static const char idx[] = ".index.json";
    size_t n = strlen(base), li = sizeof idx - 1;
    if (n > li && strcmp(base + n - li, idx) == 0)
        n -= li; /* NAME.EXT.index.json: the family of NAME.EXT */
    const char *dot = NULL;
    for (size_t i = n; i > 0; i--)
        if (base[i - 1] == '.') {
            dot = base + i - 1;
            break;
        }
    if (!dot || dot == base)
        return 0;
    size_t sl = (size_t)(dot - base);
    /* NAME-ddddd-of-ddddd.EXT: the shard suffix is not part of the stem */
    static const char pat[] = "-#####-of-#####";
    size_t lp = sizeof pat - 1;
    if (sl > lp) {
        const char *q = dot - lp;
        int shard = 1;
        for (size_t i = 0; i < lp && shard; i++)
            shard = pat[i] == '#' ? (q[i] >= '0' && q[i] <= '9') : q[i] == pat[i];
        if (shard)
            sl -= lp;
    }
    *stem_len = sl;
    *ext = dot;
    *ext_len = n - (size_t)(dot - base);
    return 1;
}

/* Whether file names a and b belong to one family. */
static int same_family(const char *a, const char *b)
{
    size_t sa, sb, ea, eb;
    const char *xa, *xb;
    return family_of(a, &sa, &xa, &ea) && family_of(b, &sb, &xb, &eb) && sa == sb &&
           ea == eb && strncmp(a, b, sa) == 0 && strncmp(xa, xb, ea) == 0;
}

/* NAME.EXT.index.json for any name of the family (malloc'd; NULL when the
 * name has no family). */
static char *family_index(const char *base)
{
    size_t sl, el;
    const char *ext;
    if (!family_of(base, &sl, &ext, &el))
        return NULL;
    char *s = malloc(sl + el + sizeof ".index.json");
    if (s)
        sprintf(s, "%.*s%.*s.index.json", (int)sl, base, (int)el, ext);
    return s;
}

/* ---- inputs ------------------------------------------------------------ */

/* Records the regular file path (open as fd, or -1) as an input. */
static void input_record(ctx_private *p, int fd, const char *path)
{
    struct stat sb;
    if ((fd >= 0 ? fstat(fd, &sb) : stat(path, &sb)) != 0 || !S_ISREG(sb.st_mode))
        return;
    for (size_t i = 0; i < p->n_inputs; i++)
        if (p->inputs[i].dev == sb.st_dev && p->inputs[i].ino == sb.st_ino)
            return;
    hvq_input_file *grown = realloc(p->inputs, (p->n_inputs + 1) * sizeof *grown);
    if (!grown)
        return;
    p->inputs = grown;
    grown[p->n_inputs].dev = sb.st_dev;
    grown[p->n_inputs].ino = sb.st_ino;
    grown[p->n_inputs].real = realpath(path, NULL);
    p->n_inputs++;
}

void hvq_ctx_add_input(hvq_ctx *ctx, const char *path) { input_record(priv(ctx), -1, path); }

int hvq_input_open(hvq_ctx *ctx, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
        int e = errno;
        input_record(priv(ctx), fd, path);
        errno = e;
    }
    return fd;
}

void hvq_ctx_name_output(hvq_ctx *ctx, const char *path)
{
    ctx_private *p = priv(ctx);
    char **grown = realloc(p->named, (p->n_named + 1) * sizeof *grown);
    if (!grown)
        return;
    p->named = grown;
    if ((grown[p->n_named] = strdup(path)) != NULL)
        p->n_named++;
}

/* The named outputs belong to one commit (compare commits one run after
 * another on one context). */
static void named_clear(ctx_private *p)
{
    for (size_t i = 0; i < p->n_named; i++)
        free(p->named[i]);
    free(p->named);
    p->named = NULL;
    p->n_named = 0;
}

static void made_dirs_clear(ctx_private *p, int remove);

void hvq_inputs_free(hvq_ctx *ctx)
{
    ctx_private *p = priv(ctx);
    named_clear(p);
    for (size_t i = 0; i < p->n_inputs; i++)
        free(p->inputs[i].real);
    free(p->inputs);
    p->inputs = NULL;
    p->n_inputs = 0;
    made_dirs_clear(p, 0);
}

/* The input that writing path would replace (the same file, or the same
 * path once links are resolved); with family, also an input in the same
 * directory of path's family (a shard or index the output may write or
 * remove). NULL when none. */
static const char *input_at(const ctx_private *p, const char *path, int family)
{
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    char *r = resolve_dir_of(path), *rdir = NULL, *rbase = NULL;
    const char *hit = NULL;
    if (r && family && !split_path(r, &rdir, &rbase))
        family = 0;
    for (size_t i = 0; i < p->n_inputs && !hit; i++) {
        const hvq_input_file *in = &p->inputs[i];
        if ((exists && sb.st_dev == in->dev && sb.st_ino == in->ino) ||
            (r && in->real && strcmp(r, in->real) == 0))
            hit = in->real ? in->real : path;
        char *idir, *ibase;
        if (!hit && family && rdir && in->real && split_path(in->real, &idir, &ibase)) {
            if (strcmp(idir, rdir) == 0 && same_family(ibase, rbase))
                hit = in->real;
            free(idir);
            free(ibase);
        }
    }
    free(r);
    free(rdir);
    free(rbase);
    return hit;
}

/* ---- opening ----------------------------------------------------------- */

/* Whether the output may be written at path: not an input, not a
 * directory; where a file exists, only with --force and only a regular
 * file (never a symbolic link, FIFO or device). */
static hvq_status check_destination(hvq_ctx *ctx, const char *path, int family)
{
    ctx_private *p = priv(ctx);
    const char *in = input_at(p, path, family);
    if (in)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: %s is a file this run reads; an output never "
                         "writes or removes an input", path, in);
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return HVQ_OK;
    if (S_ISDIR(sb.st_mode))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: is a directory; the output must be a file name",
                         path);
    if (!p->opts.force)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: already exists (use --force to replace it)",
                         path);
    if (S_ISLNK(sb.st_mode))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: is a symbolic link; --force replaces only "
                         "regular files (remove it, or write elsewhere)", path);
    if (!S_ISREG(sb.st_mode))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: is not a regular file (a FIFO, a socket, a "
                         "device?); --force replaces only regular files", path);
    return HVQ_OK;
}

static void output_free(hvq_output *o)
{
    free(o->final_path);
    free(o->named);
    free(o->dir);
    free(o->tmp_path);
    free(o->backup);
    free(o);
}

/* An anonymous file in dir (O_TMPFILE); where the filesystem has none, a
 * hidden temporary beside the final name (o->tmp_path). */
static int create_file(hvq_ctx *ctx, hvq_output *o, const char *base)
{
    int fd;
#ifdef O_TMPFILE
    fd = open(o->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
#endif
    size_t n = strlen(o->dir) + strlen(base) + 32;
    if (!(o->tmp_path = hvq_alloc(ctx, n)))
        return -1;
    snprintf(o->tmp_path, n, "%s/.%s.tmp-XXXXXX", o->dir, base);
    fd = mkostemp(o->tmp_path, O_CLOEXEC);
    if (fd < 0)
        return -1;
    tmp_track(o->tmp_path);
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    return fd;
}

/* One warning for hidden temporaries .BASE.tmp-* beside a new output: left
 * by a run killed (SIGKILL, a crash) on a filesystem without O_TMPFILE.
 * Not removed: another run may be writing them now. */
static void warn_leftovers(hvq_ctx *ctx, const hvq_output *o, const char *base)
{
    size_t n = strlen(base) + 8;
    char *prefix = malloc(n);
    DIR *d = prefix ? opendir(o->dir) : NULL;
    struct dirent *e;
    size_t found = 0;
    if (prefix)
        snprintf(prefix, n, ".%s.tmp-", base);
    while (d && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 &&
            !(o->tmp_path && strcmp(strrchr(o->tmp_path, '/') + 1, e->d_name) == 0))
            found++;
    if (found)
        hvq_log(ctx, HVQ_LOG_WARN, "%s: %zu hidden temporar%s %s* beside it, left by a run "
                "that was killed; remove %s when no other run writes here", o->final_path, found,
                found == 1 ? "y" : "ies", prefix, found == 1 ? "it" : "them");
    if (d)
        closedir(d);
    free(prefix);
}

/* Forgets the directories made for this run's outputs; with remove, first
 * removes them again (innermost first; one that is not empty stays). */
static void made_dirs_clear(ctx_private *p, int remove)
{
    for (size_t i = p->n_made_dirs; i-- > 0;) {
        if (remove)
            rmdir(p->made_dirs[i]);
        free(p->made_dirs[i]);
    }
    free(p->made_dirs);
    p->made_dirs = NULL;
    p->n_made_dirs = 0;
}

/* Creates the missing parent directories of path (as mkdir -p), recording
 * each so that a failed run removes it. 0 with errno set on failure. */
static int make_parents(ctx_private *p, const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return 0;
    char *slash = strrchr(dir, '/');
    int ok = 1;
    for (char *c = dir + 1; ok && slash && c <= slash; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        struct stat sb;
        if (stat(dir, &sb) != 0 && errno == ENOENT) {
            char **v = realloc(p->made_dirs, (p->n_made_dirs + 1) * sizeof *v);
            if (v)
                p->made_dirs = v;
            if (!v || mkdir(dir, 0777) != 0 || !(v[p->n_made_dirs] = strdup(dir)))
                ok = 0;
            else
                p->n_made_dirs++;
        }
        *c = '/';
    }
    int e = errno;
    free(dir);
    errno = e;
    return ok;
}

hvq_output *hvq_output_open(hvq_ctx *ctx, const char *final_path)
{
    ctx_private *p = priv(ctx);
    if (!final_path[0]) {
        hvq_error(ctx, HVQ_E_INPUT, "the output path is empty");
        return NULL;
    }
    for (hvq_output *o = p->outputs; o; o = o->next)
        if (strcmp(o->final_path, final_path) == 0 || strcmp(o->named, final_path) == 0) {
            hvq_error(ctx, HVQ_E_INPUT, "%s: two outputs of this run have this name", final_path);
            return NULL;
        }
    if (check_destination(ctx, final_path, 1) != HVQ_OK)
        return NULL;
    if (p->opts.make_dirs && !make_parents(p, final_path)) {
        hvq_error(ctx, errno == ENOMEM ? HVQ_E_NOMEM : HVQ_E_INPUT,
                  "%s: cannot create its directory: %s", final_path, strerror(errno));
        return NULL;
    }
    hvq_output *o = hvq_calloc(ctx, 1, sizeof *o);
    char *base = NULL;
    if (!o || !(o->final_path = hvq_strdup(ctx, final_path)) ||
        !(o->named = hvq_strdup(ctx, final_path)) || !split_path(final_path, &o->dir, &base)) {
        hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        goto fail;
    }
    o->fd = create_file(ctx, o, base);
    if (o->fd < 0) {
        /* A directory that does not exist, is not a directory, or may not be
         * written is a bad output path (bad input, exit status 2); anything
         * else (disk full, too many files, EIO) is an I/O failure. */
        int e = errno;
        hvq_status status = e == ENOENT || e == ENOTDIR || e == EACCES || e == EPERM ||
                                    e == EROFS || e == ENAMETOOLONG
                                ? HVQ_E_INPUT
                                : HVQ_E_IO;
        hvq_error(ctx, status, "%s: cannot create a file in '%s': %s", final_path, o->dir,
                  strerror(e));
        goto fail;
    }
    warn_leftovers(ctx, o, base);
    free(base);
    o->next = p->outputs;
    p->outputs = o;
    return o;
fail:
    free(base);
    if (o) {
        tmp_untrack(o->tmp_path);
        output_free(o);
    }
    return NULL;
}

hvq_status hvq_output_write(hvq_ctx *ctx, hvq_output *o, const void *buf, size_t n)
{
    hvq_status st = hvq_output_pwrite(ctx, o, buf, n, o->pos);
    if (st == HVQ_OK)
        o->pos += n;
    return st;
}

hvq_status hvq_output_pwrite(hvq_ctx *ctx, hvq_output *o, const void *buf, size_t n,
                             uint64_t off)
{
    const char *b = buf;
    while (n > 0) {
        ssize_t w = pwrite(o->fd, b, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return hvq_error(ctx, HVQ_E_IO, "%s: write failed: %s", o->final_path,
                             strerror(errno));
        }
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return HVQ_OK;
}

uint64_t hvq_output_tell(hvq_output *o) { return o->pos; }

hvq_status hvq_output_rename(hvq_ctx *ctx, hvq_output *o, const char *final_path)
{
    for (hvq_output *x = priv(ctx)->outputs; x; x = x->next)
        if (x != o && strcmp(x->final_path, final_path) == 0)
            return hvq_error(ctx, HVQ_E_INTERNAL, "%s: two outputs of one run", final_path);
    char *dir, *base;
    if (!split_path(final_path, &dir, &base))
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    int same_dir = strcmp(dir, o->dir) == 0;
    free(dir);
    free(base);
    if (!same_dir)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: an output may not move to another "
                         "directory than %s's", final_path, o->named);
    hvq_status st = check_destination(ctx, final_path, 0);
    char *d = st == HVQ_OK ? hvq_strdup(ctx, final_path) : NULL;
    if (st != HVQ_OK || !d)
        return st != HVQ_OK ? st : HVQ_E_NOMEM;
    free(o->final_path);
    o->final_path = d;
    return HVQ_OK;
}

/* Whether path is a file of the output `of` in either of its forms: the
 * same directory, and a member of its family. */
static int of_output(const char *path, const char *of)
{
    char *dp, *bp, *dof, *bof;
    int in = 0;
    if (!split_path(path, &dp, &bp))
        return 0;
    if (split_path(of, &dof, &bof)) {
        in = strcmp(dp, dof) == 0 && (strcmp(bp, bof) == 0 || same_family(bp, bof));
        free(dof);
        free(bof);
    }
    free(dp);
    free(bp);
    return in;
}

uint64_t hvq_outputs_size(hvq_ctx *ctx, const char *of)
{
    uint64_t total = 0;
    for (hvq_output *o = priv(ctx)->outputs; o; o = o->next) {
        struct stat st;
        if (o->fd >= 0 && (!of || of_output(o->final_path, of)) && fstat(o->fd, &st) == 0)
            total += (uint64_t)st.st_size;
    }
    return total;
}

/* Closes and frees every output, removing what is still on disk under a
 * hidden name. */
void hvq_outputs_abort(hvq_ctx *ctx)
{
    ctx_private *p = priv(ctx);
    named_clear(p);
    while (p->outputs) {
        hvq_output *o = p->outputs;
        if (o->fd >= 0)
            close(o->fd);
        if (o->tmp_path) {
            unlink(o->tmp_path);
            tmp_untrack(o->tmp_path);
        }
        p->outputs = o->next;
        output_free(o);
    }
    made_dirs_clear(p, 1); /* a committed run cleared the list */
}

/* ---- what --force may replace ------------------------------------------ */

/* Whether base is a name a writer makes up for the forms of an output: a
 * shard NAME-ddddd-of-ddddd.EXT or an index NAME.EXT.index.json. */
static int generated_name(const char *base)
{
    size_t sl, el, n = strlen(base), li = strlen(".index.json");
    const char *ext;
    if (n > li && strcmp(base + n - li, ".index.json") == 0)
        return 1;
    return family_of(base, &sl, &ext, &el) && (size_t)(ext - base) != sl;
}

/* The files --force may replace or remove: the output paths the user gave
 * (hvq_ctx_name_output), the names the run's outputs were opened under
 * unless a writer made them up (a shard's, an index's), and, for each
 * output's family,
 * an index NAME.EXT.index.json that hvqconv wrote ("written_by": "hvqconv"
 * in its metadata) with the shards it lists. Nothing else: a Hugging Face
 * model's shards beside the output are never touched. */
typedef struct owned {
    char **path;
    size_t n;
} owned;

static void owned_add(owned *w, char *path)
{
    if (!path)
        return;
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->path[i], path) == 0) {
            free(path);
            return;
        }
    char **grown = realloc(w->path, (w->n + 1) * sizeof *grown);
    if (!grown) {
        free(path);
        return;
    }
    w->path = grown;
    w->path[w->n++] = path;
}

static void owned_free(owned *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->path[i]);
    free(w->path);
}

/* Whether the existing file path is one of w's (same file). */
static int owned_has(const owned *w, const char *path)
{
    for (size_t i = 0; i < w->n; i++)
        if (same_entry(path, w->path[i]))
            return 1;
    return 0;
}

/* What owned_index gives a sink's sink_index_lists. */
typedef struct index_walk {
    owned *w;
    const char *dir, *index;
} index_walk;

/* A file an index lists: kept when it is of the index's family. */
static void index_lists(void *ud, const char *name)
{
    index_walk *iw = ud;
    if (name && !strchr(name, '/') && same_family(name, iw->index))
        owned_add(iw->w, hvq_path_join(iw->dir, name));
}

/* Adds dir/index and the shards of its family it lists to w, when a sink
 * recognises the index as one hvqconv wrote (sink_index_lists: the host
 * reads no index itself). */
static void owned_index(const ctx_private *p, owned *w, const char *dir, const char *index)
{
    char *path = hvq_path_join(dir, index);
    struct stat sb;
    if (!path || !p->registry || lstat(path, &sb) != 0) {
        free(path);
        return;
    }
    index_walk iw = {w, dir, index};
    int ours = 0;
    for (size_t i = 0; i < hvq_registry_count(p->registry) && !ours; i++) {
        const hvq_plugin *d = &hvq_registry_at(p->registry, i)->desc;
        if ((d->kinds & HVQ_KIND_SINK) && d->sink_index_lists)
            ours = d->sink_index_lists((hvq_ctx *)&p->pub, path, index_lists, &iw);
    }
    if (ours)
        owned_add(w, path);
    else
        free(path);
}

static void owned_collect(const ctx_private *p, owned *w)
{
    for (size_t i = 0; i < p->n_named; i++)
        owned_add(w, strdup(p->named[i]));
    for (hvq_output *o = p->outputs; o; o = o->next) {
        char *dir, *base;
        if (!split_path(o->named, &dir, &base))
            continue;
        if (!generated_name(base))
            owned_add(w, strdup(o->named));
        free(dir);
        free(base);
        if (!split_path(o->final_path, &dir, &base))
            continue;
        char *index = family_index(base);
        if (index)
            owned_index(p, w, dir, index);
        free(index);
        free(dir);
        free(base);
    }
}

/* ---- commit ------------------------------------------------------------ */

enum { BACKUP_LINKED = 1, BACKUP_MOVED = 2 };

/* A hidden name beside o's final name (malloc'd): .BASE.TAG-PID-N. */
static char *hidden_name(const hvq_output *o, const char *tag)
{
    static unsigned counter;
    char *dir, *base, *name = NULL;
    if (!split_path(o->final_path, &dir, &base))
        return NULL;
    size_t n = strlen(dir) + strlen(base) + strlen(tag) + 48;
    if ((name = malloc(n)) != NULL)
        snprintf(name, n, "%s/.%s.%s-%ld-%u", dir, base, tag, (long)getpid(), counter++);
    free(dir);
    free(base);
    return name;
}

/* Exclusive locks (flock) on the directories of the outputs, taken in
 * order of (device, inode): two runs committing into one directory take
 * turns, so each leaves a whole set of files. */
typedef struct dir_lock {
    int fd;
    dev_t dev;
    ino_t ino;
} dir_lock;

static int cmp_lock(const void *a, const void *b)
{
    const dir_lock *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static size_t lock_dirs(const ctx_private *p, dir_lock *locks, size_t max)
{
    size_t n = 0;
    for (hvq_output *o = p->outputs; o && n < max; o = o->next) {
        struct stat sb;
        int fd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        size_t i = 0;
        if (fd >= 0 && fstat(fd, &sb) == 0)
            while (i < n && !(locks[i].dev == sb.st_dev && locks[i].ino == sb.st_ino))
                i++;
        if (fd < 0 || i < n) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        locks[n++] = (dir_lock){fd, sb.st_dev, sb.st_ino};
    }
    qsort(locks, n, sizeof *locks, cmp_lock);
    for (size_t i = 0; i < n; i++)
        while (flock(locks[i].fd, LOCK_EX) != 0 && errno == EINTR)
            ;
    return n;
}

static void unlock_dirs(dir_lock *locks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fsync(locks[i].fd);
        close(locks[i].fd); /* releases the lock */
    }
}

/* Every destination checked before the first rename: not an input (some
 * were read after the output was opened), and an existing file only with
 * --force, only a regular file, only one of w's, on the directory's own
 * filesystem (not a mount point), and removable from a sticky directory. */
static hvq_status check_all(hvq_ctx *ctx, const owned *w)
{
    for (hvq_output *o = priv(ctx)->outputs; o; o = o->next) {
        hvq_status st = check_destination(ctx, o->final_path, 0);
        if (st != HVQ_OK)
            return st;
        struct stat sb, sd;
        if (lstat(o->final_path, &sb) != 0)
            continue;
        if (!owned_has(w, o->final_path))
            return hvq_error(ctx, HVQ_E_INPUT, "%s: exists and hvqconv did not write it for "
                             "this output (it is not the output named, nor listed in an index "
                             "hvqconv wrote); --force does not replace it: remove it, or "
                             "write elsewhere", o->final_path);
        if (stat(o->dir, &sd) != 0 || sd.st_dev != sb.st_dev)
            return hvq_error(ctx, HVQ_E_INPUT, "%s: is a mount point; it cannot be replaced",
                             o->final_path);
        uid_t me = geteuid();
        if ((sd.st_mode & S_ISVTX) && me != 0 && sb.st_uid != me && sd.st_uid != me)
            return hvq_error(ctx, HVQ_E_INPUT, "%s: belongs to another user in a sticky "
                             "directory; it cannot be replaced", o->final_path);
    }
    return HVQ_OK;
}

/* Gives each anonymous output a hidden name (linkat of its descriptor). */
static hvq_status materialize(hvq_ctx *ctx)
{
    for (hvq_output *o = priv(ctx)->outputs; o; o = o->next) {
        char fdp[64];
        snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", o->fd);
        while (!o->tmp_path) {
            char *name = hidden_name(o, "tmp");
            if (!name)
                return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
            if (linkat(AT_FDCWD, fdp, AT_FDCWD, name, AT_SYMLINK_FOLLOW) == 0) {
                o->tmp_path = name;
                tmp_track(name);
            } else {
                int e = errno;
                free(name);
                if (e != EEXIST)
                    return hvq_error(ctx, HVQ_E_IO, "%s: cannot give the finished file a "
                                     "name: %s", o->final_path, strerror(e));
            }
        }
    }
    return HVQ_OK;
}

/* A second name for each file an output replaces (a hard link), so that a
 * failed commit can put it back; where the filesystem has no hard links,
 * the file is moved there just before its replacement instead. */
static hvq_status link_backups(hvq_ctx *ctx)
{
    for (hvq_output *o = priv(ctx)->outputs; o; o = o->next) {
        struct stat sb;
        if (lstat(o->final_path, &sb) != 0)
            continue;
        for (;;) {
            if (!(o->backup = hidden_name(o, "old")))
                return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
            if (link(o->final_path, o->backup) == 0) {
                o->backed = BACKUP_LINKED;
                break;
            }
            if (errno != EEXIST)
                break; /* moved by place_all */
            free(o->backup);
            o->backup = NULL;
        }
    }
    return HVQ_OK;
}

/* Undoes place_all: every destination as it was before the commit. */
static void rollback(hvq_ctx *ctx)
{
    for (hvq_output *o = priv(ctx)->outputs; o; o = o->next) {
        if (o->placed && !o->backed)
            unlink(o->final_path);
        else if (o->backed == BACKUP_MOVED || (o->placed && o->backed == BACKUP_LINKED))
            rename(o->backup, o->final_path);
        else if (o->backed == BACKUP_LINKED)
            unlink(o->backup);
        o->placed = 0;
        o->backed = 0;
    }
}

static hvq_status place_all(hvq_ctx *ctx)
{
    for (hvq_output *o = priv(ctx)->outputs; o; o = o->next) {
        int e = 0;
        if (o->backup && !o->backed) {
            if (rename(o->final_path, o->backup) == 0)
                o->backed = BACKUP_MOVED;
            else if (errno != ENOENT)
                e = errno;
        }
        if (!e && rename(o->tmp_path, o->final_path) != 0)
            e = errno;
        if (e) {
            rollback(ctx);
            return hvq_error(ctx, HVQ_E_IO, "%s: cannot put the output in place: %s; every "
                             "file is as it was before the run", o->final_path, strerror(e));
        }
        o->placed = 1;
        tmp_untrack(o->tmp_path);
        free(o->tmp_path);
        o->tmp_path = NULL;
    }
    return HVQ_OK;
}

/* Whether the existing file path is one the run has just put in place. */
static int committed(const ctx_private *p, const char *path)
{
    for (hvq_output *o = p->outputs; o; o = o->next)
        if (same_entry(path, o->final_path))
            return 1;
    return 0;
}

/* After a commit: the replaced files' second names, and the files of w the
 * run did not write again (the shards of an earlier, differently sharded
 * output; the output named where shards now are) are removed, so that no
 * loader picks up a stale part beside the new ones. */
static void remove_stale(hvq_ctx *ctx, const owned *w)
{
    ctx_private *p = priv(ctx);
    for (hvq_output *o = p->outputs; o; o = o->next)
        if (o->backed)
            unlink(o->backup);
    for (size_t i = 0; i < w->n; i++) {
        struct stat sb;
        const char *q = w->path[i];
        if (lstat(q, &sb) != 0 || !S_ISREG(sb.st_mode) || committed(p, q) || input_at(p, q, 0))
            continue;
        if (unlink(q) == 0)
            hvq_log(ctx, HVQ_LOG_INFO, "%s: removed (a part of the output this run replaced)", q);
        else
            hvq_log(ctx, HVQ_LOG_WARN, "%s: a part of the output this run replaced; cannot "
                    "remove it: %s", q, strerror(errno));
    }
}

/* One warning per output whose directory holds other files of its name's
 * forms that hvqconv did not write (a model's own shards): left alone, but
 * a loader given the directory may read them. */
static void warn_foreign(hvq_ctx *ctx, const owned *w)
{
    ctx_private *p = priv(ctx);
    for (hvq_output *o = p->outputs; o; o = o->next) {
        char *dir, *base;
        if (strcmp(o->final_path, o->named) != 0 || !split_path(o->final_path, &dir, &base))
            continue;
        DIR *d = opendir(dir);
        struct dirent *e;
        size_t n = 0;
        char *example = NULL;
        while (d && (e = readdir(d)) != NULL) {
            char *q = same_family(e->d_name, base) ? hvq_path_join(dir, e->d_name) : NULL;
            if (q && !committed(p, q) && !owned_has(w, q) && ++n == 1)
                example = strdup(q);
            free(q);
        }
        if (d)
            closedir(d);
        if (n)
            hvq_log(ctx, HVQ_LOG_WARN, "%s: %zu other file%s of this name's forms (e.g. %s) "
                    "were not written by hvqconv and are left alone; a loader given the "
                    "directory may read them", o->final_path, n, n == 1 ? "" : "s",
                    example ? example : "?");
        free(example);
        free(dir);
        free(base);
    }
}

/* Puts every output in place, or none (see ctx.h). Signals other than the
 * synchronous ones wait until it is over. */
hvq_status hvq_outputs_commit(hvq_ctx *ctx)
{
    ctx_private *p = priv(ctx);
    hvq_status st = HVQ_OK;
    for (hvq_output *o = p->outputs; o && st == HVQ_OK; o = o->next)
        if (fsync(o->fd) != 0 && errno != EINVAL)
            st = hvq_error(ctx, HVQ_E_IO, "%s: fsync failed: %s", o->final_path,
                           strerror(errno));
    sigset_t block, old;
    sigfillset(&block);
    sigdelset(&block, SIGBUS);
    sigdelset(&block, SIGSEGV);
    sigdelset(&block, SIGFPE);
    sigdelset(&block, SIGILL);
    sigdelset(&block, SIGABRT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    dir_lock locks[64];
    size_t n_locks = st == HVQ_OK ? lock_dirs(p, locks, sizeof locks / sizeof *locks) : 0;
    owned w = {0};
    owned_collect(p, &w);
    if (st == HVQ_OK)
        st = check_all(ctx, &w);
    if (st == HVQ_OK)
        st = materialize(ctx);
    if (st == HVQ_OK)
        st = link_backups(ctx);
    if (st == HVQ_OK)
        st = place_all(ctx);
    if (st == HVQ_OK) {
        remove_stale(ctx, &w);
        warn_foreign(ctx, &w);
    }
    if (st != HVQ_OK)
        rollback(ctx);
    else
        made_dirs_clear(p, 0); /* the outputs are in them now */
    unlock_dirs(locks, n_locks);
    owned_free(&w);
    hvq_outputs_abort(ctx); /* closes and frees; removes what was not placed */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return st;
}
