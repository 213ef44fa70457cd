/* `sluice eval`: how far quantized models are from their full-precision
 * reference, measured on text.
 *
 * Every non-empty line of the prompts file is one sequence (tokenized as
 * generation would, BOS included where the vocabulary adds it, cut at the
 * context size). Each sequence is fed to every model, teacher-forced: all
 * models see the same tokens, whatever they would have predicted. At every
 * position p the next-token distributions are compared:
 *   KL(ref || model) = sum_i P_ref(i) (log P_ref(i) - log P_model(i)),
 *   top-1 agreement  = the two argmaxes are the same token,
 * and each model's perplexity on the sequence's own next tokens is taken.
 * KL is computed in double from log-softmaxes that are the same code for
 * every model, so a model compared with itself gives exactly 0.
 *
 * The models run in-process (compute/engine.h), each with its own engine;
 * they advance through a sequence in chunks of CHUNK tokens, so memory for
 * logits is two chunks of rows whatever the text's length. */
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "compute/engine.h"
#include "model/dtype.h"
#include "model/model.h"
#include "model/tokenizer.h"

#define CHUNK 64       /* tokens per forward call */
#define MAX_MODELS 32

static void help(FILE *out)
{
    fprintf(out, "usage: sluice eval --ref REF.gguf --prompts FILE -m MODEL [-m MODEL ...] [options]\n\n"
                 "Teacher-forces every non-empty line of FILE through the reference and each\n"
                 "model and prints, per model: bits per weight (all tensors), the mean, 99th\n"
                 "percentile and largest KL divergence KL(ref || model) of the next-token\n"
                 "distributions, how often the two most likely tokens agree, and the\n"
                 "perplexity on the text itself. Models must share the reference's vocabulary.\n\n"
                 "  -m, --model PATH      a model to compare (up to %d; repeat the flag)\n"
                 "      --ref PATH        the full-precision reference model\n"
                 "      --prompts FILE    the text, one sequence per line\n"
                 "  -c, --ctx-size N      longest sequence in tokens; longer lines are cut (default 512)\n"
                 "  -t, --threads N       compute threads (default: all cores)\n"
                 "      --json            one JSON object on stdout instead of the table\n"
                 "  -h, --help            this text\n",
            MAX_MODELS);
}

/* One model and what was measured on it. */
typedef struct entry {
    const char *path;
    sl_model *model;
    sl_engine *engine;
    double bpw;
    double kl_sum, nll_sum;
    double *kl; /* one per position */
    uint64_t top1, n_nll;
} entry;

/* Bits per weight over all the file's tensors. */
static double file_bpw(const sl_model *m)
{
    const sl_gguf *g = sl_model_gguf(m);
    double bytes = 0, elems = 0;
    for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        double ne = 1;
        for (int d = 0; d < SL_GGUF_MAX_DIMS; d++)
            ne *= (double)t->ne[d];
        bytes += (double)t->nbytes;
        elems += ne;
    }
    return elems > 0 ? 8.0 * bytes / elems : 0.0;
}

/* out[i] = v[i] - log(sum exp v), in double; returns the argmax (first on
 * ties). */
static uint32_t log_softmax(const float *v, uint32_t n, double *out)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    const double mx = v[best];
    double s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += exp((double)v[i] - mx);
    const double lse = mx + log(s);
    for (uint32_t i = 0; i < n; i++)
        out[i] = (double)v[i] - lse;
    return best;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The prompts: every line with something other than spaces, tokenized. */
typedef struct seqs {
    int32_t **tok;
    uint32_t *len;
    size_t n;
    uint64_t positions;
} seqs;

static void seqs_free(seqs *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->tok[i]);
    free(s->tok);
    free(s->len);
}

static int load_prompts(const char *path, const sl_tokenizer *tk, uint32_t n_ctx, seqs *s)
{
    char *text;
    size_t len;
    if (sl_cli_read_file(path, &text, &len))
        return -1;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    s->tok = calloc(lines, sizeof *s->tok);
    s->len = calloc(lines, sizeof *s->len);
    int rc = s->tok && s->len ? 0 : -1;
    for (char *line = text; rc == 0 && line < text + len;) {
        char *end = memchr(line, '\n', (size_t)(text + len - line));
        const size_t n = end ? (size_t)(end - line) : (size_t)(text + len - line);
        bool blank = true;
        for (size_t i = 0; i < n && blank; i++)
            blank = line[i] == ' ' || line[i] == '\t' || line[i] == '\r';
        if (!blank) {
            const int k = sl_tokenizer_encode(tk, line, n, SL_TOK_ADD_SPECIAL, NULL, 0);
            int32_t *ids = k > 0 ? malloc((size_t)k * sizeof *ids) : NULL;
            if (!ids || sl_tokenizer_encode(tk, line, n, SL_TOK_ADD_SPECIAL, ids, (size_t)k) != k) {
                free(ids);
                rc = -1;
                break;
            }
            s->tok[s->n] = ids;
            s->len[s->n] = (uint32_t)k < n_ctx ? (uint32_t)k : n_ctx;
            s->positions += s->len[s->n];
            s->n++;
        }
        line += n + 1;
    }
    free(text);
    if (rc == 0 && s->n == 0) {
        fprintf(stderr, "sluice eval: %s holds no text\n", path);
        rc = -1;
    } else if (rc) {
        fprintf(stderr, "sluice eval: cannot tokenize %s (see above)\n", path);
    }
    return rc;
}

