/* Tensor types: block layouts, reference dequantizers, dot products and
 * quantizers.
 *
 * This header owns the byte layout of every block type sluice computes with,
 * except sluice's own grouped low-bit types (compute/lowbit.h; the lookups
 * below forward to that module's reference kernels for them).
 * The layouts are GGUF's (identical to the reference toolchain's), so tensor
 * data is used straight from the mapped file. All multi-byte fields are
 * little-endian; quant.c refuses to build on a big-endian host rather than
 * swap. "f16" fields are IEEE binary16 bit patterns (common/half.h).
 *
 * A tensor of type T is a sequence of blocks; block i holds elements
 * [i*B, (i+1)*B) where B is the type's block size (model/dtype.h). Rows are
 * whole numbers of blocks. Every block size below is even, so a tensor that
 * starts 2-byte aligned (GGUF aligns tensor data to 32) has every block's
 * f16 fields aligned; the kernels require that alignment.
 *
 * The functions here are the portable reference ("generic") kernels. They
 * are reached through the dispatch table (compute/kernels.h) by callers and
 * through the lookups below by kernels.c and by tests of native variants. */
#ifndef SL_COMPUTE_QUANT_H
#define SL_COMPUTE_QUANT_H

#include <stdint.h>

#include "common/half.h"
#include "compute/kernels.h"

#define SL_QK 32    /* elements per block of the legacy types (Q4_0 ... Q8_0) */
#define SL_QK_K 256 /* elements per super-block of the k-quants (Q2_K ... Q6_K) */

/* ---- Float types (block of 1 element) -------------------------------------
 *   F32:  4 bytes, IEEE binary32.
 *   F16:  2 bytes, IEEE binary16.
 *   BF16: 2 bytes, the top half of a binary32 (bfloat16).
 */

/* ---- Legacy types: 32 elements per block ---------------------------------
 * Element j of a block is called x[j], j = 0..31. A 4-bit block stores x[j]
 * (j < 16) in the LOW nibble of qs[j] and x[j+16] in the HIGH nibble of
 * qs[j]: the first half of the block in low nibbles, the second in high. */

/* Q4_0, 18 bytes. x[j] = d * (q[j] - 8), q[j] in 0..15.
 *   [0..1]   f16 d       scale
 *   [2..17]  u8 qs[16]   q[j] = qs[j] & 15, q[j+16] = qs[j] >> 4 */
typedef struct sl_block_q4_0 {
    uint16_t d;
    uint8_t qs[SL_QK / 2];
} sl_block_q4_0;
_Static_assert(sizeof(sl_block_q4_0) == 18, "Q4_0 block is 18 bytes");

/* Q4_1, 20 bytes. x[j] = d * q[j] + m, q[j] in 0..15.
 *   [0..1]   f16 d       scale
 *   [2..3]   f16 m       offset (the block minimum)
 *   [4..19]  u8 qs[16]   nibbles as in Q4_0 */
typedef struct sl_block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[SL_QK / 2];
} sl_block_q4_1;
_Static_assert(sizeof(sl_block_q4_1) == 20, "Q4_1 block is 20 bytes");

/* Q5_0, 22 bytes. x[j] = d * (q[j] - 16), q[j] in 0..31.
 *   [0..1]   f16 d       scale
 *   [2..5]   u8 qh[4]    read as one u32 h (little-endian): bit j of h is
 *                        bit 4 of q[j] (j = 0..31)
 *   [6..21]  u8 qs[16]   low 4 bits of q, nibbles as in Q4_0 */
typedef struct sl_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[SL_QK / 2];
} sl_block_q5_0;
_Static_assert(sizeof(sl_block_q5_0) == 22, "Q5_0 block is 22 bytes");

/* Q5_1, 24 bytes. x[j] = d * q[j] + m, q[j] in 0..31.
 *   [0..1]   f16 d       scale
 *   [2..3]   f16 m       offset (the block minimum)
 *   [4..7]   u8 qh[4]    high bits as in Q5_0
 *   [8..23]  u8 qs[16]   low 4 bits, nibbles as in Q4_0 */
typedef struct sl_block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[SL_QK / 2];
} sl_block_q5_1;
_Static_assert(sizeof(sl_block_q5_1) == 24, "Q5_1 block is 24 bytes");

/* Q8_0, 34 bytes. x[j] = d * qs[j].
 *   [0..1]   f16 d       scale
 *   [2..33]  i8 qs[32]   one signed byte per element, in order */
typedef struct sl_block_q8_0 {
    uint16_t d;
    int8_t qs[SL_QK];
} sl_block_q8_0;
_Static_assert(sizeof(sl_block_q8_0) == 34, "Q8_0 block is 34 bytes");

