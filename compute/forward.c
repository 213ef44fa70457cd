/* Transformer forward pass, one layer per call; see forward.h.
 *
 * Reductions (norms, softmax sums) accumulate in double, as the reference
 * toolchain does, so that the float results agree with it to rounding. */
#include "compute/forward.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/log.h"
#include "compute/matmul.h"
#include "compute/moe.h"

/* Scratch regions start on 64-byte boundaries so threads writing
 * neighbouring regions do not share cache lines. */
#define ALIGN_FLOATS 16

/* Offsets (in floats) of the scratch regions. */
typedef struct layout {
    size_t xn;     /* [n_batch][n_embd]   normalised input; also the Wo and Wdown outputs */
    size_t q;      /* [n_batch][n_head * head_dim_k] */
    size_t k;      /* [n_batch][n_head_kv * head_dim_k]: this batch's keys, before the cache */
    size_t v;      /* [n_batch][n_head_kv * head_dim_v]: this batch's values, before the cache */
    size_t att;    /* [n_batch][n_head * head_dim_v] */
    size_t gate;   /* [n_batch][n_ff] */
    size_t up;     /* [n_batch][n_ff] */
    size_t rope;   /* [n_batch][n_rot]: cos of each pair, then sin */
    size_t scores; /* [n_threads][score_stride] */
    size_t score_stride;
    size_t qact;       /* quantized matmul inputs: sl_matmul_scratch_bytes(..., SL_ACT_COUNT - 1) bytes */
    size_t qact_bytes;
    size_t moe;        /* mixture of experts: sl_moe_scratch_floats (compute/moe.h) */
    size_t total;
} layout;

