/* The packed model format (`sluice pack`, DESIGN.md §4): a GGUF model cut
 * into per-layer shard files that loaders read with direct I/O, optionally
 * compressed, described by a versioned msgpack manifest. This module reads
 * and checks manifests; model/pack_write.h writes packed models,
 * loader/shard.h reads units out of shard files, model/source.h opens a
 * model from a GGUF file or a packed directory alike.
 *
 * A packed model is a directory:
 *   manifest.slpk    the manifest (layout below)
 *   blk.<N>.shard    layer N's unit and, for a mixture-of-experts model,
 *                    one unit per expert of layer N (model.h's expert units)
 *   head.shard       the head unit (output norm and projection; model.h)
 *   globals.shard    what no layer or head unit holds: the token embedding
 *                    (unless it is the tied output projection, then the head
 *                    holds it) and any other tensor (rope_freqs.weight)
 * Shard names are the manifest's business: readers take them from it.
 *
 * The image. Packing changes no byte of the model; it cuts the GGUF file
 * into units and stores each apart. The manifest keeps the GGUF header
 * (file bytes [0, data offset): magic, version, every metadata key, i.e.
 * hyper-parameters and tokenizer, and the tensor table with each tensor's
 * type, shape and offset) verbatim, and every unit lists the byte ranges of
 * the original file it holds ("pieces"). The header plus every unit's
 * pieces at their offsets is the "image": the GGUF file again, except that
 * bytes of no tensor (alignment padding) read as zeros. Offsets everywhere
 * stay those of the original file, so model/model.h describes a packed
 * model exactly as it describes its GGUF, the memory plan is the same, and
 * the forward pass sees the same bytes: identical output by construction.
 * Why a GGUF header inside the msgpack manifest rather than msgpack maps:
 * GGUF types every value exactly (u32 vs i32 vs u64, f32 vs f64, nested
 * arrays) where msgpack does not, and the header is then checked by the
 * same hardened, fuzzed parser as a GGUF file (model/gguf.h): one parser
 * of model metadata, not two, and nothing converted on the way.
 *
 * Units and payloads. A unit is what a loader moves in one go: a layer, the
 * head, the embedding, one other tensor, one expert of a mixture-of-experts
 * layer; its pieces are the unit's ranges as model/model.h defines them
 * (one for a unit whose tensors are contiguous in the file; an expert's
 * three matrix slices are three). Its payload is the unit's *image* as
 * model.h lays it out: each piece in a window of the file widened to
 * SL_PACK_ALIGN boundaries, the windows one after another:
 *     piece i's bytes at  at_i = W_i + offset_i % SL_PACK_ALIGN,
 *     W_0 = 0,  W_{i+1} = W_i + roundup(offset_i % SL_PACK_ALIGN + length_i),
 * zeros elsewhere (roundup: to a multiple of SL_PACK_ALIGN), the payload
 * ending with the last piece. For a one-piece unit that is
 *     lead zero bytes | the piece,   lead = offset % SL_PACK_ALIGN,
 * the unit as it lies in a 4 KiB-aligned window of the file. This is how a
 * pipeline slot holds a unit (coordinator/layout.h), so an uncompressed
 * unit goes from storage into its slot with one direct read and no copy,
 * and a compressed one with one read and one decompression, whatever the
 * number of pieces. The payload is stored as is
 * (codec "none"), as one LZ4 block ("lz4") or as one zstd frame ("zstd").
 * Each unit's stored bytes start at a multiple of SL_PACK_ALIGN in its
 * shard file (zero padding between units), so direct I/O needs no
 * unaligned head; they carry an XXH3-64 checksum, verified before the
 * bytes are decompressed or used.
 *
 * Manifest file (little-endian frame, then a msgpack body):
 *    0  8 bytes  magic "SLUICEPK"
 *    8  u32      format version, SL_PACK_VERSION
 *   12  u32      flags, 0 (readers refuse others)
 *   16  u64      body length in bytes; the file is exactly 32 + that long
 *   24  u64      XXH3-64 of the body: an edited or damaged manifest is
 *                refused before it is parsed
 *   32  body     a msgpack map with exactly these string keys:
 *     "source"      str   name of the GGUF file it was packed from (for
 *                         people; up to 4096 bytes)
 *     "image_size"  uint  size of that GGUF file: the image
 *     "header"      bin   the GGUF header, image bytes [0, data offset)
 *     "requant"     str   "" when tensors are the GGUF's own; else the
 *                         re-quantization applied before packing (e.g.
 *                         "g4/128"); the header then describes the
 *                         re-quantized tensors
 *     "files"       array of [name str, size uint]: the shard files.
 *                   A name is 1..255 bytes of [A-Za-z0-9._-], not "." or
 *                   "..", no two alike; size is the file's exact size
 *     "units"       array of maps, each with exactly these keys:
 *       "name"    str   1..127 bytes, e.g. "blk.3", "head", "token_embd.weight"
 *       "kind"    str   "layer" | "head" | "embd" | "misc" | "expert"
 *       "layer"   uint  layer and expert units: the layer; else 0xffffffff
 *       "expert"  uint  expert units: the expert; else 0xffffffff
 *       "file"    uint  index into "files"
 *       "offset"  uint  where the stored bytes start in the file; a
 *                       multiple of SL_PACK_ALIGN
 *       "stored"  uint  stored bytes (1..); offset + stored <= file size
 *       "size"    uint  payload bytes: at_last + length_last (above);
 *                       equal to stored for codec "none"
 *       "codec"   str   "none" | "lz4" | "zstd"
 *       "xxh3"    uint  XXH3-64 (seed 0) of the stored bytes
 *       "pieces"  array of 1..SL_PACK_MAX_PIECES [offset uint, length uint]:
 *                       image ranges, each non-empty and inside
 *                       [header length, image_size), in payload order
 * Unknown keys, missing keys, wrong types and values out of range are all
 * refused (a reader of version 1 understands all of version 1; anything
 * else gets a new version). Beyond the structure, sl_pack_image_open
 * checks the header against the image size and that the pieces cover every
 * tensor (an expert tensor is covered by one piece per expert), so a packed
 * model whose image has holes is refused at open, never computed with.
 *
 * A manifest is read whole into memory and checked before anything uses
 * it; every length and count is bounded by the bytes present. */
