/* qwen3 (and model-description checks) on synthesized GGUF files.
 *
 * There is no reference run for qwen3 in testdata, so this test writes tiny
 * models with random F32 weights (per-head q/k RMS norms, NEOX RoPE, GQA,
 * a key_length that is not n_embd / n_head) with tests/synthmodel.h and
 * compares the engine's logits with a float64 forward pass written here
 * straight from the published formulas. The same builder makes broken
 * files to check that the model description refuses them. */
#include <stdlib.h>

#include "common/log.h"
#include "model/model.h"
#include "tests/synthmodel.h"
#include "tests/testutil.h"

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

static void make_weights(const spec *sp, synth *s)
{
    synth_init(s, 0x5eed);
    const int64_t d = sp->n_embd, q = (int64_t)sp->n_head * sp->head_dim,
                  kv = (int64_t)sp->n_head_kv * sp->head_dim;
    synth_add(s, "token_embd.weight", 2, d, sp->n_vocab, 1, 0.0);
    synth_add(s, "output_norm.weight", 1, d, 1, 1, 1.0);
    if (!sp->tied)
        synth_add(s, "output.weight", 2, d, sp->n_vocab, 1, 0.0);
    if (sp->rope_freqs) {
        uint32_t n_rot = sp->n_rot ? sp->n_rot : sp->head_dim;
        float *ff = synth_add(s, "rope_freqs.weight", 1, n_rot / 2, 1, 1, 1.0);
        for (uint32_t i = 0; i < n_rot / 2; i++)
            ff[i] = 1.0f + 0.5f * (float)i;
    }
    for (uint32_t il = 0; il < sp->n_layer; il++) {
        char name[64];
#define L(suffix) (snprintf(name, sizeof name, "blk.%u.%s", il, suffix), name)
        synth_add(s, L("attn_norm.weight"), 1, d, 1, 1, 1.0);
        synth_add(s, L("attn_q.weight"), 2, d, q, 1, 0.0);
        synth_add(s, L("attn_k.weight"), 2, d, kv, 1, 0.0);
        synth_add(s, L("attn_v.weight"), 2, d, kv, 1, 0.0);
        synth_add(s, L("attn_q_norm.weight"), 1, sp->head_dim, 1, 1, 1.0);
        synth_add(s, L("attn_k_norm.weight"), 1, sp->head_dim, 1, 1, 1.0);
        synth_add(s, L("attn_output.weight"), 2, q, d, 1, 0.0);
        synth_add(s, L("ffn_norm.weight"), 1, d, 1, 1, 1.0);
        synth_add(s, L("ffn_gate.weight"), 2, d, sp->n_ff, 1, 0.0);
        synth_add(s, L("ffn_up.weight"), 2, d, sp->n_ff, 1, 0.0);
        synth_add(s, L("ffn_down.weight"), 2, sp->n_ff, d, 1, 0.0);
#undef L
    }
}

/* Writes the GGUF image of `s` under `sp` (with its deliberate defects). */
static uint8_t *write_image(const spec *sp, const synth *s, size_t *len)
{
    const synth_file f = {.arch = sp->arch,
                          .n_embd = sp->n_embd,
                          .n_layer = sp->n_layer,
                          .n_ff = sp->n_ff,
                          .n_head = sp->n_head,
                          .n_head_kv = sp->n_head_kv,
                          .head_dim = sp->head_dim,
                          .eps = sp->eps,
                          .freq_base = sp->freq_base,
                          .n_tokens = sp->with_tokens ? sp->n_vocab : 0,
                          .drop = sp->drop,
                          .f16_tensor = sp->f16_tensor,
                          .bad_shape = sp->bad_shape};
    int rc;
    sl_gguf_writer *w = synth_image_begin(&f, &rc);
    if (!w)
        return NULL;
    char key[128];
#define K(suffix) synth_key(key, sizeof key, sp->arch, suffix)
    if (sp->n_rot)
        rc |= sl_gguf_writer_add_u32(w, K("rope.dimension_count"), sp->n_rot);
    if (sp->rope_factor != 0.0f) {
        rc |= sl_gguf_writer_add_str(w, K("rope.scaling.type"), "linear");
        rc |= sl_gguf_writer_add_f32(w, K("rope.scaling.factor"), sp->rope_factor);
    }
    if (sp->expert_count)
        rc |= sl_gguf_writer_add_u32(w, K("expert_count"), sp->expert_count);
#undef K
    return synth_image_end(w, rc, &f, s, len);
}

