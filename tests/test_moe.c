/* qwen2moe and qwen3moe on synthesized GGUF files: the mixture-of-experts
 * architectures testdata has no reference run for (Mixtral-style llama has
 * one: tiny-moe-q8_0, in test_forward).
 *
 * The test writes tiny models with random F32 weights (experts as 3-D
 * tensors, in the interleaved order real files have, so that layer units
 * have several ranges) with model/gguf_write.h, and compares the engine's
 * logits with a float64 forward pass written here from the published
 * formulas: softmax routing to the top k, renormalised or not, the shared
 * expert behind its sigmoid gate, qwen2 biases or qwen3 q/k norms. The
 * reference also reports how close each routing decision was, so that a
 * disagreement is known to be a bug and not a near-tie. The same builder
 * makes broken files to check that they are refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/engine.h"
#include "model/gguf_write.h"
#include "model/model.h"
#include "tests/testutil.h"

#define MAX_TENSORS 96
#define MAX_E 8

typedef struct spec {
    const char *arch;
    uint32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_vocab;
    uint32_t n_expert, n_used, n_ff_exp, n_ff_shexp; /* n_ff_shexp 0: no shared expert */
    bool biases, qk_norm;
    int norm_key;            /* -1: no expert_weights_norm key, else its value */
    bool norm;               /* what the routing does (the key, else the arch default) */
    uint32_t gating;         /* expert_gating_func to write; 0: none */
    bool no_expert_count;    /* leave expert_count out */
    const char *drop;        /* leave this tensor out */
    const char *bad_shape;   /* one more expert in this 3-D tensor's shape */
} spec;

typedef struct tensor {
    char name[64];
    int64_t ne[3];
    uint32_t n_dims;
    float *data;
} tensor;

typedef struct synth {
    tensor t[MAX_TENSORS];
    uint32_t n;
    uint64_t rng;
} synth;

static double uniform(synth *s)
{
    s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(s->rng >> 11) / (double)(1ull << 52) - 1.0;
}

/* A tensor of ne0 x ne1 x ne2 (n_dims of them used): matrices scaled for
 * unit-variance outputs, vectors (n_dims 1) around `center`. */
static void add(synth *s, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2, double center)
{
    SL_ASSERT(s->n < MAX_TENSORS);
    tensor *t = &s->t[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->n_dims = n_dims;
    size_t n = (size_t)(ne0 * ne1 * ne2);
    t->data = malloc(n * sizeof *t->data);
    double scale = n_dims > 1 ? sqrt(3.0 / (double)ne0) : 0.2;
    for (size_t i = 0; i < n; i++)
        t->data[i] = (float)(center + scale * uniform(s));
}

static const tensor *find(const synth *s, const char *name)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return &s->t[i];
    return NULL;
}

static const float *layer_w(const synth *s, uint32_t il, const char *suffix)
{
    char name[64];
    snprintf(name, sizeof name, "blk.%u.%s", il, suffix);
    const tensor *t = find(s, name);
    SL_ASSERT(t != NULL);
    return t->data;
}

/* Tensors in the order real converted files have them: sorted by name
 * within each layer, which interleaves the experts with the router. */
