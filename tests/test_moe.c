/* qwen2moe and qwen3moe on synthesized GGUF files: the mixture-of-experts
 * architectures testdata has no reference run for (Mixtral-style llama has
 * one: tiny-moe-q8_0, in test_forward).
 *
 * The test writes tiny models with random F32 weights (experts as 3-D
 * tensors, in the interleaved order real files have, so that layer units
 * have several ranges) with tests/synthmodel.h, and compares the engine's
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
#include "model/model.h"
#include "tests/synthmodel.h"
#include "tests/testutil.h"

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

/* Tensors in the order real converted files have them: sorted by name
 * within each layer, which interleaves the experts with the router. */
static void make_weights(const spec *sp, synth *s, uint64_t seed)
{
    synth_init(s, seed);
    const int64_t d = sp->n_embd, q = (int64_t)sp->n_head * sp->head_dim, kv = (int64_t)sp->n_head_kv * sp->head_dim;
    const int64_t E = sp->n_expert, ff = sp->n_ff_exp, fs = sp->n_ff_shexp;
    synth_add(s, "output.weight", 2, d, sp->n_vocab, 1, 0.0);
    synth_add(s, "output_norm.weight", 1, d, 1, 1, 1.0);
    synth_add(s, "token_embd.weight", 2, d, sp->n_vocab, 1, 0.0);
    for (uint32_t il = 0; il < sp->n_layer; il++) {
        char name[64];
#define L(suffix) (snprintf(name, sizeof name, "blk.%u.%s", il, suffix), name)
        synth_add(s, L("attn_k.weight"), 2, d, kv, 1, 0.0);
        if (sp->biases)
            synth_add(s, L("attn_k.bias"), 1, kv, 1, 1, 0.0);
        if (sp->qk_norm)
            synth_add(s, L("attn_k_norm.weight"), 1, sp->head_dim, 1, 1, 1.0);
        synth_add(s, L("attn_norm.weight"), 1, d, 1, 1, 1.0);
        synth_add(s, L("attn_output.weight"), 2, q, d, 1, 0.0);
        synth_add(s, L("attn_q.weight"), 2, d, q, 1, 0.0);
        if (sp->biases)
            synth_add(s, L("attn_q.bias"), 1, q, 1, 1, 0.0);
        if (sp->qk_norm)
            synth_add(s, L("attn_q_norm.weight"), 1, sp->head_dim, 1, 1, 1.0);
        synth_add(s, L("attn_v.weight"), 2, d, kv, 1, 0.0);
        if (sp->biases)
            synth_add(s, L("attn_v.bias"), 1, kv, 1, 1, 0.0);
        synth_add(s, L("ffn_down_exps.weight"), 3, ff, d, E, 0.0);
        if (fs)
            synth_add(s, L("ffn_down_shexp.weight"), 2, fs, d, 1, 0.0);
        synth_add(s, L("ffn_gate_exps.weight"), 3, d, ff, E, 0.0);
        synth_add(s, L("ffn_gate_inp.weight"), 2, d, E, 1, 0.0);
        if (fs) {
            synth_add(s, L("ffn_gate_inp_shexp.weight"), 1, d, 1, 1, 0.0);
            synth_add(s, L("ffn_gate_shexp.weight"), 2, d, fs, 1, 0.0);
        }
        synth_add(s, L("ffn_norm.weight"), 1, d, 1, 1, 1.0);
        synth_add(s, L("ffn_up_exps.weight"), 3, d, ff, E, 0.0);
        if (fs)
            synth_add(s, L("ffn_up_shexp.weight"), 2, d, fs, 1, 0.0);
#undef L
    }
}

static uint8_t *write_image(const spec *sp, const synth *s, size_t *len)
{
    const synth_file f = {.arch = sp->arch,
                          .n_embd = sp->n_embd,
                          .n_layer = sp->n_layer,
                          .n_ff = 4 * sp->n_embd, /* the dense width: unused */
                          .n_head = sp->n_head,
                          .n_head_kv = sp->n_head_kv,
                          .head_dim = sp->head_dim,
                          .eps = 1e-6f,
                          .freq_base = 1e6f,
                          .n_tokens = sp->n_vocab,
                          .drop = sp->drop,
                          .bad_shape = sp->bad_shape};
    int rc;
    sl_gguf_writer *w = synth_image_begin(&f, &rc);
    if (!w)
        return NULL;
    char key[128];
    const char *a = sp->arch;
#define K(suffix) synth_key(key, sizeof key, a, suffix)
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
    return synth_image_end(w, rc, &f, s, len);
}

