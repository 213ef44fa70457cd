/* `sluice run`: generate through the multi-process pipeline.
 *
 * Without --connect it starts an ephemeral pipeline — one coordinator,
 * --loaders loaders and --workers compute workers, talking over ipc
 * endpoints in a private temporary directory and shared memory named after
 * this process — sends one generate request, prints the tokens as they
 * arrive, reports statistics on stderr and tears everything down. With
 * --connect it is only a client of a running coordinator. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/cli.h"
#include "common/log.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "proto/endpoint.h"

extern char **environ;

#define MAX_CHILDREN 128
#define FIRST_REPLY_S 120.0 /* pinned loading of a large model can take a while */
#define CONNECT_REPLY_S 10.0

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

typedef struct pipeline {
    pid_t pids[MAX_CHILDREN];
    int n;
    char dir[64];
    char instance[48];
    char client_ep[128];
} pipeline;

/* The directory of this executable: the other sluice binaries live there. */
static int exe_dir(char *buf, size_t n)
{
    ssize_t len = readlink("/proc/self/exe", buf, n - 1);
    if (len <= 0)
        return -1;
    buf[len] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash)
        return -1;
    *slash = 0;
    return 0;
}

static int spawn(pipeline *p, char *const argv[])
{
    if (p->n == MAX_CHILDREN)
        return -1;
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc) {
        fprintf(stderr, "sluice run: cannot start %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    p->pids[p->n++] = pid;
    return 0;
}

/* Memory the pipeline holds now (kB), shared memory counted once: the
 * processes' resident anonymous and file pages (RssAnon + RssFile of
 * /proc/PID/status) plus the allocated size of the instance's shared-memory
 * segments (/dev/shm). Cheap (a few small reads), so it may be sampled per
 * token: the proportional set size (smaps_rollup) walks every page table
 * entry of the mappings, a tenth of a second per process on a 4 GB model,
 * and sampling it per token halved decode speed. */
static uint64_t footprint_kb(const pipeline *p)
{
    uint64_t total = 0;
    for (int i = 0; i < p->n; i++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", (int)p->pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f)) {
            unsigned long long kb;
            if (sscanf(line, "RssAnon: %llu kB", &kb) == 1 || sscanf(line, "RssFile: %llu kB", &kb) == 1)
                total += kb;
        }
        fclose(f);
    }
    /* The segments: tmpfs files whose allocated blocks are the memory they
     * hold, whoever maps them. */
    char prefix[96];
    const int plen = snprintf(prefix, sizeof prefix, "sluice-%s-", p->instance);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return total;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (plen > 0 && strncmp(e->d_name, prefix, (size_t)plen) == 0 && fstatat(dirfd(d), e->d_name, &st, 0) == 0)
            total += (uint64_t)st.st_blocks * 512 / 1024;
    }
    closedir(d);
    return total;
}

static void stop_pipeline(pipeline *p)
{
    for (int i = 0; i < p->n; i++)
        kill(p->pids[i], SIGTERM);
    double deadline = now_s() + 10.0;
    for (int i = 0; i < p->n; i++) {
        int st;
        while (waitpid(p->pids[i], &st, WNOHANG) == 0) {
            if (now_s() > deadline) {
                kill(p->pids[i], SIGKILL);
                waitpid(p->pids[i], &st, 0);
                break;
            }
            usleep(10000);
        }
    }
    p->n = 0;
    if (p->dir[0]) {
        char path[128];
        snprintf(path, sizeof path, "%s/client", p->dir);
        unlink(path);
        rmdir(p->dir);
    }
}

/* Whether the coordinator (the first child) is still running. */
static bool coordinator_alive(pipeline *p)
{
    int st;
    if (p->n == 0)
        return true; /* --connect: not ours to watch */
    pid_t r = waitpid(p->pids[0], &st, WNOHANG);
    if (r == 0)
        return true;
    p->pids[0] = p->pids[--p->n]; /* reaped */
    return false;
}

