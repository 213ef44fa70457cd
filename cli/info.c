/* `sluice info`: what a model file holds, and whether sluice can run it. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "model/dtype.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/source.h"
#include "model/tokenizer.h"

static void help(FILE *out)
{
    fprintf(out, "usage: sluice info -m MODEL\n\n"
                 "Prints the architecture, hyper-parameters, tensor types, bytes per layer and\n"
                 "tokenizer of a GGUF model (or a packed one: then how it is stored too). Exits 1\n"
                 "when sluice cannot run the model.\n\n"
                 "  -m, --model PATH   GGUF file or packed directory (`sluice pack`)\n"
                 "  -h, --help         this text\n");
}

static void print_str_key(const sl_gguf *g, const char *label, const char *key)
{
    sl_str s;
    if (sl_gguf_get_str(g, key, &s) == 0)
        printf("%-16s %.*s\n", label, (int)(s.len > 200 ? 200 : s.len), s.ptr);
}

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

static void print_tensor_types(const sl_gguf *g)
{
    uint64_t count[SL_DTYPE_COUNT] = {0}, bytes[SL_DTYPE_COUNT] = {0}, total = 0;
    for (uint64_t i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor *t = sl_gguf_tensor_at(g, i);
        count[t->type]++;
        bytes[t->type] += t->nbytes;
        total += t->nbytes;
    }
    printf("%-16s %llu tensors, %.2f MiB\n", "tensors", (unsigned long long)sl_gguf_tensor_count(g), mib(total));
    for (int t = 0; t < SL_DTYPE_COUNT; t++)
        if (count[t])
            printf("  %-14s %llu tensors, %.2f MiB%s\n", sl_dtype_name((uint32_t)t), (unsigned long long)count[t],
                   mib(bytes[t]), sl_dtype_get((uint32_t)t)->supported ? "" : " (not supported)");
}

/* How a packed model is stored: units, shards, codecs. */
static void print_pack(const char *dir)
{
    sl_pack *p;
    if (sl_pack_open(dir, &p))
        return;
    uint32_t by_codec[SL_PACK_CODEC_COUNT] = {0};
    uint64_t payload = 0, stored = 0;
    for (uint32_t i = 0; i < sl_pack_unit_count(p); i++) {
        const sl_pack_unit *u = sl_pack_unit_at(p, i);
        by_codec[u->codec]++;
        payload += u->size;
        stored += u->stored;
    }
    printf("%-16s packed from %s: %u units in %u shard files, %.2f MiB stored for %.2f MiB (", "packed",
           sl_pack_source(p), sl_pack_unit_count(p), sl_pack_file_count(p), mib(stored), mib(payload));
    const char *sep = "";
    for (int c = 0; c < SL_PACK_CODEC_COUNT; c++)
        if (by_codec[c]) {
            printf("%s%u %s", sep, by_codec[c], sl_pack_codec_name((sl_pack_codec)c));
            sep = ", ";
        }
    printf(")%s%s\n", sl_pack_requant(p)[0] ? "; re-quantized " : "", sl_pack_requant(p));
    sl_pack_close(p);
}