/* ---- k-quants: 256 elements per super-block --------------------------------
 * A super-block is split into sub-blocks (16 of 16 elements for Q2_K, Q3_K,
 * Q6_K; 8 of 32 for Q4_K, Q5_K), each with its own small integer scale (and
 * min), which are in turn scaled by the f16 super-block factors d (and dmin).
 *
 * Bit-plane ordering shared by Q2_K and Q3_K: the 256 elements form two
 * halves of 128; half h uses qs[32h .. 32h+31]. Inside a half, element
 * 32s + l (s = 0..3, l = 0..31) is bits [2s, 2s+1] of qs[32h + l]. Sub-block
 * k (of 16 elements) is elements [16k, 16k+16). */

/* Q2_K, 84 bytes. x = d * (sc & 15) * q - dmin * (sc >> 4), q in 0..3, where
 * sc = scales[k] for the element's sub-block k.
 *   [0..15]   u8 scales[16]  sub-block k: low nibble scale, high nibble min
 *   [16..79]  u8 qs[64]      2-bit quants, bit-plane ordering above
 *   [80..81]  f16 d          super-block scale of the scales
 *   [82..83]  f16 dmin       super-block scale of the mins */
typedef struct sl_block_q2_k {
    uint8_t scales[SL_QK_K / 16];
    uint8_t qs[SL_QK_K / 4];
    uint16_t d;
    uint16_t dmin;
} sl_block_q2_k;
_Static_assert(sizeof(sl_block_q2_k) == 84, "Q2_K block is 84 bytes");

/* Q3_K, 110 bytes. x = d * (s - 32) * (q - (high bit set ? 0 : 4)), where q
 * in 0..3 is the 2-bit quant, the high bit of element i (i = 0..255) is bit
 * (i / 32) of hmask[i % 32], and s in 0..63 is the stored 6-bit scale of the
 * element's sub-block k = i / 16 (sl_quant_q3_k_scale returns s - 32).
 *   [0..31]    u8 hmask[32]   high bits (set = no -4 offset)
 *   [32..95]   u8 qs[64]      low 2 bits, bit-plane ordering above
 *   [96..107]  u8 scales[12]  16 scales of 6 bits: low 4 bits of scale k are
 *                             the low (k < 8) or high (k >= 8) nibble of
 *                             scales[k % 8]; its high 2 bits are bits
 *                             [2(k/4), 2(k/4)+1] of scales[8 + k % 4]
 *   [108..109] f16 d          super-block scale */
