/* `sluice chat`: a conversation in the terminal with the in-process engine.
 *
 * Each line read from standard input is a user message. The conversation is
 * rendered with the model's chat template (chat/template.h), tokenized, and
 * the reply generated until an end-of-generation token (or -n tokens); the
 * reply joins the conversation as the assistant's message. The KV cache is
 * kept across turns: when the new rendering begins with the tokens already in
 * the cache (the usual case: the template appends), only the new tokens are
 * computed; otherwise the cache is started over. Works the same with a pipe
 * as stdin (no prompts are printed then), which is how it is tested. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat/template.h"
#include "cli/cli.h"
#include "common/log.h"
#include "compute/engine.h"
#include "coordinator/sampler.h"
#include "model/detok.h"
#include "model/model.h"
#include "model/source.h"
#include "model/tokenizer.h"

static void help(FILE *out)
{
    fprintf(out,
            "usage: sluice chat -m MODEL [--chat-template NAME|FILE] [--system TEXT] [options]\n\n"
            "Chats with the model: each line of standard input is a message, each reply is\n"
            "printed on stdout followed by a newline. The conversation is rendered with the\n"
            "model's chat template (tokenizer.chat_template) and the KV cache is kept from\n"
            "turn to turn. Lines /reset (start over) and /exit are commands. Statistics of\n"
            "each turn go to stderr.\n\n"
            "      --chat-template T     a template named in the model's metadata, a built-in\n"
            "                            (");
    for (const char *const *n = sl_template_builtin_names(); *n; n++)
        fprintf(out, "%s%s", *n, n[1] ? ", " : "");
    fprintf(out, ") or a Jinja file;\n"
                 "                            needed when the model has no template\n"
                 "      --system TEXT         a system message to start the conversation with\n"
                 "and the generation flags of `sluice generate` except -p and -f:\n");
    sl_cli_gen_help(out, false);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Takes --chat-template and --system (and their values) out of argv, into
 * *tmpl and *system; refuses -p / -f, which chat has no use for. Returns the
 * new argc, or -1 after a message. The generation flags parser then sees the
 * rest, with a placeholder prompt. */
static int take_own_flags(int argc, char **argv, char **out, const char **tmpl, const char **system)
{
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        size_t k = 0;
        if (!strncmp(a, "--chat-template", 15) && (a[15] == 0 || a[15] == '=')) {
            dst = tmpl;
            k = 15;
        } else if (!strncmp(a, "--system", 8) && (a[8] == 0 || a[8] == '=')) {
            dst = system;
            k = 8;
        }
        if (dst) {
            if (a[k] == '=') {
                *dst = a + k + 1;
            } else if (i + 1 < argc) {
                *dst = argv[++i];
            } else {
                fprintf(stderr, "sluice chat: %s needs a value\n", a);
                return -1;
            }
            continue;
        }
        bool prompt_flag = !strcmp(a, "--prompt") || !strncmp(a, "--prompt=", 9) || !strcmp(a, "--file") ||
                           !strncmp(a, "--file=", 7) || (a[0] == '-' && (a[1] == 'p' || a[1] == 'f'));
        if (i > 0 && prompt_flag) {
            fprintf(stderr, "sluice chat: the conversation comes from standard input; %s is not a chat flag\n", a);
            return -1;
        }
        out[n++] = argv[i];
    }
    return n;
}

typedef struct chat {
    sl_cli_gen a;
    sl_model *m;
    sl_tokenizer *tk;
    sl_template *t;
    sl_engine *e;
    const sl_hparams *hp;
    float *logits;
    void *scratch;
    size_t scratch_bytes;
    char *piece;
    int32_t *cached; /* the tokens in the KV cache, in order */
    uint32_t n_cached;
    sl_sampler_state ss;
    cJSON *messages;
    const char *system;
    int turn;
} chat;

static void start_conversation(chat *ch)
{
    cJSON_Delete(ch->messages);
    ch->messages = cJSON_CreateArray();
    if (ch->system) {
        cJSON *sys = cJSON_CreateObject();
        cJSON_AddStringToObject(sys, "role", "system");
        cJSON_AddStringToObject(sys, "content", ch->system);
        cJSON_AddItemToArray(ch->messages, sys);
    }
    sl_engine_reset(ch->e);
    ch->n_cached = 0;
    sl_sampler_init(&ch->ss, &ch->a.sp);
}

