/* Tensor element types as GGUF numbers them, with their block geometry.
 *
 * Every type is stored in blocks of `block` elements occupying `block_bytes`
 * bytes; a row of n elements (n a multiple of block) takes
 * n / block * block_bytes bytes. The table covers every type GGUF files carry,
 * so that any well-formed file can be parsed and its offsets checked; which of
 * them sluice can compute with is a separate question (`supported`). The block
 * layouts of supported types are documented in compute/quant.h, those of
 * sluice's own low-bit types (ids 224..232) in compute/lowbit.h. */
#ifndef SL_MODEL_DTYPE_H
#define SL_MODEL_DTYPE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum sl_dtype {
    SL_F32 = 0, SL_F16 = 1, SL_Q4_0 = 2, SL_Q4_1 = 3,
    SL_Q5_0 = 6, SL_Q5_1 = 7, SL_Q8_0 = 8, SL_Q8_1 = 9,
    SL_Q2_K = 10, SL_Q3_K = 11, SL_Q4_K = 12, SL_Q5_K = 13, SL_Q6_K = 14, SL_Q8_K = 15,
    SL_IQ2_XXS = 16, SL_IQ2_XS = 17, SL_IQ3_XXS = 18, SL_IQ1_S = 19, SL_IQ4_NL = 20,
    SL_IQ3_S = 21, SL_IQ2_S = 22, SL_IQ4_XS = 23,
    SL_I8 = 24, SL_I16 = 25, SL_I32 = 26, SL_I64 = 27, SL_F64 = 28, SL_IQ1_M = 29,
    SL_BF16 = 30, SL_TQ1_0 = 34, SL_TQ2_0 = 35, SL_MXFP4 = 39,
    /* sluice's own grouped low-bit types (compute/lowbit.h): private ids far
     * above ggml's, so other readers refuse such files instead of misreading
     * them. */
    SL_G2_128 = 224, SL_G3_128 = 225, SL_G4_128 = 226,
    SL_G2_64 = 227, SL_G3_64 = 228, SL_G4_64 = 229,
    SL_G2_32 = 230, SL_G3_32 = 231, SL_G4_32 = 232,
    SL_DTYPE_COUNT = 233 /* one past the largest id; most ids below are unused */
} sl_dtype;

typedef struct sl_dtype_info {
    const char *name;     /* "Q4_K", ...; NULL for an unused id */
    uint32_t block;       /* elements per block */
    uint32_t block_bytes; /* bytes per block */
    bool supported;       /* sluice has kernels for it */
} sl_dtype_info;

/* Geometry of type id `t`, or NULL when t is not a type GGUF defines. */
const sl_dtype_info *sl_dtype_get(uint32_t t);

/* Name of type id `t`; "unknown" for ids that are not types. Static string. */
const char *sl_dtype_name(uint32_t t);

/* Bytes taken by n elements of type t, or 0 when t is unknown, n is not a
 * multiple of the block size, or the size overflows. */
uint64_t sl_dtype_bytes(uint32_t t, uint64_t n);

#endif
