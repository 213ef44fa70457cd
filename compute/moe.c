/* The mixture-of-experts feed-forward block; see moe.h.
 *
 * Scratch (sl_forward.moe), in floats, each region 64-byte aligned:
 *   hdr     4 words: n of the routed batch, whether the shared expert ran
 *   h       [n_batch][n_embd]      normalised input
 *   logits  [n_batch][n_expert]    router output
 *   sel     [n_batch][K] int32     each token's experts, best first (K = n_expert_used)
 *   wt      [n_batch][K]           their weights
 *   counts  [n_expert] u32, start [n_expert + 1] u32, done [n_expert] u32
 *   list    [n_batch * K] u32      t * K + rank, grouped by expert, tokens ascending
 *   gather  [n_batch][n_embd]      one expert's inputs
 *   gate, up [n_batch][n_ff]       hidden activations (n_ff: widest expert)
 *   dout    [n_batch][n_embd]      one expert's outputs
 *   out     [n_batch][K][n_embd]   each token's expert outputs, by rank
 *   sout    [n_batch][n_embd], sgate [n_batch]: the shared expert
 *   qact    quantized matmul inputs
 * Reductions (norm, softmax) accumulate in double, as forward.c does. */
#include "compute/moe.h"

#include <math.h>
#include <string.h>

#include "common/log.h"
#include "compute/matmul.h"

#define ALIGN_FLOATS 16

typedef struct moe_layout {
    size_t hdr, h, logits, sel, wt, counts, start, done, list, gather, gate, up, dout, out, sout, sgate, qact;
    size_t qact_bytes;
    size_t total;
} moe_layout;

enum { HDR_N = 0, HDR_SHARED = 1 };

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

static bool make_layout(const sl_hparams *hp, uint32_t nb, moe_layout *l)
{
    if (!hp->n_expert || !nb)
        return false;
    const uint64_t d = hp->n_embd, E = hp->n_expert, K = hp->n_expert_used, ff = hp->n_ff;
    size_t c = 0;
    bool ok = region(&c, &l->hdr, 4, 1, 1) && region(&c, &l->h, nb, d, 1) && region(&c, &l->logits, nb, E, 1) &&
              region(&c, &l->sel, nb, K, 1) && region(&c, &l->wt, nb, K, 1) && region(&c, &l->counts, E, 1, 1) &&
              region(&c, &l->start, E + 1, 1, 1) && region(&c, &l->done, E, 1, 1) &&
              region(&c, &l->list, nb, K, 1) && region(&c, &l->gather, nb, d, 1) &&
              region(&c, &l->gate, nb, ff, 1) && region(&c, &l->up, nb, ff, 1) && region(&c, &l->dout, nb, d, 1) &&
              region(&c, &l->out, nb, K, d) && region(&c, &l->sout, nb, d, 1) && region(&c, &l->sgate, nb, 1, 1);
    /* One matmul call quantizes one input, once per quantized format. */
    const uint64_t max_cols = d > ff ? d : ff;
    l->qact_bytes = sl_matmul_scratch_bytes((int64_t)max_cols, nb, SL_ACT_COUNT - 1);
    ok = ok && l->qact_bytes && region(&c, &l->qact, (l->qact_bytes + 3) / 4, 1, 1);
    l->total = c;
    return ok;
}

size_t sl_moe_scratch_floats(const sl_hparams *hp, uint32_t n_batch)
{
    moe_layout l;
    return make_layout(hp, n_batch, &l) ? l.total : 0;
}

/* Everything a phase needs, rebuilt per call from the forward description. */
typedef struct moe_ctx {
    const sl_forward *f;
    const sl_hparams *hp;
    moe_layout l;
    float *s; /* the scratch region */
    uint32_t *hdr;
    const sl_tensor *norm, *router;
    const float *x;
    float *xo;
    uint32_t n;
} moe_ctx;

static void ctx_init(moe_ctx *c, const sl_forward *f)
{
    memset(c, 0, sizeof *c);
    c->f = f;
    c->hp = f->hp;
    SL_ASSERT(f->moe != NULL && make_layout(f->hp, f->n_batch, &c->l));
    c->s = f->moe;
    c->hdr = (uint32_t *)(c->s + c->l.hdr);
}

static int check_n(const sl_forward *f, uint32_t n, const char *func)
{
    if (n == 0 || n > f->n_batch) {
        sl_log(SL_LOG_ERROR, func, "batch of %u tokens is outside [1, n_batch = %u]", n, f->n_batch);
        return -SL_ERANGE;
    }
    return 0;
}