static void add_message(chat *ch, const char *role, const char *content)
{
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "role", role);
    cJSON_AddStringToObject(msg, "content", content);
    cJSON_AddItemToArray(ch->messages, msg);
}

/* Feeds tokens to the engine, remembering them as cached. */
static int feed(chat *ch, const int32_t *ids, uint32_t n)
{
    int rc = sl_engine_eval(ch->e, ids, n, false, ch->logits);
    if (rc)
        return rc;
    memcpy(ch->cached + ch->n_cached, ids, n * sizeof *ids);
    ch->n_cached += n;
    for (uint32_t i = 0; i < n; i++)
        sl_sampler_accept(&ch->ss, ids[i]);
    return 0;
}

/* One turn: the reply to the conversation so far (ending in a user
 * message). Returns 0; 1 to drop the user message and go on (a template
 * error, a full context); -1 on a failure that ends the chat. */
static int turn(chat *ch, char **reply_out)
{
    char err[1024], *text = NULL;
    size_t len;
    int rc = sl_template_render_chat(ch->t, ch->tk, ch->messages, true, NULL, &text, &len, err, sizeof err);
    if (rc) {
        fprintf(stderr, "sluice chat: the chat template %s: %s\n", rc == -SL_EINVAL ? "refused the conversation"
                                                                               : "failed", err);
        return 1;
    }
    int32_t *ids = NULL;
    int n = sl_template_encode(ch->tk, text, len, &ids);
    free(text);
    if (n <= 0) {
        free(ids);
        return -1;
    }
    uint32_t n_ctx = sl_engine_n_ctx(ch->e);
    if ((long long)n + ch->a.n_predict > n_ctx) {
        fprintf(stderr, "sluice chat: the conversation (%d tokens) and %lld more to generate do not fit the "
                        "context of %u positions; /reset starts over, -c sets the context\n",
                n, ch->a.n_predict, n_ctx);
        free(ids);
        return 1;
    }
    /* Reuse the cache when it is a prefix of the new prompt (leaving at least one token to compute). */
    uint32_t same = 0;
    while (same < ch->n_cached && same < (uint32_t)n && ch->cached[same] == ids[same])
        same++;
    if (same < ch->n_cached || same == (uint32_t)n) {
        sl_engine_reset(ch->e);
        sl_sampler_init(&ch->ss, &ch->a.sp);
        ch->n_cached = 0;
        same = 0;
    }
    uint32_t reused = same;
    double t0 = now_s();
    if (feed(ch, ids + same, (uint32_t)n - same)) {
        free(ids);
        return -1;
    }
    free(ids);
    double t1 = now_s();

    sl_detok dt;
    sl_detok_init(&dt, 0);
    size_t cap = 256, used = 0;
    char *reply = malloc(cap);
    long long n_gen = 0;
    size_t piece_cap = SL_DETOK_OUT_MAX(ch->tk);
    for (; reply && n_gen < ch->a.n_predict; n_gen++) {
        int tok = sl_sampler_sample(&ch->ss, &ch->a.sp, ch->logits, (int)ch->hp->n_vocab, ch->scratch,
                                    ch->scratch_bytes);
        if (tok < 0)
            break;
        if (!ch->a.ignore_eos && sl_tokenizer_is_eog(ch->tk, tok))
            break;
        int k = sl_detok_push(&dt, ch->tk, tok, ch->piece, piece_cap);
        if (k < 0)
            break;
        fwrite(ch->piece, 1, (size_t)k, stdout);
        fflush(stdout);
        if (used + (size_t)k + 8 > cap) {
            char *nr = realloc(reply, cap * 2 + (size_t)k);
            if (!nr) {
                free(reply);
                reply = NULL;
                break;
            }
            reply = nr;
            cap = cap * 2 + (size_t)k;
        }
        memcpy(reply + used, ch->piece, (size_t)k);
        used += (size_t)k;
        /* The last token needs no forward pass until the next turn renders it. */
        if (n_gen + 1 < ch->a.n_predict) {
            int32_t t32 = tok;
            if (feed(ch, &t32, 1)) {
                free(reply);
                return -1;
            }
        }
    }
    if (!reply) {
        fprintf(stderr, "sluice chat: out of memory\n");
        return -1;
    }
    int k = sl_detok_flush(&dt, ch->piece, piece_cap);
    if (k > 0) {
        fwrite(ch->piece, 1, (size_t)k, stdout);
        memcpy(reply + used, ch->piece, (size_t)k);
        used += (size_t)k;
    }
    reply[used] = 0;
    putchar('\n');
    fflush(stdout);
    double t2 = now_s();
    fprintf(stderr, "sluice: turn %d: %u cached positions reused, %u prompt tokens computed in %.3f s; generated "
                    "%lld tokens in %.3f s (%.2f tokens/s)\n",
            ++ch->turn, reused, (uint32_t)n - reused, t1 - t0, n_gen, t2 - t1,
            n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    *reply_out = reply;
    return 0;
}

int sl_cmd_chat(int argc, char **argv)
{
    const char *tmpl = NULL, *system = NULL;
    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args)
        return 1;
    int n = take_own_flags(argc, argv, args, &tmpl, &system);
    if (n < 0) {
        free(args);
        help(stderr);
        return 2;
    }
    char placeholder[] = "", pflag[] = "-p";
    args[n++] = pflag;
    args[n++] = placeholder;
    chat ch = {.system = system};
    int rc = sl_cli_gen_parse(n, args, false, &ch.a);
    free(args);
    if (rc == 1)
        help(stdout);
    else if (rc)
        help(stderr);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (sl_sampler_params_check(&ch.a.sp))
        return 2;

    int status = 1;
    char err[1024], *line = NULL;
    size_t line_cap = 0;
    if (sl_source_open_model(ch.a.model, SL_SOURCE_ALL, &ch.m) || sl_tokenizer_new(sl_model_gguf(ch.m), &ch.tk))
        goto out;
    if (sl_template_for_model(ch.m, tmpl, &ch.t, err, sizeof err)) {
        fprintf(stderr, "sluice chat: %s\n", err);
        goto out;
    }
    ch.hp = sl_model_hparams(ch.m);
    if (!ch.a.n_ctx)
        ch.a.n_ctx = ch.hp->n_ctx_train < 4096 ? ch.hp->n_ctx_train : 4096;
    if (ch.a.n_ctx <= ch.a.n_predict) {
        fprintf(stderr, "sluice chat: a context of %lld positions leaves no room for a conversation and %lld "
                        "tokens to generate\n", ch.a.n_ctx, ch.a.n_predict);
        status = 2;
        goto out;
    }
    ch.scratch_bytes = sl_sampler_scratch_bytes((int)ch.hp->n_vocab);
    ch.logits = malloc(ch.hp->n_vocab * sizeof *ch.logits);
    ch.scratch = malloc(ch.scratch_bytes);
    ch.piece = malloc(SL_DETOK_OUT_MAX(ch.tk));
    ch.cached = malloc((size_t)ch.a.n_ctx * sizeof *ch.cached);
    if (!ch.logits || !ch.scratch || !ch.piece || !ch.cached) {
        fprintf(stderr, "sluice chat: out of memory\n");
        goto out;
    }
    if (sl_engine_new(ch.m, (uint32_t)ch.a.n_ctx, (uint32_t)ch.a.n_batch, (uint32_t)ch.a.threads, &ch.e))
        goto out;
    start_conversation(&ch);
    bool interactive = isatty(STDIN_FILENO);
    if (interactive)
        fprintf(stderr, "sluice chat: %s; a line is a message, /reset starts over, /exit or Ctrl-D ends\n",
                ch.a.model);
    status = 0;
    for (;;) {
        if (interactive) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t k = getline(&line, &line_cap, stdin);
        if (k < 0)
            break;
        while (k > 0 && (line[k - 1] == '\n' || line[k - 1] == '\r'))
            line[--k] = 0;
        if (k == 0)
            continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit"))
            break;
        if (!strcmp(line, "/reset")) {
            start_conversation(&ch);
            fprintf(stderr, "sluice chat: the conversation starts over\n");
            continue;
        }
        add_message(&ch, "user", line);
        char *reply = NULL;
        int r = turn(&ch, &reply);
        if (r < 0) {
            status = 1;
            break;
        }
        if (r > 0) { /* the turn could not happen: forget the message */
            cJSON_DeleteItemFromArray(ch.messages, cJSON_GetArraySize(ch.messages) - 1);
            if (!interactive)
                status = 1;
            continue;
        }
        add_message(&ch, "assistant", reply);
        free(reply);
    }
out:
    free(line);
    cJSON_Delete(ch.messages);
    sl_engine_free(ch.e);
    sl_template_free(ch.t);
    sl_tokenizer_free(ch.tk);
    sl_model_close(ch.m);
    free(ch.logits);
    free(ch.scratch);
    free(ch.piece);
    free(ch.cached);
    return status;
}