static void make_weights(const spec *sp, synth *s, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->rng = seed;
    const int64_t d = sp->n_embd, q = (int64_t)sp->n_head * sp->head_dim, kv = (int64_t)sp->n_head_kv * sp->head_dim;
    const int64_t E = sp->n_expert, ff = sp->n_ff_exp, fs = sp->n_ff_shexp;
    add(s, "output.weight", 2, d, sp->n_vocab, 1, 0.0);
    add(s, "output_norm.weight", 1, d, 1, 1, 1.0);
    add(s, "token_embd.weight", 2, d, sp->n_vocab, 1, 0.0);
    for (uint32_t il = 0; il < sp->n_layer; il++) {
        char name[64];
#define L(suffix) (snprintf(name, sizeof name, "blk.%u.%s", il, suffix), name)
        add(s, L("attn_k.weight"), 2, d, kv, 1, 0.0);
        if (sp->biases)
            add(s, L("attn_k.bias"), 1, kv, 1, 1, 0.0);
        if (sp->qk_norm)
            add(s, L("attn_k_norm.weight"), 1, sp->head_dim, 1, 1, 1.0);
        add(s, L("attn_norm.weight"), 1, d, 1, 1, 1.0);
        add(s, L("attn_output.weight"), 2, q, d, 1, 0.0);
        add(s, L("attn_q.weight"), 2, d, q, 1, 0.0);
        if (sp->biases)
            add(s, L("attn_q.bias"), 1, q, 1, 1, 0.0);
        if (sp->qk_norm)
            add(s, L("attn_q_norm.weight"), 1, sp->head_dim, 1, 1, 1.0);
        add(s, L("attn_v.weight"), 2, d, kv, 1, 0.0);
        if (sp->biases)
            add(s, L("attn_v.bias"), 1, kv, 1, 1, 0.0);
        add(s, L("ffn_down_exps.weight"), 3, ff, d, E, 0.0);
        if (fs)
            add(s, L("ffn_down_shexp.weight"), 2, fs, d, 1, 0.0);
        add(s, L("ffn_gate_exps.weight"), 3, d, ff, E, 0.0);
        add(s, L("ffn_gate_inp.weight"), 2, d, E, 1, 0.0);
        if (fs) {
            add(s, L("ffn_gate_inp_shexp.weight"), 1, d, 1, 1, 0.0);
            add(s, L("ffn_gate_shexp.weight"), 2, d, fs, 1, 0.0);
        }
        add(s, L("ffn_norm.weight"), 1, d, 1, 1, 1.0);
        add(s, L("ffn_up_exps.weight"), 3, d, ff, E, 0.0);
        if (fs)
            add(s, L("ffn_up_shexp.weight"), 2, d, fs, 1, 0.0);
#undef L
    }
}

static void free_weights(synth *s)
{
    for (uint32_t i = 0; i < s->n; i++)
        free(s->t[i].data);
}

static uint8_t *write_image(const spec *sp, const synth *s, size_t *len)
{
    sl_gguf_writer *w = NULL;
    int rc = sl_gguf_writer_new_mem(&w);
    CHECK(rc == 0, "writer");
    if (rc)
        return NULL;
    char key[128];
    const char *a = sp->arch;
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
    rc |= sl_gguf_writer_add_str(w, "general.architecture", a);
    rc |= sl_gguf_writer_add_u32(w, K("context_length"), 256);
    rc |= sl_gguf_writer_add_u32(w, K("embedding_length"), sp->n_embd);
    rc |= sl_gguf_writer_add_u32(w, K("block_count"), sp->n_layer);
    rc |= sl_gguf_writer_add_u32(w, K("feed_forward_length"), 4 * sp->n_embd); /* dense width: unused */
    rc |= sl_gguf_writer_add_u32(w, K("attention.head_count"), sp->n_head);
    rc |= sl_gguf_writer_add_u32(w, K("attention.head_count_kv"), sp->n_head_kv);
    rc |= sl_gguf_writer_add_u32(w, K("attention.key_length"), sp->head_dim);
    rc |= sl_gguf_writer_add_u32(w, K("attention.value_length"), sp->head_dim);
    rc |= sl_gguf_writer_add_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-6f);
    rc |= sl_gguf_writer_add_f32(w, K("rope.freq_base"), 1e6f);
    if (!sp->no_expert_count)
        rc |= sl_gguf_writer_add_u32(w, K("expert_count"), sp->n_expert);
    rc |= sl_gguf_writer_add_u32(w, K("expert_used_count"), sp->n_used);
    if (strcmp(a, "llama") != 0)
        rc |= sl_gguf_writer_add_u32(w, K("expert_feed_forward_length"), sp->n_ff_exp);
    if (sp->n_ff_shexp)
        rc |= sl_gguf_writer_add_u32(w, K("expert_shared_feed_forward_length"), sp->n_ff_shexp);
    if (sp->norm_key >= 0)
        rc |= sl_gguf_writer_add_bool(w, K("expert_weights_norm"), sp->norm_key != 0);
    if (sp->gating)
        rc |= sl_gguf_writer_add_u32(w, K("expert_gating_func"), sp->gating);
