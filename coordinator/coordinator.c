/* sluice-coordinator: owns the sessions, the tokenizer, the sampler, the
 * memory plan and the shared-memory segments of one pipeline, and serves
 * clients over ZeroMQ (DESIGN.md §1).
 *
 * Its loop: read client requests (ROUTER), and whenever no step is in
 * flight and some session has tokens to feed, post one step on the board
 * (coordinator/layout.h) holding every such session's next tokens: a prompt
 * chunk, or the token it sampled last. A compute worker runs the step; when
 * the board says it is done, the coordinator samples each session whose
 * input is complete, streams the token to its client and publishes
 * monitoring events (XPUB). Per step there is one shared-memory post and
 * one wake-up; per token one client message; nothing per layer. It also
 * reaps dead loaders and workers, reclaiming what they held, and redoes a
 * step whose worker died. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "common/log.h"
#include "coordinator/layout.h"
#include "coordinator/plan.h"
#include "coordinator/sampler.h"
#include "loader/reader.h"
#include "model/detok.h"
#include "model/tokenizer.h"
#include "proto/endpoint.h"
#include "shm/futex.h"
#include "shm/proc.h"

#define POLL_MS 100
#define STALE_NS (10ull * 1000000000ull) /* a heartbeat older than this: hung */

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One generation in progress. Buffers are allocated once, at start-up. */
typedef struct session {
    bool active;
    uint64_t req_id;
    sl_envelope client;
    int32_t *tokens;   /* n_ctx: prompt, then accepted generated tokens */
    uint32_t n_tokens; /* tokens in the context so far */
    uint32_t n_fed;    /* tokens whose K/V are committed (forward pass finished) */
    uint32_t n_prompt;
    uint32_t n_predict, n_gen;
    uint32_t in_step;  /* tokens of this session in the step in flight */
    bool cancelled;    /* cancel arrived while a step was in flight */
    sl_sampler_params sp;
    sl_sampler_state ss;
    sl_detok dt;
    uint64_t seq;      /* seq of the next token event */
    double t_start, t_first;
    /* --stats: storage_read_bytes at the start and at the first token, and
     * the steps completed by then */
    uint64_t io_start, io_first, steps_first;
    bool io_ok;
} session;

typedef struct coord {
    /* configuration */
    const char *instance;
    bool stats;
    /* model and plan */
    sl_model *model;
    sl_tokenizer *tok;
    sl_plan plan;
    sl_plan_req req;
    sl_layout *l;
    uint64_t epoch;
    char model_name[SL_PROTO_MAX_NAME + 1];
    /* sessions */
    session *sess;
    void *sample_scratch;
    size_t sample_scratch_bytes;
    char *piece;       /* detokenizer output, SL_DETOK_OUT_MAX bytes */
    size_t piece_cap;
    /* the step in flight */
    bool in_flight;
    bool redo;         /* the step's worker died: reset the ring, post it again */
    uint32_t step_seq; /* post_seq of the step in flight */
    uint32_t step_sess[SL_LAYOUT_MAX_SEQS];
    uint32_t step_n;
    double step_t0;
    uint64_t steps, bytes_streamed;
    /* sockets */
    void *zctx, *client, *monitor;
    int wake_fd;       /* eventfd the board watcher writes when a step finishes */
    uint64_t events;
    uint8_t *msgbuf, *outbuf;
} coord;

/* ---- board watcher: turns the futex wake-up into a pollable fd ---------- */

typedef struct watcher {
    coord *c;
    pthread_t thread;
    _Atomic int stop;
} watcher;

static void *watch_board(void *arg)
{
    watcher *w = arg;
    sl_layout_board *b = w->c->l->board;
    uint32_t seen = atomic_load(&b->done_seq);
    while (!atomic_load(&w->stop)) {
        sl_futex_wait(&b->done_seq, seen, 100000000ll);
        uint32_t now = atomic_load(&b->done_seq);
        if (now != seen) {
            seen = now;
            uint64_t one = 1;
            ssize_t n = write(w->c->wake_fd, &one, sizeof one);
            (void)n;
        }
    }
    return NULL;
}

/* ---- statistics ---------------------------------------------------------- */

static uint64_t proc_read_bytes(pid_t pid, bool *ok)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        *ok = false;
        return 0;
    }
    unsigned long long v = 0;
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = sscanf(line, "read_bytes: %llu", &v) == 1;
    fclose(f);
    *ok &= found;
    return v;
}