/* Appends a region of a*b*c floats; false on overflow. */
static bool region(size_t *cursor, size_t *off, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t n = a * b;
    if (a && n / a != b)
        return false;
    uint64_t m = n * c;
    if (n && m / n != c)
        return false;
    m = (m + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    if (m > SIZE_MAX / 4 - *cursor)
        return false;
    *off = *cursor;
    *cursor += (size_t)m;
    return true;
}

static bool make_layout(const sl_hparams *hp, uint32_t n_batch, uint32_t n_ctx, uint32_t n_threads, layout *l)
{
    if (!n_batch || !n_ctx || !n_threads)
        return false;
    size_t c = 0;
    l->score_stride = ((size_t)n_ctx + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    bool ok = region(&c, &l->xn, n_batch, hp->n_embd, 1) &&
              region(&c, &l->q, n_batch, hp->n_head, hp->head_dim_k) &&
              region(&c, &l->k, n_batch, hp->n_head_kv, hp->head_dim_k) &&
              region(&c, &l->v, n_batch, hp->n_head_kv, hp->head_dim_v) &&
              region(&c, &l->att, n_batch, hp->n_head, hp->head_dim_v) &&
              region(&c, &l->gate, n_batch, hp->n_ff, 1) && region(&c, &l->up, n_batch, hp->n_ff, 1) &&
              region(&c, &l->rope, n_batch, hp->n_rot, 1) &&
              region(&c, &l->scores, n_threads, l->score_stride, 1);
    /* Matmul inputs: one call quantizes its one input at most once per
     * quantized activation format (weights of several types may share it). */
    uint32_t max_cols = hp->n_embd > hp->n_ff ? hp->n_embd : hp->n_ff;
    max_cols = hp->n_head * hp->head_dim_v > max_cols ? hp->n_head * hp->head_dim_v : max_cols;
    l->qact_bytes = sl_matmul_scratch_bytes(max_cols, n_batch, SL_ACT_COUNT - 1);
    ok = ok && l->qact_bytes && region(&c, &l->qact, (l->qact_bytes + 3) / 4, 1, 1);
    /* A mixture of experts keeps its own state between its phases. */
    const size_t moe = sl_moe_scratch_floats(hp, n_batch);
    ok = ok && (!hp->n_expert || moe) && region(&c, &l->moe, moe, 1, 1);
    l->total = c;
    return ok;
}

size_t sl_forward_scratch_floats(const sl_hparams *hp, uint32_t n_batch, uint32_t n_ctx, uint32_t n_threads)
{
    layout l;
    return make_layout(hp, n_batch, n_ctx, n_threads, &l) ? l.total : 0;
}

size_t sl_forward_k_floats(const sl_hparams *hp, uint32_t n_ctx)
{
    return (size_t)n_ctx * hp->n_head_kv * hp->head_dim_k;
}

size_t sl_forward_v_floats(const sl_hparams *hp, uint32_t n_ctx)
{
    return (size_t)n_ctx * hp->n_head_kv * hp->head_dim_v;
}

int sl_forward_init(sl_forward *f, const sl_hparams *hp, sl_pool *pool, uint32_t n_batch, uint32_t n_ctx,
                    float *scratch)
{
    memset(f, 0, sizeof *f);
    if (!hp || !pool || !scratch || (uintptr_t)scratch % 64 != 0 || !n_batch || !n_ctx) {
        SL_ERROR("invalid arguments: hp %p pool %p scratch %p n_batch %u n_ctx %u", (const void *)hp,
                 (void *)pool, (void *)scratch, n_batch, n_ctx);
        return -SL_EINVAL;
    }
    const sl_kernels *k = sl_kernels_get();
    if (!k)
        return -SL_EUNSUPPORTED; /* sl_kernels_get logged why */
    *f = (sl_forward){
        .hp = hp, .kern = k, .pool = pool, .n_batch = n_batch, .n_ctx = n_ctx, .scratch = scratch};
    layout l;
    if (!make_layout(hp, n_batch, n_ctx, sl_pool_size(pool), &l)) {
        SL_ERROR("scratch for n_batch = %u, n_ctx = %u does not fit in memory", n_batch, n_ctx);
        memset(f, 0, sizeof *f);
        return -SL_EINVAL;
    }
    f->moe = hp->n_expert ? scratch + l.moe : NULL;
    return 0;
}

/* ---- element-wise pieces ------------------------------------------------ */

/* Rotates one head of `dim` floats in place by the pair angles whose cos and
 * sin are cs[0 .. n_rot/2) and cs[n_rot/2 .. n_rot). Dimensions past n_rot
 * are left alone (partial rotary embeddings). */
static void rope_head(float *v, const float *cs, uint32_t n_rot, sl_rope_type type)
{
    const uint32_t half = n_rot / 2;
    const float *cosv = cs, *sinv = cs + half;
    for (uint32_t i = 0; i < half; i++) {
        /* NORM pairs neighbours; NEOX pairs the two halves of the rotated part. */
        float *a = type == SL_ROPE_NORM ? &v[2 * i] : &v[i];
        float *b = type == SL_ROPE_NORM ? &v[2 * i + 1] : &v[i + half];
        const float x0 = *a, x1 = *b;
        *a = x0 * cosv[i] - x1 * sinv[i];
        *b = x0 * sinv[i] + x1 * cosv[i];
    }
}

static void add_bias(float *v, const sl_tensor *b, int64_t n)
{
    if (!b->data)
        return;
    const float *bb = b->data;
    for (int64_t i = 0; i < n; i++)
        v[i] += bb[i];
}

/* ---- per-token stages run over the pool ---------------------------------- */

typedef struct layer_ctx {
    const sl_forward *f;
    const sl_layer_weights *w;
    const layout *l;
    float *x;
    uint32_t n, pos0;
    float *k_cache, *v_cache;
} layer_ctx;

/* x -> xn with the given norm weight, for tokens [b, e). */
static void norm_tokens(const layer_ctx *c, const sl_tensor *norm, int64_t b, int64_t e)
{
    const uint32_t d = c->f->hp->n_embd;
    float *xn = c->f->scratch + c->l->xn;
    for (int64_t t = b; t < e; t++)
        c->f->kern->rms_norm(c->x + t * d, norm->data, xn + t * d, d, c->f->hp->rms_eps);
}

static void attn_norm_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const layer_ctx *c = ctx;
    norm_tokens(c, &c->w->t[SL_LW_ATTN_NORM], b, e);
}

/* x += xn (the attention output), then xn = ffn_norm(x). */
static void residual_norm_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const layer_ctx *c = ctx;
    const uint32_t d = c->f->hp->n_embd;
    const float *xn = c->f->scratch + c->l->xn;
    for (int64_t t = b; t < e; t++)
        for (uint32_t i = 0; i < d; i++)
            c->x[t * d + i] += xn[t * d + i];
    norm_tokens(c, &c->w->t[SL_LW_FFN_NORM], b, e);
}

/* After the Q/K/V products: biases, per-head norms, RoPE; then this batch's
 * keys and values go into their cache rows (head-major, see forward.h). */
