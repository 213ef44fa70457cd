/* A forward step over several sequences; see step.h. */
#include "compute/step.h"

#include "common/log.h"

int sl_step_run(const sl_model *m, const sl_forward *f, const sl_tensor *tok_embd, const sl_unit_source *src,
                sl_step_seq *seqs, uint32_t n_seqs, float *x)
{
    const sl_hparams *hp = sl_model_hparams(m);
    if (n_seqs == 0) {
        SL_ERROR("a step needs at least one sequence");
        return -SL_EINVAL;
    }
    uint64_t total = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        const sl_step_seq *q = &seqs[s];
        if (q->n_tokens == 0 || (uint64_t)q->pos0 + q->n_tokens > f->n_ctx) {
            SL_ERROR("sequence %u: %u tokens at position %u do not fit a context of %u", s, q->n_tokens, q->pos0,
                     f->n_ctx);
            return -SL_ERANGE;
        }
        total += q->n_tokens;
    }
    if (total > f->n_batch) {
        SL_ERROR("%llu tokens in one step exceed the batch of %u", (unsigned long long)total, f->n_batch);
        return -SL_EINVAL;
    }
    /* Embeddings first: a bad token is refused before any state changes. */
    float *xs = x;
    for (uint32_t s = 0; s < n_seqs; s++) {
        int rc = sl_forward_embed(f, tok_embd, seqs[s].tokens, seqs[s].n_tokens, xs);
        if (rc)
            return rc;
        xs += (size_t)seqs[s].n_tokens * hp->n_embd;
    }
    const size_t kf = sl_forward_k_floats(hp, f->n_ctx), vf = sl_forward_v_floats(hp, f->n_ctx);
    for (uint32_t il = 0; il <= hp->n_layer; il++) {
        const void *base = src->acquire(src->ctx, il);
        if (!base) {
            SL_ERROR("unit %u is not available; the step must be redone", il);
            return -SL_EIO;
        }
        sl_layer_weights lw;
        sl_global_weights hw;
        if (il < hp->n_layer)
            sl_model_bind_layer(m, il, base, &lw);
        else
            sl_model_bind_head(m, base, &hw);
        xs = x;
        for (uint32_t s = 0; s < n_seqs; s++) {
            const sl_step_seq *q = &seqs[s];
            int rc;
            if (il < hp->n_layer) {
                float *k = q->kv + (size_t)il * (kf + vf);
                rc = sl_forward_layer(f, &lw, xs, q->n_tokens, q->pos0, k, k + kf);
            } else {
                rc = sl_forward_output(f, &hw, xs, q->n_tokens, false, q->logits);
            }
            SL_ASSERT(rc == 0); /* arguments were checked above */
            xs += (size_t)q->n_tokens * hp->n_embd;
        }
        src->release(src->ctx, il);
    }
    return 0;
}