/* Bytes read from storage so far by this process and the live loaders and
 * workers: the sum of read_bytes in /proc/PID/io, which counts direct reads
 * and page-cache misses, not page-cache hits. Sampled at a session's first
 * token and at its end, it measures the bytes the steps in between read,
 * to be set beside the plan's streamed bytes per step (DESIGN.md §6).
 * Returns false when the kernel does not say (no task I/O accounting, or a
 * process went away); never fails otherwise. Reads a few /proc files: for
 * --stats only, never on the step path. */
static bool storage_read_bytes(coord *c, uint64_t *out)
{
    bool ok = true;
    uint64_t total = proc_read_bytes(getpid(), &ok);
    const enum sl_role roles[] = {SL_ROLE_LOADER, SL_ROLE_WORKER};
    for (int r = 0; r < 2; r++)
        for (uint32_t i = 0; i < sl_proctab_capacity(roles[r]); i++) {
            sl_proc_ident id;
            if (sl_proctab_check(c->l->procs, roles[r], i, 0, 0, &id) == SL_PROC_ALIVE)
                total += proc_read_bytes(sl_proc_pid(id), &ok);
        }
    *out = total;
    return ok;
}

/* ---- messages ------------------------------------------------------------ */

static void send_to(coord *c, const sl_envelope *env, const sl_msg *m)
{
    int rc = sl_endpoint_send_msg(c->client, env, m, c->outbuf, SL_PROTO_MAX_MSG, SL_EP_DONTWAIT);
    if (rc && rc != -SL_ENOTFOUND)
        SL_WARN("cannot send %s to a client: %s", sl_msg_type_name(m->type), sl_strerror(rc));
}

static void send_error(coord *c, const sl_envelope *env, uint64_t id, int err, const char *text)
{
    sl_msg m;
    sl_msg_error_init(&m, id, err, text);
    send_to(c, env, &m);
}

/* Publishes a monitoring event with a few numeric fields. Never blocks: a
 * slow subscriber loses events (XPUB drops at its high-water mark). */
static void publish(coord *c, const char *kind, const char **names, const double *vals, uint32_t n)
{
    sl_msg m;
    sl_msg_init(&m, SL_MSG_EVENT);
    m.event.kind = sl_msg_cstr(kind);
    m.event.seq = ++c->events;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m.event.ts = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    for (uint32_t i = 0; i < n && i < SL_PROTO_MAX_FIELDS; i++) {
        m.event.fields[i].name = sl_msg_cstr(names[i]);
        m.event.fields[i].type = SL_VAL_FLOAT;
        m.event.fields[i].val.f = vals[i];
    }
    m.event.n_fields = n;
    sl_envelope topic;
    sl_envelope_set(&topic, kind);
    sl_endpoint_send_msg(c->monitor, &topic, &m, c->outbuf, SL_PROTO_MAX_MSG, SL_EP_DONTWAIT);
}

/* Sends a session's token event; with finish != NONE it is the last one
 * and the session ends. */
static void emit(coord *c, session *s, int32_t tok, const char *text, size_t len, sl_msg_finish finish)
{
    sl_msg m;
    sl_msg_init(&m, SL_MSG_TOKEN);
    m.id = s->req_id;
    m.token.seq = s->seq++;
    m.token.tok = tok;
    m.token.text = (sl_msg_str){text ? text : "", len};
    m.token.finish = finish;
    if (finish != SL_FINISH_NONE) {
        m.token.n_prompt = s->n_prompt;
        m.token.n_gen = s->n_gen;
    }
    send_to(c, &s->client, &m);
}