/* ---- float64 reference -------------------------------------------------- */

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
    double *att = calloc(qd, sizeof *att), *o = calloc(d, sizeof *o);
    const float *emb = synth_find(s, "token_embd.weight")->data;
    const float *out = sp->tied ? emb : synth_find(s, "output.weight")->data;
    const float *rf = sp->rope_freqs ? synth_find(s, "rope_freqs.weight")->data : NULL;
    for (int p = 0; p < n_tok; p++) {
        for (int i = 0; i < d; i++)
            x[i] = emb[(size_t)tok[p] * d + i];
        for (uint32_t il = 0; il < sp->n_layer; il++) {
            double *k = K + ((size_t)il * n_tok + p) * kd, *v = Vc + ((size_t)il * n_tok + p) * kd;
            ref_rms_norm(x, synth_layer(s, il, "attn_norm.weight"), h, d, eps);
            ref_matvec(synth_layer(s, il, "attn_q.weight"), h, q, qd, d);
            ref_matvec(synth_layer(s, il, "attn_k.weight"), h, k, kd, d);
            ref_matvec(synth_layer(s, il, "attn_v.weight"), h, v, kd, d);
            for (int hh = 0; hh < nh; hh++) {
                ref_rms_norm(q + hh * hd, synth_layer(s, il, "attn_q_norm.weight"), q + hh * hd, hd, eps);
                ref_rope_neox(q + hh * hd, n_rot, p * pos_scale, sp->freq_base, rf);
            }
            for (int hh = 0; hh < nkv; hh++) {
                ref_rms_norm(k + hh * hd, synth_layer(s, il, "attn_k_norm.weight"), k + hh * hd, hd, eps);
                ref_rope_neox(k + hh * hd, n_rot, p * pos_scale, sp->freq_base, rf);
            }
            ref_attention(q, K + (size_t)il * n_tok * kd, Vc + (size_t)il * n_tok * kd, p, nh, nkv, hd, att);
            ref_matvec(synth_layer(s, il, "attn_output.weight"), att, o, d, qd);
            for (int i = 0; i < d; i++)
                x[i] += o[i];
            ref_rms_norm(x, synth_layer(s, il, "ffn_norm.weight"), h, d, eps);
            ref_ffn(synth_layer(s, il, "ffn_gate.weight"), synth_layer(s, il, "ffn_up.weight"),
                    synth_layer(s, il, "ffn_down.weight"), h, d, ff, 1.0, x);
        }
        ref_rms_norm(x, synth_find(s, "output_norm.weight")->data, h, d, eps);
        ref_matvec(out, h, logits + (size_t)p * V, V, d);
    }
    free(K), free(Vc), free(x), free(h), free(q), free(att), free(o);
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

static void check_against_reference(const char *what, const spec *sp)
{
    synth s;
    make_weights(sp, &s);
    size_t len = 0;
    uint8_t *img = write_image(sp, &s, &len);
    synth_loaded l;
    const sl_model *m = synth_load(&l, what, img, len);
    if (m) {
        const sl_hparams *hp = sl_model_hparams(m);
        CHECK(hp->arch == SL_ARCH_QWEN3 && hp->rope_type == SL_ROPE_NEOX, "%s: arch", what);
        CHECK(hp->head_dim_k == sp->head_dim && hp->n_vocab == sp->n_vocab, "%s: dims", what);

        enum { N = 12 };
        int32_t tok[N];
        synth_tokens(tok, N, sp->n_vocab);
        double *ref = reference_forward(sp, &s, tok, N);
        double diff; /* not required to be 0 here */
        double worst = synth_check_logits(what, m, tok, N, ref, sp->n_vocab, &diff);
        printf("%-34s max rel err vs float64 reference %.3e over %d positions\n", what, worst, N);
        free(ref);
    }
    synth_unload(&l);
    synth_free(&s);
}

static void expect_refusal(const char *what, const spec *sp, int want)
{
    synth s;
    make_weights(sp, &s);
    size_t len = 0;
    uint8_t *img = write_image(sp, &s, &len);
    synth_free(&s);
    synth_expect_refusal(what, img, len, want);
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
