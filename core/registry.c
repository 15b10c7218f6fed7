/* Plugin registry: finds plugin shared objects, checks their descriptors
 * (ABI version, size, kinds, names, mandatory callbacks), and looks them up
 * by kind and name. A refused plugin never stops the others. */
#include "config.h"

#include "registry.h"
#include "ctx.h"
#include "util.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct hvq_registry {
    hvq_loaded_plugin **items;
    size_t n, cap;
};

hvq_registry *hvq_registry_new(void) { return calloc(1, sizeof(hvq_registry)); }

void hvq_registry_free(hvq_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n; i++) {
        /* Plugins stay mapped until exit: the descriptor's strings live in
         * them and a run may still hold pointers into them. Unmapping buys
         * nothing for a command-line program, and valgrind can then still
         * name plugin frames in its reports. */
        free(reg->items[i]->path);
        free(reg->items[i]);
    }
    free(reg->items);
    free(reg);
}

const char *hvq_kind_names(uint32_t kinds, char *buf, size_t len)
{
    static const char *const names[] = {"source", "sink", "hessian", "importance",
                                        "clusterer", "residual", "writer", "model"};
    size_t used = 0;
    buf[0] = '\0';
    for (unsigned b = 0; b < sizeof names / sizeof names[0]; b++)
        if (kinds & (1u << b)) {
            int w = snprintf(buf + used, len - used, "%s%s", used ? "," : "", names[b]);
            if (w < 0 || (size_t)w >= len - used)
                break;
            used += (size_t)w;
        }
    return buf;
}

