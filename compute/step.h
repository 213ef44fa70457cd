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
 * to the pointer it gets, and gives the unit back when it is done with it. */
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
} sl_unit_source;

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
