/* Re-quantizing a model: which type each tensor gets, and converting tensor
 * data from any supported type to any type sluice can encode.
 *
 * Shared by `sluice quantize` (a new GGUF) and `sluice pack --quant` (packed
 * shards), so that both make the same choices:
 *  - vectors (one row: norms, biases, rope factors) and MoE routers
 *    (`*ffn_gate_inp*`) keep their type: the forward pass reads them as
 *    floats, and they are a negligible share of the bytes;
 *  - the output projection (`output.weight`, or `token_embd.weight` when the
 *    model ties the two) gets the output type: by default Q8_0 when the
 *    target has fewer bits than that, because every logit goes through it
 *    and its error is not averaged out by later layers (the reference
 *    toolchain's mixes keep it at 6 to 8 bits too);
 *  - the token embedding of an untied model gets the embedding type (by
 *    default the target): only one row per token is read, and it is
 *    dequantized, not multiplied, so it costs no compute;
 *  - every other matrix gets the target type.
 * A low-bit target (compute/lowbit.h) names the largest group: a row length
 * that 128 does not divide takes groups of 64 or 32. A type whose block does
 * not divide the row length falls back: K-quants to the legacy type of the
 * same kind (Q4_K to Q4_1, Q6_K to Q8_0), then anything to Q8_0, then to F16
 * (which fits every row). */
#ifndef SL_COMPUTE_REQUANT_H
#define SL_COMPUTE_REQUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "compute/lowbit.h"

/* No type given: take the default of the rule above. */
#define SL_REQUANT_DEFAULT UINT32_MAX

typedef struct sl_requant_opts {
    uint32_t type;        /* target of the matrices: an encodable type (sl_requant_can_encode) */
    uint32_t output_type; /* output projection: encodable type, or SL_REQUANT_DEFAULT */
    uint32_t embd_type;   /* untied token embedding: encodable type, or SL_REQUANT_DEFAULT */
    sl_lowbit_fit fit;    /* encoder of the low-bit types */
} sl_requant_opts;

/* Whether sluice can write type t (has a quantizer from floats: F32, F16,
 * BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K and the low-bit types). */
bool sl_requant_can_encode(uint32_t t);

/* The type that tensor `name` (n_dims dimensions ne[], currently of type
 * `src_type`) gets under `o`; `tied` says whether the model has no
 * output.weight (its token embedding is the output projection). Returns
 * src_type for tensors that keep theirs. The result always divides ne[0]
 * into whole blocks. Never fails (o's types must be encodable: asserted). */
uint32_t sl_requant_choose(const sl_requant_opts *o, const char *name, uint32_t n_dims, const int64_t *ne,
                           uint32_t src_type, bool tied);

/* Converts n elements (whole blocks of both types) of src_type at src into
 * dst_type at dst, through `tmp` (n floats, caller-owned) unless the types
 * are equal (then the bytes are copied). src_type must have a dequantizer,
 * dst_type a quantizer. Returns 0; or -SL_ERANGE, logged with the element's
 * index, when a value is not finite or (for types with f16 scales, and
 * F16) too large for f16, nothing useful then being in dst. Never blocks,
 * never allocates. */
int sl_requant_convert(uint32_t src_type, const void *src, uint32_t dst_type, void *dst, int64_t n,
                       sl_lowbit_fit fit, float *tmp);

#endif
