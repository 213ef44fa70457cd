/* One forward step over several sequences, with weights from a unit source.
 *
 * A step is what a compute worker does between two samplings: every active
 * sequence contributes its next tokens (a prompt chunk, or the one token
 * just sampled), and the model's units are visited once, in order (layers
 * 0..L-1, then the head), each applied to every sequence before the next
 * unit is asked for. The weights of a step are therefore read once however
 * many sequences and tokens it carries: that is what makes a streamed
 * prompt cost one pass over the model, and what lets sessions share it.
 *
 * Where a unit's bytes come from is the source's business: the mapped file
 * (in-process), or a pinned region or ring slot in shared memory (the
 * pipeline), filled by loaders. The step only asks for unit i, binds views
 * to the pointer it gets, and gives the unit back when it is done with it.
 *
 * Mixture of experts: a layer's unit holds attention, norms and router; the
 * step runs attention for every sequence, routes all the step's tokens at
 * once (compute/moe.h), tells the expert source which experts the layer
 * needs, and computes each as the source hands it over, in whatever order
 * they become available. So a step reads only the experts its tokens chose,
 * each once however many tokens chose it. */
#ifndef SL_COMPUTE_STEP_H
#define SL_COMPUTE_STEP_H

#include <stdint.h>

#include "compute/forward.h"
#include "model/model.h"

/* Where a step gets unit bytes. Unit i < n_layer is layer i; i == n_layer
 * is the head (model/model.h sl_model_head_unit). */
typedef struct sl_unit_source {
    /* Returns a pointer to a copy of the unit's span (byte 0 = file byte at
     * the unit's offset, 4-byte aligned), blocking until it is there; NULL
     * when it never will be (the source gave up: shutdown, lost owner). */
    const void *(*acquire)(void *ctx, uint32_t unit);
    /* The step no longer reads the unit's bytes. */
    void (*release)(void *ctx, uint32_t unit);
    void *ctx;
    /* Where experts come from (mixture-of-experts models); NULL: bound from
     * the mapped file. */
    const struct sl_expert_source *experts;
} sl_unit_source;

/* Experts of a mixture-of-experts layer, for one step. Per layer the step
 * calls need once, then next and release once per needed expert. */
typedef struct sl_expert_source {
    /* Layer `layer` needs expert e for counts[e] tokens (n_expert entries;
     * 0: not needed). Returns 0, or a negative error to give the step up. */
    int (*need)(void *ctx, uint32_t layer, const uint32_t *counts);
    /* A needed expert of the layer not handed out yet: stores its index in
     * *expert and returns the base of its image (model/model.h), blocking
     * until one is there; NULL when none will be (the step must be redone). */
    const void *(*next)(void *ctx, uint32_t layer, uint32_t *expert);
    /* The step no longer reads that expert's bytes. */
    void (*release)(void *ctx, uint32_t layer, uint32_t expert);
    /* Optional (NULL: no prefetching): called before layer `layer`'s
     * attention with the experts it will likely choose (want[e] != 0),
     * predicted from the residual stream through that layer's router. */
    void (*prefetch)(void *ctx, uint32_t layer, const uint8_t *want);
    void *ctx;
} sl_expert_source;

/* One sequence of a step. */
typedef struct sl_step_seq {
    const int32_t *tokens; /* n_tokens ids to feed */
    uint32_t n_tokens;     /* >= 1 */
    uint32_t pos0;         /* position of tokens[0] in the sequence */
    float *kv;             /* the sequence's KV cache: per layer, K (k_floats) then V (v_floats) */
    float *logits;         /* receives n_vocab floats: the logits after the last token */
} sl_step_seq;

/* Runs a step. `f` was initialised with n_batch >= the sum of n_tokens and
 * n_ctx >= every pos0 + n_tokens; `x` holds n_batch * n_embd floats;
 * tok_embd is the embedding view (rows are read as tokens need them).
 * Returns 0; -SL_ERANGE (a token outside the vocabulary or positions past
 * n_ctx; nothing computed), -SL_EINVAL (no sequences, or more tokens than
 * n_batch), -SL_EIO (the source returned NULL: the step is incomplete and
 * must be redone; KV rows past each pos0 are then undefined). Logged.
 * Blocks; never allocates. */
int sl_step_run(const sl_model *m, const sl_forward *f, const sl_tensor *tok_embd, const sl_unit_source *src,
                sl_step_seq *seqs, uint32_t n_seqs, float *x);

#endif
