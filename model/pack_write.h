/* Writing packed models (`sluice pack`): a GGUF model cut into per-layer
 * shard files with a manifest, in the format model/pack.h documents.
 *
 * Units: one per layer (blk.<N>.shard) followed, for a mixture-of-experts
 * model, by one per expert of that layer in the same file (the expert's
 * three matrix slices: model.h's expert units); the head (head.shard); and
 * in globals.shard the token embedding when the head does not hold it
 * (kind "embd") and one unit per other tensor that no unit holds (kind
 * "misc"). A unit's pieces are model.h's ranges of it: byte ranges of the
 * GGUF file, copied unchanged.
 *
 * Compression is per unit: with a codec, a unit is stored compressed when
 * that saves at least 1/min_gain_div of its bytes (default 1/32), and as
 * it is otherwise, so that weights that do not compress (most quantized
 * tensors) cost no decompression and keep the single direct read into a
 * slot. The packer is single-threaded and streams: it holds one unit and
 * its compressed form in memory at a time. */
#ifndef SL_MODEL_PACK_WRITE_H
#define SL_MODEL_PACK_WRITE_H

#include <stdint.h>

#include "model/gguf.h"
#include "model/pack.h"

#define SL_PACK_ZSTD_DEFAULT_LEVEL 3

typedef struct sl_pack_opts {
    sl_pack_codec codec;   /* NONE, LZ4 or ZSTD */
    int level;             /* zstd level 1..22 (0: SL_PACK_ZSTD_DEFAULT_LEVEL); others ignore it */
    uint32_t min_gain_div; /* keep a compressed unit when it saves >= 1/min_gain_div of its
                            * bytes; 0: 32. UINT32_MAX: always keep it (tests) */
    const char *requant;   /* recorded as the manifest's "requant" (NULL: ""): what was applied
                            * to the GGUF's tensors before packing */
} sl_pack_opts;

/* What a pack produced. */
typedef struct sl_pack_stats {
    uint32_t n_units, n_files, n_compressed; /* units, shard files, units stored compressed */
    uint64_t payload_bytes;                  /* sum of the units' payloads */
    uint64_t stored_bytes;                   /* sum of their stored bytes */
    uint64_t dir_bytes;                      /* every file written, manifest included */
} sl_pack_stats;

/* Parses a --compress value: "none", "lz4", "zstd" or "zstd:LEVEL" (LEVEL
 * 1..22) into opts->codec and opts->level. Returns 0, or -SL_EINVAL (not
 * logged) for anything else. Pure. */
int sl_pack_parse_codec(const char *s, sl_pack_opts *opts);

/* Packs the GGUF model g (which sluice must be able to run: model.h's
 * checks apply) into the directory `dir`, which is created and must not
 * exist or be empty. `source` is the GGUF's file name for the manifest.
 * Writes the shard files, then the manifest last (through a temporary
 * name and a rename), so a directory with a manifest holds a complete
 * pack. Returns 0 and fills *stats (may be NULL); or, logged, the errors
 * of sl_model_from_gguf, -SL_EINVAL (bad options, a non-empty directory),
 * -SL_EIO (creating or writing a file), -SL_ERANGE (a unit too large for
 * LZ4), -SL_ENOMEM; files written before a failure are left for the
 * caller to remove (the manifest is not among them). Blocks on file I/O. */
int sl_pack_write(const sl_gguf *g, const char *source, const char *dir, const sl_pack_opts *opts,
                  sl_pack_stats *stats);

#endif
