/* qwen3 (and model-description checks) on synthesized GGUF files.
 *
 * There is no reference run for qwen3 in testdata, so this test writes tiny
 * models with random F32 weights (per-head q/k RMS norms, NEOX RoPE, GQA,
 * a key_length that is not n_embd / n_head) with model/gguf_write.h and
 * compares the engine's logits with a float64 forward pass written here
 * straight from the published formulas. The same builder makes broken
 * files to check that the model description refuses them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/engine.h"
#include "model/gguf_write.h"
#include "model/model.h"
#include "tests/testutil.h"

#define MAX_TENSORS 64

typedef struct spec {
    const char *arch;
    uint32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    uint32_t n_rot; /* 0: the key is omitted (rotate the whole head) */
    float freq_base;
    float rope_factor; /* 0: no rope scaling keys */
    float eps;
    bool tied;              /* no output.weight */
    bool with_tokens;       /* write tokenizer.ggml.tokens */
    bool rope_freqs;        /* add per-dimension frequency divisors (rope_freqs.weight) */
    const char *drop;       /* leave this tensor out */
    const char *f16_tensor; /* store this (vector) tensor as F16 */
    const char *bad_shape;  /* give this tensor one row too many */
    uint32_t expert_count;  /* written when non-zero */
} spec;

typedef struct tensor {
    char name[64];
    int64_t ne[2];
    uint32_t n_dims;
    float *data;
} tensor;

typedef struct synth {
    tensor t[MAX_TENSORS];
    uint32_t n;
    uint64_t rng;
} synth;

/* Uniform in [-1, 1) from a 64-bit LCG (Knuth's MMIX constants). */
static double uniform(synth *s)
{
    s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(s->rng >> 11) / (double)(1ull << 52) - 1.0;
}

/* A matrix of `rows` rows of `cols` (scaled for unit-variance outputs), or a
 * vector (rows == 0) around `center`. */