static void qkv_post_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const layer_ctx *c = ctx;
    const sl_hparams *hp = c->f->hp;
    const sl_layer_weights *w = c->w;
    const uint32_t hdk = hp->head_dim_k, qdim = hp->n_head * hdk, kdim = hp->n_head_kv * hdk;
    const uint32_t vdim = hp->n_head_kv * hp->head_dim_v, half = hp->n_rot / 2;
    const uint32_t hdv = hp->head_dim_v, n_ctx = c->f->n_ctx;
    float *q_all = c->f->scratch + c->l->q, *k_all = c->f->scratch + c->l->k, *v_all = c->f->scratch + c->l->v;
    float *cs_all = c->f->scratch + c->l->rope;
    for (int64_t t = b; t < e; t++) {
        float *q = q_all + t * qdim, *k = k_all + t * kdim, *v = v_all + t * vdim;
        add_bias(q, &w->t[SL_LW_Q_BIAS], qdim);
        add_bias(k, &w->t[SL_LW_K_BIAS], kdim);
        add_bias(v, &w->t[SL_LW_V_BIAS], vdim);
        if (w->t[SL_LW_Q_NORM].data) {
            for (uint32_t h = 0; h < hp->n_head; h++)
                c->f->kern->rms_norm(q + h * hdk, w->t[SL_LW_Q_NORM].data, q + h * hdk, hdk, hp->rms_eps);
            for (uint32_t h = 0; h < hp->n_head_kv; h++)
                c->f->kern->rms_norm(k + h * hdk, w->t[SL_LW_K_NORM].data, k + h * hdk, hdk, hp->rms_eps);
        }
        /* Angles in double: positions times small frequencies lose bits in
         * float, and this costs n_rot/2 sin/cos per token per layer. */
        float *cs = cs_all + t * hp->n_rot;
        const double pos = (double)(c->pos0 + (uint32_t)t) * (double)hp->rope_freq_scale;
        for (uint32_t i = 0; i < half; i++) {
            const double theta = pos * (double)hp->rope_inv_freq[i];
            cs[i] = (float)cos(theta);
            cs[half + i] = (float)sin(theta);
        }
        for (uint32_t h = 0; h < hp->n_head; h++)
            rope_head(q + h * hdk, cs, hp->n_rot, hp->rope_type);
        for (uint32_t h = 0; h < hp->n_head_kv; h++)
            rope_head(k + h * hdk, cs, hp->n_rot, hp->rope_type);
        const size_t row = c->pos0 + (size_t)t;
        for (uint32_t g = 0; g < hp->n_head_kv; g++) {
            memcpy(c->k_cache + ((size_t)g * n_ctx + row) * hdk, k + (size_t)g * hdk, hdk * sizeof *k);
            memcpy(c->v_cache + ((size_t)g * n_ctx + row) * hdv, v + (size_t)g * hdv, hdv * sizeof *v);
        }
    }
}

/* Causal attention; item = token * n_head + head. */
static void attention_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    const layer_ctx *c = ctx;
    const sl_hparams *hp = c->f->hp;
    const uint32_t hdk = hp->head_dim_k, hdv = hp->head_dim_v;
    const uint32_t qdim = hp->n_head * hdk, n_ctx = c->f->n_ctx;
    const uint32_t odim = hp->n_head * hdv, group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hdk);
    const sl_kernels *kern = c->f->kern;
    float *s = c->f->scratch + c->l->scores + worker * c->l->score_stride;
    for (int64_t it = b; it < e; it++) {
        const uint32_t t = (uint32_t)(it / hp->n_head), h = (uint32_t)(it % hp->n_head);
        const uint32_t g = h / group, last = c->pos0 + t;
        const float *q = c->f->scratch + c->l->q + (size_t)t * qdim + (size_t)h * hdk;
        const float *keys = c->k_cache + (size_t)g * n_ctx * hdk, *vals = c->v_cache + (size_t)g * n_ctx * hdv;
        const float mx = kern->attn_scores(q, keys, (int64_t)last + 1, hdk, scale, s);
        const double sum = kern->exp_sum(s, mx, (int64_t)last + 1);
        float *o = c->f->scratch + c->l->att + (size_t)t * odim + (size_t)h * hdv;
        kern->attn_wsum(o, s, (float)(1.0 / sum), vals, (int64_t)last + 1, hdv);
    }
}