static int valid_name(const char *s)
{
    if (!s || !(*s >= 'a' && *s <= 'z'))
        return 0;
    size_t n = 0;
    for (; *s; s++, n++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-'))
            return 0;
    return n <= 64;
}

static int valid_param_name(const char *s)
{
    if (!s || !(*s >= 'a' && *s <= 'z'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

#define NEED(field, kindname)                                                 \
    do {                                                                      \
        if (!d->field) {                                                      \
            snprintf(why, why_len, "%s plugin lacks the mandatory callback %s", \
                     kindname, #field);                                       \
            return HVQ_E_INPUT;                                               \
        }                                                                     \
    } while (0)

/* The header, name, kinds, version and summary. */
static hvq_status validate_header(const hvq_plugin *d, char *why, size_t why_len)
{
    const uint32_t all = HVQ_KIND_SOURCE | HVQ_KIND_SINK | HVQ_KIND_HESSIAN |
                         HVQ_KIND_IMPORTANCE | HVQ_KIND_CLUSTERER | HVQ_KIND_RESIDUAL |
                         HVQ_KIND_WRITER | HVQ_KIND_MODEL;
    if (d->abi_version != HVQ_ABI_VERSION) {
        snprintf(why, why_len, "built for plugin ABI %u, this hvqconv uses ABI %u",
                 (unsigned)d->abi_version, (unsigned)HVQ_ABI_VERSION);
        return HVQ_E_INPUT;
    }
    if (d->struct_size < HVQ_PLUGIN_MIN_SIZE) {
        snprintf(why, why_len,
                 "descriptor is %u bytes, shorter than the %zu bytes of ABI %u",
                 (unsigned)d->struct_size, (size_t)HVQ_PLUGIN_MIN_SIZE,
                 (unsigned)HVQ_ABI_VERSION);
        return HVQ_E_INPUT;
    }
    if (!valid_name(d->name)) {
        snprintf(why, why_len, "invalid plugin name '%s' (want [a-z][a-z0-9_-]*)",
                 d->name ? d->name : "(null)");
        return HVQ_E_INPUT;
    }
    if (d->kinds == 0 || (d->kinds & ~all)) {
        snprintf(why, why_len, "plugin '%s' declares invalid kinds 0x%x", d->name,
                 (unsigned)d->kinds);
        return HVQ_E_INPUT;
    }
    uint32_t k = d->kinds & ~(uint32_t)(HVQ_KIND_SOURCE | HVQ_KIND_SINK);
    if (k && (k & (k - 1))) {
        snprintf(why, why_len,
                 "plugin '%s' declares several kinds; only source and sink combine",
                 d->name);
        return HVQ_E_INPUT;
    }
    if (k && (d->kinds & (HVQ_KIND_SOURCE | HVQ_KIND_SINK))) {
        snprintf(why, why_len,
                 "plugin '%s' declares several kinds; only source and sink combine",
                 d->name);
        return HVQ_E_INPUT;
    }
    if (!d->version || !*d->version || !d->summary || !*d->summary) {
        snprintf(why, why_len, "plugin '%s' lacks a version or a summary", d->name);
        return HVQ_E_INPUT;
    }
    return HVQ_OK;
}

/* The declared parameters. */
static hvq_status validate_params(const hvq_plugin *d, char *why, size_t why_len)
{
    if (d->params) {
        for (size_t i = 0; d->params[i].name; i++) {
            const hvq_param_spec *s = &d->params[i];
            if (!valid_param_name(s->name)) {
                snprintf(why, why_len, "plugin '%s': invalid parameter name '%s'",
                         d->name, s->name);
                return HVQ_E_INPUT;
            }
            if (s->type < HVQ_PARAM_INT || s->type > HVQ_PARAM_SIZE) {
                snprintf(why, why_len, "plugin '%s': parameter '%s' has unknown type %d",
                         d->name, s->name, (int)s->type);
                return HVQ_E_INPUT;
            }
            if (s->type == HVQ_PARAM_CHOICE && (!s->choices || !s->choices[0])) {
                snprintf(why, why_len, "plugin '%s': choice parameter '%s' has no choices",
                         d->name, s->name);
                return HVQ_E_INPUT;
            }
            if (strcmp(s->name, "plugin") == 0 || strcmp(s->name, "match") == 0) {
                snprintf(why, why_len, "plugin '%s': parameter name '%s' is reserved",
                         d->name, s->name);
                return HVQ_E_INPUT;
            }
            for (size_t j = 0; j < i; j++)
                if (strcmp(d->params[j].name, s->name) == 0) {
                    snprintf(why, why_len, "plugin '%s': parameter '%s' declared twice",
                             d->name, s->name);
                    return HVQ_E_INPUT;
                }
        }
    }
    return HVQ_OK;
}

/* A model plugin: its descriptor reaches the model fields (appended after
 * the first release), names its architectures and its linear layers, and
 * has the mandatory callbacks. */
static hvq_status validate_model(const hvq_plugin *d, char *why, size_t why_len)
{
    if (d->struct_size < offsetof(hvq_plugin, tokenizer_close) + sizeof d->tokenizer_close) {
        snprintf(why, why_len,
                 "model plugin '%s': descriptor is %u bytes, too short for the model "
                 "callbacks (built for an older plugin.h?)",
                 d->name, (unsigned)d->struct_size);
        return HVQ_E_INPUT;
    }
    if (!d->architectures || !*d->architectures || !d->model_linears) {
        snprintf(why, why_len, "model plugin '%s' lacks its architectures or its "
                 "model_linears table", d->name);
        return HVQ_E_INPUT;
    }
    NEED(model_open, "model");
    NEED(model_info, "model");
    NEED(model_window, "model");
    NEED(model_close, "model");
    /* convert (fields past struct_size read as zero): all six or none */
    int n_convert = !!d->convert_open + !!d->convert_tensor + !!d->convert_rows +
                    !!d->convert_meta + !!d->convert_file + !!d->convert_close;
    if (n_convert != 0 && n_convert != 6) {
        snprintf(why, why_len, "model plugin '%s' has %d of the six convert callbacks "
                 "(convert_open ... convert_close: all or none)", d->name, n_convert);
        return HVQ_E_INPUT;
    }
    return HVQ_OK;
}

/* The mandatory callbacks of each kind declared. */
static hvq_status validate_callbacks(const hvq_plugin *d, char *why, size_t why_len)
{
    if (d->kinds & HVQ_KIND_SOURCE) {
        NEED(source_open, "source");
        NEED(source_count, "source");
        NEED(source_info, "source");
        NEED(source_read, "source");
        NEED(source_close, "source");
    }
    if (d->kinds & HVQ_KIND_SINK) {
        NEED(sink_create, "sink");
        NEED(sink_write, "sink");
        NEED(sink_finish, "sink");
        NEED(sink_close, "sink");
    }
    if (d->kinds & HVQ_KIND_HESSIAN) {
        NEED(hessian_open, "hessian");
        NEED(hessian_get, "hessian");
        NEED(hessian_close, "hessian");
    }
    if (d->kinds & HVQ_KIND_IMPORTANCE)
        NEED(importance_score, "importance");
    if (d->kinds & HVQ_KIND_CLUSTERER) {
        NEED(cluster_encode, "clusterer");
        NEED(cluster_decode, "clusterer");
    }
    if (d->kinds & HVQ_KIND_RESIDUAL) {
        NEED(residual_count, "residual");
        NEED(residual_encode, "residual");
        NEED(residual_decode, "residual");
    }
    if (d->kinds & HVQ_KIND_WRITER) {
        NEED(writer_open, "writer");
        NEED(writer_tensor, "writer");
        NEED(writer_finish, "writer");
        NEED(writer_close, "writer");
    }
    if (d->kinds & HVQ_KIND_MODEL)
        return validate_model(d, why, why_len);
    return HVQ_OK;
}

hvq_status hvq_plugin_validate(const hvq_plugin *d, char *why, size_t why_len)
{
    hvq_status st = validate_header(d, why, why_len);
    if (st == HVQ_OK)
        st = validate_params(d, why, why_len);
    if (st == HVQ_OK)
        st = validate_callbacks(d, why, why_len);
    return st;
}

static const hvq_loaded_plugin *find_clash(const hvq_registry *reg, const hvq_plugin *d)
{
    for (size_t i = 0; i < reg->n; i++) {
        const hvq_plugin *o = &reg->items[i]->desc;
        if ((o->kinds & d->kinds) && strcmp(o->name, d->name) == 0)
            return reg->items[i];
    }
    return NULL;
}

/* Copies the plugin's descriptor: as many bytes as both sides know, the
 * rest zero (absent). */
static hvq_status add_desc(hvq_registry *reg, hvq_ctx *ctx, const hvq_plugin *raw,
                           const char *origin, void *dl)
{
    char why[512];
    hvq_loaded_plugin *lp = calloc(1, sizeof *lp);
    if (!lp)
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    /* Read the header first: the size field says how much else is there. */
    size_t n = raw->struct_size < sizeof(hvq_plugin) ? raw->struct_size : sizeof(hvq_plugin);
    if (raw->abi_version == HVQ_ABI_VERSION && n >= HVQ_PLUGIN_MIN_SIZE) {
        memcpy(&lp->desc, raw, n);
        /* What the copy holds: a caller handed it (host->model_plugin)
         * checks a member with HVQ_PLUGIN_HAS, which must not reach past
         * this host's descriptor for a plugin built with a longer one. */
        lp->desc.struct_size = (uint32_t)n;
    } else
        memcpy(&lp->desc, raw, 2 * sizeof(uint32_t));
    if (hvq_plugin_validate(&lp->desc, why, sizeof why) != HVQ_OK) {
        free(lp);
        return hvq_error(ctx, HVQ_E_INPUT, "%s: plugin refused: %s", origin, why);
    }
    const hvq_loaded_plugin *clash = find_clash(reg, &lp->desc);
    if (clash) {
        char kb[64];
        hvq_error(ctx, HVQ_E_INPUT,
                  "%s: plugin refused: duplicate %s plugin name '%s' (already loaded from %s)",
                  origin, hvq_kind_names(lp->desc.kinds & clash->desc.kinds, kb, sizeof kb),
                  lp->desc.name, clash->path);
        free(lp);
        return HVQ_E_INPUT;
    }
    lp->path = strdup(origin);
    lp->dl = dl;
    if (!lp->path) {
        free(lp->path);
        free(lp);
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    if (reg->n == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 16;
        hvq_loaded_plugin **items = realloc(reg->items, cap * sizeof *items);
        if (!items) {
            free(lp->path);
            free(lp);
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        }
        reg->items = items;
        reg->cap = cap;
    }
    reg->items[reg->n++] = lp;
    return HVQ_OK;
}

hvq_status hvq_registry_add(hvq_registry *reg, hvq_ctx *ctx, const hvq_plugin *desc,
                            const char *origin)
{
    return add_desc(reg, ctx, desc, origin, NULL);
}

hvq_status hvq_registry_load_file(hvq_registry *reg, hvq_ctx *ctx, const char *path)
{
    /* dlopen of a FIFO would wait for a writer forever */
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: plugin refused: not a regular file", path);
    /* RTLD_LOCAL: plugins cannot see each other's symbols. */
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *e = dlerror();
        return hvq_error(ctx, HVQ_E_INPUT, "%s: plugin refused: cannot load: %s", path,
                         e ? e : "unknown error");
    }
    /* The same file reached again (a directory listed twice, or through a
     * symlink or another spelling): dlopen returned the handle it already
     * has, and the plugin is already registered. Not a duplicate. */
    for (size_t i = 0; i < reg->n; i++)
        if (reg->items[i]->dl == dl) {
            dlclose(dl);
            return HVQ_OK;
        }
    void *sym = dlsym(dl, HVQ_PLUGIN_ENTRY_SYMBOL);
    if (!sym) {
        dlclose(dl);
        return hvq_error(ctx, HVQ_E_INPUT, "%s: plugin refused: no entry point %s()", path,
                         HVQ_PLUGIN_ENTRY_SYMBOL);
    }
    hvq_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry);
    const hvq_plugin *desc = entry();
    if (!desc) {
        dlclose(dl);
        return hvq_error(ctx, HVQ_E_INPUT, "%s: plugin refused: %s() returned NULL", path,
                         HVQ_PLUGIN_ENTRY_SYMBOL);
    }
    hvq_status st = add_desc(reg, ctx, desc, path, dl);
    if (st != HVQ_OK)
        dlclose(dl);
    return st;
}

static int is_plugin_file(const char *name) { return hvq_ends_with(name, ".so"); }

hvq_status hvq_registry_load_dir(hvq_registry *reg, hvq_ctx *ctx, const char *dir)
{
    char **names;
    size_t n;
    if (hvq_dir_sorted(dir, is_plugin_file, &names, &n) != 0)
        return errno == ENOMEM ? hvq_error(ctx, HVQ_E_NOMEM, "out of memory") : HVQ_OK;
    hvq_status st = HVQ_OK;
    for (size_t i = 0; i < n && st == HVQ_OK; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (hvq_registry_load_file(reg, ctx, path) != HVQ_OK) {
            if (hvq_ctx_status(ctx) == HVQ_E_NOMEM)
                st = HVQ_E_NOMEM;
            else {
                hvq_log(ctx, HVQ_LOG_WARN, "%s", hvq_ctx_error(ctx));
                hvq_ctx_clear_error(ctx);
            }
        }
    }
    hvq_names_free_list(names, n);
    return st;
}

/* Whether the running program is the uninstalled build-tree binary. */
static int running_from_build_tree(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    /* The binary itself, or libtool's .libs copy of it. */
    if (hvq_ends_with(exe, "/.libs"))
        exe[strlen(exe) - 6] = '\0';
    char build[PATH_MAX];
    if (!realpath(HVQ_BUILDDIR, build))
        return 0;
    char here[PATH_MAX];
    if (!realpath(exe, here))
        return 0;
    size_t n_build = strlen(build);
    return strncmp(here, build, n_build) == 0 &&
           (here[n_build] == '\0' || here[n_build] == '/');
}

hvq_status hvq_registry_load_default(hvq_registry *reg, hvq_ctx *ctx,
                                     const char *const *extra, size_t n_extra)
{
    hvq_status st;
    for (size_t i = 0; i < n_extra; i++)
        if ((st = hvq_registry_load_dir(reg, ctx, extra[i])) != HVQ_OK)
            return st;
    const char *env = getenv("HVQ_PLUGIN_PATH");
    if (env && *env) {
        char *copy = strdup(env), *save = NULL;
        if (!copy)
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        for (char *tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save))
            if ((st = hvq_registry_load_dir(reg, ctx, tok)) != HVQ_OK) {
                free(copy);
                return st;
            }
        free(copy);
    }
    if (running_from_build_tree()) {
        static const char *const sub[] = {"formats/.libs", "plugins/.libs"};
        for (size_t i = 0; i < 2; i++) {
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%s/%s", HVQ_BUILDDIR, sub[i]);
            if ((st = hvq_registry_load_dir(reg, ctx, dir)) != HVQ_OK)
                return st;
        }
    } else if ((st = hvq_registry_load_dir(reg, ctx, HVQ_PLUGINDIR)) != HVQ_OK) {
        return st;
    }
    return HVQ_OK;
}

const hvq_loaded_plugin *hvq_registry_find(const hvq_registry *reg, uint32_t kind,
                                           const char *name)
{
    for (size_t i = 0; i < reg->n; i++)
        if ((reg->items[i]->desc.kinds & kind) && strcmp(reg->items[i]->desc.name, name) == 0)
            return reg->items[i];
    return NULL;
}

int hvq_list_has_word(const char *list, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = list; n && *p;) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, " ");
        if (len == n && strncmp(p, w, n) == 0)
            return 1;
        p += len;
    }
    return 0;
}

