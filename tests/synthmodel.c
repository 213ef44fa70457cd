/* Synthetic models for tests; see synthmodel.h. */
#include "tests/synthmodel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "compute/engine.h"
#include "tests/testutil.h"

void synth_init(synth *s, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->rng = seed;
}

double synth_uniform(synth *s)
{
    s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(s->rng >> 11) / (double)(1ull << 52) - 1.0;
}

float *synth_add(synth *s, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
                 double center)
{
    SL_ASSERT(s->n < SYNTH_MAX_TENSORS);
    synth_tensor *t = &s->t[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->n_dims = n_dims;
    size_t n = (size_t)(ne0 * ne1 * ne2);
    t->data = malloc(n * sizeof *t->data);
    SL_ASSERT(t->data != NULL);
    /* sqrt(3 / ne0): a uniform value has variance 1/3, a row sums ne0. */
    double scale = n_dims > 1 ? sqrt(3.0 / (double)ne0) : 0.2;
    for (size_t i = 0; i < n; i++)
        t->data[i] = (float)(center + scale * synth_uniform(s));
    return t->data;
}

const synth_tensor *synth_find(const synth *s, const char *name)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return &s->t[i];
    return NULL;
}

const float *synth_layer(const synth *s, uint32_t il, const char *suffix)
{
    char name[64];
    snprintf(name, sizeof name, "blk.%u.%s", il, suffix);
    const synth_tensor *t = synth_find(s, name);
    SL_ASSERT(t != NULL);
    return t->data;
}

void synth_free(synth *s)
{
    for (uint32_t i = 0; i < s->n; i++)
        free(s->t[i].data);
    s->n = 0;
}

/* ---- the GGUF image ----------------------------------------------------- */

const char *synth_key(char *key, size_t n, const char *arch, const char *suffix)
{
    snprintf(key, n, "%s.%s", arch, suffix);
    return key;
}

sl_gguf_writer *synth_image_begin(const synth_file *f, int *rc)
{
    sl_gguf_writer *w = NULL;
    *rc = sl_gguf_writer_new_mem(&w);
    CHECK(*rc == 0, "writer");
    if (*rc)
        return NULL;
    char key[128];
#define K(suffix) synth_key(key, sizeof key, f->arch, suffix)
    *rc |= sl_gguf_writer_add_str(w, "general.architecture", f->arch);
    *rc |= sl_gguf_writer_add_u32(w, K("context_length"), 256);
    *rc |= sl_gguf_writer_add_u32(w, K("embedding_length"), f->n_embd);
    *rc |= sl_gguf_writer_add_u32(w, K("block_count"), f->n_layer);
    *rc |= sl_gguf_writer_add_u32(w, K("feed_forward_length"), f->n_ff);
    *rc |= sl_gguf_writer_add_u32(w, K("attention.head_count"), f->n_head);
    *rc |= sl_gguf_writer_add_u32(w, K("attention.head_count_kv"), f->n_head_kv);
    *rc |= sl_gguf_writer_add_u32(w, K("attention.key_length"), f->head_dim);
    *rc |= sl_gguf_writer_add_u32(w, K("attention.value_length"), f->head_dim);
    *rc |= sl_gguf_writer_add_f32(w, K("attention.layer_norm_rms_epsilon"), f->eps);
    *rc |= sl_gguf_writer_add_f32(w, K("rope.freq_base"), f->freq_base);
#undef K
    return w;
}

static bool is(const char *name, const char *which)
{
    return which && strcmp(which, name) == 0;
}

uint8_t *synth_image_end(sl_gguf_writer *w, int rc, const synth_file *f, const synth *s, size_t *len)
{
    if (f->n_tokens) {
        rc |= sl_gguf_writer_arr_begin(w, "tokenizer.ggml.tokens", SL_GGUF_STRING);
        for (uint32_t i = 0; i < f->n_tokens; i++) {
            char tok[16];
            snprintf(tok, sizeof tok, "t%u", i);
            rc |= sl_gguf_writer_add_str(w, NULL, tok);
        }
        rc |= sl_gguf_writer_arr_end(w);
    }
    for (uint32_t i = 0; i < s->n; i++) {
        const synth_tensor *t = &s->t[i];
        if (is(t->name, f->drop))
            continue;
        int64_t ne[3] = {t->ne[0], t->ne[1], t->ne[2]};
        if (is(t->name, f->bad_shape))
            ne[t->n_dims - 1]++;
        rc |= sl_gguf_writer_add_tensor(w, t->name, t->n_dims, ne,
                                        is(t->name, f->f16_tensor) ? SL_F16 : SL_F32);
    }
    rc |= sl_gguf_writer_write_header(w);
    for (uint32_t i = 0; i < s->n; i++) {
        const synth_tensor *t = &s->t[i];
        if (is(t->name, f->drop))
            continue;
        size_t n = (size_t)(t->ne[0] * t->ne[1] * t->ne[2]), extra = 0;
        if (is(t->name, f->bad_shape)) { /* one more of the outermost dimension: zeros */
            extra = 1;
            for (uint32_t dim = 0; dim + 1 < t->n_dims; dim++)
                extra *= (size_t)t->ne[dim];
        }
        float *buf = calloc(n + extra, sizeof *buf);
        SL_ASSERT(buf != NULL);
        memcpy(buf, t->data, n * sizeof *buf);
        /* F16 takes the first half of the floats' bytes: junk, never computed. */
        rc |= sl_gguf_writer_write_data(w, buf, (n + extra) * (is(t->name, f->f16_tensor) ? 2 : 4));
        free(buf);
    }
    rc |= sl_gguf_writer_finish(w);
    uint8_t *img = NULL;
    rc |= sl_gguf_writer_mem_take(w, &img, len);
    sl_gguf_writer_free(w);
    CHECK(rc == 0, "writing the synthetic GGUF");
    return img;
}

