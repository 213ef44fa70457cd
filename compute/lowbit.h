/* sluice's own grouped low-bit tensor types: 2, 3 and 4 bits per weight in
 * groups of G consecutive weights of a row (G = 128, or 64 and 32 for rows
 * too short for 128), each group with its own scale d and zero point m:
 *
 *     x[e] = d * q[e] + m,      q[e] in 0 .. 2^bits - 1.
 *
 * The encoder's starting point is the group's range (d = (max - min) /
 * (2^bits - 1), m = min); see sl_lowbit_fit for how the final pair is chosen.
 *
 * Type ids (model/dtype.h) are sluice-private GGUF type numbers, 224..232,
 * far above the ones ggml assigns (0..39 today), so a GGUF that carries them
 * is refused by other readers as an invalid tensor type, never misread:
 *
 *     id   name     bits  G    block bytes  bits per weight
 *     224  G2_128   2     128  36           2.25
 *     225  G3_128   3     128  52           3.25
 *     226  G4_128   4     128  68           4.25
 *     227  G2_64    2     64   20           2.5
 *     228  G3_64    3     64   28           3.5
 *     229  G4_64    4     64   36           4.5
 *     230  G2_32    2     32   12           3.0
 *     231  G3_32    3     32   16           4.0
 *     232  G4_32    4     32   20           5.0
 *
 * ---- Block layout (one group of G weights; all fields little-endian) -------
 *
 *   [0..1]  f16 d   scale (IEEE binary16 bit pattern, common/half.h); the
 *                   encoder writes d >= 0, the kernels take any finite value
 *   [2..3]  f16 m   zero point: the value of q = 0
 *   [4.. ]  the quants, in bit planes over the group's plane order.
 *
 * Plane order. The group is R = G/32 runs of 32 weights (the activation
 * blocks of a product, below); element e = 32k + 16h + i (run k < R, half
 * h < 2, i < 16) has plane position
 *     p(e) = 16R*h + 16k + i,
 * i.e. the first halves of the runs in order, then their second halves
 * (for G = 32 this is the identity). The planes, with q[p] the quant at
 * plane position p:
 *
 *   4 bits: u8 qs[G/2] at [4, 4 + G/2):
 *             q[l]       = qs[l] & 15       (l = 0 .. G/2 - 1)
 *             q[l + G/2] = qs[l] >> 4
 *           (so bytes 16k .. 16k+15 hold run k: its first half in the low
 *           nibbles, its second half in the high ones, as Q4_0 does a block)
 *   2 bits: u8 qs[G/4] at [4, 4 + G/4):
 *             q[l + j*G/4] = (qs[l] >> 2j) & 3        (l < G/4, j = 0..3)
 *   3 bits: u8 ql[G/4] at [4, 4 + G/4): the low two bits of q, as for 2 bits;
 *           u8 qh[G/8] at [4 + G/4, 4 + G/4 + G/8): the third bit,
 *             bit 2 of q[l + j*G/8] = (qh[l] >> j) & 1  (l < G/8, j = 0..7)
 *
 * Why this order: every plane splits the plane order into 2, 4 or 8 equal
 * runs of consecutive positions, so one vector load of a plane followed by
 * a shift and a mask yields 16 or more consecutive positions, which are
 * always a half of a run or more: 16 consecutive elements, what a NEON
 * vector takes, or with two halves put side by side one run, what an AVX2
 * vector takes. For G = 128 the plane order is the order of the activation
 * format SL_ACT_Q8_0P (quant.h): a 64-byte vector of the 4-bit plane's low
 * nibbles (of the 2-bit plane's two lower bit pairs, ...) meets the first
 * halves of the group's four activation blocks, the high nibbles their
 * second halves, and with VPDPBUSD each block's 32 products land in four
 * lanes of one accumulator: two instructions per 128 weights, one
 * conversion and one multiply-add. Weight quants are unsigned and
 * activation quants signed, the operand order of VPMADDUBSW / VPDPBUSD; the
 * zero point is applied once per 32 activations through the activation
 * block sums (below). Blocks are 4 + G*bits/8 bytes, always even, so a
 * 2-byte aligned row keeps every f16 field aligned, like quant.h's types.
 *
 * ---- Products ------------------------------------------------------------
 * Matrix products quantize activations to SL_ACT_Q8_0 (quant.h: blocks of 32
 * quants p with a float scale dx and the block's quant sum s; native
 * variants may take the same quants in SL_ACT_Q8_0P order). For each group
 * and each of its G/32 activation blocks b (run b of the group):
 *     sum += (d * dx[b]) * (sum of q * p over the block) + (m * dx[b]) * s[b]
 * where the integer sum is exact. Native kernels form the same exact
 * integer sums and differ from the reference only in how the float terms
 * are rounded and added. */
