/* `sluice run`: generate through the multi-process pipeline.
 *
 * Without --connect it starts an ephemeral pipeline — one coordinator,
 * --loaders loaders and --workers compute workers, talking over ipc
 * endpoints in a private temporary directory and shared memory named after
 * this process — sends one generate request, prints the tokens as they
 * arrive, reports statistics on stderr and tears everything down. With
 * --connect it is only a client of a running coordinator. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/cli.h"
#include "cli/pipeline.h"
#include "common/log.h"
#include "model/gguf.h"
#include "model/source.h"
#include "model/tokenizer.h"
#include "proto/client.h"

#define FIRST_REPLY_S 120.0 /* pinned loading of a large model can take a while */

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void help(FILE *out)
{
    fprintf(out, "usage: sluice run -m MODEL (-p PROMPT | -f FILE) [-n N] [options]\n\n"
                 "Generates through the sluice pipeline: a coordinator, loader processes that\n"
                 "stream weights into shared memory, and compute workers, all started for this\n"
                 "run and stopped after it (or a running coordinator, with --connect). Prints the\n"
                 "text on stdout and statistics on stderr.\n\n");
    sl_cli_gen_help(out, true);
}

/* The pipeline for this run: one session, sized to the request. */
static int start_pipeline(sl_pipeline *p, const sl_cli_gen *a, uint32_t n_ctx)
{
    sl_pipeline_cfg cfg = {.who = "run", .model = a->model, .n_ctx = n_ctx, .n_batch = (uint32_t)a->n_batch,
                           .threads = (uint32_t)a->threads, .ring = (uint32_t)a->ring, .sessions = 1,
                           .budget = a->budget, .loaders = (uint32_t)a->loaders, .workers = (uint32_t)a->workers,
                           .stats = true};
    return sl_pipeline_start(p, &cfg);
}

/* Number of tokens the prompt encodes to with the model's tokenizer. */
static int prompt_tokens(const char *model, const char *text, size_t len, bool add_special)
{
    sl_gguf *g;
    sl_tokenizer *tk;
    if (sl_source_open_gguf(model, &g))
        return -1;
    int n = -1;
    if (sl_tokenizer_new(g, &tk) == 0) {
        n = sl_tokenizer_encode(tk, text, len, (add_special ? SL_TOK_ADD_SPECIAL : 0) | SL_TOK_PARSE_SPECIAL,
                                NULL, 0);
        sl_tokenizer_free(tk);
    }
    sl_gguf_close(g);
    return n;
}

int sl_cmd_run(int argc, char **argv)
{
    sl_cli_gen a;
    int rc = sl_cli_gen_parse(argc, argv, true, &a);
    if (rc) {
        help(rc == 1 ? stdout : stderr);
        return rc == 1 ? 0 : rc;
    }
    if (sl_sampler_params_check(&a.sp))
        return 2;
    char *file_buf = NULL;
    size_t text_len;
    if (a.file) {
        if (sl_cli_read_file(a.file, &file_buf, &text_len))
            return 1;
        a.prompt = file_buf;
    } else {
        text_len = strlen(a.prompt);
    }
    if (text_len > SL_PROTO_MAX_TEXT) {
        fprintf(stderr, "sluice run: the prompt is over %zu bytes\n", SL_PROTO_MAX_TEXT);
        free(file_buf);
        return 2;
    }
    if (a.model && access(a.model, R_OK) != 0) {
        fprintf(stderr, "sluice run: cannot read model '%s': %s\n", a.model, strerror(errno));
        free(file_buf);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sl_pipeline p = {0};
    int status = 1;
    void *zctx = zmq_ctx_new();
    sl_client *cl = NULL;
    uint32_t n_ctx = a.n_ctx ? (uint32_t)a.n_ctx : 0;
    if (!zctx)
        goto done;
    if (!a.connect && !n_ctx) {
        /* Size the context (and so the KV cache in the budget) to this
         * request: the prompt's tokens plus the ones to generate. */
        int n = prompt_tokens(a.model, a.prompt, text_len, a.add_special);
        if (n < 0)
            goto done;
        n_ctx = (uint32_t)(n + a.n_predict + 1);
    }
    if (!a.connect && start_pipeline(&p, &a, n_ctx))
        goto done;
    sl_msg m;
    sl_msg_init(&m, SL_MSG_GENERATE);
    m.id = ((uint64_t)getpid() << 20) | 1;
    m.generate.prompt = (sl_msg_str){a.prompt, text_len};
    m.generate.n_predict = (uint32_t)a.n_predict;
    m.generate.sampling = a.sp;
    m.generate.add_bos = a.add_special;
    /* An ephemeral pipeline may spend a while loading pinned weights before
     * it answers anything; a running one answers probes at once. */
    sl_client_opts co = {.retry_s = SL_CLIENT_RETRY_S, .give_up_s = a.connect ? SL_CLIENT_GIVE_UP_S : FIRST_REPLY_S};
    if (sl_client_new(zctx, a.connect ? a.connect : p.client_ep, &co, &cl) || sl_client_start(cl, &m))
        goto done;

    double t0 = now_s(), t_first = 0;
    uint64_t peak_kb = 0;
    uint32_t n_gen = 0, n_prompt = 0;
    for (;;) {
        if (g_stop) {
            fprintf(stderr, "sluice run: interrupted\n");
            goto done;
        }
        int got = sl_client_next(cl, 50, &m);
        uint64_t kb = sl_pipeline_footprint_kb(&p);
        peak_kb = kb > peak_kb ? kb : peak_kb;
        if (got < 0)
            goto done; /* the client said why */
        if (got == 0) {
            if (!sl_pipeline_alive(&p)) {
                fprintf(stderr, "sluice run: the coordinator exited (see its message above)\n");
                goto done;
            }
            continue;
        }
        if (m.type == SL_MSG_ERROR) {
            fprintf(stderr, "sluice run: the coordinator refused the request: %.*s\n", (int)m.error.msg.len,
                    m.error.msg.ptr);
            goto done;
        }
        if (!t_first)
            t_first = now_s();
        fwrite(m.token.text.ptr, 1, m.token.text.len, stdout);
        fflush(stdout);
        if (m.token.finish != SL_FINISH_NONE) {
            n_gen = m.token.n_gen;
            n_prompt = m.token.n_prompt;
            status = m.token.finish == SL_FINISH_ERROR ? 1 : 0;
            if (status)
                fprintf(stderr, "\nsluice run: the generation failed\n");
            break;
        }
    }
    putchar('\n');
    double t_end = now_s();
    fprintf(stderr, "sluice run: %u prompt tokens, %u generated; first token after %.3f s, then %.2f tokens/s",
            n_prompt, n_gen, t_first - t0, n_gen > 1 ? (n_gen - 1) / (t_end - t_first) : 0.0);
    if (p.n)
        fprintf(stderr, "; peak memory of the pipeline %.1f MiB (resident memory of its processes, shared "
                        "memory counted once)", peak_kb / 1024.0);
    fputc('\n', stderr);
    sl_client_stats cs = sl_client_get_stats(cl);
    if (cs.resends)
        fprintf(stderr, "sluice run: the request was sent again %u times (the coordinator restarted %u times)\n",
                cs.resends, cs.restarts);
done:
    sl_client_free(cl);
    if (zctx)
        zmq_ctx_term(zctx);
    sl_pipeline_stop(&p);
    free(file_buf);
    return status;
}
