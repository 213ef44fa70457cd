/* Streaming GGUF writer (versions 3 and 2; the layout is in model/gguf.h).
 *
 * Use in three phases:
 *   1. define: add metadata (sl_gguf_writer_add_*) and tensor infos
 *      (sl_gguf_writer_add_tensor), in any order;
 *   2. sl_gguf_writer_write_header: computes every tensor's offset and emits
 *      magic, counts, metadata, tensor infos and the padding up to the data
 *      section;
 *   3. sl_gguf_writer_write_data, as often as needed: the tensors' bytes,
 *      in the order the tensors were added, in chunks of any size; the writer
 *      inserts the padding between tensors. sl_gguf_writer_finish checks
 *      that every byte was supplied and flushes.
 * Only the header (metadata and tensor infos) is held in memory; tensor data
 * goes straight to the sink, so files far larger than RAM can be written.
 *
 * Layout decisions, matching the reference toolchain: each tensor starts at
 * a multiple of the alignment (`general.alignment` when it was added, which
 * must then be a u32 power of two; 32 otherwise) from the data section,
 * which itself starts at a multiple of the alignment; every tensor's data,
 * the last one included, is padded with zero bytes to the alignment.
 *
 * Metadata values: every add function takes a key. Outside an array the key
 * names a new top-level entry (non-empty, at most 65535 bytes, not added
 * before). Between sl_gguf_writer_arr_begin and sl_gguf_writer_arr_end the
 * key must be NULL and the call appends one element, whose type must be the
 * array's element type; arr_begin with a NULL key inside an array of ARRAY
 * opens a nested array. Fixed-size values are written little-endian.
 *
 * Errors: misuse (a wrong phase, a bad key, name, type or shape, a
 * duplicate, too much or too little data) returns -SL_EINVAL and logs once
 * with the values involved; the writer is unchanged and can still be used.
 * Allocation failure returns -SL_ENOMEM (writer unchanged). A failed write
 * to the sink returns -SL_EIO, after which every call fails with -SL_EIO.
 * No function blocks except on the sink's I/O. A writer is not thread-safe. */
#ifndef SL_MODEL_GGUF_WRITE_H
#define SL_MODEL_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model/gguf.h"

typedef struct sl_gguf_writer sl_gguf_writer;

/* Create a writer whose output goes to a stdio stream (flushed, not closed,
 * by finish), to a file descriptor (written with write(2) from the current
 * position, not closed), or to a growable memory buffer (taken with
 * sl_gguf_writer_mem_take). Return 0 and store the writer in *out (owned by
 * the caller: sl_gguf_writer_free), or -SL_ENOMEM / -SL_EINVAL. */
int sl_gguf_writer_new_file(FILE *f, sl_gguf_writer **out);
int sl_gguf_writer_new_fd(int fd, sl_gguf_writer **out);
int sl_gguf_writer_new_mem(sl_gguf_writer **out);

/* Frees the writer and, for a memory writer, any buffer not taken. Does not
 * close the stream or descriptor. NULL is accepted. */
void sl_gguf_writer_free(sl_gguf_writer *w);

/* Version number written in the header: 3 (default) or 2 (the same layout
 * for little-endian files). Before the header only; -SL_EINVAL otherwise. */
int sl_gguf_writer_set_version(sl_gguf_writer *w, uint32_t version);

/* --- metadata (define phase) --- */
int sl_gguf_writer_add_u8(sl_gguf_writer *w, const char *key, uint8_t v);
int sl_gguf_writer_add_i8(sl_gguf_writer *w, const char *key, int8_t v);
int sl_gguf_writer_add_u16(sl_gguf_writer *w, const char *key, uint16_t v);
int sl_gguf_writer_add_i16(sl_gguf_writer *w, const char *key, int16_t v);
/* `general.alignment` must be added with this function; its value must be
 * a power of two (-SL_EINVAL otherwise). */