const hvq_loaded_plugin *hvq_registry_model_for(const hvq_registry *reg,
                                                const char *architecture)
{
    for (size_t i = 0; i < reg->n; i++) {
        const hvq_plugin *d = &reg->items[i]->desc;
        if ((d->kinds & HVQ_KIND_MODEL) && hvq_list_has_word(d->architectures, architecture))
            return reg->items[i];
    }
    return NULL;
}

const hvq_loaded_plugin *hvq_registry_find_any(const hvq_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n; i++)
        if (strcmp(reg->items[i]->desc.name, name) == 0)
            return reg->items[i];
    return NULL;
}

size_t hvq_registry_count(const hvq_registry *reg) { return reg->n; }

const hvq_loaded_plugin *hvq_registry_at(const hvq_registry *reg, size_t i)
{
    return i < reg->n ? reg->items[i] : NULL;
}

const char *hvq_registry_suggest(const hvq_registry *reg, uint32_t kind, const char *name)
{
    const char *cand[256];
    size_t n = 0;
    for (size_t i = 0; i < reg->n && n < 256; i++)
        if (reg->items[i]->desc.kinds & kind)
            cand[n++] = reg->items[i]->desc.name;
    return hvq_nearest(name, cand, n);
}

static void list_kind(const hvq_registry *reg, uint32_t kind, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < reg->n; i++)
        if (reg->items[i]->desc.kinds & kind) {
            int w = snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                             reg->items[i]->desc.name);
            if (w < 0 || (size_t)w >= len - used)
                break;
            used += (size_t)w;
        }
    if (!used)
        snprintf(buf, len, "none loaded");
}