typedef struct sl_block_q3_k {
    uint8_t hmask[SL_QK_K / 8];
    uint8_t qs[SL_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} sl_block_q3_k;
_Static_assert(sizeof(sl_block_q3_k) == 110, "Q3_K block is 110 bytes");

/* 6-bit scales and mins shared by Q4_K and Q5_K: 8 sub-blocks j = 0..7, each
 * with a 6-bit scale sc[j] and 6-bit min m[j] packed in 12 bytes s[]:
 *   j < 4:  sc = s[j] & 63,                       m = s[j+4] & 63
 *   j >= 4: sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4,
 *           m  = (s[j+4] >> 4) | (s[j]   >> 6) << 4
 * (bytes 0..3 carry sc[0..3] and the top bits of sc[4..7], bytes 4..7 carry
 * m[0..3] and the top bits of m[4..7], bytes 8..11 the low nibbles of
 * sc[4..7] (low) and m[4..7] (high)). */

/* Q4_K, 144 bytes. x = d * sc[j] * q - dmin * m[j], q in 0..15, j = i / 32.
 *   [0..1]    f16 d          scale of the 6-bit scales
 *   [2..3]    f16 dmin       scale of the 6-bit mins
 *   [4..15]   u8 scales[12]  sc[0..7], m[0..7] packed as above
 *   [16..143] u8 qs[128]     for each 64-element group g = 0..3:
 *                            qs[32g + l] holds element 64g + l in its low
 *                            nibble and element 64g + 32 + l in its high */
typedef struct sl_block_q4_k {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[SL_QK_K / 2];
} sl_block_q4_k;
_Static_assert(sizeof(sl_block_q4_k) == 144, "Q4_K block is 144 bytes");

/* Q5_K, 176 bytes. As Q4_K with q in 0..31: the low 4 bits as in Q4_K, bit 4
 * of element 64g + l is bit 2g of qh[l], of element 64g + 32 + l is bit
 * 2g + 1 of qh[l] (g = 0..3, l = 0..31).
 *   [0..1]     f16 d
 *   [2..3]     f16 dmin
 *   [4..15]    u8 scales[12]
 *   [16..47]   u8 qh[32]
 *   [48..175]  u8 qs[128] */
typedef struct sl_block_q5_k {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[SL_QK_K / 8];
    uint8_t qs[SL_QK_K / 2];
} sl_block_q5_k;
_Static_assert(sizeof(sl_block_q5_k) == 176, "Q5_K block is 176 bytes");

/* Q6_K, 210 bytes. x = d * scales[i / 16] * (q - 32), q in 0..63. For each
 * 128-element half h = 0..1 and l = 0..31, with L = ql + 64h, H = qh + 32h:
 *   element 128h +      l: low 4 bits L[l] & 15,      high 2 bits H[l] >> 0 & 3
 *   element 128h + 32 + l: low 4 bits L[l + 32] & 15, high 2 bits H[l] >> 2 & 3
 *   element 128h + 64 + l: low 4 bits L[l] >> 4,      high 2 bits H[l] >> 4 & 3
 *   element 128h + 96 + l: low 4 bits L[l + 32] >> 4, high 2 bits H[l] >> 6 & 3
 *   [0..127]   u8 ql[128]     low 4 bits
 *   [128..191] u8 qh[64]      high 2 bits
 *   [192..207] i8 scales[16]  signed sub-block scales
 *   [208..209] f16 d          super-block scale */
typedef struct sl_block_q6_k {
    uint8_t ql[SL_QK_K / 2];
    uint8_t qh[SL_QK_K / 4];
    int8_t scales[SL_QK_K / 16];
    uint16_t d;
} sl_block_q6_k;
_Static_assert(sizeof(sl_block_q6_k) == 210, "Q6_K block is 210 bytes");

/* Scale sc and min m (both 0..63) of sub-block j (0..7) from the 12 packed
 * bytes of a Q4_K or Q5_K block. Never fails. */
static inline void sl_quant_k4_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | (s[j - 4] >> 6) << 4);
        *m = (uint8_t)((s[j + 4] >> 4) | (s[j] >> 6) << 4);
    }
}

/* Signed scale (-32..31, i.e. the stored 6-bit value minus 32) of sub-block
 * k (0..15) from the 12 packed bytes of a Q3_K block. Never fails. */
