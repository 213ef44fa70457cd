/* The transformer forward pass, one layer at a time, from weights handed in.
 *
 * Nothing here owns memory or knows where weights come from: a caller binds
 * a layer's views (model/model.h) to wherever its bytes are (the mapped file,
 * a shared-memory slot), passes the residual stream x of a batch of n tokens
 * at consecutive positions, and this layer's slice of the KV cache. A prompt
 * is therefore processed as one batch per layer, streaming each layer's
 * weights once. Decoding is a batch of 1.
 *
 * Per layer (llama, qwen2, qwen3, and the attention of qwen2moe, qwen3moe):
 *   h   = RMSNorm(x) * attn_norm
 *   q,k,v = Wq h (+bq), Wk h (+bk), Wv h (+bv)      biases: qwen2
 *   q,k = RMSNorm per head * q_norm / k_norm          qwen3
 *   q,k = RoPE(q, k, position)                        NORM (llama) / NEOX (qwen)
 *   k,v -> cache rows pos0 .. pos0+n-1
 *   a   = softmax(q K^T / sqrt(head_dim_k)) V over positions 0..pos, per head,
 *         kv head = head / (n_head / n_head_kv)
 *   x  += Wo a (+bo)
 *   h   = RMSNorm(x) * ffn_norm
 *   x  += Wdown (silu(Wgate h) * (Wup h))             (mixture of experts: compute/moe.h)
 * Output: logits = Woutput (RMSNorm(x) * output_norm).
 *
 * Layouts: x is [n][n_embd]; the K cache of a layer is [n_head_kv][n_ctx]
 * [head_dim_k] and the V cache [n_head_kv][n_ctx][head_dim_v], F32: head
 * major, so that attention reads each head's keys and values as one
 * contiguous run (position-major rows would put consecutive positions of a
 * head a whole row apart, a page or more on large models). Results do not depend on the batch size or the number
 * of threads (bit for bit): every output element is computed by the same
 * sequence of operations either way. */
#ifndef SL_COMPUTE_FORWARD_H
#define SL_COMPUTE_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compute/kernels.h"
#include "compute/pool.h"
#include "model/model.h"

/* What a forward pass runs with. A plain description filled by
 * sl_forward_init; it owns nothing (the caller owns scratch and pool). */
typedef struct sl_forward {
    const sl_hparams *hp;
    const sl_kernels *kern;
    sl_pool *pool;
    uint32_t n_batch; /* most tokens per call */
    uint32_t n_ctx;   /* positions in each layer's KV cache */
    float *scratch;   /* sl_forward_scratch_floats(hp, n_batch, n_ctx, pool size) floats */
    float *moe;       /* mixture of experts: the part of scratch compute/moe.h uses; else NULL */
} sl_forward;

/* Floats of scratch a forward pass needs for batches of up to n_batch tokens
 * with a KV cache of n_ctx positions and n_threads threads (each thread has
 * its own attention-score row). Returns 0 when an argument is 0 or the size
 * does not fit in a size_t. Never fails otherwise; no allocation. */
size_t sl_forward_scratch_floats(const sl_hparams *hp, uint32_t n_batch, uint32_t n_ctx, uint32_t n_threads);

/* Floats of one layer's K cache and V cache for n_ctx positions. */
size_t sl_forward_k_floats(const sl_hparams *hp, uint32_t n_ctx);
size_t sl_forward_v_floats(const sl_hparams *hp, uint32_t n_ctx);

/* Fills *f. `scratch` must hold sl_forward_scratch_floats(hp, n_batch,
 * n_ctx, sl_pool_size(pool)) floats, 64-byte aligned, and stay valid while f
 * is used. Returns 0, or -SL_EINVAL (a zero size, NULL or misaligned
 * scratch) / -SL_EUNSUPPORTED (no kernel table for this CPU), logged. */
int sl_forward_init(sl_forward *f, const sl_hparams *hp, sl_pool *pool, uint32_t n_batch, uint32_t n_ctx,
                    float *scratch);

/* x[t] = row tokens[t] of the embedding, dequantized, for t < n. Returns 0,
 * or -SL_ERANGE (a token outside [0, n_vocab), or n outside [1, n_batch])
 * with x untouched, logged. Never allocates. */
int sl_forward_embed(const sl_forward *f, const sl_tensor *tok_embd, const int32_t *tokens, uint32_t n,
                     float *x);

/* Runs one layer on x[n][n_embd] in place for tokens at positions pos0 ..
 * pos0+n-1: writes their K and V rows into k_cache/v_cache and attends over
 * rows 0 .. pos (which must hold this layer's K/V of earlier positions).
 * Returns 0, or -SL_ERANGE (n outside [1, n_batch], or pos0 + n > n_ctx)
 * with nothing touched, logged. Blocks while the pool works; never
 * allocates. The weights must be views the model bound (shapes asserted). */
int sl_forward_layer(const sl_forward *f, const sl_layer_weights *w, float *x, uint32_t n, uint32_t pos0,
                     float *k_cache, float *v_cache);

/* The attention block of a layer only (x += attention output), as
 * sl_forward_layer otherwise: for mixture-of-experts layers, whose
 * feed-forward block compute/moe.h runs, over all the tokens of a step at
 * once. Same returns. */
int sl_forward_attention(const sl_forward *f, const sl_layer_weights *w, float *x, uint32_t n, uint32_t pos0,
                         float *k_cache, float *v_cache);

/* Output head. With all_tokens, logits[t][n_vocab] for each t < n; else
 * logits[n_vocab] for the last token only. x is not modified. Returns 0 or
 * -SL_ERANGE (n outside [1, n_batch]), logged. Blocks; never allocates. */
int sl_forward_output(const sl_forward *f, const sl_global_weights *g, const float *x, uint32_t n,
                      bool all_tokens, float *logits);

#endif
