/* Synthetic models for the tests that have no reference run in testdata
 * (test_qwen3, test_moe): a set of F32 tensors with seeded random values,
 * written as an in-memory GGUF image with model/gguf_write.h (optionally
 * with one deliberate defect) and opened as a model; the engine's logits
 * checked against a float64 forward pass; and the float64 building blocks
 * those reference passes are written from.
 *
 * Each test keeps what is particular to its architectures: its spec, the
 * tensors it makes (and their order), its own metadata keys and its
 * reference forward pass. Everything here reports through CHECK
 * (tests/testutil.h), so a failure counts and the test goes on. */
#ifndef SL_TESTS_SYNTHMODEL_H
#define SL_TESTS_SYNTHMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"
#include "model/gguf_write.h"
#include "model/model.h"

/* Enough for two MoE layers with a shared expert and biases. */
#define SYNTH_MAX_TENSORS 96

typedef struct synth_tensor {
    char name[64];
    int64_t ne[3]; /* innermost first; unused dimensions are 1 */
    uint32_t n_dims;
    float *data; /* ne[0] * ne[1] * ne[2] values, owned */
} synth_tensor;

/* The tensors of one model, in the order they are written. */
typedef struct synth {
    synth_tensor t[SYNTH_MAX_TENSORS];
    uint32_t n;
    uint64_t rng;
} synth;

/* Empties s and seeds its generator: the same seed and the same sequence of
 * synth_add calls give the same values. */
void synth_init(synth *s, uint64_t seed);

/* Next value of s's generator, uniform in [-1, 1) (a 64-bit LCG with
 * Knuth's MMIX constants, so that the values do not depend on libc). */
double synth_uniform(synth *s);

/* Adds a tensor of ne0 x ne1 x ne2 values (n_dims of the dimensions
 * declared; pass 1 for the others) and returns its data for a caller that
 * wants other values. Matrices (n_dims > 1) are uniform with a scale that
 * gives unit-variance outputs for unit-variance inputs of length ne0;
 * vectors are `center` +- 0.2. Aborts when SYNTH_MAX_TENSORS are in use. */
float *synth_add(synth *s, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
                 double center);

/* The tensor called `name`, or NULL. */
const synth_tensor *synth_find(const synth *s, const char *name);

/* The data of "blk.<il>.<suffix>", which must exist (aborts otherwise: a
 * reference pass that asks for a tensor its builder did not make is a bug
 * in the test). */
const float *synth_layer(const synth *s, uint32_t il, const char *suffix);

/* Frees every tensor's data; s may be reused after synth_init. */
void synth_free(synth *s);

/* ---- the GGUF image ----------------------------------------------------- */

/* What every synthetic image's header holds, and its defect (if any). */
typedef struct synth_file {
    const char *arch; /* general.architecture and the prefix of the keys */
    uint32_t n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim;
    float eps, freq_base;
    uint32_t n_tokens;      /* tokenizer.ggml.tokens "t0", "t1", ...; 0: no tokens */
    const char *drop;       /* leave this tensor out */
    const char *f16_tensor; /* declare this tensor F16 (its bytes are junk: never computed) */
    const char *bad_shape;  /* one more along this tensor's outermost dimension */
} synth_file;

/* Writes "<arch>.<suffix>" into key (n bytes) and returns key. */
const char *synth_key(char *key, size_t n, const char *arch, const char *suffix);

/* Starts an in-memory image of f: general.architecture, then context_length
 * (256), embedding_length, block_count, feed_forward_length,
 * attention.head_count, head_count_kv, key_length and value_length (both
 * head_dim), layer_norm_rms_epsilon and rope.freq_base. The caller adds its
 * architecture's other keys and passes the writer to synth_image_end.
 * Returns the writer, with *rc the OR of the add calls' codes (0: all
 * succeeded); or NULL, a failed check, when no writer could be made. */
sl_gguf_writer *synth_image_begin(const synth_file *f, int *rc);

/* Finishes an image begun with synth_image_begin: the tokens, then every
 * tensor of s in order (F32, with f's defect applied; an enlarged tensor's
 * extra values are zeros) and their data. `rc` is the OR of the codes so
 * far; a check fails unless it and every step here are 0. Frees w. Returns
 * the image (*len bytes; the caller frees it), NULL when it could not be
 * taken. */
uint8_t *synth_image_end(sl_gguf_writer *w, int rc, const synth_file *f, const synth *s, size_t *len);

/* An image opened as a model; the model reads the image in place. */
typedef struct synth_loaded {
    uint8_t *img;
    sl_gguf *g;
    sl_model *m;
} synth_loaded;

/* Takes img (len bytes; NULL: it could not be written) and opens it as a
 * model, for a test that needs it to open: a failed check (named `what`)
 * when it does not. Returns the model, or NULL. Whatever the result, l is
 * then closed with synth_unload. */
const sl_model *synth_load(synth_loaded *l, const char *what, uint8_t *img, size_t len);

/* Closes the model and the file and frees the image. */
void synth_unload(synth_loaded *l);

/* Checks that img opens as a GGUF file (a failed check otherwise) and is
 * then refused as a model with exactly `want`; frees img. NULL (it could
 * not be written) fails the check. */
void synth_expect_refusal(const char *what, uint8_t *img, size_t len, int want);

/* The tokens the reference checks evaluate: tok[i] = (7 i + 3) mod n_vocab,
 * which visits many tokens and repeats some. */
void synth_tokens(int32_t *tok, int n, uint32_t n_vocab);

/* Evaluates tok[0..n) on m twice, in batches of 5 on 3 threads and one token
 * at a time on 1, and checks every position's logits against ref
 * ([n][n_vocab]) to 1e-4 relative L2 error. Returns the worst error, and in
 * *diff the largest relative difference between the two engines' logits,
 * for tests that require them to agree exactly (0 when nothing ran). */
double synth_check_logits(const char *what, const sl_model *m, const int32_t *tok, int n, const double *ref,
                          uint32_t n_vocab, double *diff);

/* ---- float64 reference building blocks ---------------------------------- */

/* y = x / sqrt(mean(x^2) + eps) * w over n values; y may be x. */
void ref_rms_norm(const double *x, const float *w, double *y, int n, double eps);

/* y[rows] = W x, W stored row-major with `cols` per row. */
void ref_matvec(const float *W, const double *x, double *y, int rows, int cols);

/* NEOX rotation of the first n_rot values of v: pairs (i, i + n_rot/2) by
 * the angle pos * base^(-2i/n_rot) / ff[i] (ff NULL: divisors of 1). */
void ref_rope_neox(double *v, int n_rot, double pos, double base, const float *ff);

/* Causal attention for position `pos`: each of the nh query heads in q
 * (hd values each) attends, with softmax(q.k / sqrt(hd)), over rows
 * 0..pos of Kc and Vc (one row of nkv heads per position; query head h
 * uses kv head h / (nh / nkv)). Writes nh * hd values to out. */
void ref_attention(const double *q, const double *Kc, const double *Vc, int pos, int nh, int nkv, int hd,
                   double *out);

/* y += scale * down(silu(gate h) * up h): one SwiGLU feed-forward of width
 * ff on h (d values), its matrices as the model stores them. */
void ref_ffn(const float *gate, const float *up, const float *down, const double *h, int d, int ff,
             double scale, double *y);

#endif
