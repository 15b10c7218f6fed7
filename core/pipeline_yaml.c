/* Pipelines: libyaml's event stream to a tree that keeps the 1-based
 * line:column of every node, and the checks every mapping of a pipeline
 * file gets (scalar, unique keys; unknown keys with a suggestion). */
#include "config.h"

#include "pipeline_int.h"
#include "file.h"

#include "ctx.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest nesting accepted in a pipeline file (a real one needs 5). */
#define MAX_DEPTH 32
/* Largest pipeline file read. */
#define MAX_FILE_SIZE (16u << 20)


/* ------------------------------------------------------------------------
 * YAML to a tree with positions.
 * ---------------------------------------------------------------------- */

void hvq_pl_ynode_free(ynode *n)
{
    size_t k;
    if (!n)
        return;
    for (k = 0; k < n->n; k++)
        hvq_pl_ynode_free(n->kids[k]);
    free(n->kids);
    free(n->text);
    free(n);
}

static hvq_mark mark_of(const loader *L, yaml_mark_t m)
{
    hvq_mark r;
    r.file = L->p->path;
    r.origin = NULL;
    r.line = (int)m.line + 1;
    r.col = (int)m.column + 1;
    return r;
}

/* libyaml's own error, with its position and problem text. */
static hvq_status yaml_failure(loader *L)
{
    yaml_parser_t *ps = &L->parser;
    const char *problem = ps->problem ? ps->problem : "unknown error";
    hvq_mark m;
    hvq_buf b;

    if (ps->error == YAML_MEMORY_ERROR)
        return hvq_pl_nomem(L->ctx);

    hvq_buf_init(&b);
    if (ps->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset: turn it into line:col. */
        size_t k, off = ps->problem_offset;
        m.file = L->p->path;
        m.origin = NULL;
        m.line = 1;
        m.col = 1;
        for (k = 0; k < off && k < L->len; k++) {
            if (L->buf[k] == '\n') {
                m.line++;
                m.col = 1;
            } else if ((L->buf[k] & 0xC0) != 0x80) {
                m.col++;
            }
        }
        hvq_pl_mark_prefix(&b, L->p, &m);
        hvq_buf_printf(&b, "invalid YAML text: %s", problem);
        if (ps->problem_value != -1)
            hvq_buf_printf(&b, " (byte 0x%02X)", (unsigned)ps->problem_value);
        return hvq_pl_buf_error(L->ctx, HVQ_E_INPUT, &b);
    }

    m = mark_of(L, ps->problem_mark);
    hvq_pl_mark_prefix(&b, L->p, &m);
    hvq_buf_printf(&b, "YAML syntax error: %s", problem);
    if (ps->context)
        hvq_buf_printf(&b, " (%s at line %d, column %d)", ps->context,
                       (int)ps->context_mark.line + 1,
                       (int)ps->context_mark.column + 1);
    return hvq_pl_buf_error(L->ctx, HVQ_E_INPUT, &b);
}

static hvq_status next_event(loader *L, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&L->parser, ev))
        return yaml_failure(L);
    return HVQ_OK;
}

/* Whether ev may start a node of a pipeline (no alias or anchor, not too
 * deep); when not, sets the error at m and deletes ev. */
static hvq_status check_node_event(loader *L, yaml_event_t *ev, int depth,
                                   const hvq_mark *m)
{
    const yaml_char_t *anchor = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        yaml_event_delete(ev);
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, m,
                                 "YAML anchors and aliases are not supported in a "
                                 "pipeline");
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        break;
    default:
        yaml_event_delete(ev);
        return hvq_pl_mark_error(L->ctx, HVQ_E_INTERNAL, L->p, m,
                                 "unexpected YAML event %d", (int)ev->type);
    }
    if (anchor) {
        yaml_event_delete(ev);
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, m,
                                 "YAML anchors and aliases are not supported in a "
                                 "pipeline");
    }
    if (depth > MAX_DEPTH) {
        yaml_event_delete(ev);
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, m,
                                 "nesting too deep for a pipeline");
    }
    return HVQ_OK;
}

/* The text of the scalar event ev into n. */
static hvq_status build_scalar(loader *L, const yaml_event_t *ev, ynode *n)
{
    size_t len = ev->data.scalar.length;
    n->kind = YN_SCALAR;
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (memchr(ev->data.scalar.value, '\0', len))
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &n->mark,
                                 "a NUL character is not allowed in a value");
    n->text = malloc(len + 1);
    if (!n->text)
        return hvq_pl_nomem(L->ctx);
    memcpy(n->text, ev->data.scalar.value, len);
    n->text[len] = '\0';
    return HVQ_OK;
}