/* Runs every sequence through the reference and the models and fills in
 * their statistics. */
static int measure(entry *ref, entry *ms, int n_models, const seqs *s, uint32_t n_vocab)
{
    float *lr = malloc((size_t)CHUNK * n_vocab * sizeof *lr), *lt = malloc((size_t)CHUNK * n_vocab * sizeof *lt);
    double *pr = malloc(n_vocab * sizeof *pr), *pt = malloc(n_vocab * sizeof *pt);
    int rc = lr && lt && pr && pt ? 0 : -1;
    if (rc)
        fprintf(stderr, "sluice eval: out of memory\n");
    uint64_t pos = 0; /* index of the position over all sequences */
    for (size_t q = 0; q < s->n && rc == 0; q++) {
        sl_engine_reset(ref->engine);
        for (int m = 0; m < n_models; m++)
            sl_engine_reset(ms[m].engine);
        for (uint32_t c0 = 0; c0 < s->len[q] && rc == 0; c0 += CHUNK) {
            const uint32_t nc = s->len[q] - c0 < CHUNK ? s->len[q] - c0 : CHUNK;
            const int32_t *tok = s->tok[q] + c0;
            if (sl_engine_eval(ref->engine, tok, nc, true, lr)) {
                rc = -1;
                break;
            }
            for (int m = -1; m < n_models && rc == 0; m++) {
                entry *e = m < 0 ? ref : &ms[m];
                if (m >= 0 && sl_engine_eval(e->engine, tok, nc, true, lt)) {
                    rc = -1;
                    break;
                }
                const float *logits = m < 0 ? lr : lt;
                for (uint32_t p = 0; p < nc; p++) {
                    const uint32_t ar = log_softmax(lr + (size_t)p * n_vocab, n_vocab, pr);
                    const uint32_t at = log_softmax(logits + (size_t)p * n_vocab, n_vocab, pt);
                    double kl = 0;
                    for (uint32_t i = 0; i < n_vocab; i++)
                        kl += exp(pr[i]) * (pr[i] - pt[i]);
                    e->kl[pos + p] = kl;
                    e->kl_sum += kl;
                    e->top1 += ar == at;
                    if (c0 + p + 1 < s->len[q]) {
                        e->nll_sum -= pt[s->tok[q][c0 + p + 1]];
                        e->n_nll++;
                    }
                }
            }
            pos += nc;
        }
    }
    free(lr);
    free(lt);
    free(pr);
    free(pt);
    return rc;
}

/* Prints s as a JSON string (quotes, backslashes and control bytes escaped). */
static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void print_results(const entry *ref, const entry *ms, int n_models, const seqs *s, bool json)
{
    const entry *all[MAX_MODELS + 1];
    all[0] = ref;
    for (int m = 0; m < n_models; m++)
        all[m + 1] = &ms[m];
    const double n = (double)s->positions;
    if (json) {
        printf("{\"ref\": ");
        json_str(ref->path);
        printf(", \"sequences\": %zu, \"positions\": %llu, \"models\": [", s->n, (unsigned long long)s->positions);
    } else {
        printf("%zu sequences, %llu positions; KL(ref || model) in nats per token\n\n", s->n,
               (unsigned long long)s->positions);
        printf("%-28s %6s %12s %12s %12s %8s %9s\n", "model", "bits/w", "KL mean", "KL p99", "KL max", "top-1",
               "PPL");
    }
    for (int m = 0; m <= n_models; m++) {
        const entry *e = all[m];
        double *sorted = e->kl; /* sorted in place: only the statistics are needed from here on */
        qsort(sorted, (size_t)s->positions, sizeof *sorted, cmp_double);
        size_t i99 = (size_t)ceil(0.99 * n) - 1;
        i99 = i99 >= s->positions ? (size_t)s->positions - 1 : i99;
        const double mean = e->kl_sum / n, p99 = sorted[i99], mx = sorted[s->positions - 1];
        const double top1 = (double)e->top1 / n;
        const double ppl = e->n_nll ? exp(e->nll_sum / (double)e->n_nll) : NAN;
        if (json) {
            printf("%s{\"path\": ", m ? ", " : "");
            json_str(e->path);
            printf(", \"bpw\": %.6g, \"kl_mean\": %.9g, \"kl_p99\": %.9g, \"kl_max\": %.9g, \"top1\": %.9g, "
                   "\"ppl\": %.9g}",
                   e->bpw, mean, p99, mx, top1, ppl);
        } else {
            char label[40];
            snprintf(label, sizeof label, "%s%s", m ? "" : "(ref) ", base_name(e->path));
            printf("%-28s %6.3f %12.3e %12.3e %12.3e %7.2f%% %9.4f\n", label, e->bpw, mean, p99, mx, 100.0 * top1,
                   ppl);
        }
    }
    if (json)
        printf("]}\n");
}