#undef K
    rc |= sl_gguf_writer_arr_begin(w, "tokenizer.ggml.tokens", SL_GGUF_STRING);
    for (uint32_t i = 0; i < sp->n_vocab; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "t%u", i);
        rc |= sl_gguf_writer_add_str(w, NULL, tok);
    }
    rc |= sl_gguf_writer_arr_end(w);
    for (uint32_t i = 0; i < s->n; i++) {
        const tensor *t = &s->t[i];
        if (sp->drop && strcmp(sp->drop, t->name) == 0)
            continue;
        int64_t ne[3] = {t->ne[0], t->ne[1], t->ne[2]};
        if (sp->bad_shape && strcmp(sp->bad_shape, t->name) == 0)
            ne[2]++;
        rc |= sl_gguf_writer_add_tensor(w, t->name, t->n_dims, ne, SL_F32);
    }
    rc |= sl_gguf_writer_write_header(w);
    for (uint32_t i = 0; i < s->n; i++) {
        const tensor *t = &s->t[i];
        if (sp->drop && strcmp(sp->drop, t->name) == 0)
            continue;
        size_t n = (size_t)(t->ne[0] * t->ne[1] * t->ne[2]);
        size_t extra = sp->bad_shape && strcmp(sp->bad_shape, t->name) == 0 ? (size_t)(t->ne[0] * t->ne[1]) : 0;
        float *buf = calloc(n + extra, sizeof *buf);
        memcpy(buf, t->data, n * sizeof *buf);
        rc |= sl_gguf_writer_write_data(w, buf, (n + extra) * 4);
        free(buf);
    }
    rc |= sl_gguf_writer_finish(w);
    uint8_t *img = NULL;
    rc |= sl_gguf_writer_mem_take(w, &img, len);
    sl_gguf_writer_free(w);
    CHECK(rc == 0, "writing the synthetic GGUF");
    return img;
}

/* ---- float64 reference -------------------------------------------------- */

static void rms_norm_d(const double *x, const float *w, double *y, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + 1e-6);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * w[i];
}

static void matvec_d(const float *W, const double *x, double *y, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double acc = 0;
        for (int c = 0; c < cols; c++)
            acc += (double)W[(size_t)r * cols + c] * x[c];
        y[r] = acc;
    }
}

static void rope_neox_d(double *v, int n_rot, double pos)
{
    int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        double theta = pos * pow(1e6, -2.0 * i / n_rot);
        double a = v[i], b = v[i + half];
        v[i] = a * cos(theta) - b * sin(theta);
        v[i + half] = a * sin(theta) + b * cos(theta);
    }
}

/* y += scale * down(silu(gate h) * (up h)) for one FFN of width ff. */
static void ffn_d(const float *gate, const float *up, const float *down, const double *h, int d, int ff,
                  double scale, double *y)
{
    double *g = calloc(ff, sizeof *g), *u = calloc(ff, sizeof *u), *o = calloc(d, sizeof *o);
    matvec_d(gate, h, g, ff, d);
    matvec_d(up, h, u, ff, d);
    for (int i = 0; i < ff; i++)
        g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
    matvec_d(down, g, o, d, ff);
    for (int i = 0; i < d; i++)
        y[i] += scale * o[i];
    free(g), free(u), free(o);
}

/* Logits after every token, [n_tok][n_vocab]; *margin receives the smallest
 * gap between the k-th and (k+1)-th router probability over all routings. */