/* h[t] = RMSNorm(x[t]) * ffn_norm. */
static void norm_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const moe_ctx *c = ctx;
    const uint32_t d = c->hp->n_embd;
    float *h = c->s + c->l.h;
    for (int64_t t = b; t < e; t++)
        c->f->kern->rms_norm(c->x + t * d, c->norm->data, h + t * d, d, c->hp->rms_eps);
}

/* Softmax over the router logits, then the K best, then their weights. */
static void select_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const moe_ctx *c = ctx;
    const uint32_t E = c->hp->n_expert, K = c->hp->n_expert_used;
    for (int64_t t = b; t < e; t++) {
        const float *lg = c->s + c->l.logits + (size_t)t * E;
        int32_t *sel = (int32_t *)(c->s + c->l.sel) + (size_t)t * K;
        float *wt = c->s + c->l.wt + (size_t)t * K;
        float mx = -INFINITY;
        for (uint32_t i = 0; i < E; i++)
            mx = lg[i] > mx ? lg[i] : mx;
        double sum = 0;
        for (uint32_t i = 0; i < E; i++)
            sum += exp((double)lg[i] - (double)mx);
        /* Selection by logit is selection by probability; a NaN logit is
         * never chosen over a number, so a token always gets K experts. */
        uint64_t taken[SL_MAX_EXPERTS / 64] = {0};
        double chosen = 0;
        for (uint32_t r = 0; r < K; r++) {
            int32_t best = -1;
            for (uint32_t i = 0; i < E; i++)
                if (!(taken[i / 64] >> (i % 64) & 1) && (best < 0 || lg[i] > lg[best]))
                    best = (int32_t)i;
            taken[best / 64] |= 1ull << (best % 64);
            sel[r] = best;
            wt[r] = (float)(exp((double)lg[best] - (double)mx) / sum);
            chosen += wt[r];
        }
        if (c->hp->expert_weights_norm && chosen > 0)
            for (uint32_t r = 0; r < K; r++)
                wt[r] = (float)(wt[r] / chosen);
    }
}

/* Routes the tokens whose normalised inputs are in h: logits, selection. */
static void route_h(moe_ctx *c, const sl_tensor *router)
{
    float *s = c->s;
    const sl_matmul_op op = {router, s + c->l.h, s + c->l.logits};
    sl_matmul(c->f->pool, c->f->kern, &op, 1, c->n, s + c->l.qact, c->l.qact_bytes);
    sl_pool_run(c->f->pool, c->n, select_job, c);
}

static void assert_router(const sl_hparams *hp, const sl_layer_weights *w)
{
    SL_ASSERT(w->t[SL_LW_FFN_NORM].data && w->t[SL_LW_GATE_INP].data);
    SL_ASSERT(w->t[SL_LW_GATE_INP].ne[0] == hp->n_embd && w->t[SL_LW_GATE_INP].ne[1] == hp->n_expert);
}

int sl_moe_route(const sl_forward *f, const sl_layer_weights *w, const float *x, uint32_t n, uint32_t *counts)
{
    int rc = check_n(f, n, __func__);
    if (rc < 0)
        return rc;
    moe_ctx c;
    ctx_init(&c, f);
    const sl_hparams *hp = f->hp;
    assert_router(hp, w);
    c.x = x;
    c.n = n;
    c.norm = &w->t[SL_LW_FFN_NORM];
    sl_pool_run(f->pool, n, norm_job, &c);
    route_h(&c, &w->t[SL_LW_GATE_INP]);

    /* Group (token, rank) pairs by expert, tokens ascending within each. */
    const uint32_t E = hp->n_expert, K = hp->n_expert_used;
    uint32_t *cnt = (uint32_t *)(c.s + c.l.counts), *start = (uint32_t *)(c.s + c.l.start);
    uint32_t *done = (uint32_t *)(c.s + c.l.done), *list = (uint32_t *)(c.s + c.l.list);
    const int32_t *sel = (const int32_t *)(c.s + c.l.sel);
    memset(cnt, 0, E * sizeof *cnt);
    memset(done, 0, E * sizeof *done);
    for (uint32_t i = 0; i < n * K; i++)
        cnt[sel[i]]++;
    start[0] = 0;
    for (uint32_t e = 0; e < E; e++)
        start[e + 1] = start[e] + cnt[e];
    SL_ASSERT(start[E] == n * K);
    for (uint32_t i = 0; i < n * K; i++)
        list[start[sel[i]] + done[sel[i]]++] = i;
    memset(done, 0, E * sizeof *done);
    memcpy(counts, cnt, E * sizeof *counts);
    c.hdr[HDR_N] = n;
    c.hdr[HDR_SHARED] = 0;
    return 0;
}

