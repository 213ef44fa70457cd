/* Fetching a unit of a model into memory the way a pipeline slot holds it,
 * from a GGUF file or from a packed directory (model/pack.h): the one place
 * where loaders, and the coordinator's pinned loads, tell the two apart.
 *
 * A unit is named as the plan names it (coordinator/layout.h): the file
 * offset of its first byte and its length in bytes, `offset` and `nbytes`
 * of model/model.h's sl_unit. The destination receives the unit's image:
 * the byte at `offset` lands at dst + offset % 4096 (the "skip" of
 * loader/reader.h), the unit's bytes follow. From a GGUF file that is one
 * direct read of the span widened to 4 KiB; from a packed model, the unit's
 * stored bytes read, checksummed and decompressed (loader/shard.h).
 *
 * A fetcher serves one request at a time and allocates nothing per
 * request. */
#ifndef SL_LOADER_FETCH_H
#define SL_LOADER_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loader/reader.h"

typedef struct sl_fetcher sl_fetcher;

/* Opens the model at `path` (a GGUF file, or a directory made by `sluice
 * pack`) with direct-I/O options opts (NULL: the defaults) and checks that
 * its size (a packed model's: the size of the GGUF it was packed from) is
 * model_size, the size the plan was made for. Returns 0 and the fetcher in
 * *out (owned by the caller: sl_fetcher_close); or, logged, with *out NULL,
 * -SL_EFORMAT (another size: the model was swapped since it was planned),
 * or the errors of sl_reader_open and sl_pack_open (a truncated or missing
 * shard is refused here). Blocks on the opens. */
int sl_fetcher_open(const char *path, uint64_t model_size, const sl_reader_opts *opts, sl_fetcher **out);

/* Stops and frees the fetcher. NULL is accepted. */
void sl_fetcher_close(sl_fetcher *f);

/* Whether the model is a packed directory. */
bool sl_fetcher_packed(const sl_fetcher *f);

/* Fetches the unit [offset, offset + nbytes) into dst, which must be
 * SL_READER_ALIGN-aligned and hold at least the unit's span widened to
 * 4 KiB (the plan's io_bytes). Returns 0; or, logged once, with dst's
 * contents unspecified (never to be used): -SL_EINVAL (bad destination),
 * -SL_ENOTFOUND (a packed model has no such unit: it does not match the
 * plan), and the errors of sl_reader_read and sl_shard_reader_load
 * (-SL_EFORMAT: a corrupted shard; -SL_EIO: a failed read, a truncated
 * file). sl_fetcher_why then says what failed, naming the file (and, for a
 * packed model, the shard and the unit). Blocks on the reads. */
int sl_fetcher_fetch(sl_fetcher *f, uint64_t offset, uint64_t nbytes, void *dst, size_t dst_size);

/* The message of the last failed fetch ("" when none failed). Valid until
 * the next fetch. */
const char *sl_fetcher_why(const sl_fetcher *f);

#endif
