/* The mixture-of-experts feed-forward block, in phases, so that a caller
 * that streams experts can load them between the phases and read only the
 * experts the router chose.
 *
 * Per token t, with h = RMSNorm(x_t) * ffn_norm:
 *   p   = softmax(W_router h)                 over the n_expert experts
 *   S   = the n_expert_used largest p_e       (ties: the lower index)
 *   w_e = p_e / sum_{j in S} p_j              with expert_weights_norm
 *         (Mixtral, qwen3moe), else p_e       (qwen2moe)
 *   y   = sum_{e in S} w_e * Wdown_e (silu(Wgate_e h) * (Wup_e h))
 *   y  += sigmoid(g_s . h) * Wdown_s (silu(Wgate_s h) * (Wup_s h))   shared expert (qwen2moe)
 *   x_t += y
 *
 * A call works on x[n][n_embd], the tokens of a whole step (any number of
 * sequences: nothing here depends on positions). The phases:
 *   sl_moe_route    h and the routing of every token; per expert, how many
 *                   of the n tokens chose it;
 *   sl_moe_shared   the shared expert, when the layer has one;
 *   sl_moe_expert   one chosen expert, for all the tokens that chose it (so
 *                   a prompt reads each expert's weights once), in any
 *                   order, each exactly once;
 *   sl_moe_finish   x += y, summing each token's experts in the order of
 *                   its ranking.
 * Each expert's output goes to its own row (token, rank), and the sum is
 * taken in a fixed order, so the result does not depend on the order the
 * experts were computed in, the batch, or the thread count: bit for bit, as
 * for the dense layers (compute/forward.h). The state between phases lives
 * in the forward pass's scratch (sl_forward.moe); one layer at a time.
 *
 * Nothing allocates; everything blocks while the pool works. Weights must be
 * views the model bound (shapes asserted). */
#ifndef SL_COMPUTE_MOE_H
#define SL_COMPUTE_MOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compute/forward.h"
#include "model/model.h"

/* Floats of scratch the phases need for batches of up to n_batch tokens; 0
 * for a dense model (or a zero n_batch, or sizes that do not fit a size_t).
 * sl_forward_scratch_floats includes it. Never fails otherwise. */
size_t sl_moe_scratch_floats(const sl_hparams *hp, uint32_t n_batch);

/* Routes x[n][n_embd] (n in [1, n_batch]) through the layer's router:
 * keeps h and each token's experts and weights in the scratch, and writes
 * counts[e] (n_expert entries) = the number of the n tokens routed to
 * expert e. Returns 0, or -SL_ERANGE (n out of range; logged). x is not
 * modified. */
int sl_moe_route(const sl_forward *f, const sl_layer_weights *w, const float *x, uint32_t n, uint32_t *counts);

/* The routed experts of token t of the last sl_moe_route (t < n), in the
 * order of its ranking: n_expert_used indices and their weights. Pointers
 * into the scratch, valid until the next sl_moe_route or sl_moe_predict. */
const int32_t *sl_moe_token_experts(const sl_forward *f, uint32_t t);
const float *sl_moe_token_weights(const sl_forward *f, uint32_t t);

/* Computes the shared expert of the routed batch (qwen2moe); nothing when
 * the layer has none. Call after sl_moe_route, before sl_moe_finish. */
void sl_moe_shared(const sl_forward *f, const sl_layer_weights *w);

/* Computes expert e (counts[e] > 0 in the last sl_moe_route) for the tokens
 * routed to it, with its weights `ew`. Each chosen expert exactly once
 * between sl_moe_route and sl_moe_finish. */
void sl_moe_expert(const sl_forward *f, uint32_t e, const sl_expert_weights *ew);

/* x[n][n_embd] += the experts' outputs (and the shared expert's), for the n
 * tokens of the last sl_moe_route. Every chosen expert must have been
 * computed (asserted). */
void sl_moe_finish(const sl_forward *f, float *x);

/* The whole block with every expert bound from the mapped file: what the
 * in-process engine runs. Returns 0 or -SL_ERANGE as sl_moe_route. */
int sl_moe_ffn(const sl_forward *f, const sl_model *m, uint32_t il, const sl_layer_weights *w, float *x,
               uint32_t n);

/* Guesses the experts a layer will choose before its turn: routes x[n]
 * [n_embd] through that layer's ffn_norm and router `next` as sl_moe_route
 * would (the residual stream changes little from one layer to the next) and
 * sets want[e] = 1 for every expert some token would choose, 0 for the
 * others (n_expert entries). Clobbers the routing state: call after
 * sl_moe_finish. Returns 0 or -SL_ERANGE as sl_moe_route. */
int sl_moe_predict(const sl_forward *f, const sl_layer_weights *next, const float *x, uint32_t n, uint8_t *want);

#endif