static hvq_status build_node(loader *L, yaml_event_t *ev, int depth,
                             ynode **out);

/* The items of a sequence (keys and values of a mapping) into n, up to
 * the event end_type. */
static hvq_status build_kids(loader *L, ynode *n, yaml_event_type_t end_type,
                             int depth)
{
    for (;;) {
        yaml_event_t child_ev;
        ynode *child;
        hvq_status st = next_event(L, &child_ev);
        if (st != HVQ_OK)
            return st;
        if (child_ev.type == end_type) {
            yaml_event_delete(&child_ev);
            return HVQ_OK;
        }
        st = build_node(L, &child_ev, depth + 1, &child);
        if (st != HVQ_OK)
            return st;
        if (!hvq_pl_grow((void **)&n->kids, &n->cap, n->n + 1, sizeof *n->kids)) {
            hvq_pl_ynode_free(child);
            return hvq_pl_nomem(L->ctx);
        }
        n->kids[n->n++] = child;
    }
}

/* Builds the node that starts with ev (consumed) into *out. */
static hvq_status build_node(loader *L, yaml_event_t *ev, int depth,
                             ynode **out)
{
    hvq_mark m = mark_of(L, ev->start_mark);
    ynode *n;
    hvq_status st;

    *out = NULL;
    st = check_node_event(L, ev, depth, &m);
    if (st != HVQ_OK)
        return st;
    n = calloc(1, sizeof *n);
    if (!n) {
        yaml_event_delete(ev);
        return hvq_pl_nomem(L->ctx);
    }
    n->mark = m;
    if (ev->type == YAML_SCALAR_EVENT) {
        st = build_scalar(L, ev, n);
        yaml_event_delete(ev);
    } else {
        int seq = ev->type == YAML_SEQUENCE_START_EVENT;
        n->kind = seq ? YN_SEQ : YN_MAP;
        yaml_event_delete(ev);
        st = build_kids(L, n, seq ? YAML_SEQUENCE_END_EVENT : YAML_MAPPING_END_EVENT,
                        depth);
    }
    if (st != HVQ_OK) {
        hvq_pl_ynode_free(n);
        return st;
    }
    *out = n;
    return HVQ_OK;
}

/* Parses the buffer into one document's root node; *root is NULL for an
 * empty stream. */
hvq_status hvq_pl_parse_document(loader *L, ynode **root)
{
    yaml_event_t ev;
    hvq_status st;

    *root = NULL;
    st = next_event(L, &ev); /* STREAM-START */
    if (st != HVQ_OK)
        return st;
    yaml_event_delete(&ev);

    st = next_event(L, &ev);
    if (st != HVQ_OK)
        return st;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return HVQ_OK;
    }
    yaml_event_delete(&ev); /* DOCUMENT-START */

    st = next_event(L, &ev);
    if (st != HVQ_OK)
        return st;
    st = build_node(L, &ev, 0, root);
    if (st != HVQ_OK)
        return st;

    st = next_event(L, &ev); /* DOCUMENT-END */
    if (st != HVQ_OK)
        goto fail;
    yaml_event_delete(&ev);

    st = next_event(L, &ev);
    if (st != HVQ_OK)
        goto fail;
    if (ev.type == YAML_DOCUMENT_START_EVENT) {
        hvq_mark m = mark_of(L, ev.start_mark);
        yaml_event_delete(&ev);
        st = hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &m,
                               "a second YAML document; a pipeline file holds "
                               "exactly one");
        goto fail;
    }
    yaml_event_delete(&ev);
    return HVQ_OK;

fail:
    hvq_pl_ynode_free(*root);
    *root = NULL;
    return st;
}

const char *hvq_pl_kind_name(const ynode *n)
{
    switch (n->kind) {
    case YN_SCALAR: return "a scalar";
    case YN_SEQ: return "a sequence";
    default: return "a mapping";
    }
}

/* A plain empty, ~ or null scalar. */
int hvq_pl_is_null(const ynode *n)
{
    if (n->kind != YN_SCALAR || !n->plain)
        return 0;
    return !n->text[0] || strcmp(n->text, "~") == 0 ||
           strcmp(n->text, "null") == 0 || strcmp(n->text, "Null") == 0 ||
           strcmp(n->text, "NULL") == 0;
}