#ifndef SL_COMPUTE_LOWBIT_H
#define SL_COMPUTE_LOWBIT_H

#include <stdbool.h>
#include <stdint.h>

#include "compute/kernels.h"
#include "compute/quant.h"

#define SL_LOWBIT_MAX_GROUP 128

/* Bits per weight (2, 3, 4) of low-bit type `type`; 0 for any other type. */
int sl_lowbit_bits(uint32_t type);

/* Group size (32, 64, 128) of low-bit type `type`; 0 for any other type. */
int sl_lowbit_group(uint32_t type);

/* The type id for `bits` (2..4) and `group` (32, 64, 128), or UINT32_MAX
 * when there is no such type. Never fails otherwise. */
uint32_t sl_lowbit_type(int bits, int group);

/* The low-bit type of `bits` for rows of ne0 weights: the largest group
 * size <= max_group (32, 64 or 128) that divides ne0. UINT32_MAX when none
 * does (ne0 not a multiple of 32) or the arguments name no type. */
uint32_t sl_lowbit_type_for_row(int bits, int64_t ne0, int max_group);

/* How the encoder chooses each group's (d, m). */
typedef enum sl_lowbit_fit {
    /* d = (max - min) / (2^bits - 1), m = min, both rounded to f16; the
     * quants then round (x - m) / d to nearest. The definition:
     * no element clips (up to the f16 rounding of d and m). */
    SL_LOWBIT_FIT_MINMAX = 0,
    /* Several candidate ranges inside [min, max] (shrinking the step lets
     * most elements land closer to a level at the cost of clipping the
     * extremes), each refined by least squares of (d, m) over its rounded
     * quants; keeps the pair, after f16 rounding, with the least squared
     * error, the min-max pair included, so never worse than MINMAX. */
    SL_LOWBIT_FIT_SEARCH = 1,
} sl_lowbit_fit;

/* Quantizes n floats (n a multiple of the type's group; finite, |x| below
 * the f16 limit 65504) into n / G blocks of low-bit type `type` at dst, with
 * the given fit. Deterministic. Never fails (the caller checked the type and
 * the values: SL_ASSERT), never allocates. */
void sl_lowbit_quantize(uint32_t type, sl_lowbit_fit fit, const float *src, void *dst, int64_t n);

/* Reference kernels (the "generic" entries; quant.c's lookups forward to
 * these for the low-bit types). Each returns NULL for a type that is not a
 * low-bit type. Static functions; none allocates. */
sl_to_float_fn sl_lowbit_to_float(uint32_t type);
/* Float-activation dot: each group is dequantized and its G products summed
 * in order in float, then the group sums in order in float. */
sl_dot_fn sl_lowbit_dot(uint32_t type);
/* Tile of products against SL_ACT_Q8_0 activation rows (formula above). */
sl_gemm_fn sl_lowbit_gemm(uint32_t type);
/* The default encoder (SL_LOWBIT_FIT_SEARCH). */
sl_from_float_fn sl_lowbit_from_float(uint32_t type);

/* Native variants: each overwrites the low-bit entries (to_float, dot,
 * gemm; act stays SL_ACT_Q8_0) of table `k` that its instruction set
 * specialises and leaves every other entry alone. Call once while building
 * the table, and only where the CPU has the instruction set (kernels.c's
 * probes). Never fail or allocate. */
#if defined(__x86_64__)
/* AVX2 + FMA + F16C, every low-bit type. */
void sl_lowbit_register_avx2(sl_kernels *k);
/* AVX-512 F/BW/VL + VNNI: the tiles of groups of 128, with activations in
 * SL_ACT_Q8_0P order (the rest stays AVX2's). */
void sl_lowbit_register_avx512(sl_kernels *k);
#endif
#if defined(__aarch64__)
/* Advanced SIMD, every low-bit type; integer tiles with SDOT when `sdot`
 * (the CPU has the dot-product extension, see kernels_neon.h). */
void sl_lowbit_register_neon(sl_kernels *k, bool sdot);
#endif

#endif