static void finish_session(coord *c, session *s, int32_t tok, const char *text, size_t len, sl_msg_finish why)
{
    /* Whatever the detokenizer still holds (an unfinished character) goes
     * out with the last event. */
    char tail[8];
    int k = sl_detok_flush(&s->dt, tail, sizeof tail);
    if (k > 0 && len + (size_t)k <= c->piece_cap) {
        if (text != c->piece && len)
            memcpy(c->piece, text, len);
        memcpy(c->piece + len, tail, (size_t)k);
        text = c->piece;
        len += (size_t)k;
    }
    emit(c, s, tok, text, len, why);
    if (c->stats) {
        /* steps_first is 0 until a step gave the first token (and then at
         * least 1). */
        uint64_t io_end, steps = c->steps - s->steps_first;
        if (s->io_ok && s->steps_first && steps && storage_read_bytes(c, &io_end))
            fprintf(stderr,
                    "sluice: request %llu: storage reads (read_bytes of the pipeline's processes): %.1f MiB for the "
                    "prompt, then %.3f MiB per decode step (%llu steps)\n",
                    (unsigned long long)s->req_id, (s->io_first - s->io_start) / 1048576.0,
                    (io_end - s->io_first) / 1048576.0 / steps, (unsigned long long)steps);
        double t = now_s(), gen_t = t - s->t_first;
        fprintf(stderr,
                "sluice: request %llu: prompt %u tokens in %.3f s; generated %u tokens in %.3f s (%.2f tokens/s); "
                "streamed %.1f MiB per step (pinned %.1f MiB of %.1f MiB)\n",
                (unsigned long long)s->req_id, s->n_prompt, s->t_first - s->t_start, s->n_gen, gen_t,
                s->n_gen > 1 && gen_t > 0 ? (s->n_gen - 1) / gen_t : 0.0, c->plan.streamed_bytes / 1048576.0,
                c->plan.pinned_bytes / 1048576.0, c->plan.model_bytes / 1048576.0);
    }
    s->active = false;
}

static session *find_session(coord *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->req.max_sessions; i++)
        if (c->sess[i].active && c->sess[i].req_id == id)
            return &c->sess[i];
    return NULL;
}

static void handle_generate(coord *c, const sl_envelope *env, const sl_msg *m)
{
    const sl_msg_generate *g = &m->generate;
    session *s = find_session(c, m->id);
    if (s) {
        /* A resend of a running request (the client timed out): keep going,
         * answering wherever the client is now. */
        s->client = *env;
        return;
    }
    for (uint32_t i = 0; i < c->req.max_sessions && !s; i++)
        if (!c->sess[i].active)
            s = &c->sess[i];
    if (!s) {
        send_error(c, env, m->id, SL_ERANGE, "all sessions are busy; try again later");
        return;
    }
    if (sl_sampler_params_check(&g->sampling)) {
        send_error(c, env, m->id, SL_EINVAL, "sampling parameters out of range");
        return;
    }
    int n;
    const uint32_t n_ctx = c->req.n_ctx;
    if (g->prompt.ptr) {
        unsigned flags = (g->add_bos ? SL_TOK_ADD_SPECIAL : 0) | SL_TOK_PARSE_SPECIAL;
        n = sl_tokenizer_encode(c->tok, g->prompt.ptr, g->prompt.len, flags, s->tokens, n_ctx);
    } else if (g->tokens.packed || g->tokens.ids) {
        n = (int)sl_msg_tokens_get(&g->tokens, s->tokens, n_ctx);
        for (int i = 0; i < n && (uint32_t)n <= n_ctx; i++)
            if ((uint32_t)s->tokens[i] >= (uint32_t)sl_tokenizer_n_vocab(c->tok)) {
                send_error(c, env, m->id, SL_ERANGE, "a prompt token is outside the vocabulary");
                return;
            }
    } else {
        send_error(c, env, m->id, SL_EFORMAT, "generate needs a prompt or tokens");
        return;
    }
    if (n < 0) {
        send_error(c, env, m->id, -n, "cannot tokenize the prompt");
        return;
    }
    if (n == 0 || (uint32_t)n >= n_ctx) {
        char text[160];
        snprintf(text, sizeof text, "the prompt has %d tokens; this pipeline takes 1 to %u", n, n_ctx - 1);
        send_error(c, env, m->id, SL_ERANGE, text);
        return;
    }
    *s = (session){.active = true, .req_id = m->id, .client = *env, .tokens = s->tokens, .n_tokens = (uint32_t)n,
                   .n_prompt = (uint32_t)n, .n_predict = g->n_predict, .sp = g->sampling, .t_start = now_s()};
    if (c->stats)
        s->io_ok = storage_read_bytes(c, &s->io_start);
    sl_sampler_init(&s->ss, &s->sp);
    for (int i = 0; i < n; i++)
        sl_sampler_accept(&s->ss, s->tokens[i]);
    sl_detok_init(&s->dt, 0);
    if (s->n_predict == 0) {
        s->t_first = now_s();
        finish_session(c, s, -1, NULL, 0, SL_FINISH_LENGTH);
    }
}