hvq_status hvq_registry_probe(const hvq_registry *reg, hvq_ctx *ctx, const char *path,
                              const hvq_loaded_plugin **out)
{
    struct stat st;
    *out = NULL;
    unsigned char head[4096];
    size_t head_len = 0;
    if (stat(path, &st) != 0)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: not a regular file or a directory", path);
    if (S_ISREG(st.st_mode)) {
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            return hvq_error(ctx, HVQ_E_INPUT, "%s: cannot open: %s", path, strerror(errno));
        ssize_t r = read(fd, head, sizeof head);
        close(fd);
        if (r < 0)
            return hvq_error(ctx, HVQ_E_INPUT, "%s: cannot read: %s", path, strerror(errno));
        head_len = (size_t)r;
    }
    int best_score = 0;
    for (size_t i = 0; i < reg->n; i++) {
        const hvq_plugin *d = &reg->items[i]->desc;
        if (!(d->kinds & HVQ_KIND_SOURCE) || !d->probe)
            continue;
        int s = d->probe(path, head, head_len);
        if (s > best_score) {
            best_score = s;
            *out = reg->items[i];
        }
    }
    return HVQ_OK;
}

const hvq_loaded_plugin *hvq_registry_detect(const hvq_registry *reg, hvq_ctx *ctx,
                                             const char *path)
{
    const hvq_loaded_plugin *best;
    if (hvq_registry_probe(reg, ctx, path, &best) == HVQ_OK && !best) {
        char list[1024];
        list_kind(reg, HVQ_KIND_SOURCE, list, sizeof list);
        hvq_error(ctx, HVQ_E_INPUT, "%s: not a model file of any supported format (%s)",
                  path, list);
    }
    return best;
}

const hvq_loaded_plugin *hvq_registry_sink_of(const hvq_registry *reg, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (size_t i = 0; i < reg->n; i++) {
        const hvq_plugin *d = &reg->items[i]->desc;
        if (!(d->kinds & HVQ_KIND_SINK) || !d->extensions)
            continue;
        char exts[256];
        snprintf(exts, sizeof exts, "%s", d->extensions);
        char *save = NULL;
        for (char *t = strtok_r(exts, " ", &save); t; t = strtok_r(NULL, " ", &save))
            if (hvq_ends_with(base, t))
                return reg->items[i];
    }
    return NULL;
}

const hvq_loaded_plugin *hvq_registry_sink_for(const hvq_registry *reg, hvq_ctx *ctx,
                                               const char *path)
{
    const hvq_loaded_plugin *sink = hvq_registry_sink_of(reg, path);
    if (sink)
        return sink;
    char list[1024];
    list_kind(reg, HVQ_KIND_SINK, list, sizeof list);
    hvq_error(ctx, HVQ_E_INPUT,
              "%s: cannot tell the output format from the file name (output formats: %s)",
              path, list);
    return NULL;
}
