/* Reading hvq containers (docs/FORMAT.md) and the `decode` and `inspect`
 * commands.
 *
 * A container is opened through the source plugin "hvq" (formats/hvq),
 * which reads its files and validates the whole "hvq.tensors" index against
 * the stored tensors (names, dtypes, shapes, sizes, every stored tensor
 * listed exactly once). Reading a tensor first checks its CRC-32; decoding a
 * compressed tensor looks up the clusterer and residual plugins named in
 * the container and reconstructs W_hat bit for bit as the driver did:
 * cluster_decode, residual_decode, then each row times its fp16 scale.
 * Every error message starts with the container's path.
 */
#ifndef HVQ_CORE_CONTAINER_H
#define HVQ_CORE_CONTAINER_H

#include "ctx.h"
#include "plugin.h"
#include "registry.h"

#include <stddef.h>
#include <stdint.h>

/* The container format version this hvqconv reads and writes. */
#define HVQ_CONTAINER_FORMAT_VERSION 1

typedef struct hvq_container hvq_container;

/* hvq_container_stage and hvq_container_tensor are in plugin.h: the
 * source plugin "hvq" (formats/hvq) fills them. */

/* Opens and validates path through the source plugin "hvq". reg must hold
 * it (and, to decode, the plugins the container names); it must outlive
 * the container.
 * HVQ_E_INPUT for anything that is not a valid container of a supported
 * version. */
hvq_status hvq_container_open(hvq_ctx *ctx, const hvq_registry *reg, const char *path,
                              hvq_container **out);
void hvq_container_close(hvq_ctx *ctx, hvq_container *c);

const char *hvq_container_path(const hvq_container *c);
uint64_t hvq_container_file_size(const hvq_container *c);
size_t hvq_container_count(const hvq_container *c);
const hvq_container_tensor *hvq_container_info(const hvq_container *c, size_t i);

/* A value of the container's own safetensors metadata ("hvq.producer",
 * "hvq.pipeline", ...), or NULL. */
const char *hvq_container_meta(const hvq_container *c, const char *key);
/* The config.json for a safetensors-sourced container at path (malloc'd,
 * or NULL when there is none): beside or in the model its pipeline read
 * (hvq.pipeline's input:, relative to the current directory, else to the
 * container's), then beside the container (core/cmd_eval.c). */
char *hvq_container_config_path(hvq_container *c, const char *path);

/* The source model's metadata (hvq.source_metadata), in stored order. */
void hvq_container_source_meta(const hvq_container *c, const hvq_meta **meta, size_t *n);

/* Checks tensor i's CRC-32 (once; later calls return the first result).
 * HVQ_E_INPUT: "PATH: tensor 'X': checksum mismatch (stored 0x..., computed
 * 0x...)". */
hvq_status hvq_container_verify(hvq_ctx *ctx, hvq_container *c, size_t i);

/* A pass-through tensor as the source had it: original name, dtype, shape
 * and bytes. t->data stays valid until the next read or close. Checks the
 * CRC first. */
hvq_status hvq_container_read_raw(hvq_ctx *ctx, hvq_container *c, size_t i, hvq_tensor *t);

/* Component name of compressed tensor i's clusterer, as stored (e.g. the
 * ggml clusterer's "blocks"). t->data stays valid until the next read or
 * close. Checks the CRC first. */
hvq_status hvq_container_read_component(hvq_ctx *ctx, hvq_container *c, size_t i,
                                        const char *name, hvq_tensor *out);

/* Tensor i as float32 (numel values): a compressed tensor is
 * reconstructed; a pass-through F32/F16/BF16/F64 tensor is converted;
 * other pass-through tensors give HVQ_E_UNSUPPORTED. Checks the CRC first.
 * A plugin the container names but the registry lacks gives
 * HVQ_E_NOTFOUND. */
hvq_status hvq_container_read_decoded(hvq_ctx *ctx, hvq_container *c, size_t i, float *out);

/* The commands (core/cmd_container.c). argv[0] is the command name; the
 * global options given before it are passed along. Return an exit status:
 * 0 success, 2 bad input (including a checksum mismatch), 1 other
 * failures. */
int hvq_cmd_decode(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                   const hvq_ctx_opts *opts);
int hvq_cmd_inspect(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                    const hvq_ctx_opts *opts);
/* `verify`: structure, every checksum and every compressed tensor's
 * decode; the first problem found is reported (exit status 2). */
int hvq_cmd_verify(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                   const hvq_ctx_opts *opts);

#endif