static void handle_client(coord *c)
{
    sl_envelope env;
    sl_msg m;
    for (;;) {
        int rc = sl_endpoint_recv_msg(c->client, &env, c->msgbuf, SL_PROTO_MAX_MSG, &m, SL_EP_DONTWAIT);
        if (rc == -SL_EAGAIN)
            return;
        if (rc) { /* malformed: answer, and keep serving */
            send_error(c, &env, m.id, rc, "malformed or unsupported message");
            continue;
        }
        switch (m.type) {
        case SL_MSG_GENERATE:
            handle_generate(c, &env, &m);
            break;
        case SL_MSG_TOKENIZE: {
            const sl_msg_tokenize *t = &m.tokenize;
            unsigned flags = (t->add_bos ? SL_TOK_ADD_SPECIAL : 0) | (t->special ? SL_TOK_PARSE_SPECIAL : 0);
            int n = sl_tokenizer_encode(c->tok, t->text.ptr ? t->text.ptr : "", t->text.len, flags, NULL, 0);
            if (n < 0 || (uint32_t)n > SL_PROTO_MAX_TOKENS) {
                send_error(c, &env, m.id, SL_ERANGE, "text too long to tokenize");
                break;
            }
            int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
            if (!ids || sl_tokenizer_encode(c->tok, t->text.ptr ? t->text.ptr : "", t->text.len, flags, ids,
                                            (size_t)n) != n) {
                free(ids);
                send_error(c, &env, m.id, SL_ENOMEM, "out of memory");
                break;
            }
            sl_msg r;
            sl_msg_init(&r, SL_MSG_TOKENS);
            r.id = m.id;
            r.tokens = (sl_msg_tokens){.n = (uint32_t)n, .ids = ids};
            send_to(c, &env, &r);
            free(ids);
            break;
        }
        case SL_MSG_DETOKENIZE: {
            uint32_t n = m.detokenize.tokens.n;
            int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
            char *text = NULL;
            long len = -1;
            if (ids) {
                sl_msg_tokens_get(&m.detokenize.tokens, ids, n);
                unsigned flags = m.detokenize.special ? SL_TOK_RENDER_SPECIAL : 0;
                len = sl_tokenizer_decode(c->tok, ids, n, flags, NULL, 0);
                /* The first count is an upper bound (see tokenizer.h). */
                if (len >= 0 && (size_t)len <= SL_PROTO_MAX_TEXT && (text = malloc((size_t)len + 1)))
                    len = sl_tokenizer_decode(c->tok, ids, n, flags, text, (size_t)len);
            }
            if (!text) {
                send_error(c, &env, m.id, len < 0 ? SL_ERANGE : SL_ENOMEM, "cannot detokenize these ids");
            } else {
                sl_msg r;
                sl_msg_init(&r, SL_MSG_TEXT);
                r.id = m.id;
                r.text = (sl_msg_str){text, (size_t)len};
                send_to(c, &env, &r);
            }
            free(text);
            free(ids);
            break;
        }
        case SL_MSG_CANCEL: {
            session *s = find_session(c, m.id);
            if (!s) {
                send_error(c, &env, m.id, SL_ENOTFOUND, "no such request is running");
            } else if (s->in_step) {
                s->cancelled = true; /* ends when the step in flight returns */
            } else {
                finish_session(c, s, -1, NULL, 0, SL_FINISH_CANCEL);
            }
            break;
        }
        case SL_MSG_STATUS: {
            sl_msg r;
            sl_msg_init(&r, SL_MSG_STATUS_REPLY);
            r.id = m.id;
            sl_msg_status_reply *st = &r.status_reply;
            st->model = sl_msg_cstr(c->model_name);
            st->n_ctx = c->req.n_ctx;
            st->n_vocab = (uint32_t)sl_tokenizer_n_vocab(c->tok);
            st->max_sessions = c->req.max_sessions;
            for (uint32_t i = 0; i < c->req.max_sessions; i++)
                st->sessions += c->sess[i].active;
            for (uint32_t i = 0; i < sl_proctab_capacity(SL_ROLE_WORKER); i++)
                st->workers += sl_proctab_check(c->l->procs, SL_ROLE_WORKER, i, 0, 0, NULL) == SL_PROC_ALIVE;
            for (uint32_t i = 0; i < sl_proctab_capacity(SL_ROLE_LOADER); i++)
                st->loaders += sl_proctab_check(c->l->procs, SL_ROLE_LOADER, i, 0, 0, NULL) == SL_PROC_ALIVE;
            st->mem_budget = c->req.budget;
            st->mem_used = c->plan.total_bytes;
            st->pinned = c->plan.pinned_bytes;
            st->epoch = c->epoch;
            send_to(c, &env, &r);
            break;
        }
        default:
            send_error(c, &env, m.id, SL_EUNSUPPORTED, "this message is not a client request");
            break;
        }
    }
}