static void add(synth *s, const char *name, int64_t cols, int64_t rows, double center)
{
    SL_ASSERT(s->n < MAX_TENSORS);
    tensor *t = &s->t[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ne[0] = cols;
    t->ne[1] = rows ? rows : 1;
    t->n_dims = rows ? 2 : 1;
    size_t n = (size_t)(t->ne[0] * t->ne[1]);
    t->data = malloc(n * sizeof *t->data);
    double scale = rows ? sqrt(3.0 / (double)cols) : 0.2;
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

static void make_weights(const spec *sp, synth *s)
{
    memset(s, 0, sizeof *s);
    s->rng = 0x5eed;
    const int64_t d = sp->n_embd, q = (int64_t)sp->n_head * sp->head_dim,
                  kv = (int64_t)sp->n_head_kv * sp->head_dim;
    add(s, "token_embd.weight", d, sp->n_vocab, 0.0);
    add(s, "output_norm.weight", d, 0, 1.0);
    if (!sp->tied)
        add(s, "output.weight", d, sp->n_vocab, 0.0);
    if (sp->rope_freqs) {
        uint32_t n_rot = sp->n_rot ? sp->n_rot : sp->head_dim;
        add(s, "rope_freqs.weight", n_rot / 2, 0, 1.0);
        for (uint32_t i = 0; i < n_rot / 2; i++)
            s->t[s->n - 1].data[i] = 1.0f + 0.5f * (float)i;
    }
    for (uint32_t il = 0; il < sp->n_layer; il++) {
        char name[64];
#define L(suffix) (snprintf(name, sizeof name, "blk.%u.%s", il, suffix), name)
        add(s, L("attn_norm.weight"), d, 0, 1.0);
        add(s, L("attn_q.weight"), d, q, 0.0);
        add(s, L("attn_k.weight"), d, kv, 0.0);
        add(s, L("attn_v.weight"), d, kv, 0.0);
        add(s, L("attn_q_norm.weight"), sp->head_dim, 0, 1.0);
        add(s, L("attn_k_norm.weight"), sp->head_dim, 0, 1.0);
        add(s, L("attn_output.weight"), q, d, 0.0);
        add(s, L("ffn_norm.weight"), d, 0, 1.0);
        add(s, L("ffn_gate.weight"), d, sp->n_ff, 0.0);
        add(s, L("ffn_up.weight"), d, sp->n_ff, 0.0);
        add(s, L("ffn_down.weight"), sp->n_ff, d, 0.0);
#undef L
    }
}

static void free_weights(synth *s)
{
    for (uint32_t i = 0; i < s->n; i++)
        free(s->t[i].data);
}

/* Writes the GGUF image of `s` under `sp` (with its deliberate defects). */
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
    rc |= sl_gguf_writer_add_u32(w, K("feed_forward_length"), sp->n_ff);
    rc |= sl_gguf_writer_add_u32(w, K("attention.head_count"), sp->n_head);
    rc |= sl_gguf_writer_add_u32(w, K("attention.head_count_kv"), sp->n_head_kv);
    rc |= sl_gguf_writer_add_u32(w, K("attention.key_length"), sp->head_dim);
    rc |= sl_gguf_writer_add_u32(w, K("attention.value_length"), sp->head_dim);
    rc |= sl_gguf_writer_add_f32(w, K("attention.layer_norm_rms_epsilon"), sp->eps);
    rc |= sl_gguf_writer_add_f32(w, K("rope.freq_base"), sp->freq_base);
    if (sp->n_rot)
        rc |= sl_gguf_writer_add_u32(w, K("rope.dimension_count"), sp->n_rot);
    if (sp->rope_factor != 0.0f) {
        rc |= sl_gguf_writer_add_str(w, K("rope.scaling.type"), "linear");
        rc |= sl_gguf_writer_add_f32(w, K("rope.scaling.factor"), sp->rope_factor);
    }
    if (sp->expert_count)
        rc |= sl_gguf_writer_add_u32(w, K("expert_count"), sp->expert_count);
#undef K
    if (sp->with_tokens) {
        rc |= sl_gguf_writer_arr_begin(w, "tokenizer.ggml.tokens", SL_GGUF_STRING);
        for (uint32_t i = 0; i < sp->n_vocab; i++) {
            char tok[16];
            snprintf(tok, sizeof tok, "t%u", i);
            rc |= sl_gguf_writer_add_str(w, NULL, tok);
        }
        rc |= sl_gguf_writer_arr_end(w);
    }
    for (uint32_t i = 0; i < s->n; i++) {
        const tensor *t = &s->t[i];
        if (sp->drop && strcmp(sp->drop, t->name) == 0)
            continue;
        int64_t ne[2] = {t->ne[0], t->ne[1]};
        if (sp->bad_shape && strcmp(sp->bad_shape, t->name) == 0)
            ne[t->n_dims - 1]++;
        bool f16 = sp->f16_tensor && strcmp(sp->f16_tensor, t->name) == 0;
        rc |= sl_gguf_writer_add_tensor(w, t->name, t->n_dims, ne, f16 ? SL_F16 : SL_F32);
    }
    rc |= sl_gguf_writer_write_header(w);
    for (uint32_t i = 0; i < s->n; i++) {
        const tensor *t = &s->t[i];
        if (sp->drop && strcmp(sp->drop, t->name) == 0)
            continue;
        size_t n = (size_t)(t->ne[0] * t->ne[1]);
        if (sp->bad_shape && strcmp(sp->bad_shape, t->name) == 0)
            n += (size_t)(t->n_dims == 2 ? t->ne[0] : 1);
        bool f16 = sp->f16_tensor && strcmp(sp->f16_tensor, t->name) == 0;
        float *buf = calloc(n, sizeof *buf);
        memcpy(buf, t->data, (size_t)(t->ne[0] * t->ne[1]) * sizeof *buf);
        rc |= sl_gguf_writer_write_data(w, buf, n * (f16 ? 2 : 4)); /* F16 bits are junk; never computed */
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

static void rms_norm_d(const double *x, const float *w, double *y, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * w[i];
}

/* y[rows] = W x, W stored row-major with `cols` per row. */
static void matvec_d(const float *W, const double *x, double *y, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double acc = 0;
        for (int c = 0; c < cols; c++)
            acc += (double)W[(size_t)r * cols + c] * x[c];
        y[r] = acc;
    }
}

/* NEOX rotation of the first n_rot dims: pairs (i, i + n_rot/2), angle
 * pos * base^(-2i/n_rot) / ff[i] (ff NULL: 1). */
static void rope_neox_d(double *v, int n_rot, double pos, double base, const float *ff)
{
    int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        double theta = pos * pow(base, -2.0 * i / n_rot) / (ff ? ff[i] : 1.0);
        double a = v[i], b = v[i + half];
        v[i] = a * cos(theta) - b * sin(theta);
        v[i + half] = a * sin(theta) + b * cos(theta);
    }
}

/* Logits after every token, [n_tok][n_vocab]. */
static double *reference_forward(const spec *sp, const synth *s, const int32_t *tok, int n_tok)
{
    const int d = (int)sp->n_embd, hd = (int)sp->head_dim, nh = (int)sp->n_head, nkv = (int)sp->n_head_kv;
    const int qd = nh * hd, kd = nkv * hd, ff = (int)sp->n_ff, V = (int)sp->n_vocab;
    const int n_rot = sp->n_rot ? (int)sp->n_rot : hd;
    const double pos_scale = sp->rope_factor != 0.0f ? 1.0 / sp->rope_factor : 1.0, eps = sp->eps;
    double *logits = calloc((size_t)n_tok * V, sizeof *logits);
    double *K = calloc((size_t)sp->n_layer * n_tok * kd, sizeof *K);
    double *Vc = calloc((size_t)sp->n_layer * n_tok * kd, sizeof *Vc);
    double *x = calloc(d, sizeof *x), *h = calloc(d, sizeof *h), *q = calloc(qd, sizeof *q);
    double *att = calloc(qd, sizeof *att), *o = calloc(d, sizeof *o), *sc = calloc(n_tok, sizeof *sc);
    double *g = calloc(ff, sizeof *g), *u = calloc(ff, sizeof *u);
    const float *emb = find(s, "token_embd.weight")->data;
    const float *out = sp->tied ? emb : find(s, "output.weight")->data;
    const float *rf = sp->rope_freqs ? find(s, "rope_freqs.weight")->data : NULL;
    for (int p = 0; p < n_tok; p++) {
        for (int i = 0; i < d; i++)
            x[i] = emb[(size_t)tok[p] * d + i];
        for (uint32_t il = 0; il < sp->n_layer; il++) {
            double *k = K + ((size_t)il * n_tok + p) * kd, *v = Vc + ((size_t)il * n_tok + p) * kd;
            rms_norm_d(x, layer_w(s, il, "attn_norm.weight"), h, d, eps);
            matvec_d(layer_w(s, il, "attn_q.weight"), h, q, qd, d);
            matvec_d(layer_w(s, il, "attn_k.weight"), h, k, kd, d);
            matvec_d(layer_w(s, il, "attn_v.weight"), h, v, kd, d);
            for (int hh = 0; hh < nh; hh++) {
                rms_norm_d(q + hh * hd, layer_w(s, il, "attn_q_norm.weight"), q + hh * hd, hd, eps);
                rope_neox_d(q + hh * hd, n_rot, p * pos_scale, sp->freq_base, rf);
            }
            for (int hh = 0; hh < nkv; hh++) {
                rms_norm_d(k + hh * hd, layer_w(s, il, "attn_k_norm.weight"), k + hh * hd, hd, eps);
                rope_neox_d(k + hh * hd, n_rot, p * pos_scale, sp->freq_base, rf);
            }
            for (int hh = 0; hh < nh; hh++) {
                int gk = hh / (nh / nkv);
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= p; j++) {
                    const double *kj = K + ((size_t)il * n_tok + j) * kd + gk * hd;
                    double dot = 0;
                    for (int e = 0; e < hd; e++)
                        dot += q[hh * hd + e] * kj[e];
                    sc[j] = dot / sqrt((double)hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= p; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int j = 0; j <= p; j++)
                        acc += sc[j] / sum * Vc[((size_t)il * n_tok + j) * kd + gk * hd + e];
                    att[hh * hd + e] = acc;
                }
            }
            matvec_d(layer_w(s, il, "attn_output.weight"), att, o, d, qd);
            for (int i = 0; i < d; i++)
                x[i] += o[i];
            rms_norm_d(x, layer_w(s, il, "ffn_norm.weight"), h, d, eps);
            matvec_d(layer_w(s, il, "ffn_gate.weight"), h, g, ff, d);
            matvec_d(layer_w(s, il, "ffn_up.weight"), h, u, ff, d);
            for (int i = 0; i < ff; i++)
                g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            matvec_d(layer_w(s, il, "ffn_down.weight"), g, o, d, ff);
            for (int i = 0; i < d; i++)
                x[i] += o[i];
        }
        rms_norm_d(x, find(s, "output_norm.weight")->data, h, d, eps);
        matvec_d(out, h, logits + (size_t)p * V, V, d);
    }
    free(K), free(Vc), free(x), free(h), free(q), free(att), free(o), free(sc), free(g), free(u);
    return logits;
}