static void print_model(const sl_model *m)
{
    const sl_hparams *hp = sl_model_hparams(m);
    printf("%-16s %s\n", "runs as", sl_arch_name(hp->arch));
    printf("%-16s n_embd %u, n_layer %u, n_head %u, n_head_kv %u, head_dim %u, n_ff %u, n_vocab %u\n",
           "shape", hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim_k, hp->n_ff, hp->n_vocab);
    printf("%-16s %s, n_rot %u, freq_base %g, freq_scale %g; rms_eps %g; trained context %u\n", "rope",
           hp->rope_type == SL_ROPE_NEOX ? "neox" : "normal", hp->n_rot, hp->rope_freq_base,
           hp->rope_freq_scale, hp->rms_eps, hp->n_ctx_train);
    const sl_unit *gu = sl_model_global_unit(m);
    printf("%-16s %.3f MiB (embeddings, output norm and projection)\n", "non-layer", mib(gu->payload));
    uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        uint64_t b = sl_model_layer_unit(m, il)->payload;
        lo = b < lo ? b : lo;
        hi = b > hi ? b : hi;
        sum += b;
    }
    const char *what = hp->n_expert ? " (without their experts)" : "";
    if (lo == hi)
        printf("%-16s %.3f MiB each, %.3f MiB in all%s\n", "per layer", mib(lo), mib(sum), what);
    else
        printf("%-16s %.3f .. %.3f MiB, %.3f MiB in all%s\n", "per layer", mib(lo), mib(hi), mib(sum), what);
    if (!hp->n_expert)
        return;
    /* An expert's bytes are what a token's routing to it costs to stream. */
    uint64_t elo = UINT64_MAX, ehi = 0, esum = 0;
    for (uint32_t il = 0; il < hp->n_layer; il++)
        for (uint32_t e = 0; e < hp->n_expert; e++) {
            sl_unit u;
            sl_model_expert_unit(m, il, e, &u);
            elo = u.payload < elo ? u.payload : elo;
            ehi = u.payload > ehi ? u.payload : ehi;
            esum += u.payload;
        }
    printf("%-16s %u per layer, %u used per token, FFN %u%s%s; %.3f", "experts", hp->n_expert, hp->n_expert_used,
           hp->n_ff_exp, hp->n_ff_shexp ? " plus a shared expert" : "",
           hp->expert_weights_norm ? ", weights renormalized" : "", mib(elo));
    if (ehi != elo)
        printf(" .. %.3f", mib(ehi));
    printf(" MiB each, %.3f MiB in all; %.3f MiB of experts per token\n", mib(esum),
           mib(esum / hp->n_expert * hp->n_expert_used));
}

static void print_tokenizer(const sl_tokenizer *tk, const sl_gguf *g)
{
    sl_str pre = {"", 0};
    sl_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    printf("%-16s %s%s%.*s, %d tokens, bos %d, eos %d, adds bos: %s\n", "tokenizer",
           sl_tokenizer_kind_get(tk) == SL_TOKENIZER_SPM ? "sentencepiece" : "byte-level BPE",
           pre.len ? ", pre " : "", (int)pre.len, pre.ptr, sl_tokenizer_n_vocab(tk), sl_tokenizer_bos(tk),
           sl_tokenizer_eos(tk), sl_tokenizer_add_bos(tk) ? "yes" : "no");
}

int sl_cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"help", no_argument, 0, 'h'}, {0}};
    const char *path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        if (c == 'm') {
            path = optarg;
        } else if (c == 'h') {
            help(stdout);
            return 0;
        } else {
            help(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        fprintf(stderr, "sluice info: %s\n", path ? "unexpected argument" : "-m MODEL is required");
        help(stderr);
        return 2;
    }
    sl_gguf *g;
    if (sl_source_open_gguf(path, &g))
        return 1;
    printf("%-16s %s (GGUF v%u, %.2f MiB)\n", "file", path, sl_gguf_version(g), mib(sl_gguf_file_size(g)));
    if (sl_source_is_packed(path))
        print_pack(path);
    print_str_key(g, "name", "general.name");
    print_str_key(g, "architecture", "general.architecture");
    print_tensor_types(g);
    int status = 0;
    sl_tokenizer *tk = NULL;
    if (sl_tokenizer_new(g, &tk) == 0)
        print_tokenizer(tk, g);
    else
        status = 1;
    sl_tokenizer_free(tk);
    sl_model *m = NULL;
    if (sl_gguf_tensor_count(g) == 0) {
        printf("%-16s none (a vocabulary-only file)\n", "weights");
        status = 1;
    } else if (sl_model_from_gguf(g, &m) == 0) {
        print_model(m);
    } else {
        printf("%-16s sluice cannot run this model (see the message above)\n", "runs as");
        status = 1;
    }
    sl_model_close(m);
    sl_gguf_close(g);
    return status;
}