static int start_pipeline(pipeline *p, const sl_cli_gen *a, uint32_t n_ctx)
{
    char dir[PATH_MAX], bin[PATH_MAX + 32], n_ctx_s[16], batch_s[16], threads_s[16], ring_s[16], budget_s[32];
    if (exe_dir(dir, sizeof dir)) {
        fprintf(stderr, "sluice run: cannot find the sluice binaries\n");
        return -1;
    }
    snprintf(p->dir, sizeof p->dir, "/tmp/sluice-run-XXXXXX");
    if (!mkdtemp(p->dir)) {
        fprintf(stderr, "sluice run: cannot create a temporary directory: %s\n", strerror(errno));
        p->dir[0] = 0;
        return -1;
    }
    snprintf(p->instance, sizeof p->instance, "run%d", (int)getpid());
    snprintf(p->client_ep, sizeof p->client_ep, "ipc://%s/client", p->dir);
    snprintf(n_ctx_s, sizeof n_ctx_s, "%u", n_ctx);
    snprintf(batch_s, sizeof batch_s, "%lld", a->n_batch);
    snprintf(threads_s, sizeof threads_s, "%lld", a->threads);
    snprintf(ring_s, sizeof ring_s, "%lld", a->ring);
    snprintf(budget_s, sizeof budget_s, "%llu", (unsigned long long)a->budget);
    snprintf(bin, sizeof bin, "%s/sluice-coordinator", dir);
    char *cargv[24] = {bin, "-m", (char *)a->model, "--instance", p->instance, "--client", p->client_ep,
                       "-c", n_ctx_s, "-b", batch_s, "-t", threads_s, "--ring", ring_s, "--sessions", "1",
                       "--stats"};
    int k = 18;
    if (a->budget) {
        cargv[k++] = "--mem-budget";
        cargv[k++] = budget_s;
    }
    cargv[k] = NULL;
    if (spawn(p, cargv))
        return -1;
    char lbin[PATH_MAX + 32], wbin[PATH_MAX + 32];
    snprintf(lbin, sizeof lbin, "%s/sluice-loader", dir);
    snprintf(wbin, sizeof wbin, "%s/sluice-compute", dir);
    char *largv[] = {lbin, "--instance", p->instance, NULL};
    char *wargv[] = {wbin, "--instance", p->instance, "-t", threads_s, NULL};
    for (long long i = 0; i < a->loaders; i++)
        if (spawn(p, largv))
            return -1;
    for (long long i = 0; i < a->workers; i++)
        if (spawn(p, wargv))
            return -1;
    return 0;
}

/* Number of tokens the prompt encodes to with the model's tokenizer. */
static int prompt_tokens(const char *model, const char *text, size_t len, bool add_special)
{
    sl_gguf *g;
    sl_tokenizer *tk;
    if (sl_gguf_open(model, &g))
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

    pipeline p = {0};
    int status = 1;
    void *zctx = zmq_ctx_new(), *sock = NULL;
    uint8_t *buf = malloc(SL_PROTO_MAX_MSG), *out = malloc(SL_PROTO_MAX_MSG);
    uint32_t n_ctx = a.n_ctx ? (uint32_t)a.n_ctx : 0;
    if (!zctx || !buf || !out)
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
    if (sl_endpoint_open(zctx, ZMQ_DEALER, a.connect ? a.connect : p.client_ep, false, &sock))
        goto done;

    sl_msg m;
    sl_msg_init(&m, SL_MSG_GENERATE);
    m.id = ((uint64_t)getpid() << 20) | 1;
    m.generate.prompt = (sl_msg_str){a.prompt, text_len};
    m.generate.n_predict = (uint32_t)a.n_predict;
    m.generate.sampling = a.sp;
    m.generate.add_bos = a.add_special;
    if (sl_endpoint_send_msg(sock, NULL, &m, out, SL_PROTO_MAX_MSG, 0))
        goto done;

    double t0 = now_s(), t_first = 0, last_event = t0;
    uint64_t next_seq = 0, peak_kb = 0;
    uint32_t n_gen = 0, n_prompt = 0;
    const double patience = a.connect ? CONNECT_REPLY_S : FIRST_REPLY_S;
    for (;;) {
        if (g_stop) {
            fprintf(stderr, "sluice run: interrupted\n");
            goto done;
        }
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 50);
        uint64_t kb = footprint_kb(&p);
        peak_kb = kb > peak_kb ? kb : peak_kb;
        if (!(it.revents & ZMQ_POLLIN)) {
            if (!coordinator_alive(&p)) {
                fprintf(stderr, "sluice run: the coordinator exited (see its message above)\n");
                goto done;
            }
            if (now_s() - last_event > patience) {
                fprintf(stderr, "sluice run: no reply from the coordinator at %s for %.0f s\n",
                        a.connect ? a.connect : p.client_ep, patience);
                goto done;
            }
            continue;
        }
        if (sl_endpoint_recv_msg(sock, NULL, buf, SL_PROTO_MAX_MSG, &m, 0))
            continue;
        last_event = now_s();
        if (m.type == SL_MSG_ERROR) {
            fprintf(stderr, "sluice run: the coordinator refused the request: %.*s\n", (int)m.error.msg.len,
                    m.error.msg.ptr);
            goto done;
        }
        if (m.type != SL_MSG_TOKEN || m.token.seq != next_seq)
            continue; /* not ours, or a duplicate */
        next_seq++;
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
done:
    sl_endpoint_close(sock);
    if (zctx)
        zmq_ctx_term(zctx);
    stop_pipeline(&p);
    free(buf);
    free(out);
    free(file_buf);
    return status;
}
