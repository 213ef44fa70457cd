/* GGUF reader (versions 2 and 3).
 *
 * Layout of a GGUF file (all integers little-endian):
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x { string key | u32 value type | value }
 *   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset }
 *   padding to `general.alignment` (default 32) | tensor data
 * where a string is u64 length + bytes (not NUL-terminated) and an array value
 * is u32 element type + u64 count + elements (arrays may nest).
 *
 * The reader is hardened against hostile files: every count, length,
 * dimension and offset is checked against the bytes that remain and for
 * overflow before it is used, and every allocation is bounded by a small
 * multiple of the size of the file. Any violation fails the open with
 * SL_EFORMAT (SL_EUNSUPPORTED for a GGUF version other than 2 and 3) and one
 * log line that names the problem and where it was found.
 *
 * Strings returned by the accessors point into the file image and are valid
 * until sl_gguf_close(); they are not NUL-terminated (use `len`). */
#ifndef SL_MODEL_GGUF_H
#define SL_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sl_gguf_vtype {
    SL_GGUF_U8 = 0, SL_GGUF_I8 = 1, SL_GGUF_U16 = 2, SL_GGUF_I16 = 3,
    SL_GGUF_U32 = 4, SL_GGUF_I32 = 5, SL_GGUF_F32 = 6, SL_GGUF_BOOL = 7,
    SL_GGUF_STRING = 8, SL_GGUF_ARRAY = 9, SL_GGUF_U64 = 10, SL_GGUF_I64 = 11,
    SL_GGUF_F64 = 12, SL_GGUF_VTYPE_COUNT = 13
} sl_gguf_vtype;

typedef struct sl_str {
    const char *ptr;
    uint64_t len;
} sl_str;

/* A metadata array: `count` elements of type `type`. Fixed-size elements lie
 * contiguously at `data` (little-endian, possibly unaligned); strings and
 * nested arrays are reached with sl_gguf_arr_str / sl_gguf_arr_arr. */
typedef struct sl_gguf_arr {
    sl_gguf_vtype type;
    uint64_t count;
    const uint8_t *data;            /* first element */
    const uint64_t *offs;           /* STRING elements: offset of each from `data` */
    const struct sl_gguf_arr *sub;  /* ARRAY elements: one descriptor each */
} sl_gguf_arr;

#define SL_GGUF_MAX_DIMS 4

typedef struct sl_gguf_tensor {
    sl_str name;
    uint32_t n_dims;
    int64_t ne[SL_GGUF_MAX_DIMS]; /* dims, innermost first; unused dims are 1 */
    uint32_t type;                /* an sl_dtype id (model/dtype.h) */
    uint64_t offset;              /* from the start of the file (data start + relative offset) */
    uint64_t nbytes;
} sl_gguf_tensor;

typedef struct sl_gguf sl_gguf;

/* Maps the file at `path` read-only and parses it. On success stores a new
 * handle in *out and returns 0; on failure returns -SL_EIO (cannot open or
 * map), -SL_EFORMAT or -SL_EUNSUPPORTED, logs why, and leaves *out NULL.
 * Blocks on file I/O. The caller owns the handle: sl_gguf_close(). */
int sl_gguf_open(const char *path, sl_gguf **out);

/* Parses a GGUF image already in memory (`len` bytes at `buf`, which must
 * stay valid and unchanged until sl_gguf_close). Same errors as
 * sl_gguf_open. Used by the fuzzer and by tests. */
int sl_gguf_open_mem(const void *buf, size_t len, sl_gguf **out);

/* Parses an image in a private mapping the caller made with mmap(2) (`len`
 * bytes at `map`) and takes the mapping over: sl_gguf_close unmaps it, and
 * so does this function when it fails. Same errors as sl_gguf_open_mem.
 * For images assembled in memory (a packed model, model/pack.h); the
 * caller may keep writing tensor data into the mapping until close. */
int sl_gguf_open_mapping(void *map, size_t len, sl_gguf **out);

/* Releases the handle and its mapping. NULL is accepted. */
void sl_gguf_close(sl_gguf *g);

uint32_t sl_gguf_version(const sl_gguf *g);
uint64_t sl_gguf_file_size(const sl_gguf *g);
uint32_t sl_gguf_alignment(const sl_gguf *g);
/* Offset of the tensor data section from the start of the file. */
uint64_t sl_gguf_data_offset(const sl_gguf *g);
/* The whole file image (valid until close). */
const uint8_t *sl_gguf_base(const sl_gguf *g);

/* --- metadata --- */
uint64_t sl_gguf_kv_count(const sl_gguf *g);
/* Key and type of entry i (i < kv_count). */
sl_str sl_gguf_kv_key(const sl_gguf *g, uint64_t i);
sl_gguf_vtype sl_gguf_kv_type(const sl_gguf *g, uint64_t i);
/* Index of `key`, or -1 when absent. */
int64_t sl_gguf_find(const sl_gguf *g, const char *key);

/* Typed getters by key. Return 0 and store the value; -SL_ENOTFOUND when the
 * key is absent; -SL_ETYPE when the value has an incompatible type (integers
 * convert between widths when the value fits; get_f32 also accepts F64 and
 * integers). They do not log: absence is often normal. */
int sl_gguf_get_u64(const sl_gguf *g, const char *key, uint64_t *out);
int sl_gguf_get_u32(const sl_gguf *g, const char *key, uint32_t *out);
int sl_gguf_get_i64(const sl_gguf *g, const char *key, int64_t *out);
int sl_gguf_get_f32(const sl_gguf *g, const char *key, float *out);
int sl_gguf_get_bool(const sl_gguf *g, const char *key, bool *out);
int sl_gguf_get_str(const sl_gguf *g, const char *key, sl_str *out);
int sl_gguf_get_arr(const sl_gguf *g, const char *key, sl_gguf_arr *out);
/* The same getters by entry index (no type conversion for arrays/strings). */
int sl_gguf_kv_u64(const sl_gguf *g, uint64_t i, uint64_t *out);
int sl_gguf_kv_i64(const sl_gguf *g, uint64_t i, int64_t *out);
int sl_gguf_kv_f64(const sl_gguf *g, uint64_t i, double *out);
int sl_gguf_kv_str(const sl_gguf *g, uint64_t i, sl_str *out);
int sl_gguf_kv_arr(const sl_gguf *g, uint64_t i, sl_gguf_arr *out);

/* Element access for arrays; `i` must be < count (SL_ASSERT). */
sl_str sl_gguf_arr_str(const sl_gguf_arr *a, uint64_t i);      /* type STRING */
void sl_gguf_arr_arr(const sl_gguf_arr *a, uint64_t i, sl_gguf_arr *out); /* type ARRAY */
int64_t sl_gguf_arr_i64(const sl_gguf_arr *a, uint64_t i);     /* any integer or BOOL type */
double sl_gguf_arr_f64(const sl_gguf_arr *a, uint64_t i);      /* any numeric type */

/* --- tensors --- */
uint64_t sl_gguf_tensor_count(const sl_gguf *g);
const sl_gguf_tensor *sl_gguf_tensor_at(const sl_gguf *g, uint64_t i);
/* Tensor named `name`, or NULL. */
const sl_gguf_tensor *sl_gguf_tensor_find(const sl_gguf *g, const char *name);
/* Pointer to the tensor's bytes inside the image. */
const void *sl_gguf_tensor_data(const sl_gguf *g, const sl_gguf_tensor *t);

/* True when s equals the NUL-terminated string c. */
bool sl_str_eq(sl_str s, const char *c);

#endif