/* ---- steps ---------------------------------------------------------------- */

/* Posts a step with every session that has tokens to feed, oldest first,
 * within the batch. Returns true when one was posted. */
static bool post_step(coord *c)
{
    sl_layout_board *b = c->l->board;
    uint32_t used = 0, n = 0;
    for (uint32_t i = 0; i < c->req.max_sessions && n < SL_LAYOUT_MAX_SEQS && used < c->req.n_batch; i++) {
        session *s = &c->sess[i];
        if (!s->active || s->n_fed == s->n_tokens)
            continue;
        uint32_t take = s->n_tokens - s->n_fed;
        if (take > c->req.n_batch - used)
            take = c->req.n_batch - used;
        b->seqs[n] = (sl_layout_seq){i, take, s->n_fed, used};
        memcpy(b->tokens + used, s->tokens + s->n_fed, take * sizeof(int32_t));
        s->in_step = take;
        c->step_sess[n++] = i;
        used += take;
    }
    if (!n)
        return false;
    b->n_seqs = n;
    c->step_n = n;
    c->step_t0 = now_s();
    c->step_seq = atomic_load(&b->post_seq) + 1;
    atomic_store_explicit(&b->post_seq, c->step_seq, memory_order_release);
    sl_futex_wake(&b->post_seq, INT32_MAX);
    c->in_flight = true;
    return true;
}

/* After a step: commit what it fed, sample where a session's input is
 * complete, and stream the tokens. */
static void complete_step(coord *c)
{
    sl_layout_board *b = c->l->board;
    int status = atomic_load(&b->status);
    c->in_flight = false;
    c->steps++;
    c->bytes_streamed += c->plan.streamed_bytes;
    double dt = now_s() - c->step_t0;
    for (uint32_t k = 0; k < c->step_n; k++) {
        session *s = &c->sess[c->step_sess[k]];
        uint32_t fed = s->in_step;
        s->in_step = 0;
        if (!s->active)
            continue;
        if (status) {
            finish_session(c, s, -1, NULL, 0, SL_FINISH_ERROR);
            continue;
        }
        s->n_fed += fed;
        if (s->cancelled) {
            finish_session(c, s, -1, NULL, 0, SL_FINISH_CANCEL);
            continue;
        }
        if (s->n_fed < s->n_tokens)
            continue; /* more of the prompt to feed */
        if (!s->t_first) {
            s->t_first = now_s();
            s->steps_first = c->steps;
            if (c->stats)
                s->io_ok = s->io_ok && storage_read_bytes(c, &s->io_first);
        }
        const float *logits = c->l->logits + (size_t)k * c->l->plan->n_vocab;
        int tok = sl_sampler_sample(&s->ss, &s->sp, logits, (int)c->l->plan->n_vocab, c->sample_scratch,
                                    c->sample_scratch_bytes);
        if (tok < 0) {
            finish_session(c, s, -1, NULL, 0, SL_FINISH_ERROR);
            continue;
        }
        if (sl_tokenizer_is_eog(c->tok, tok)) {
            finish_session(c, s, tok, NULL, 0, SL_FINISH_STOP);
            continue;
        }
        sl_sampler_accept(&s->ss, tok);
        s->n_gen++;
        int len = sl_detok_push(&s->dt, c->tok, tok, c->piece, c->piece_cap);
        if (len < 0)
            len = 0;
        s->tokens[s->n_tokens++] = tok;
        if (s->n_gen >= s->n_predict || s->n_tokens >= c->req.n_ctx)
            finish_session(c, s, tok, c->piece, (size_t)len, SL_FINISH_LENGTH);
        else
            emit(c, s, tok, c->piece, (size_t)len, SL_FINISH_NONE);
    }
    const char *names[] = {"sequences", "ms", "streamed_bytes", "status"};
    double vals[] = {c->step_n, dt * 1000.0, (double)c->plan.streamed_bytes, status};
    publish(c, "step", names, vals, 4);
}