/* ---- float64 reference -------------------------------------------------- */

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
    double *att = calloc(qd, sizeof *att), *o = calloc(d, sizeof *o);
    double *y = calloc(d, sizeof *y), p[MAX_E];
    const float *emb = synth_find(s, "token_embd.weight")->data;
    *margin = INFINITY;
    for (int pos = 0; pos < n_tok; pos++) {
        for (int i = 0; i < d; i++)
            x[i] = emb[(size_t)tok[pos] * d + i];
        for (uint32_t il = 0; il < sp->n_layer; il++) {
            double *k = Kc + ((size_t)il * n_tok + pos) * kd, *v = Vc + ((size_t)il * n_tok + pos) * kd;
            ref_rms_norm(x, synth_layer(s, il, "attn_norm.weight"), h, d, 1e-6);
            ref_matvec(synth_layer(s, il, "attn_q.weight"), h, q, qd, d);
            ref_matvec(synth_layer(s, il, "attn_k.weight"), h, k, kd, d);
            ref_matvec(synth_layer(s, il, "attn_v.weight"), h, v, kd, d);
            if (sp->biases) {
                const float *bq = synth_layer(s, il, "attn_q.bias"), *bk = synth_layer(s, il, "attn_k.bias");
                const float *bv = synth_layer(s, il, "attn_v.bias");
                for (int i = 0; i < qd; i++)
                    q[i] += bq[i];
                for (int i = 0; i < kd; i++)
                    k[i] += bk[i], v[i] += bv[i];
            }
            for (int hh = 0; hh < nh; hh++) {
                if (sp->qk_norm)
                    ref_rms_norm(q + hh * hd, synth_layer(s, il, "attn_q_norm.weight"), q + hh * hd, hd,
                                 1e-6);
                ref_rope_neox(q + hh * hd, hd, pos, 1e6, NULL);
            }
            for (int hh = 0; hh < nkv; hh++) {
                if (sp->qk_norm)
                    ref_rms_norm(k + hh * hd, synth_layer(s, il, "attn_k_norm.weight"), k + hh * hd, hd,
                                 1e-6);
                ref_rope_neox(k + hh * hd, hd, pos, 1e6, NULL);
            }
            ref_attention(q, Kc + (size_t)il * n_tok * kd, Vc + (size_t)il * n_tok * kd, pos, nh, nkv, hd,
                          att);
            ref_matvec(synth_layer(s, il, "attn_output.weight"), att, o, d, qd);
            for (int i = 0; i < d; i++)
                x[i] += o[i];

            /* The mixture: softmax over all experts, the K most probable. */
            ref_rms_norm(x, synth_layer(s, il, "ffn_norm.weight"), h, d, 1e-6);
            ref_matvec(synth_layer(s, il, "ffn_gate_inp.weight"), h, p, E, d);
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
            const float *G = synth_layer(s, il, "ffn_gate_exps.weight"),
                        *U = synth_layer(s, il, "ffn_up_exps.weight");
            const float *D = synth_layer(s, il, "ffn_down_exps.weight");
            for (int r = 0; r < K; r++) {
                const size_t e = (size_t)sel[r];
                double wgt = sp->norm ? p[e] / chosen : p[e];
                ref_ffn(G + e * ff * d, U + e * ff * d, D + e * d * ff, h, d, ff, wgt, y);
            }
            if (fs) {
                const float *gs = synth_layer(s, il, "ffn_gate_inp_shexp.weight");
                double g = 0;
                for (int i = 0; i < d; i++)
                    g += (double)gs[i] * h[i];
                ref_ffn(synth_layer(s, il, "ffn_gate_shexp.weight"),
                        synth_layer(s, il, "ffn_up_shexp.weight"),
                        synth_layer(s, il, "ffn_down_shexp.weight"), h, d, fs, 1.0 / (1.0 + exp(-g)), y);
            }
            for (int i = 0; i < d; i++)
                x[i] += y[i];
        }
        ref_rms_norm(x, synth_find(s, "output_norm.weight")->data, h, d, 1e-6);
        ref_matvec(synth_find(s, "output.weight")->data, h, logits + (size_t)pos * V, V, d);
    }
    free(Kc), free(Vc), free(x), free(h), free(q), free(att), free(o), free(y);
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

static void check_against_reference(const char *what, const spec *sp, sl_arch arch)
{
    synth s;
    make_weights(sp, &s, 0x5eed);
    size_t len = 0;
    uint8_t *img = write_image(sp, &s, &len);
    synth_loaded l;
    const sl_model *m = synth_load(&l, what, img, len);
    if (m) {
        const sl_hparams *hp = sl_model_hparams(m);
        CHECK(hp->arch == arch && hp->n_expert == sp->n_expert && hp->n_expert_used == sp->n_used, "%s: arch", what);
        CHECK(hp->n_ff_exp == sp->n_ff_exp && hp->n_ff_shexp == sp->n_ff_shexp && hp->expert_weights_norm == sp->norm,
              "%s: expert widths %u/%u, norm %d", what, hp->n_ff_exp, hp->n_ff_shexp, hp->expert_weights_norm);
        /* Tensors interleave: the layer without its experts spans ranges. */
        CHECK(sl_model_layer_unit(m, 0)->n_ranges >= 2, "%s: %u ranges", what, sl_model_layer_unit(m, 0)->n_ranges);

        enum { N = 12 };
        int32_t tok[N];
        synth_tokens(tok, N, sp->n_vocab);
        double margin;
        double *ref = reference_forward(sp, &s, tok, N, &margin);
        /* Agreement is only meaningful where no routing was a near-tie. */
        CHECK(margin > 1e-4, "%s: the test data has a routing near-tie (%.3g); change the seed", what, margin);
        double diff;
        double worst = synth_check_logits(what, m, tok, N, ref, sp->n_vocab, &diff);
        CHECK(diff == 0, "%s: batches of 5 and of 1 differ by %.3g", what, diff);
        printf("%-34s max rel err vs float64 reference %.3e over %d positions (routing margin %.1e)\n", what,
               worst, N, margin);
        free(ref);
    }
    synth_unload(&l);
    synth_free(&s);
}

static void expect_refusal(const char *what, const spec *sp, int want)
{
    synth s;
    make_weights(sp, &s, 0x5eed);
    size_t len = 0;
    uint8_t *img = write_image(sp, &s, &len);
    synth_free(&s);
    synth_expect_refusal(what, img, len, want);
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