#ifndef SL_MODEL_PACK_H
#define SL_MODEL_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"

#define SL_PACK_VERSION 1u
#define SL_PACK_MAGIC "SLUICEPK"
#define SL_PACK_FRAME_BYTES 32u
#define SL_PACK_MANIFEST "manifest.slpk" /* file name inside the directory */
#define SL_PACK_ALIGN 4096u              /* unit alignment in shard files */
#define SL_PACK_MAX_PIECES 32u           /* pieces of one unit (>= model.h's SL_UNIT_MAX_RANGES) */
#define SL_PACK_MAX_UNITS (1u << 20)
#define SL_PACK_MAX_FILES (1u << 16)
#define SL_PACK_MAX_MANIFEST (1ull << 30) /* bytes */
#define SL_PACK_MAX_IMAGE (1ull << 46)    /* 64 TiB: beyond any model */
#define SL_PACK_NONE UINT32_MAX           /* "layer"/"expert" of units that have none */

typedef enum sl_pack_kind {
    SL_PACK_LAYER = 0,  /* one transformer layer (model.h sl_model_layer_unit) */
    SL_PACK_HEAD = 1,   /* the head unit (sl_model_head_unit) */
    SL_PACK_EMBD = 2,   /* the token embedding, when the head does not hold it */
    SL_PACK_MISC = 3,   /* one other tensor no unit above holds (rope_freqs.weight) */
    SL_PACK_EXPERT = 4, /* one expert of a mixture-of-experts layer */
    SL_PACK_KIND_COUNT
} sl_pack_kind;

typedef enum sl_pack_codec {
    SL_PACK_CODEC_NONE = 0,
    SL_PACK_CODEC_LZ4 = 1,
    SL_PACK_CODEC_ZSTD = 2,
    SL_PACK_CODEC_COUNT
} sl_pack_codec;

/* A byte range of the image, and where it lies in its unit's payload. */
typedef struct sl_pack_piece {
    uint64_t offset;
    uint64_t nbytes;
    uint64_t at; /* at_i above (derived from the pieces, not stored) */
} sl_pack_piece;

/* One unit, as the manifest describes it (checked). */
typedef struct sl_pack_unit {
    const char *name; /* NUL-terminated, owned by the pack */
    sl_pack_kind kind;
    uint32_t layer, expert; /* SL_PACK_NONE where the kind has none */
    uint32_t file;          /* index of its shard file */
    uint64_t offset;        /* of the stored bytes in the file (multiple of SL_PACK_ALIGN) */
    uint64_t stored;        /* stored bytes */
    uint64_t size;          /* payload bytes */
    sl_pack_codec codec;
    uint64_t xxh3;
    uint32_t n_pieces;
    sl_pack_piece pieces[SL_PACK_MAX_PIECES];
} sl_pack_unit;

typedef struct sl_pack sl_pack;

