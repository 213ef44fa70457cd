/* `sluice generate`: continue a prompt with the in-process engine. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "compute/engine.h"
#include "coordinator/sampler.h"
#include "model/detok.h"
#include "model/model.h"
#include "model/source.h"
#include "model/tokenizer.h"

static void help(FILE *out)
{
    fprintf(out, "usage: sluice generate -m MODEL (-p PROMPT | -f FILE) [-n N] [options]\n\n"
                 "Prints the continuation of the prompt on stdout, then prompt and generation\n"
                 "speed on stderr. Stops after N tokens or at an end-of-generation token.\n\n");
    sl_cli_gen_help(out, false);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Tokenizes the prompt into a malloc'd array. */
static int encode_prompt(const sl_tokenizer *tk, const char *text, size_t len, bool add_special, int32_t **ids)
{
    unsigned flags = (add_special ? SL_TOK_ADD_SPECIAL : 0) | SL_TOK_PARSE_SPECIAL;
    int n = sl_tokenizer_encode(tk, text, len, flags, NULL, 0);
    if (n < 0)
        return n;
    *ids = malloc(((size_t)n + 1) * sizeof **ids);
    if (!*ids || sl_tokenizer_encode(tk, text, len, flags, *ids, (size_t)n) != n)
        return -1;
    return n;
}

static int emit(sl_detok *d, const sl_tokenizer *tk, int32_t id, char *buf, size_t cap)
{
    int k = sl_detok_push(d, tk, id, buf, cap);
    if (k < 0)
        return k;
    fwrite(buf, 1, (size_t)k, stdout);
    fflush(stdout);
    return 0;
}

int sl_cmd_generate(int argc, char **argv)
{
    sl_cli_gen a;
    int rc = sl_cli_gen_parse(argc, argv, false, &a);
    if (rc == 1)
        help(stdout);
    else if (rc)
        help(stderr);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (sl_sampler_params_check(&a.sp))
        return 2;

    int status = 1;
    char *file_buf = NULL, *piece_buf = NULL;
    int32_t *prompt = NULL;
    float *logits = NULL;
    void *scratch = NULL;
    sl_model *m = NULL;
    sl_tokenizer *tk = NULL;
    sl_engine *e = NULL;
    size_t text_len;
    if (a.file) {
        if (sl_cli_read_file(a.file, &file_buf, &text_len))
            goto out;
        a.prompt = file_buf;
    } else {
        text_len = strlen(a.prompt);
    }
    if (sl_source_open_model(a.model, SL_SOURCE_ALL, &m) || sl_tokenizer_new(sl_model_gguf(m), &tk))
        goto out;
    const sl_hparams *hp = sl_model_hparams(m);
    int n_prompt = encode_prompt(tk, a.prompt, text_len, a.add_special, &prompt);
    if (n_prompt < 0)
        goto out;
    if (n_prompt == 0) {
        fprintf(stderr, "sluice generate: the prompt encodes to no tokens; give some text or allow BOS\n");
        status = 2;
        goto out;
    }
    long long need = n_prompt + a.n_predict;
    if (!a.n_ctx)
        a.n_ctx = need > (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096) ? need
                  : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    if (a.n_ctx < need) {
        fprintf(stderr, "sluice generate: context of %lld positions cannot hold the %d prompt tokens plus %lld "
                        "to generate; use -c %lld or more\n", a.n_ctx, n_prompt, a.n_predict, need);
        status = 2;
        goto out;
    }
    size_t scratch_bytes = sl_sampler_scratch_bytes((int)hp->n_vocab);
    logits = malloc(hp->n_vocab * sizeof *logits);
    scratch = malloc(scratch_bytes);
    piece_buf = malloc(SL_DETOK_OUT_MAX(tk));
    if (!logits || !scratch || !piece_buf) {
        fprintf(stderr, "sluice generate: out of memory\n");
        goto out;
    }
    if (sl_engine_new(m, (uint32_t)a.n_ctx, (uint32_t)a.n_batch, (uint32_t)a.threads, &e))
        goto out;

    sl_sampler_state ss;
    sl_detok dt;
    sl_sampler_init(&ss, &a.sp);
    sl_detok_init(&dt, 0);
    for (int i = 0; i < n_prompt; i++)
        sl_sampler_accept(&ss, prompt[i]);

    double t0 = now_s();
    if (sl_engine_eval(e, prompt, (uint32_t)n_prompt, false, logits))
        goto out;
    double t1 = now_s();
    long long n_gen = 0;
    for (; n_gen < a.n_predict; n_gen++) {
        int tok = sl_sampler_sample(&ss, &a.sp, logits, (int)hp->n_vocab, scratch, scratch_bytes);
        if (tok < 0)
            goto out;
        if (!a.ignore_eos && sl_tokenizer_is_eog(tk, tok))
            break;
        sl_sampler_accept(&ss, tok);
        if (emit(&dt, tk, tok, piece_buf, SL_DETOK_OUT_MAX(tk)))
            goto out;
        /* The last token needs no forward pass: nothing will sample after it. */
        if (n_gen + 1 < a.n_predict && sl_engine_eval(e, (const int32_t *)&tok, 1, false, logits))
            goto out;
    }
    int k = sl_detok_flush(&dt, piece_buf, SL_DETOK_OUT_MAX(tk));
    if (k > 0)
        fwrite(piece_buf, 1, (size_t)k, stdout);
    putchar('\n');
    fflush(stdout);
    double t2 = now_s();
    fprintf(stderr, "sluice: prompt %d tokens in %.3f s (%.2f tokens/s); generated %lld tokens in %.3f s "
                    "(%.2f tokens/s)\n", n_prompt, t1 - t0, n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen,
            t2 - t1, n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    status = 0;
out:
    sl_engine_free(e);
    sl_tokenizer_free(tk);
    sl_model_close(m);
    free(prompt);
    free(logits);
    free(scratch);
    free(piece_buf);
    free(file_buf);
    return status;
}