static double *reference_forward(const spec *sp, const synth *s, const int32_t *tok, int n_tok, double *margin)
{
    const int d = (int)sp->n_embd, hd = (int)sp->head_dim, nh = (int)sp->n_head, nkv = (int)sp->n_head_kv;
    const int qd = nh * hd, kd = nkv * hd, V = (int)sp->n_vocab, E = (int)sp->n_expert, K = (int)sp->n_used;
    const int ff = (int)sp->n_ff_exp, fs = (int)sp->n_ff_shexp;
    double *logits = calloc((size_t)n_tok * V, sizeof *logits);
    double *Kc = calloc((size_t)sp->n_layer * n_tok * kd, sizeof *Kc);
    double *Vc = calloc((size_t)sp->n_layer * n_tok * kd, sizeof *Vc);
    double *x = calloc(d, sizeof *x), *h = calloc(d, sizeof *h), *q = calloc(qd, sizeof *q);
    double *att = calloc(qd, sizeof *att), *o = calloc(d, sizeof *o), *sc = calloc(n_tok, sizeof *sc);
    double *y = calloc(d, sizeof *y), p[MAX_E];
    const float *emb = find(s, "token_embd.weight")->data;
    *margin = INFINITY;
    for (int pos = 0; pos < n_tok; pos++) {
        for (int i = 0; i < d; i++)
            x[i] = emb[(size_t)tok[pos] * d + i];
        for (uint32_t il = 0; il < sp->n_layer; il++) {
            double *k = Kc + ((size_t)il * n_tok + pos) * kd, *v = Vc + ((size_t)il * n_tok + pos) * kd;
            rms_norm_d(x, layer_w(s, il, "attn_norm.weight"), h, d);
            matvec_d(layer_w(s, il, "attn_q.weight"), h, q, qd, d);
            matvec_d(layer_w(s, il, "attn_k.weight"), h, k, kd, d);
            matvec_d(layer_w(s, il, "attn_v.weight"), h, v, kd, d);
            if (sp->biases) {
                const float *bq = layer_w(s, il, "attn_q.bias"), *bk = layer_w(s, il, "attn_k.bias");
                const float *bv = layer_w(s, il, "attn_v.bias");
                for (int i = 0; i < qd; i++)
                    q[i] += bq[i];
                for (int i = 0; i < kd; i++)
                    k[i] += bk[i], v[i] += bv[i];
            }
            for (int hh = 0; hh < nh; hh++) {
                if (sp->qk_norm)
                    rms_norm_d(q + hh * hd, layer_w(s, il, "attn_q_norm.weight"), q + hh * hd, hd);
                rope_neox_d(q + hh * hd, hd, pos);
            }
            for (int hh = 0; hh < nkv; hh++) {
                if (sp->qk_norm)
                    rms_norm_d(k + hh * hd, layer_w(s, il, "attn_k_norm.weight"), k + hh * hd, hd);
                rope_neox_d(k + hh * hd, hd, pos);
            }
            for (int hh = 0; hh < nh; hh++) {
                int gk = hh / (nh / nkv);
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= pos; j++) {
                    const double *kj = Kc + ((size_t)il * n_tok + j) * kd + gk * hd;
                    double dot = 0;
                    for (int e = 0; e < hd; e++)
                        dot += q[hh * hd + e] * kj[e];
                    sc[j] = dot / sqrt((double)hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= pos; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int j = 0; j <= pos; j++)
                        acc += sc[j] / sum * Vc[((size_t)il * n_tok + j) * kd + gk * hd + e];
                    att[hh * hd + e] = acc;
                }
            }
            matvec_d(layer_w(s, il, "attn_output.weight"), att, o, d, qd);
            for (int i = 0; i < d; i++)
                x[i] += o[i];

            /* The mixture: softmax over all experts, the K most probable. */
            rms_norm_d(x, layer_w(s, il, "ffn_norm.weight"), h, d);
            matvec_d(layer_w(s, il, "ffn_gate_inp.weight"), h, p, E, d);
            double mx = -INFINITY, sum = 0;
            for (int e = 0; e < E; e++)
                mx = fmax(mx, p[e]);
            for (int e = 0; e < E; e++)
                sum += (p[e] = exp(p[e] - mx));
            for (int e = 0; e < E; e++)
                p[e] /= sum;
            int sel[MAX_E];
            bool taken[MAX_E] = {false};
            double chosen = 0;
            for (int r = 0; r <= K && r < E; r++) {
                int best = -1;
                for (int e = 0; e < E; e++)
                    if (!taken[e] && (best < 0 || p[e] > p[best]))
                        best = e;
                if (r == K) { /* the first one left out */
                    *margin = fmin(*margin, p[sel[K - 1]] - p[best]);
                    break;
                }
                taken[best] = true;
                sel[r] = best;
                chosen += p[best];
            }
            memset(y, 0, d * sizeof *y);
            const float *G = layer_w(s, il, "ffn_gate_exps.weight"), *U = layer_w(s, il, "ffn_up_exps.weight");
            const float *D = layer_w(s, il, "ffn_down_exps.weight");
            for (int r = 0; r < K; r++) {
                const size_t e = (size_t)sel[r];
                double wgt = sp->norm ? p[e] / chosen : p[e];
                ffn_d(G + e * ff * d, U + e * ff * d, D + e * d * ff, h, d, ff, wgt, y);
            }
            if (fs) {
                const float *gs = layer_w(s, il, "ffn_gate_inp_shexp.weight");
                double g = 0;
                for (int i = 0; i < d; i++)
                    g += (double)gs[i] * h[i];
                ffn_d(layer_w(s, il, "ffn_gate_shexp.weight"), layer_w(s, il, "ffn_up_shexp.weight"),
                      layer_w(s, il, "ffn_down_shexp.weight"), h, d, fs, 1.0 / (1.0 + exp(-g)), y);
            }
            for (int i = 0; i < d; i++)
                x[i] += y[i];
        }
        rms_norm_d(x, find(s, "output_norm.weight")->data, h, d);
        matvec_d(find(s, "output.weight")->data, h, logits + (size_t)pos * V, V, d);
    }
    free(Kc), free(Vc), free(x), free(h), free(q), free(att), free(o), free(sc), free(y);
    return logits;
}