/* Reads DIR/manifest.slpk, checks it (frame, checksum, structure) and that
 * every shard file exists with the size the manifest records (a truncated
 * or replaced shard is refused here, naming it). Returns 0 and the pack in
 * *out (owned by the caller: sl_pack_close); or, logged once with the file
 * and the values, with *out NULL: -SL_EIO (a file cannot be read, a shard
 * is missing or has another size), -SL_EFORMAT (not a manifest, checksum
 * mismatch, malformed body), -SL_EVERSION (another format version),
 * -SL_EUNSUPPORTED (unknown codec or kind), -SL_ERANGE (a value out of
 * range), -SL_ENOMEM. Blocks on file I/O. */
int sl_pack_open(const char *dir, sl_pack **out);

/* Checks a manifest image in memory (len bytes at buf) as sl_pack_open
 * does, without touching any file; `dir` (may be NULL) is only recorded
 * for sl_pack_file_path. Same errors minus the shard checks. The pack
 * copies what it keeps; buf may go away afterwards. For sl_pack_open and
 * the fuzzer. */
int sl_pack_parse(const void *buf, size_t len, const char *dir, sl_pack **out);

/* Frees the pack. NULL is accepted. */
void sl_pack_close(sl_pack *p);

/* The directory given to open (or to parse; may be NULL there). */
const char *sl_pack_dir(const sl_pack *p);

/* Size of the image (the original GGUF file) and the GGUF header bytes.
 * Valid until close. */
uint64_t sl_pack_image_size(const sl_pack *p);
const uint8_t *sl_pack_header(const sl_pack *p, size_t *len);

/* The "source" and "requant" strings (NUL-terminated; "" when empty). */
const char *sl_pack_source(const sl_pack *p);
const char *sl_pack_requant(const sl_pack *p);

/* Shard files: count, name, recorded size and "<dir>/<name>" (NULL when
 * the pack was parsed without a directory). i < count (asserted). */
uint32_t sl_pack_file_count(const sl_pack *p);
const char *sl_pack_file_name(const sl_pack *p, uint32_t i);
uint64_t sl_pack_file_size(const sl_pack *p, uint32_t i);
const char *sl_pack_file_path(const sl_pack *p, uint32_t i);

/* Units: count and unit i (i < count, asserted). Valid until close. */
uint32_t sl_pack_unit_count(const sl_pack *p);
const sl_pack_unit *sl_pack_unit_at(const sl_pack *p, uint32_t i);

/* Index of the unit whose first piece starts at `offset` and whose pieces
 * hold `nbytes` bytes in all, which is how model/model.h's sl_unit offset
 * and nbytes identify a unit; -1 (not logged) when there is none. Linear
 * in the unit count: for start-up. */
int64_t sl_pack_unit_find(const sl_pack *p, uint64_t offset, uint64_t nbytes);

/* Largest stored size among compressed units (0 when none is compressed),
 * and largest payload size among all units. */
uint64_t sl_pack_max_compressed(const sl_pack *p);
uint64_t sl_pack_max_size(const sl_pack *p);

/* Maps a zero-filled image of sl_pack_image_size bytes (anonymous memory;
 * pages that are never written cost nothing), copies the header into it and
 * parses it as a GGUF (model/gguf.h), then checks that the units' pieces
 * cover every tensor. On success returns 0, the GGUF handle in
 * *g (owned by the caller: sl_gguf_close also unmaps the image) and a
 * writable pointer to the image in *image (valid until then), where the
 * caller places units' pieces (sl_pack_unit_place). Tensor data is all
 * zeros until then. On failure, logged, with *g NULL: the errors of
 * sl_gguf_open_mem, -SL_EFORMAT (a tensor no piece holds), -SL_ENOMEM.
 * Does not block beyond the mapping. */
int sl_pack_image_open(const sl_pack *p, sl_gguf **g, uint8_t **image);

/* Lays out u's pieces (offsets, lengths): computes each one's `at` and
 * returns the payload size. Pure; for the packer and the parser. */
uint64_t sl_pack_unit_layout(sl_pack_unit *u);

/* Copies a unit's payload (u->size bytes) to its pieces' places in the
 * image. Never fails; the pack checked the ranges. */
void sl_pack_unit_place(const sl_pack_unit *u, const void *payload, uint8_t *image);

/* Names used in the manifest: "layer", ...; "none", "lz4", "zstd". Static
 * strings; "?" for values out of range. */
const char *sl_pack_kind_name(sl_pack_kind k);
const char *sl_pack_codec_name(sl_pack_codec c);

/* XXH3-64 with seed 0 of n bytes: the checksum of stored bytes. Pure. */
uint64_t sl_pack_checksum(const void *data, size_t n);

#endif
