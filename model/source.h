/* Opening a model from wherever it is stored: a GGUF file, or a directory
 * made by `sluice pack` (model/pack.h). Every program that takes a model
 * path (the CLI, the coordinator, compute workers) opens it here, so each
 * accepts both.
 *
 * A GGUF file is mapped (model/gguf.h). A packed model becomes an image in
 * anonymous memory (sl_pack_image_open): the GGUF header from the manifest,
 * plus the units the caller needs read from their shards (checksums
 * verified, decompressed) and placed at their offsets. Which units depends
 * on the caller:
 *   SL_SOURCE_META   the metadata only: tokenizer, hyper-parameters, the
 *                    unit table (plus the few small "misc" tensors that
 *                    describing the model reads, e.g. rope_freqs.weight).
 *                    The coordinator: loaders read the weights.
 *   SL_SOURCE_EMBD   META plus the unit holding the token embedding: what a
 *                    compute worker reads outside its slots.
 *   SL_SOURCE_ALL    every unit: the in-process engine, which reads weights
 *                    straight from the image as it does from a mapped file.
 * The image of a packed model takes anonymous memory for what is loaded
 * (SL_SOURCE_ALL: the whole model), where a mapped GGUF takes page cache. */
#ifndef SL_MODEL_SOURCE_H
#define SL_MODEL_SOURCE_H

#include <stdbool.h>

#include "model/gguf.h"
#include "model/model.h"
#include "model/pack.h"

typedef enum sl_source_load {
    SL_SOURCE_META = 0,
    SL_SOURCE_EMBD = 1,
    SL_SOURCE_ALL = 2,
} sl_source_load;

/* Whether `path` is a directory (then it is opened as a packed model;
 * anything else as a GGUF file). Does not fail: false when path cannot be
 * examined. Blocks on one stat(2). */
bool sl_source_is_packed(const char *path);

/* The GGUF handle of the model at `path`: the mapped file, or a packed
 * model's image with the metadata loaded (SL_SOURCE_META). Returns 0 and
 * the handle in *out (owned by the caller: sl_gguf_close releases the
 * image too); or, logged, with *out NULL, the errors of sl_gguf_open,
 * sl_pack_open, sl_pack_image_open and sl_shard_reader_load. Blocks on
 * file I/O. */
int sl_source_open_gguf(const char *path, sl_gguf **out);

/* The model at `path`, with the units `what` says loaded when it is packed
 * (ignored for a GGUF file, which is mapped whole). Returns 0 and the model
 * in *out (owned by the caller: sl_model_close releases everything); or,
 * logged, with *out NULL, the errors of sl_source_open_gguf and
 * sl_model_open. A corrupted shard among the units loaded fails the open
 * with -SL_EFORMAT, naming it. Blocks on file I/O. */
int sl_source_open_model(const char *path, sl_source_load what, sl_model **out);

#endif
