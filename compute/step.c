/* A forward step over several sequences; see step.h. */
#include "compute/step.h"

#include "common/log.h"
#include "compute/moe.h"

/* The feed-forward block of MoE layer il over the step's `total` tokens in
 * x, experts from the source (or the mapping). Returns 0 or -SL_EIO. */
static int moe_block(const sl_model *m, const sl_forward *f, const sl_unit_source *src, uint32_t il,
                     const sl_layer_weights *lw, float *x, uint32_t total)
{
    const sl_hparams *hp = sl_model_hparams(m);
    const sl_expert_source *ex = src->experts;
    uint32_t counts[SL_MAX_EXPERTS], needed = 0;
    int rc = sl_moe_route(f, lw, x, total, counts);
    SL_ASSERT(rc == 0); /* the batch was checked */
    for (uint32_t e = 0; e < hp->n_expert; e++)
        needed += counts[e] != 0;
    if (ex && (rc = ex->need(ex->ctx, il, counts)) < 0)
        return rc;
    /* The shared expert computes while the source fetches the others. */
    sl_moe_shared(f, lw);
    for (uint32_t i = 0, e = 0; i < needed; i++) {
        sl_expert_weights ew;
        if (ex) {
            const void *base = ex->next(ex->ctx, il, &e);
            if (!base) {
                SL_ERROR("expert %u of layer %u is not available; the step must be redone", e, il);
                return -SL_EIO;
            }
            SL_ASSERT(e < hp->n_expert && counts[e]);
            sl_model_bind_expert(m, il, e, base, &ew);
            sl_moe_expert(f, e, &ew);
            ex->release(ex->ctx, il, e);
        } else {
            while (!counts[e])
                e++;
            sl_model_expert_weights(m, il, e, &ew);
            sl_moe_expert(f, e++, &ew);
        }
    }
    sl_moe_finish(f, x);
    return 0;
}

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
        const bool moe = il < hp->n_layer && hp->n_expert;
        if (il < hp->n_layer)
            sl_model_bind_layer(m, il, base, &lw);
        else
            sl_model_bind_head(m, base, &hw);
        if (moe && src->experts && src->experts->prefetch) {
            /* Guess this layer's experts from the stream as it enters the
             * layer, so that loading overlaps the attention. */
            uint8_t want[SL_MAX_EXPERTS];
            int prc = sl_moe_predict(f, &lw, x, (uint32_t)total, want);
            SL_ASSERT(prc == 0); /* the batch was checked */
            src->experts->prefetch(src->experts->ctx, il, want);
        }
        xs = x;
        for (uint32_t s = 0; s < n_seqs; s++) {
            const sl_step_seq *q = &seqs[s];
            int rc;
            if (il < hp->n_layer) {
                float *k = q->kv + (size_t)il * (kf + vf);
                rc = moe ? sl_forward_attention(f, &lw, xs, q->n_tokens, q->pos0, k, k + kf)
                         : sl_forward_layer(f, &lw, xs, q->n_tokens, q->pos0, k, k + kf);
            } else {
                rc = sl_forward_output(f, &hw, xs, q->n_tokens, false, q->logits);
            }
            SL_ASSERT(rc == 0); /* arguments were checked above */
            xs += (size_t)q->n_tokens * hp->n_embd;
        }
        /* Experts are per token: all the step's tokens go through at once. */
        if (moe) {
            int rc = moe_block(m, f, src, il, &lw, x, (uint32_t)total);
            if (rc < 0) {
                src->release(src->ctx, il);
                return rc;
            }
        }
        src->release(src->ctx, il);
    }
    return 0;
}