/* xn += bo: the attention output bias some llama conversions carry. */
static void add_o_bias_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const layer_ctx *c = ctx;
    const uint32_t d = c->f->hp->n_embd;
    float *xn = c->f->scratch + c->l->xn;
    for (int64_t t = b; t < e; t++)
        add_bias(xn + t * d, &c->w->t[SL_LW_O_BIAS], d);
}

/* gate = silu(gate) * up. */
static void swiglu_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const layer_ctx *c = ctx;
    const size_t f = c->f->hp->n_ff;
    float *gate = c->f->scratch + c->l->gate, *up = c->f->scratch + c->l->up;
    c->f->kern->silu_mul(gate + (size_t)b * f, up + (size_t)b * f, (int64_t)(e - b) * (int64_t)f);
}

/* x += xn, the FFN (or attention) output. */
static void residual_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const layer_ctx *c = ctx;
    const size_t d = c->f->hp->n_embd;
    const float *xn = c->f->scratch + c->l->xn;
    for (size_t i = (size_t)b * d; i < (size_t)e * d; i++)
        c->x[i] += xn[i];
}

/* ---- entry points --------------------------------------------------------- */

static int check_batch(const sl_forward *f, uint32_t n, const char *func)
{
    if (n == 0 || n > f->n_batch) {
        sl_log(SL_LOG_ERROR, func, "batch of %u tokens is outside [1, n_batch = %u]", n, f->n_batch);
        return -SL_ERANGE;
    }
    return 0;
}

int sl_forward_embed(const sl_forward *f, const sl_tensor *tok_embd, const int32_t *tokens, uint32_t n,
                     float *x)
{
    int rc = check_batch(f, n, __func__);
    if (rc < 0)
        return rc;
    for (uint32_t t = 0; t < n; t++) {
        if (tokens[t] < 0 || (uint32_t)tokens[t] >= f->hp->n_vocab) {
            SL_ERROR("token %d at index %u is outside the vocabulary [0, %u)", tokens[t], t, f->hp->n_vocab);
            return -SL_ERANGE;
        }
    }
    const uint32_t d = f->hp->n_embd;
    SL_ASSERT(tok_embd->data && tok_embd->ne[0] == d && tok_embd->ne[1] == f->hp->n_vocab);
    const sl_to_float_fn to_float = f->kern->to_float[tok_embd->type];
    SL_ASSERT(to_float != NULL);
    const size_t row_bytes = sl_tensor_row_bytes(tok_embd);
    for (uint32_t t = 0; t < n; t++)
        to_float((const uint8_t *)tok_embd->data + (size_t)tokens[t] * row_bytes, x + (size_t)t * d, d);
    return 0;
}

/* Shapes were validated when the model was opened; a mismatch here means a
 * caller bound the wrong views. */
static void assert_layer(const sl_hparams *hp, const sl_layer_weights *w, bool dense_ffn)
{
    static const int matrices[] = {SL_LW_Q, SL_LW_K, SL_LW_V, SL_LW_O, SL_LW_GATE, SL_LW_UP, SL_LW_DOWN};
    SL_ASSERT(w->t[SL_LW_ATTN_NORM].data && w->t[SL_LW_FFN_NORM].data);
    for (size_t i = 0; i < (dense_ffn ? 7u : 4u); i++)
        SL_ASSERT(w->t[matrices[i]].data != NULL);
    SL_ASSERT(w->t[SL_LW_Q].ne[0] == hp->n_embd && w->t[SL_LW_Q].ne[1] == hp->n_head * hp->head_dim_k);
    SL_ASSERT(w->t[SL_LW_K].ne[1] == hp->n_head_kv * hp->head_dim_k);
    SL_ASSERT(w->t[SL_LW_V].ne[1] == hp->n_head_kv * hp->head_dim_v);
    SL_ASSERT(w->t[SL_LW_O].ne[0] == hp->n_head * hp->head_dim_v && w->t[SL_LW_O].ne[1] == hp->n_embd);
    SL_ASSERT(!dense_ffn || (w->t[SL_LW_GATE].ne[1] == hp->n_ff && w->t[SL_LW_DOWN].ne[0] == hp->n_ff));
    SL_ASSERT(!w->t[SL_LW_Q_NORM].data == !w->t[SL_LW_K_NORM].data);
}