/* ---- checks --------------------------------------------------------------- */

static spec qwen3moe_spec(void)
{
    return (spec){.arch = "qwen3moe", .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2, .head_dim = 16,
                  .n_vocab = 32, .n_expert = 6, .n_used = 2, .n_ff_exp = 32, .qk_norm = true, .norm_key = -1,
                  .norm = true};
}

static spec qwen2moe_spec(void)
{
    return (spec){.arch = "qwen2moe", .n_embd = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2, .head_dim = 16,
                  .n_vocab = 32, .n_expert = 8, .n_used = 3, .n_ff_exp = 32, .n_ff_shexp = 48, .biases = true,
                  .norm_key = -1, .norm = false};
}

static int open_image(const uint8_t *img, size_t len, sl_gguf **g, sl_model **m)
{
    *m = NULL;
    int rc = sl_gguf_open_mem(img, len, g);
    CHECK(rc == 0, "sl_gguf_open_mem: %s", sl_strerror(rc));
    if (rc)
        return rc;
    return sl_model_from_gguf(*g, m);
}

static void check_against_reference(const char *what, const spec *sp, sl_arch arch)
{
    synth s;
    make_weights(sp, &s, 0x5eed);
    size_t len = 0;
    uint8_t *img = write_image(sp, &s, &len);
    sl_gguf *g = NULL;
    sl_model *m = NULL;
    int rc = img ? open_image(img, len, &g, &m) : -1;
    CHECK(rc == 0, "%s: model: %s", what, sl_strerror(rc));
    if (rc == 0) {
        const sl_hparams *hp = sl_model_hparams(m);
        CHECK(hp->arch == arch && hp->n_expert == sp->n_expert && hp->n_expert_used == sp->n_used, "%s: arch", what);
        CHECK(hp->n_ff_exp == sp->n_ff_exp && hp->n_ff_shexp == sp->n_ff_shexp && hp->expert_weights_norm == sp->norm,
              "%s: expert widths %u/%u, norm %d", what, hp->n_ff_exp, hp->n_ff_shexp, hp->expert_weights_norm);
        /* Tensors interleave: the layer without its experts spans ranges. */
        CHECK(sl_model_layer_unit(m, 0)->n_ranges >= 2, "%s: %u ranges", what, sl_model_layer_unit(m, 0)->n_ranges);

        enum { N = 12 };
        int32_t tok[N];
        for (int i = 0; i < N; i++)
            tok[i] = (int32_t)((i * 7 + 3) % sp->n_vocab);
        double margin;
        double *ref = reference_forward(sp, &s, tok, N, &margin);
        /* Agreement is only meaningful where no routing was a near-tie. */
        CHECK(margin > 1e-4, "%s: the test data has a routing near-tie (%.3g); change the seed", what, margin);
        const uint32_t V = sp->n_vocab;
        float *batched = malloc((size_t)N * V * sizeof *batched), *one = malloc(V * sizeof *one);
        float *refv = malloc(V * sizeof *refv);
        sl_engine *e = NULL, *e1 = NULL;
        CHECK(sl_engine_new(m, 16, 5, 3, &e) == 0 && sl_engine_new(m, 16, 1, 1, &e1) == 0, "engines");
        double worst = 0, diff = 0;
        if (e && e1 && sl_engine_eval(e, tok, N, true, batched) == 0) {
            for (int p = 0; p < N; p++) {
                for (uint32_t v = 0; v < V; v++)
                    refv[v] = (float)ref[(size_t)p * V + v];
                CHECK(sl_engine_eval(e1, &tok[p], 1, false, one) == 0, "one-by-one eval");
                double eb = sl_rel_err(batched + (size_t)p * V, refv, V), e1r = sl_rel_err(one, refv, V);
                CHECK(eb <= 1e-4 && e1r <= 1e-4, "%s: position %d: error %.3g (batched) %.3g (one by one)", what, p,
                      eb, e1r);
                worst = fmax(worst, fmax(eb, e1r));
                diff = fmax(diff, sl_rel_err(one, batched + (size_t)p * V, V));
            }
        } else {
            CHECK(0, "%s: eval failed", what);
        }
        CHECK(diff == 0, "%s: batches of 5 and of 1 differ by %.3g", what, diff);
        printf("%-34s max rel err vs float64 reference %.3e over %d positions (routing margin %.1e)\n", what,
               worst, N, margin);
        sl_engine_free(e);
        sl_engine_free(e1);
        free(batched), free(one), free(refv), free(ref);
    }
    sl_model_close(m);
    sl_gguf_close(g);
    free(img);
    free_weights(&s);
}