/* Puts the ring back to the start of a step (after a worker died in one):
 * slot i asks for the i-th streamed unit. Slots being filled refuse until
 * their loader finishes, so this is retried. Returns true when done. */
static bool reset_ring(coord *c)
{
    if (!c->l->slots)
        return true;
    const sl_layout_plan *p = c->l->plan;
    bool done = true;
    for (uint32_t i = 0; i < p->ring_slots; i++) {
        uint32_t want = p->streamed[i % p->n_streamed];
        sl_slot_view v = sl_slots_view(c->l->slots, i);
        if ((v.state == SL_SLOT_READY || v.state == SL_SLOT_WANTED) && v.unit == want)
            continue;
        done &= sl_slots_want(c->l->slots, i, want, NULL) == SL_SLOTS_OK;
    }
    return done;
}

/* Releases what a dead loader or worker held (proctab reap callback). */
static void on_dead(void *ctx, enum sl_role role, uint32_t rid, uint32_t owner_id)
{
    coord *c = ctx;
    if (!c->l->slots)
        return;
    if (role == SL_ROLE_LOADER) {
        SL_WARN("loader %u died; reclaiming its slots", rid);
        sl_slots_reclaim_loader(c->l->slots, owner_id);
    } else if (role == SL_ROLE_WORKER) {
        SL_WARN("compute worker %u died; releasing its slots", rid);
        sl_slots_reclaim_holder(c->l->slots, rid);
    }
}

static void reap(coord *c)
{
    sl_layout_board *b = c->l->board;
    uint64_t claimer = atomic_load(&b->claimed_by);
    sl_proctab_reap(c->l->procs, STALE_NS, on_dead, c, NULL);
    /* A step claimed by a process that is gone will never finish. */
    if (c->in_flight && claimer && !sl_proc_alive(claimer) && atomic_load(&b->claimed_by) == claimer) {
        SL_WARN("the worker computing step %u died; redoing it", c->step_seq);
        atomic_store(&b->claimed_by, 0);
        c->redo = true;
    }
    if (c->redo && reset_ring(c)) {
        c->redo = false;
        /* Same step, same tokens, same positions: post it again. */
        c->step_seq = atomic_load(&b->post_seq) + 1;
        atomic_store_explicit(&b->post_seq, c->step_seq, memory_order_release);
        sl_futex_wake(&b->post_seq, INT32_MAX);
    }
}

/* ---- start-up -------------------------------------------------------------- */

static int load_pinned(coord *c, const char *path)
{
    const sl_layout_plan *p = c->l->plan;
    if (!c->plan.pinned_bytes)
        return 0;
    sl_reader *r;
    int rc = sl_reader_open(path, NULL, &r);
    if (rc)
        return rc;
    for (uint32_t u = 0; u < p->n_units && rc == 0; u++) {
        const sl_layout_unit *lu = &sl_layout_units(c->l->plan)[u];
        if (!lu->pinned)
            continue;
        size_t skip;
        rc = sl_reader_read(r, lu->offset, lu->nbytes, c->l->pinned + lu->pin_offset, lu->io_bytes, &skip);
        SL_ASSERT(rc || skip == lu->offset - lu->io_offset);
    }
    sl_reader_close(r);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sluice-coordinator -m MODEL --instance NAME --client ENDPOINT [--monitor ENDPOINT]\n"
            "                          [--mem-budget SIZE] [-c N] [-b N] [--sessions N] [-t N] [--ring N] [--stats]\n\n"
            "The coordinator of a sluice pipeline: plans the memory budget, creates the\n"
            "shared memory its loaders and compute workers attach to, and serves clients.\n\n"
            "  -m, --model PATH      GGUF model\n"
            "  -i, --instance NAME   pipeline instance (names the shared-memory segments)\n"
            "      --client EP       ZeroMQ endpoint for clients (ROUTER), e.g. ipc:///tmp/x/client\n"
            "      --monitor EP      ZeroMQ endpoint for monitors (XPUB)\n"
            "      --mem-budget SIZE bytes for weights, KV cache and activations (e.g. 512M, 2G;\n"
            "                        default: enough to pin the whole model)\n"
            "  -c, --ctx-size N      positions per session (default 512)\n"
            "  -b, --batch-size N    tokens per step (default 64)\n"
            "      --sessions N      concurrent sessions (default 2)\n"
            "  -t, --threads N       compute threads per worker (default: all cores)\n"
            "      --ring N          streaming slots (prefetch depth + 1, default 2)\n"
            "      --stats           print per-request statistics on stderr\n"
            "  -h, --help            this text\n");
}