const int32_t *sl_moe_token_experts(const sl_forward *f, uint32_t t)
{
    moe_ctx c;
    ctx_init(&c, f);
    SL_ASSERT(t < f->n_batch);
    return (const int32_t *)(c.s + c.l.sel) + (size_t)t * f->hp->n_expert_used;
}

const float *sl_moe_token_weights(const sl_forward *f, uint32_t t)
{
    moe_ctx c;
    ctx_init(&c, f);
    SL_ASSERT(t < f->n_batch);
    return c.s + c.l.wt + (size_t)t * f->hp->n_expert_used;
}

/* gate[i] = silu(gate[i]) * up[i] over rows of `width`. */
typedef struct swiglu_ctx {
    const sl_kernels *kern;
    float *gate, *up;
    size_t width;
} swiglu_ctx;

static void swiglu_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const swiglu_ctx *c = ctx;
    c->kern->silu_mul(c->gate + (size_t)b * c->width, c->up + (size_t)b * c->width,
                      (int64_t)(e - b) * (int64_t)c->width);
}

/* y[m][n_embd] = down(silu(gate x) * (up x)) for m input rows x. */
static void ffn_rows(const moe_ctx *c, const sl_tensor *gate, const sl_tensor *up, const sl_tensor *down,
                     const float *x, uint32_t m, float *y)
{
    float *s = c->s;
    const sl_matmul_op gu[2] = {{gate, x, s + c->l.gate}, {up, x, s + c->l.up}};
    sl_matmul(c->f->pool, c->f->kern, gu, 2, m, s + c->l.qact, c->l.qact_bytes);
    swiglu_ctx sc = {c->f->kern, s + c->l.gate, s + c->l.up, (size_t)gate->ne[1]};
    sl_pool_run(c->f->pool, m, swiglu_job, &sc);
    const sl_matmul_op dn = {down, s + c->l.gate, y};
    sl_matmul(c->f->pool, c->f->kern, &dn, 1, m, s + c->l.qact, c->l.qact_bytes);
}

void sl_moe_shared(const sl_forward *f, const sl_layer_weights *w)
{
    if (!w->t[SL_LW_GATE_SHEXP].data)
        return;
    moe_ctx c;
    ctx_init(&c, f);
    const sl_hparams *hp = f->hp;
    const uint32_t n = c.hdr[HDR_N], d = hp->n_embd;
    SL_ASSERT(n >= 1 && n <= f->n_batch && w->t[SL_LW_GATE_INP_SHEXP].data);
    SL_ASSERT(w->t[SL_LW_GATE_SHEXP].ne[1] == hp->n_ff_shexp && w->t[SL_LW_DOWN_SHEXP].ne[1] == hp->n_embd);
    ffn_rows(&c, &w->t[SL_LW_GATE_SHEXP], &w->t[SL_LW_UP_SHEXP], &w->t[SL_LW_DOWN_SHEXP], c.s + c.l.h, n,
             c.s + c.l.sout);
    const float *g = w->t[SL_LW_GATE_INP_SHEXP].data, *h = c.s + c.l.h;
    float *sg = c.s + c.l.sgate;
    for (uint32_t t = 0; t < n; t++)
        sg[t] = 1.0f / (1.0f + expf(-f->kern->vdot(g, h + (size_t)t * d, d)));
    c.hdr[HDR_SHARED] = 1;
}