typedef struct keyref {
    const char *text;
    size_t idx; /* position in the mapping's kids */
} keyref;

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    if (c)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Keys are scalars and unique. Sorting keeps this O(n log n) whatever the
 * size of the mapping; the duplicate reported is the first one in the
 * file. */
hvq_status hvq_pl_check_keys(loader *L, const ynode *map)
{
    size_t i, n = map->n / 2, best = (size_t)-1, first = 0;
    keyref *refs;

    for (i = 0; i < map->n; i += 2) {
        const ynode *k = map->kids[i];
        if (k->kind != YN_SCALAR)
            return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &k->mark,
                                     "a mapping key must be a scalar, not %s",
                                     hvq_pl_kind_name(k));
    }
    if (n < 2)
        return HVQ_OK;
    refs = malloc(n * sizeof *refs);
    if (!refs)
        return hvq_pl_nomem(L->ctx);
    for (i = 0; i < n; i++) {
        refs[i].text = map->kids[2 * i]->text;
        refs[i].idx = 2 * i;
    }
    qsort(refs, n, sizeof *refs, keyref_cmp);
    for (i = 1; i < n; i++) {
        if (strcmp(refs[i].text, refs[i - 1].text) == 0 &&
            (i < 2 || strcmp(refs[i - 1].text, refs[i - 2].text) != 0) &&
            refs[i].idx < best) {
            best = refs[i].idx;
            first = refs[i - 1].idx;
        }
    }
    free(refs);
    if (best != (size_t)-1) {
        const ynode *k = map->kids[best], *o = map->kids[first];
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &k->mark,
                                 "duplicate key '%s' (first at line %d, column %d)",
                                 k->text, o->mark.line, o->mark.col);
    }
    return HVQ_OK;
}

/* "unknown key 'x'[ in 'where']; did you mean 'y'?" or a list of the valid
 * keys when none is close. */
hvq_status hvq_pl_unknown_key(loader *L, const ynode *k, const char *what,
                              const char *where, const char *const *valid,
                              size_t n)
{
    const char *near = hvq_pl_nearest(k->text, valid, n);
    hvq_buf b;
    hvq_buf_init(&b);
    hvq_pl_mark_prefix(&b, L->p, &k->mark);
    hvq_buf_printf(&b, "unknown %s '%s'%s", what, k->text, where);
    if (near) {
        hvq_buf_printf(&b, "; did you mean '%s'?", near);
    } else {
        hvq_buf_printf(&b, " (valid %ss: ", what);
        hvq_pl_join(&b, valid, n);
        hvq_buf_puts(&b, ")");
    }
    return hvq_pl_buf_error(L->ctx, HVQ_E_INPUT, &b);
}

hvq_status hvq_pl_want_scalar(loader *L, const ynode *v, const char *name)
{
    if (v->kind == YN_SCALAR)
        return HVQ_OK;
    return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                             "'%s' must be a scalar, not %s", name, hvq_pl_kind_name(v));
}

/* Reads a whole file; sets the error on failure. */
hvq_status hvq_pl_read_file(hvq_ctx *ctx, const char *path,
                            unsigned char **data, size_t *len)
{
    int odd;
    FILE *f = hvq_fopen_input(ctx, path, &odd);
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    int err;

    *data = NULL;
    *len = 0;
    if (!f)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: cannot open pipeline: %s", path,
                         odd && errno != EISDIR ? "not a regular file (a FIFO, a device?)"
                                                : strerror(errno));
    for (;;) {
        size_t got;
        if (n == cap) {
            unsigned char *nb;
            if (cap >= MAX_FILE_SIZE) {
                fclose(f);
                free(buf);
                return hvq_error(ctx, HVQ_E_INPUT,
                                 "%s: too large for a pipeline file (over %u "
                                 "bytes)",
                                 path, (unsigned)MAX_FILE_SIZE);
            }
            cap = cap ? cap * 2 : 4096;
            nb = realloc(buf, cap + 1);
            if (!nb) {
                fclose(f);
                free(buf);
                return hvq_pl_nomem(ctx);
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    err = ferror(f) ? errno : 0;
    fclose(f);
    if (err || !buf) {
        free(buf);
        return hvq_error(ctx, HVQ_E_INPUT, "%s: cannot read pipeline: %s",
                         path, strerror(err ? err : EIO));
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return HVQ_OK;
}