static inline int sl_quant_q3_k_scale(int k, const uint8_t *s)
{
    int lo = k < 8 ? s[k] & 15 : s[k - 8] >> 4;
    int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* Converts n floats (a multiple of the type's block size) into n / block
 * blocks of the type at dst. Inputs must be finite. Never fails, never
 * allocates. */
typedef void (*sl_from_float_fn)(const float *src, void *dst, int64_t n);

/* Reference dequantizer for type id `type`, or NULL when sluice has none
 * (every type dtype.h marks `supported` has one). Static; never allocates. */
sl_to_float_fn sl_quant_to_float(uint32_t type);

/* Reference dot product (one weight row of the type with float
 * activations) for type id `type`, or NULL when sluice has none. Each block
 * is dequantized and its B products summed in order in float, then the block
 * sums in order in float (B = 256 for the float types), so the result is
 * within (B + n/B + 2) * 2^-24 * sum |w_i x_i| of the exact dot product of
 * the dequantized row. Static; never allocates. */
sl_dot_fn sl_quant_dot(uint32_t type);

/* Quantizer float -> type for type id `type`, or NULL when there is none.
 * Available: F32, F16, BF16 (round to nearest even), Q8_0, Q4_0, Q4_1, Q5_0,
 * Q5_1 (the reference toolchain's round-to-nearest formulas: Q8_0 d =
 * amax/127; Q4_0 d = m/-8 and Q5_0 d = m/-16 where m is the element of
 * largest magnitude; Q4_1 and Q5_1 d = (max-min)/15 and /31 with offset
 * min), Q4_K and Q6_K (round to nearest with sub-block scales rounded up so
 * that no element clips; valid blocks, but not byte-identical to the
 * reference toolchain's search-based k-quant encoder). Static. */
sl_from_float_fn sl_quant_from_float(uint32_t type);

/* ---- Activation rows ---------------------------------------------------------
 * For quantized weights a matmul re-encodes each token's activations once as
 * an activation row (kernels.h, sl_act), then takes integer dot products.
 * These rows live only in scratch memory, never in files; the layout is
 * sluice's own (scales and sums apart from the quants, so that SIMD kernels
 * load aligned vectors) and the same for every kernel variant. Every row
 * starts 64-byte aligned and is followed by padding up to
 * sl_quant_act_row_bytes, which kernels may read (never write) past the last
 * field. Quants are round-to-nearest-even of x / d, so |q| <= 127.
 *
 * SL_ACT_Q8_0, n elements (n % 32 == 0), nb = n / 32 blocks of 32:
 *   [0, n)              i8  qs[n]   element i = d[i / 32] * qs[i]
 *   [n, n + 4nb)        f32 d[nb]   block scale: max |x| / 127 (0 for zeros),
 *                                   rounded to the nearest binary16 value
 *                                   after the quants are computed with the
 *                                   unrounded one, as the reference's Q8_0
 *                                   blocks store it (see sl_act_scale)
 *   [n + 4nb, n + 8nb)  i32 s[nb]   sum of the block's 32 quants
 *
 * SL_ACT_Q8_0P, n elements (n % 32 == 0): the SL_ACT_Q8_0 row (same size,
 * same d and s) with the quants of each group of 4 blocks reordered to
 * match how nibble types pack them: the low halves (elements 0..15 of each
 * block, blocks in order), then the high halves (16..31). A group of 4
 * blocks starting at block 4g:
 *   [128g, 128g + 64)        qs of elements 32k + i,      k < 4, i < 16
 *   [128g + 64, 128g + 128)  qs of elements 32k + 16 + i, k < 4, i < 16
 * and a last group of r < 4 blocks likewise with 16r-byte halves. A 64-byte
 * run of Q4_0 quant bytes then meets its activations in one vector: its low
 * nibbles the first half, its high nibbles the second.
 *
 * SL_ACT_Q8_K, n elements (n % 256 == 0), nb = n / 256 blocks of 256:
 *   [0, n)                  i8  qs[n]        element i = d[i / 256] * qs[i]
 *   [n, n + 4nb)            f32 d[nb]        block scale: max |x| / 127
 *   [n + 4nb, n + 4nb + n/8) i16 bsums[n/16] sum of each 16 consecutive quants
 *
 * SL_ACT_F32: n floats. */

/* Bytes of one activation row of n elements in format `act` (a multiple of
 * 64, padding included). n must be a multiple of the format's block size
 * (asserted). Never fails. */
size_t sl_quant_act_row_bytes(uint32_t act, int64_t n);

/* Block size of activation format `act` (1, 32 or 256). */
int64_t sl_quant_act_block(uint32_t act);

/* Views of the fields of an activation row of n elements (see above). */
/* (SL_ACT_Q8_0P shares the Q8_0 views: only its quants are reordered.) */
static inline const float *sl_act_q8_0_d(const void *row, int64_t n)
{
    return (const float *)((const int8_t *)row + n);
}
static inline const int32_t *sl_act_q8_0_s(const void *row, int64_t n)
{
    return (const int32_t *)((const int8_t *)row + n + 4 * (n / 32));
}
static inline const float *sl_act_q8_k_d(const void *row, int64_t n)
{
    return (const float *)((const int8_t *)row + n);
}
static inline const int16_t *sl_act_q8_k_bsums(const void *row, int64_t n)
{
    return (const int16_t *)((const int8_t *)row + n + 4 * (n / 256));
}

/* The stored scale of a SL_ACT_Q8_0 block whose quants were computed with
 * scale d: d rounded to binary16, as the reference's activation blocks keep
 * it. Every variant's quantizer stores this value, so near-ties (a MoE
 * router choosing between two experts) resolve as the reference's do. */
static inline float sl_act_scale(float d) { return sl_f16_to_f32(sl_f32_to_f16(d)); }

/* Reorders the quants of a SL_ACT_Q8_0 row of n elements in place into
 * SL_ACT_Q8_0P order. Never fails, never allocates. */
void sl_quant_act_q8_0_to_p(void *row, int64_t n);

/* Reference activation quantizer for format `act`, or NULL for SL_ACT_F32 and
 * unknown formats. Static; never allocates. */
sl_quantize_fn sl_quant_quantize(uint32_t act);

/* Activation format the reference kernels use with weight type `type`
 * (SL_ACT_Q8_0 for Q4_0 ... Q8_0, SL_ACT_Q8_K for the k-quants, SL_ACT_F32
 * for the float types and anything unsupported). */
uint32_t sl_quant_act_of(uint32_t type);

/* Reference tile kernel (kernels.h) for quantized weight type `type`, or NULL
 * for the float types and unsupported ones. Each output is the sum over the
 * row's blocks, in order and in float, of (block scale factors) x (the
 * block's exact integer dot product of weight quants and activation quants):
 * e.g. Q4_0: sum += (d_w * d_x) * isum. Static; never allocates. */
sl_gemm_fn sl_quant_gemm(uint32_t type);

#endif