void sl_moe_expert(const sl_forward *f, uint32_t e, const sl_expert_weights *ew)
{
    moe_ctx c;
    ctx_init(&c, f);
    const sl_hparams *hp = f->hp;
    const uint32_t K = hp->n_expert_used, d = hp->n_embd;
    SL_ASSERT(e < hp->n_expert);
    uint32_t *start = (uint32_t *)(c.s + c.l.start), *done = (uint32_t *)(c.s + c.l.done);
    const uint32_t *list = (const uint32_t *)(c.s + c.l.list);
    const uint32_t m = start[e + 1] - start[e];
    SL_ASSERT(m > 0 && !done[e]);
    SL_ASSERT(ew->t[SL_EW_GATE].data && ew->t[SL_EW_UP].data && ew->t[SL_EW_DOWN].data);
    SL_ASSERT(ew->t[SL_EW_GATE].ne[0] == d && ew->t[SL_EW_GATE].ne[1] == hp->n_ff_exp &&
              ew->t[SL_EW_DOWN].ne[0] == hp->n_ff_exp && ew->t[SL_EW_DOWN].ne[1] == d);
    float *gather = c.s + c.l.gather, *dout = c.s + c.l.dout, *out = c.s + c.l.out;
    const float *h = c.s + c.l.h;
    for (uint32_t i = 0; i < m; i++)
        memcpy(gather + (size_t)i * d, h + (size_t)(list[start[e] + i] / K) * d, d * sizeof *gather);
    ffn_rows(&c, &ew->t[SL_EW_GATE], &ew->t[SL_EW_UP], &ew->t[SL_EW_DOWN], gather, m, dout);
    for (uint32_t i = 0; i < m; i++)
        memcpy(out + (size_t)list[start[e] + i] * d, dout + (size_t)i * d, d * sizeof *out);
    done[e] = 1;
}

/* x[t] += sum over ranks of weight * output, then the gated shared expert. */
static void finish_job(void *ctx, int64_t b, int64_t e, uint32_t worker)
{
    (void)worker;
    const moe_ctx *c = ctx;
    const uint32_t K = c->hp->n_expert_used, d = c->hp->n_embd;
    const float *out = c->s + c->l.out, *wt = c->s + c->l.wt;
    const float *sout = c->s + c->l.sout, *sg = c->s + c->l.sgate;
    const bool shared = c->hdr[HDR_SHARED] != 0;
    for (int64_t t = b; t < e; t++) {
        float *x = c->xo + (size_t)t * d;
        const float *o = out + (size_t)t * K * d;
        const float *w = wt + (size_t)t * K;
        for (uint32_t i = 0; i < d; i++) {
            float y = 0.0f;
            for (uint32_t r = 0; r < K; r++)
                y += w[r] * o[(size_t)r * d + i];
            if (shared)
                y += sg[t] * sout[(size_t)t * d + i];
            x[i] += y;
        }
    }
}

void sl_moe_finish(const sl_forward *f, float *x)
{
    moe_ctx c;
    ctx_init(&c, f);
    const sl_hparams *hp = f->hp;
    const uint32_t n = c.hdr[HDR_N];
    SL_ASSERT(n >= 1 && n <= f->n_batch);
    const uint32_t *cnt = (const uint32_t *)(c.s + c.l.counts), *done = (const uint32_t *)(c.s + c.l.done);
    for (uint32_t e = 0; e < hp->n_expert; e++)
        SL_ASSERT(!cnt[e] == !done[e]);
    c.xo = x;
    c.n = n;
    sl_pool_run(f->pool, n, finish_job, &c);
}

int sl_moe_ffn(const sl_forward *f, const sl_model *m, uint32_t il, const sl_layer_weights *w, float *x,
               uint32_t n)
{
    uint32_t counts[SL_MAX_EXPERTS];
    int rc = sl_moe_route(f, w, x, n, counts);
    if (rc < 0)
        return rc;
    sl_moe_shared(f, w);
    for (uint32_t e = 0; e < f->hp->n_expert; e++) {
        if (!counts[e])
            continue;
        sl_expert_weights ew;
        sl_model_expert_weights(m, il, e, &ew);
        sl_moe_expert(f, e, &ew);
    }
    sl_moe_finish(f, x);
    return 0;
}

int sl_moe_predict(const sl_forward *f, const sl_layer_weights *next, const float *x, uint32_t n, uint8_t *want)
{
    int rc = check_n(f, n, __func__);
    if (rc < 0)
        return rc;
    moe_ctx c;
    ctx_init(&c, f);
    assert_router(f->hp, next);
    c.x = x;
    c.n = n;
    c.norm = &next->t[SL_LW_FFN_NORM];
    sl_pool_run(f->pool, n, norm_job, &c);
    route_h(&c, &next->t[SL_LW_GATE_INP]);
    const uint32_t K = f->hp->n_expert_used;
    const int32_t *sel = (const int32_t *)(c.s + c.l.sel);
    memset(want, 0, f->hp->n_expert);
    for (uint32_t i = 0; i < n * K; i++)
        want[sel[i]] = 1;
    c.hdr[HDR_N] = 0; /* the routing state is gone: no finish now */
    return 0;
}
