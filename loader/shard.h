/* Reads units of a packed model (model/pack.h) out of its shard files: the
 * stored bytes with direct I/O (loader/reader.h), their checksum, and the
 * decompression into the caller's buffer.
 *
 * The destination gets the unit's payload, [0, size): lead zero bytes and
 * the pieces back to back, which is the layout a pipeline slot holds a unit
 * in. An uncompressed unit is read straight into the destination (its
 * stored bytes start 4 KiB-aligned in the file, so one direct read puts
 * them in place); a compressed one is read into a staging buffer the
 * reader owns (sized once for the largest compressed unit of the pack) and
 * decompressed from there. Checksums cover the stored bytes and are
 * verified before anything is decompressed or returned; the decompressed
 * length must equal the unit's size. Every failure names the shard file
 * and the unit, and the destination's contents are then unspecified: a
 * caller must never use them.
 *
 * XXH3-64 runs at memory speed (tens of GB/s on one core), so checking
 * every unit on every load costs little beside reading it. A reader serves
 * one request at a time and allocates nothing per request. */
#ifndef SL_LOADER_SHARD_H
#define SL_LOADER_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "loader/reader.h"
#include "model/pack.h"

typedef struct sl_shard_reader sl_shard_reader;

/* A reader of p's units (p must outlive it), with direct-I/O options opts
 * (NULL: the defaults). Opens no file yet. Returns 0 and the reader in *out
 * (owned by the caller: sl_shard_reader_close); or, logged, -SL_ENOMEM,
 * -SL_EINVAL (bad options), or the errors of sl_reader_open. Does not
 * block beyond allocation and starting the reader's threads. */
int sl_shard_reader_open(const sl_pack *p, const sl_reader_opts *opts, sl_shard_reader **out);

/* Stops the reader and frees it. NULL is accepted. */
void sl_shard_reader_close(sl_shard_reader *r);

/* Bytes a destination must have to load unit u: its payload rounded up to
 * 4 KiB (an uncompressed unit is read in whole 4 KiB blocks). Pure. */
uint64_t sl_shard_dst_bytes(const sl_pack_unit *u);

/* Loads unit `unit` of the pack into dst (SL_READER_ALIGN-aligned, at
 * least sl_shard_dst_bytes of the unit). Returns 0; or, logged once naming
 * the shard and the unit, with dst's contents unspecified: -SL_EIO (a read
 * failed, the shard is shorter than the manifest says), -SL_EFORMAT (a
 * checksum mismatch, or data that does not decompress to the unit's size:
 * the shard is corrupted), -SL_EINVAL (a bad destination), -SL_ENOMEM.
 * sl_shard_reader_why then says what failed, in one line. Blocks on the
 * reads; allocates nothing. */
int sl_shard_reader_load(sl_shard_reader *r, uint32_t unit, void *dst, size_t dst_size);

/* The message of the last failed load ("" when none failed): the shard
 * file, the unit and what was wrong. Valid until the next load. */
const char *sl_shard_reader_why(const sl_shard_reader *r);

#endif