static int parse_u32(const char *flag, const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "sluice-coordinator: %s expects %u..%u, got '%s'\n", flag, min, max, s);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_CLIENT = 256, OPT_MONITOR, OPT_BUDGET, OPT_SESSIONS, OPT_RING, OPT_STATS };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},        {"instance", required_argument, 0, 'i'},
        {"client", required_argument, 0, OPT_CLIENT}, {"monitor", required_argument, 0, OPT_MONITOR},
        {"mem-budget", required_argument, 0, OPT_BUDGET}, {"ctx-size", required_argument, 0, 'c'},
        {"batch-size", required_argument, 0, 'b'},   {"sessions", required_argument, 0, OPT_SESSIONS},
        {"threads", required_argument, 0, 't'},      {"ring", required_argument, 0, OPT_RING},
        {"stats", no_argument, 0, OPT_STATS},        {"help", no_argument, 0, 'h'},
        {0}};
    coord c = {.wake_fd = -1};
    const char *model_path = NULL, *client_ep = NULL, *monitor_ep = NULL;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c.req = (sl_plan_req){.budget = 0, .n_ctx = 512, .n_batch = 64, .max_sessions = 2,
                          .n_threads = cores > 0 ? (uint32_t)cores : 1, .ring_depth = 2};
    int opt, bad = 0;
    while ((opt = getopt_long(argc, argv, "m:i:c:b:t:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model_path = optarg; break;
        case 'i': c.instance = optarg; break;
        case OPT_CLIENT: client_ep = optarg; break;
        case OPT_MONITOR: monitor_ep = optarg; break;
        case OPT_BUDGET:
            if (sl_plan_parse_size(optarg, &c.req.budget)) {
                fprintf(stderr, "sluice-coordinator: --mem-budget expects a size like 512M or 2G, got '%s'\n",
                        optarg);
                bad = 1;
            }
            break;
        case 'c': bad |= parse_u32("--ctx-size", optarg, 2, 1u << 20, &c.req.n_ctx); break;
        case 'b': bad |= parse_u32("--batch-size", optarg, 1, 1u << 16, &c.req.n_batch); break;
        case OPT_SESSIONS: bad |= parse_u32("--sessions", optarg, 1, SL_LAYOUT_MAX_SEQS, &c.req.max_sessions); break;
        case 't': bad |= parse_u32("--threads", optarg, 1, 1024, &c.req.n_threads); break;
        case OPT_RING: bad |= parse_u32("--ring", optarg, 2, 64, &c.req.ring_depth); break;
        case OPT_STATS: c.stats = true; break;
        case 'h': usage(stdout); return 0;
        default: bad = 1; break;
        }
    }
    if (bad || !model_path || !c.instance || !client_ep || optind != argc) {
        if (!bad)
            fprintf(stderr, "sluice-coordinator: -m, --instance and --client are required\n");
        usage(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    char abs_path[PATH_MAX];
    watcher w = {.c = &c};
    bool watching = false;
    if (!realpath(model_path, abs_path)) {
        SL_ERROR("cannot resolve '%s': %s", model_path, strerror(errno));
        return 1;
    }
    if (sl_model_open(abs_path, &c.model) || sl_tokenizer_new(sl_model_gguf(c.model), &c.tok))
        goto out;
    const sl_hparams *hp = sl_model_hparams(c.model);
    if (c.req.n_batch > c.req.n_ctx)
        c.req.n_batch = c.req.n_ctx;
    if (!c.req.budget)
        c.req.budget = UINT64_MAX / 2; /* no budget: pin everything */
    if (sl_plan_make(c.model, &c.req, &c.plan))
        goto out;
    sl_str name;
    const char *base = strrchr(abs_path, '/');
    if (sl_gguf_get_str(sl_model_gguf(c.model), "general.name", &name) == 0 && name.len <= SL_PROTO_MAX_NAME)
        snprintf(c.model_name, sizeof c.model_name, "%.*s", (int)name.len, name.ptr);
    else
        snprintf(c.model_name, sizeof c.model_name, "%.255s", base ? base + 1 : abs_path);
    c.epoch = sl_seg_new_epoch();
    sl_layout_spec spec = {c.instance, abs_path, sl_gguf_file_size(sl_model_gguf(c.model)), hp, &c.plan, &c.req,
                           c.epoch};
    if (sl_layout_create(&spec, &c.l))
        goto out;
    if (load_pinned(&c, abs_path))
        goto out;

    c.sess = calloc(c.req.max_sessions, sizeof *c.sess);
    c.sample_scratch_bytes = sl_sampler_scratch_bytes((int)hp->n_vocab);
    c.sample_scratch = malloc(c.sample_scratch_bytes);
    c.piece_cap = SL_DETOK_OUT_MAX(c.tok) + 8;
    c.piece = malloc(c.piece_cap);
    c.msgbuf = malloc(SL_PROTO_MAX_MSG);
    c.outbuf = malloc(SL_PROTO_MAX_MSG);
    if (!c.sess || !c.sample_scratch || !c.piece || !c.msgbuf || !c.outbuf)
        goto out;
    for (uint32_t i = 0; i < c.req.max_sessions; i++)
        if (!(c.sess[i].tokens = malloc(c.req.n_ctx * sizeof(int32_t))))
            goto out;

    c.zctx = zmq_ctx_new();
    if (!c.zctx || sl_endpoint_open(c.zctx, ZMQ_ROUTER, client_ep, true, &c.client))
        goto out;
    if (sl_endpoint_open(c.zctx, ZMQ_XPUB, monitor_ep ? monitor_ep : "inproc://monitor", true, &c.monitor))
        goto out;
    c.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c.wake_fd < 0 || pthread_create(&w.thread, NULL, watch_board, &w))
        goto out;
    watching = true;
    fprintf(stderr, "sluice-coordinator: '%s' ready: %s; budget plan: %.1f MiB pinned, %u x %.1f MiB ring, "
                    "%.1f MiB KV, %.1f MiB activations; %.1f MiB streamed per step\n",
            c.instance, c.model_name, c.plan.pinned_bytes / 1048576.0, c.plan.ring_slots,
            c.plan.slot_bytes / 1048576.0, c.plan.kv_bytes / 1048576.0, c.plan.act_bytes / 1048576.0,
            c.plan.streamed_bytes / 1048576.0);

    sl_layout_board *b = c.l->board;
    while (!g_stop) {
        zmq_pollitem_t items[2] = {{c.client, 0, ZMQ_POLLIN, 0}, {NULL, c.wake_fd, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, POLL_MS) < 0 && zmq_errno() != EINTR)
            break;
        if (items[1].revents) {
            uint64_t v;
            ssize_t n = read(c.wake_fd, &v, sizeof v);
            (void)n;
        }
        if (items[0].revents)
            handle_client(&c);
        if (c.in_flight && !c.redo &&
            atomic_load_explicit(&b->done_seq, memory_order_acquire) == c.step_seq)
            complete_step(&c);
        reap(&c);
        if (!c.in_flight)
            post_step(&c);
    }
    status = 0;
out:
    if (c.l) {
        atomic_store(&c.l->board->stop, 1);
        sl_futex_wake(&c.l->board->post_seq, INT32_MAX);
    }
    if (watching) {
        atomic_store(&w.stop, 1);
        pthread_join(w.thread, NULL);
    }
    if (c.wake_fd >= 0)
        close(c.wake_fd);
    sl_endpoint_close(c.client);
    sl_endpoint_close(c.monitor);
    if (c.zctx)
        zmq_ctx_term(c.zctx);
    for (uint32_t i = 0; c.sess && i < c.req.max_sessions; i++)
        free(c.sess[i].tokens);
    free(c.sess);
    free(c.sample_scratch);
    free(c.piece);
    free(c.msgbuf);
    free(c.outbuf);
    sl_layout_remove(c.l);
    sl_plan_free(&c.plan);
    sl_tokenizer_free(c.tok);
    sl_model_close(c.model);
    return status;
}