int sl_cmd_eval(int argc, char **argv)
{
    enum { OPT_REF = 256, OPT_PROMPTS, OPT_JSON };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"ref", required_argument, 0, OPT_REF},
                                         {"prompts", required_argument, 0, OPT_PROMPTS},
                                         {"ctx-size", required_argument, 0, 'c'},
                                         {"threads", required_argument, 0, 't'},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *paths[MAX_MODELS], *ref_path = NULL, *prompts = NULL;
    int n_models = 0;
    long long n_ctx = 512, threads = sl_cli_default_threads();
    bool json = false;
    int c;
    optind = 0; /* a full reset, in case another parse ran before */
    while ((c = getopt_long(argc, argv, "m:c:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (n_models == MAX_MODELS) {
                fprintf(stderr, "sluice eval: at most %d models\n", MAX_MODELS);
                return 2;
            }
            paths[n_models++] = optarg;
            break;
        case OPT_REF: ref_path = optarg; break;
        case OPT_PROMPTS: prompts = optarg; break;
        case OPT_JSON: json = true; break;
        case 'c':
            if (sl_cli_int("--ctx-size", optarg, 1, 1 << 20, &n_ctx))
                return 2;
            break;
        case 't':
            if (sl_cli_int("--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (optind != argc || !ref_path || !prompts || n_models == 0) {
        fprintf(stderr, "sluice eval: %s\n", optind != argc ? "unexpected argument" : "--ref, --prompts and -m are required");
        help(stderr);
        return 2;
    }

    int status = 1;
    entry ref = {.path = ref_path}, ms[MAX_MODELS];
    memset(ms, 0, sizeof ms);
    sl_tokenizer *tk = NULL;
    seqs s = {0};
    if (sl_model_open(ref_path, &ref.model) || sl_tokenizer_new(sl_model_gguf(ref.model), &tk))
        goto out;
    const uint32_t n_vocab = sl_model_hparams(ref.model)->n_vocab;
    if (load_prompts(prompts, tk, (uint32_t)n_ctx, &s))
        goto out;
    uint32_t longest = 0;
    for (size_t i = 0; i < s.n; i++)
        longest = s.len[i] > longest ? s.len[i] : longest;
    for (int m = -1; m < n_models; m++) {
        entry *e = m < 0 ? &ref : &ms[m];
        if (m >= 0) {
            e->path = paths[m];
            if (sl_model_open(e->path, &e->model))
                goto out;
            if (sl_model_hparams(e->model)->n_vocab != n_vocab) {
                fprintf(stderr, "sluice eval: %s has %u tokens, the reference %u: not the same vocabulary\n",
                        e->path, sl_model_hparams(e->model)->n_vocab, n_vocab);
                goto out;
            }
        }
        e->bpw = file_bpw(e->model);
        e->kl = calloc((size_t)s.positions, sizeof *e->kl);
        if (!e->kl) {
            fprintf(stderr, "sluice eval: out of memory\n");
            goto out;
        }
        if (sl_engine_new(e->model, longest, longest < CHUNK ? longest : CHUNK, (uint32_t)threads, &e->engine))
            goto out;
    }
    if (measure(&ref, ms, n_models, &s, n_vocab))
        goto out;
    print_results(&ref, ms, n_models, &s, json);
    status = 0;
out:
    for (int m = -1; m < n_models; m++) {
        entry *e = m < 0 ? &ref : &ms[m];
        sl_engine_free(e->engine);
        sl_model_close(e->model);
        free(e->kl);
    }
    seqs_free(&s);
    sl_tokenizer_free(tk);
    return status;
}