static void expect_refusal(const char *what, const spec *sp, int want)
{
    synth s;
    make_weights(sp, &s, 0x5eed);
    size_t len = 0;
    uint8_t *img = write_image(sp, &s, &len);
    sl_gguf *g = NULL;
    sl_model *m = NULL;
    int rc = img ? open_image(img, len, &g, &m) : 0;
    CHECK(rc == want && m == NULL, "%s: expected %s, got %d (%s)", what, sl_strerror(want), rc, sl_strerror(rc));
    sl_model_close(m);
    sl_gguf_close(g);
    free(img);
    free_weights(&s);
}

int main(void)
{
    spec sp = qwen3moe_spec();
    check_against_reference("qwen3moe, 6 experts, 2 used", &sp, SL_ARCH_QWEN3MOE);
    sp = qwen2moe_spec();
    check_against_reference("qwen2moe, 8 experts, 3 used, shared", &sp, SL_ARCH_QWEN2MOE);
    sp = qwen2moe_spec();
    sp.norm_key = 1; /* a file may ask for renormalised weights */
    sp.norm = true;
    check_against_reference("qwen2moe with expert_weights_norm", &sp, SL_ARCH_QWEN2MOE);

    /* Refusals: every one is a file we would otherwise compute wrongly. */
    sp = qwen3moe_spec();
    sp.drop = "blk.1.ffn_up_exps.weight";
    expect_refusal("missing expert tensor", &sp, -SL_ENOTFOUND);
    sp = qwen3moe_spec();
    sp.no_expert_count = true;
    expect_refusal("qwen3moe without expert_count", &sp, -SL_ENOTFOUND);
    sp = qwen3moe_spec();
    sp.n_used = 7;
    expect_refusal("more experts used than exist", &sp, -SL_ERANGE);
    sp = qwen3moe_spec();
    sp.gating = 2; /* sigmoid gating (DeepSeek style) */
    expect_refusal("sigmoid gating", &sp, -SL_EUNSUPPORTED);
    sp = qwen3moe_spec();
    sp.bad_shape = "blk.0.ffn_gate_exps.weight";
    expect_refusal("expert tensor of the wrong count", &sp, -SL_EFORMAT);
    sp = qwen2moe_spec();
    sp.drop = "blk.0.ffn_up_shexp.weight";
    expect_refusal("shared expert in part", &sp, -SL_EFORMAT);
    sp = qwen2moe_spec();
    sp.drop = "blk.1.ffn_gate_inp.weight";
    expect_refusal("missing router", &sp, -SL_ENOTFOUND);
    sp = qwen3moe_spec();
    sp.arch = "qwen3"; /* a dense architecture with experts */
    expect_refusal("experts in qwen3", &sp, -SL_EUNSUPPORTED);
    return sl_test_finish();
}