/* ---- checks --------------------------------------------------------------- */

static spec base_spec(void)
{
    return (spec){.arch = "qwen3",
                  .n_embd = 64,
                  .n_layer = 2,
                  .n_head = 4,
                  .n_head_kv = 2,
                  .head_dim = 24,
                  .n_ff = 96,
                  .n_vocab = 32,
                  .freq_base = 1e6f,
                  .eps = 1e-6f,
                  .tied = true,
                  .with_tokens = true};
}

/* Opens the image as a model; returns the open code. */
static int open_image(const uint8_t *img, size_t len, sl_gguf **g, sl_model **m)
{
    *m = NULL;
    int rc = sl_gguf_open_mem(img, len, g);
    CHECK(rc == 0, "sl_gguf_open_mem: %s", sl_strerror(rc));
    if (rc)
        return rc;
    return sl_model_from_gguf(*g, m);
}

static void check_against_reference(const char *what, const spec *sp)
{
    synth s;
    make_weights(sp, &s);
    size_t len = 0;
    uint8_t *img = write_image(sp, &s, &len);
    sl_gguf *g = NULL;
    sl_model *m = NULL;
    int rc = img ? open_image(img, len, &g, &m) : -1;
    CHECK(rc == 0, "%s: model: %s", what, sl_strerror(rc));
    if (rc == 0) {
        const sl_hparams *hp = sl_model_hparams(m);
        CHECK(hp->arch == SL_ARCH_QWEN3 && hp->rope_type == SL_ROPE_NEOX, "%s: arch", what);
        CHECK(hp->head_dim_k == sp->head_dim && hp->n_vocab == sp->n_vocab, "%s: dims", what);

        enum { N = 12 };
        int32_t tok[N];
        for (int i = 0; i < N; i++)
            tok[i] = (int32_t)((i * 7 + 3) % sp->n_vocab);
        double *ref = reference_forward(sp, &s, tok, N);
        const uint32_t V = sp->n_vocab;
        float *batched = malloc((size_t)N * V * sizeof *batched), *one = malloc(V * sizeof *one);
        float *refv = malloc(V * sizeof *refv);
        sl_engine *e = NULL, *e1 = NULL;
        CHECK(sl_engine_new(m, 16, 5, 3, &e) == 0 && sl_engine_new(m, 16, 1, 1, &e1) == 0, "engines");
        double worst = 0;
        if (e && e1 && sl_engine_eval(e, tok, N, true, batched) == 0) {
            for (int p = 0; p < N; p++) {
                for (uint32_t v = 0; v < V; v++)
                    refv[v] = (float)ref[(size_t)p * V + v];
                CHECK(sl_engine_eval(e1, &tok[p], 1, false, one) == 0, "one-by-one eval");
                double eb = sl_rel_err(batched + (size_t)p * V, refv, V), e1r = sl_rel_err(one, refv, V);
                CHECK(eb <= 1e-4 && e1r <= 1e-4, "%s: position %d: error %.3g (batched) %.3g (one by one)",
                      what, p, eb, e1r);
                worst = fmax(worst, fmax(eb, e1r));
            }
        } else {
            CHECK(0, "%s: eval failed", what);
        }
        printf("%-34s max rel err vs float64 reference %.3e over %d positions\n", what, worst, N);
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
    make_weights(sp, &s);
    size_t len = 0;
    uint8_t *img = write_image(sp, &s, &len);
    sl_gguf *g = NULL;
    sl_model *m = NULL;
    int rc = img ? open_image(img, len, &g, &m) : 0;
    CHECK(rc == want && m == NULL, "%s: expected %s, got %d (%s)", what, sl_strerror(want), rc,
          sl_strerror(rc));
    sl_model_close(m);
    sl_gguf_close(g);
    free(img);
    free_weights(&s);
}

int main(void)
{
    spec sp = base_spec();
    check_against_reference("qwen3 tied, GQA 2, key_length 24", &sp);

    sp = base_spec();
    sp.tied = false;
    sp.with_tokens = false;
    sp.n_rot = 16;         /* partial rotation */
    sp.rope_factor = 4.0f; /* linear scaling */
    sp.n_head_kv = 1;      /* multi-query */
    check_against_reference("qwen3 untied, n_rot 16, linear x4, MQA", &sp);

    sp = base_spec();
    sp.rope_freqs = true;
    check_against_reference("qwen3 with rope_freqs divisors", &sp);

    sp = base_spec();
    sp.arch = "gemma";
    expect_refusal("unknown architecture", &sp, -SL_EUNSUPPORTED);
    sp = base_spec();
    sp.drop = "blk.1.attn_k_norm.weight";
    expect_refusal("missing k norm", &sp, -SL_ENOTFOUND);
    sp = base_spec();
    sp.bad_shape = "blk.0.ffn_up.weight";
    expect_refusal("wrong shape", &sp, -SL_EFORMAT);
    sp = base_spec();
    sp.f16_tensor = "blk.0.attn_norm.weight";
    expect_refusal("F16 norm", &sp, -SL_EUNSUPPORTED);
    sp = base_spec();
    sp.arch = "llama"; /* llama has no q/k norms: an unknown tensor for it */
    expect_refusal("llama with q/k norms", &sp, -SL_EUNSUPPORTED);
    sp = base_spec();
    sp.expert_count = 4;
    expect_refusal("expert_count", &sp, -SL_EUNSUPPORTED);
    sp = base_spec();
    sp.n_head_kv = 3; /* 4 heads are not a multiple of 3 */
    expect_refusal("head_count_kv", &sp, -SL_ERANGE);
    return sl_test_finish();
}