int sl_gguf_writer_add_u32(sl_gguf_writer *w, const char *key, uint32_t v);
int sl_gguf_writer_add_i32(sl_gguf_writer *w, const char *key, int32_t v);
int sl_gguf_writer_add_f32(sl_gguf_writer *w, const char *key, float v);
int sl_gguf_writer_add_bool(sl_gguf_writer *w, const char *key, bool v);
int sl_gguf_writer_add_u64(sl_gguf_writer *w, const char *key, uint64_t v);
int sl_gguf_writer_add_i64(sl_gguf_writer *w, const char *key, int64_t v);
int sl_gguf_writer_add_f64(sl_gguf_writer *w, const char *key, double v);
/* A NUL-terminated string. */
int sl_gguf_writer_add_str(sl_gguf_writer *w, const char *key, const char *s);
/* `len` bytes at s (may contain NUL bytes; s may be NULL when len is 0). */
int sl_gguf_writer_add_strn(sl_gguf_writer *w, const char *key, const char *s, uint64_t len);

/* An array of `count` fixed-size elements of type `type` (any type except
 * STRING and ARRAY) from the C array `elems` of the matching C type
 * (uint8_t for U8, ..., float for F32, double for F64, bool for BOOL).
 * The values are copied. */
int sl_gguf_writer_add_arr(sl_gguf_writer *w, const char *key, sl_gguf_vtype type, const void *elems,
                           uint64_t count);
/* An array of `count` NUL-terminated strings (copied). */
int sl_gguf_writer_add_arr_str(sl_gguf_writer *w, const char *key, const char *const *strs, uint64_t count);

/* Opens an array of `type` elements (any type; ARRAY for arrays of arrays).
 * Elements are added with the add functions and a NULL key; the count is
 * filled in by sl_gguf_writer_arr_end. Nesting is limited to
 * SL_GGUF_WRITER_MAX_DEPTH open arrays. */
#define SL_GGUF_WRITER_MAX_DEPTH 8
int sl_gguf_writer_arr_begin(sl_gguf_writer *w, const char *key, sl_gguf_vtype type);
/* Closes the innermost open array; -SL_EINVAL when none is open. */
int sl_gguf_writer_arr_end(sl_gguf_writer *w);

/* --- tensors (define phase) --- */

/* Declares a tensor: `name` (1..63 bytes, unique), n_dims in 1..4,
 * ne[0..n_dims) >= 0 innermost first, ne[0] a multiple of the type's block
 * size, `type` an sl_dtype id (model/dtype.h); the byte size must fit in 64
 * bits. Its data is supplied later, in declaration order. */
int sl_gguf_writer_add_tensor(sl_gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne,
                              uint32_t type);

/* --- output --- */

/* Ends the define phase and writes the header (no array may be open).
 * Returns 0, -SL_EINVAL, -SL_ENOMEM or -SL_EIO. Blocks on the sink. */
int sl_gguf_writer_write_header(sl_gguf_writer *w);

/* Appends n bytes of tensor data (any chunking, crossing tensor boundaries
 * allowed). -SL_EINVAL before the header or when n exceeds the bytes still
 * expected (nothing is then written); -SL_EIO on a sink failure. Blocks on
 * the sink; does not copy the data except into a memory sink. */
int sl_gguf_writer_write_data(sl_gguf_writer *w, const void *data, size_t n);

/* Bytes of tensor data still expected by write_data, over all tensors
 * (before the header: the total). Padding is not counted. Never fails. */
uint64_t sl_gguf_writer_data_remaining(const sl_gguf_writer *w);

/* Writes the header when that has not happened (a file without tensors
 * needs no other call), checks that all tensor data was supplied
 * (-SL_EINVAL naming the first incomplete tensor otherwise) and flushes a
 * stdio sink (-SL_EIO on failure). Blocks on the sink. */
int sl_gguf_writer_finish(sl_gguf_writer *w);

/* After the header is written: absolute file offset of tensor i's data, and
 * the total size of the file. -SL_EINVAL before the header or for i out of
 * range. */
int sl_gguf_writer_tensor_offset(const sl_gguf_writer *w, uint64_t i, uint64_t *offset);
int sl_gguf_writer_file_size(const sl_gguf_writer *w, uint64_t *size);

/* For a memory writer after a successful finish: hands the image to the
 * caller (free() it) and leaves the writer without one. -SL_EINVAL for
 * another sink, before finish, or when already taken. */
int sl_gguf_writer_mem_take(sl_gguf_writer *w, uint8_t **buf, size_t *len);

#endif
