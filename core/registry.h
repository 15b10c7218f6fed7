/* Plugin registry: finds plugin shared objects, validates their
 * descriptors, and looks plugins up by kind and name. */
#ifndef HVQ_CORE_REGISTRY_H
#define HVQ_CORE_REGISTRY_H

#include "plugin.h"

typedef struct hvq_loaded_plugin {
    hvq_plugin desc;  /* copy of the descriptor, zero-filled past the
                         plugin's struct_size */
    char *path;       /* the file it was loaded from */
    void *dl;         /* dlopen handle (NULL for built-in descriptors) */
} hvq_loaded_plugin;

typedef struct hvq_registry hvq_registry;

hvq_registry *hvq_registry_new(void);
void hvq_registry_free(hvq_registry *reg);

/* Checks a descriptor of `size` bytes (the plugin's declared struct_size
 * clamped to what the host knows). On refusal returns HVQ_E_INPUT and
 * writes the reason (one line, no file name) into why. */
hvq_status hvq_plugin_validate(const hvq_plugin *desc, char *why,
                               size_t why_len);

/* Loads one shared object. A refused plugin returns HVQ_E_INPUT with the
 * message "PATH: plugin refused: REASON" on ctx; nothing is added. */
hvq_status hvq_registry_load_file(hvq_registry *reg, hvq_ctx *ctx,
                                  const char *path);

/* Loads every *.so in dir (sorted by name). Refusals are logged as one
 * WARN line each; the others load. A missing directory is not an error. */
hvq_status hvq_registry_load_dir(hvq_registry *reg, hvq_ctx *ctx,
                                 const char *dir);

/* The standard search: each of extra_dirs (from --plugin-dir), then every
 * entry of $HVQ_PLUGIN_PATH (colon-separated), then the build tree when the
 * running binary is the uninstalled one, then the installed directory. */
hvq_status hvq_registry_load_default(hvq_registry *reg, hvq_ctx *ctx,
                                     const char *const *extra_dirs,
                                     size_t n_extra);

/* Adds a descriptor linked into the program (tests). */
hvq_status hvq_registry_add(hvq_registry *reg, hvq_ctx *ctx,
                            const hvq_plugin *desc, const char *origin);

const hvq_loaded_plugin *hvq_registry_find(const hvq_registry *reg,
                                           uint32_t kind, const char *name);
/* Any plugin of any kind with that name (first one). */
const hvq_loaded_plugin *hvq_registry_find_any(const hvq_registry *reg,
                                               const char *name);
/* The first model plugin whose architectures list architecture, or NULL. */
const hvq_loaded_plugin *hvq_registry_model_for(const hvq_registry *reg,
                                                const char *architecture);
size_t hvq_registry_count(const hvq_registry *reg);
const hvq_loaded_plugin *hvq_registry_at(const hvq_registry *reg, size_t i);

/* The plugin of `kind` whose name is closest to name (edit distance), or
 * NULL when none is close. */
const char *hvq_registry_suggest(const hvq_registry *reg, uint32_t kind,
                                 const char *name);

/* Whether the space-separated list has the word w. */
int hvq_list_has_word(const char *list, const char *w);
/* "source", "sink", "source,sink", "clusterer", ... into buf. */
const char *hvq_kind_names(uint32_t kinds, char *buf, size_t len);

/* The source plugin whose probe is surest of path (*out NULL when none
 * recognises it); an error only when path cannot be read. The one place
 * where files are sniffed (each format's probe reads the head it is
 * given). */
hvq_status hvq_registry_probe(const hvq_registry *reg, hvq_ctx *ctx, const char *path,
                              const hvq_loaded_plugin **out);
/* The same, or NULL with an error listing the supported formats. */
const hvq_loaded_plugin *hvq_registry_detect(const hvq_registry *reg,
                                             hvq_ctx *ctx, const char *path);
/* The sink whose extensions match path's, or NULL (no error). */
const hvq_loaded_plugin *hvq_registry_sink_of(const hvq_registry *reg, const char *path);
/* The sink whose extensions match path's, or NULL with an error. */
const hvq_loaded_plugin *hvq_registry_sink_for(const hvq_registry *reg,
                                               hvq_ctx *ctx, const char *path);

#endif