/* The layer, or (dense_ffn false) its attention block only. */
static int run_layer(const sl_forward *f, const sl_layer_weights *w, float *x, uint32_t n, uint32_t pos0,
                     float *k_cache, float *v_cache, bool dense_ffn)
{
    int rc = check_batch(f, n, __func__);
    if (rc < 0)
        return rc;
    if (pos0 > f->n_ctx || n > f->n_ctx - pos0) {
        SL_ERROR("positions %u..%u do not fit a KV cache of n_ctx = %u", pos0, pos0 + n - 1, f->n_ctx);
        return -SL_ERANGE;
    }
    const sl_hparams *hp = f->hp;
    assert_layer(hp, w, dense_ffn);
    layout l;
    SL_ASSERT(make_layout(hp, f->n_batch, f->n_ctx, sl_pool_size(f->pool), &l));
    float *s = f->scratch;
    layer_ctx c = {.f = f, .w = w, .l = &l, .x = x, .n = n, .pos0 = pos0, .k_cache = k_cache, .v_cache = v_cache};

    /* Attention block. */
    sl_pool_run(f->pool, n, attn_norm_job, &c);
    const sl_matmul_op qkv[3] = {
        {&w->t[SL_LW_Q], s + l.xn, s + l.q},
        {&w->t[SL_LW_K], s + l.xn, s + l.k},
        {&w->t[SL_LW_V], s + l.xn, s + l.v},
    };
    sl_matmul(f->pool, f->kern, qkv, 3, n, s + l.qact, l.qact_bytes);
    sl_pool_run(f->pool, n, qkv_post_job, &c);
    sl_pool_run(f->pool, (int64_t)n * hp->n_head, attention_job, &c);
    const sl_matmul_op o = {&w->t[SL_LW_O], s + l.att, s + l.xn};
    sl_matmul(f->pool, f->kern, &o, 1, n, s + l.qact, l.qact_bytes);
    if (w->t[SL_LW_O_BIAS].data)
        sl_pool_run(f->pool, n, add_o_bias_job, &c);

    if (!dense_ffn) { /* x += the attention output; the caller's FFN follows */
        sl_pool_run(f->pool, n, residual_job, &c);
        return 0;
    }

    /* Feed-forward block. */
    sl_pool_run(f->pool, n, residual_norm_job, &c);
    const sl_matmul_op gate_up[2] = {
        {&w->t[SL_LW_GATE], s + l.xn, s + l.gate},
        {&w->t[SL_LW_UP], s + l.xn, s + l.up},
    };
    sl_matmul(f->pool, f->kern, gate_up, 2, n, s + l.qact, l.qact_bytes);
    sl_pool_run(f->pool, n, swiglu_job, &c);
    const sl_matmul_op down = {&w->t[SL_LW_DOWN], s + l.gate, s + l.xn};
    sl_matmul(f->pool, f->kern, &down, 1, n, s + l.qact, l.qact_bytes);
    sl_pool_run(f->pool, n, residual_job, &c);
    return 0;
}

int sl_forward_layer(const sl_forward *f, const sl_layer_weights *w, float *x, uint32_t n, uint32_t pos0,
                     float *k_cache, float *v_cache)
{
    return run_layer(f, w, x, n, pos0, k_cache, v_cache, true);
}

int sl_forward_attention(const sl_forward *f, const sl_layer_weights *w, float *x, uint32_t n, uint32_t pos0,
                         float *k_cache, float *v_cache)
{
    return run_layer(f, w, x, n, pos0, k_cache, v_cache, false);
}

int sl_forward_output(const sl_forward *f, const sl_global_weights *g, const float *x, uint32_t n,
                      bool all_tokens, float *logits)
{
    int rc = check_batch(f, n, __func__);
    if (rc < 0)
        return rc;
    const sl_hparams *hp = f->hp;
    const sl_tensor *norm = &g->t[SL_GW_OUTPUT_NORM], *out = &g->t[SL_GW_OUTPUT];
    SL_ASSERT(norm->data && out->data && out->ne[0] == hp->n_embd && out->ne[1] == hp->n_vocab);
    layout l;
    SL_ASSERT(make_layout(hp, f->n_batch, f->n_ctx, sl_pool_size(f->pool), &l));
    float *xn = f->scratch + l.xn;
    const uint32_t d = hp->n_embd, first = all_tokens ? 0 : n - 1, m = n - first;
    for (uint32_t t = 0; t < m; t++)
        f->kern->rms_norm(x + (size_t)(first + t) * d, norm->data, xn + (size_t)t * d, d, hp->rms_eps);
    const sl_matmul_op op = {out, xn, logits};
    sl_matmul(f->pool, f->kern, &op, 1, m, f->scratch + l.qact, l.qact_bytes);
    return 0;
}