/* Opens img as a GGUF file (a failed check when that fails) and that as a
 * model. Returns 0 or the error code; *m is NULL unless the model opened.
 * The caller closes *g and *m (NULL on entry) whatever the result. */
static int open_model(const uint8_t *img, size_t len, sl_gguf **g, sl_model **m)
{
    *m = NULL;
    int rc = sl_gguf_open_mem(img, len, g);
    CHECK(rc == 0, "sl_gguf_open_mem: %s", sl_strerror(rc));
    if (rc)
        return rc;
    return sl_model_from_gguf(*g, m);
}

const sl_model *synth_load(synth_loaded *l, const char *what, uint8_t *img, size_t len)
{
    *l = (synth_loaded){.img = img};
    int rc = img ? open_model(img, len, &l->g, &l->m) : -1;
    CHECK(rc == 0, "%s: model: %s", what, sl_strerror(rc));
    return rc == 0 ? l->m : NULL;
}

void synth_unload(synth_loaded *l)
{
    sl_model_close(l->m);
    sl_gguf_close(l->g);
    free(l->img);
    *l = (synth_loaded){0};
}

void synth_expect_refusal(const char *what, uint8_t *img, size_t len, int want)
{
    sl_gguf *g = NULL;
    sl_model *m = NULL;
    /* No image: 0, which no refusal wants, so the check below fails too. */
    int rc = img ? open_model(img, len, &g, &m) : 0;
    CHECK(rc == want && m == NULL, "%s: expected %s, got %d (%s)", what, sl_strerror(want), rc,
          sl_strerror(rc));
    sl_model_close(m);
    sl_gguf_close(g);
    free(img);
}

void synth_tokens(int32_t *tok, int n, uint32_t n_vocab)
{
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)((i * 7 + 3) % n_vocab);
}

double synth_check_logits(const char *what, const sl_model *m, const int32_t *tok, int n, const double *ref,
                          uint32_t n_vocab, double *diff)
{
    const uint32_t V = n_vocab;
    float *batched = malloc((size_t)n * V * sizeof *batched), *one = malloc(V * sizeof *one);
    float *refv = malloc(V * sizeof *refv);
    SL_ASSERT(batched && one && refv);
    sl_engine *e = NULL, *e1 = NULL;
    CHECK(sl_engine_new(m, 16, 5, 3, &e) == 0 && sl_engine_new(m, 16, 1, 1, &e1) == 0, "engines");
    double worst = 0;
    *diff = 0;
    if (e && e1 && sl_engine_eval(e, tok, (uint32_t)n, true, batched) == 0) {
        for (int p = 0; p < n; p++) {
            for (uint32_t v = 0; v < V; v++)
                refv[v] = (float)ref[(size_t)p * V + v];
            CHECK(sl_engine_eval(e1, &tok[p], 1, false, one) == 0, "one-by-one eval");
            double eb = sl_rel_err(batched + (size_t)p * V, refv, V), e1r = sl_rel_err(one, refv, V);
            CHECK(eb <= 1e-4 && e1r <= 1e-4, "%s: position %d: error %.3g (batched) %.3g (one by one)", what,
                  p, eb, e1r);
            worst = fmax(worst, fmax(eb, e1r));
            *diff = fmax(*diff, sl_rel_err(one, batched + (size_t)p * V, V));
        }
    } else {
        CHECK(0, "%s: eval failed", what);
    }
    sl_engine_free(e);
    sl_engine_free(e1);
    free(batched), free(one), free(refv);
    return worst;
}

/* ---- float64 reference building blocks ---------------------------------- */

void ref_rms_norm(const double *x, const float *w, double *y, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * w[i];
}

void ref_matvec(const float *W, const double *x, double *y, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double acc = 0;
        for (int c = 0; c < cols; c++)
            acc += (double)W[(size_t)r * cols + c] * x[c];
        y[r] = acc;
    }
}

void ref_rope_neox(double *v, int n_rot, double pos, double base, const float *ff)
{
    int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        double theta = pos * pow(base, -2.0 * i / n_rot) / (ff ? ff[i] : 1.0);
        double a = v[i], b = v[i + half];
        v[i] = a * cos(theta) - b * sin(theta);
        v[i + half] = a * sin(theta) + b * cos(theta);
    }
}

void ref_attention(const double *q, const double *Kc, const double *Vc, int pos, int nh, int nkv, int hd,
                   double *out)
{
    const int kd = nkv * hd;
    double *sc = malloc((size_t)(pos + 1) * sizeof *sc);
    SL_ASSERT(sc != NULL);
    for (int hh = 0; hh < nh; hh++) {
        int gk = hh / (nh / nkv);
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j <= pos; j++) {
            const double *kj = Kc + (size_t)j * kd + gk * hd;
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
                acc += sc[j] / sum * Vc[(size_t)j * kd + gk * hd + e];
            out[hh * hd + e] = acc;
        }
    }
    free(sc);
}

void ref_ffn(const float *gate, const float *up, const float *down, const double *h, int d, int ff,
             double scale, double *y)
{
    double *g = calloc(ff, sizeof *g), *u = calloc(ff, sizeof *u), *o = calloc(d, sizeof *o);
    SL_ASSERT(g && u && o);
    ref_matvec(gate, h, g, ff, d);
    ref_matvec(up, h, u, ff, d);
    for (int i = 0; i < ff; i++)
        g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
    ref_matvec(down, g, o, d, ff);
    for (int i = 0; i < d; i++)
        y[i] += scale * o[i];
    free(g), free(u), free(o);
}
