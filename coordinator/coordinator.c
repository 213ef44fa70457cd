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
 * one wake-up; per token one client message; nothing per layer. Between
 * steps it applies budget changes (a client's `budget` request, or memory
 * pressure: coordinator/budget.h, pressure.h), and it delays posting steps
 * while the machine is too hot (coordinator/thermal.h). It also
 * reaps dead loaders and workers, reclaiming what they held, kills hung
 * ones (a heartbeat older than --hang-timeout), and redoes a step whose
 * worker died.
 *
 * Restarts (DESIGN.md §3). Everything a session needs to go on producing
 * the same tokens is committed to shared memory (coordinator/sessions.h)
 * before any of it is sent, and the KV caches live there too. A
 * coordinator started for an instance whose coordinator died takes its
 * segments over (sl_layout_adopt), waits for the step that was in flight
 * (its results are not used: every session's committed state predates
 * them), and resumes every session from its last committed position. A
 * session has no client until the client resends its request (same id,
 * resume_from = the first event it lacks: proto/client.h); the events it
 * missed are rebuilt from the committed tokens. A request the coordinator
 * does not know (its state was lost) is started again and the events
 * before resume_from are not sent: decoding is deterministic, so the client
 * still gets exactly the tokens of an uninterrupted run.
 *
 * Liveness, both ways (Paranoid Pirate's idea, not its messages). Loaders
 * and workers stamp a heartbeat in the shared process table (shm/proctab.h)
 * as they work: between units, and while they wait for a slot or a step.
 * The coordinator ages those stamps every loop and kills a process whose
 * stamp is older than --hang-timeout (SIGSTOPped, deadlocked, stuck in the
 * kernel) before it reclaims anything, so that a hung stage is caught, not
 * only a dead one. The table rather than the register/heartbeat messages
 * of proto/msg.h: every stage maps it anyway, a stamp costs a store instead
 * of a socket and a thread per stage, and it is written by the thread doing
 * the work, where a socket heartbeat from a helper thread would keep a
 * stage with a stuck compute thread looking alive. The coordinator stamps
 * its own entry every loop too (visible to anything that maps the table);
 * what watches it is its supervisor (deploy/sluice-supervise), which asks
 * for `status` on the client socket, the path clients depend on, and kills
 * it when it stops answering. Loaders and workers need not watch it: they
 * carry on across its restart, and attach again when the segments they map
 * are replaced. */
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
#include "coordinator/budget.h"
#include "coordinator/layout.h"
#include "coordinator/monitor.h"
#include "coordinator/plan.h"
#include "coordinator/pressure.h"
#include "coordinator/sampler.h"
#include "coordinator/sessions.h"
#include "coordinator/thermal.h"
#include "loader/fetch.h"
#include "model/detok.h"
#include "model/source.h"
#include "model/tokenizer.h"
#include "proto/endpoint.h"
#include "shm/futex.h"
#include "shm/proc.h"

#define POLL_MS 100
#define HANG_TIMEOUT_S 10 /* default --hang-timeout: a heartbeat older than this is a hung process */

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One generation, running (active) or finished (done: kept so that a resend
 * can be answered, until the slot is needed). The fields up to `dt` and
 * the tokens are the durable state, committed to the session's record in
 * shared memory (commit(), coordinator/sessions.h) before anything that
 * depends on them is sent; the rest is this process's and is lost with it. */
typedef struct session {
    bool active;
    bool done;         /* finished: finish and final_tok say how */
    uint64_t req_id;
    uint64_t req_hash; /* request_hash() of the generate that started it */
    uint32_t finish;   /* sl_msg_finish of the last event (done) */
    int32_t final_tok; /* tok of a last event that has no token of its own (done) */
    uint64_t ended;    /* order in which done sessions finished (sessions.h) */
    sl_envelope client;
    bool has_client;   /* false after a restart until the client resends */
    uint64_t skip_below; /* events below this seq are not sent (the client has them) */
    int32_t *tokens;   /* n_ctx, in shared memory: prompt, then accepted generated tokens */
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
    double t_last;     /* when its last token went out (monitoring: latency) */
    /* --stats: storage_read_bytes at the start and at the first token, and
     * the steps completed by then */
    uint64_t io_start, io_first, steps_first;
    bool io_ok;
    uint64_t cpu_first; /* --stats: loaders_cpu_ns at the first token */
    sl_expcache_stats ex_first; /* --stats: the expert cache's counters at the first token */
    bool cpu_ok;
} session;

typedef struct coord {
    /* configuration */
    const char *instance;
    bool stats;
    uint32_t expert_halflife; /* compute/expcache.h */
    bool expert_prefetch;
    sl_expcache_stats ex_prev; /* the expert cache's counters after the last step */
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
    sl_sessions *store;    /* their durable records (coordinator/sessions.h) */
    bool settled;          /* false after adopting a board that may hold a step in flight */
    uint32_t coord_rid;    /* this coordinator's entry in the process table */
    uint64_t stale_ns;     /* --hang-timeout */
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
    /* monitoring, run-time budget, memory pressure and heat */
    sl_monitor *mon;
    sl_budget *budget;
    sl_pressure *pressure;
    sl_thermal *thermal;
    struct {
        bool active;
        bool from_client;
        sl_envelope env;
        uint64_t id, from, to;
        const char *source;
    } budget_req;          /* the budget change being applied */
    uint64_t pressure_triggers;
    double post_after;     /* thermal pacing: post no step before this (now_s) */
    double next_paced_ms;  /* the delay put before the next step */
    double step_paced_ms;  /* ... and before the step in flight */
    bool step_prompt;      /* the step in flight feeds prompt tokens */
    double t_progress;     /* last progress sample */
    /* sockets */
    void *zctx, *client;
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

/* CPU time (user + system, in clock ticks) of process pid: fields 14 and
 * 15 of /proc/PID/stat, counted after the command name's closing ')'. */
static uint64_t proc_cpu_ticks(pid_t pid, bool *ok)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
        *ok = false;
        return 0;
    }
    return ut + st;
}

/* CPU time (ns) the live loaders have used so far: reading, checksumming
 * and decompressing. Sampled like storage_read_bytes, it tells what a
 * loader costs per decode step, so that a user can choose how many to run
 * (bench/pack.sh). Clock-tick resolution (10 ms). --stats only. */
static bool loaders_cpu_ns(coord *c, uint64_t *out)
{
    bool ok = true;
    uint64_t ticks = 0;
    for (uint32_t i = 0; i < sl_proctab_capacity(SL_ROLE_LOADER); i++) {
        sl_proc_ident id;
        if (sl_proctab_check(c->l->procs, SL_ROLE_LOADER, i, 0, 0, &id) == SL_PROC_ALIVE)
            ticks += proc_cpu_ticks(sl_proc_pid(id), &ok);
    }
    long hz = sysconf(_SC_CLK_TCK);
    *out = ticks * (1000000000ull / (uint64_t)(hz > 0 ? hz : 100));
    return ok;
}

/* d = a - b, field by field (0 where a counter went back: a load called
 * off after it was counted). */
static void expcache_diff(const sl_expcache_stats *a, const sl_expcache_stats *b, sl_expcache_stats *d)
{
    uint64_t x[sizeof *a / 8], y[sizeof *a / 8];
    memcpy(x, a, sizeof x);
    memcpy(y, b, sizeof y);
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        x[i] = x[i] >= y[i] ? x[i] - y[i] : 0;
    memcpy(d, x, sizeof *d);
}

/* ---- messages ------------------------------------------------------------ */

/* Returns what sending returned: -SL_ENOTFOUND when the client is gone. */
static int send_to(coord *c, const sl_envelope *env, const sl_msg *m)
{
    int rc = sl_endpoint_send_msg(c->client, env, m, c->outbuf, SL_PROTO_MAX_MSG, SL_EP_DONTWAIT);
    if (rc && rc != -SL_ENOTFOUND)
        SL_WARN("cannot send %s to a client: %s", sl_msg_type_name(m->type), sl_strerror(rc));
    return rc;
}

static void send_error(coord *c, const sl_envelope *env, uint64_t id, int err, const char *text)
{
    sl_msg m;
    sl_msg_error_init(&m, id, err, text);
    send_to(c, env, &m);
}

/* ---- durable session state (coordinator/sessions.h) ---------------------- */

/* Writes s's durable fields to its record: after every change that must
 * survive a restart, before anything that depends on it is sent. */
static void commit(coord *c, session *s)
{
    sl_sess_state st = {0};
    st.phase = s->active ? SL_SESS_RUNNING : s->done ? SL_SESS_DONE : SL_SESS_FREE;
    st.req_id = s->req_id;
    st.req_hash = s->req_hash;
    st.seq = s->seq;
    st.ended = s->ended;
    st.n_tokens = s->n_tokens;
    st.n_fed = s->n_fed;
    st.n_prompt = s->n_prompt;
    st.n_predict = s->n_predict;
    st.n_gen = s->n_gen;
    st.finish = s->finish;
    st.final_tok = s->final_tok;
    st.cancelled = s->cancelled;
    st.sp = s->sp;
    st.dt = s->dt;
    st.ss = s->ss;
    sl_sessions_commit(c->store, (uint32_t)(s - c->sess), &st);
    s->ended = st.ended;
}

/* Loads session i from its record (a restarted coordinator). */
static void restore(coord *c, uint32_t i)
{
    session *s = &c->sess[i];
    sl_sess_state st;
    sl_sessions_load(c->store, i, &st);
    *s = (session){.active = st.phase == SL_SESS_RUNNING, .done = st.phase == SL_SESS_DONE, .req_id = st.req_id,
                   .req_hash = st.req_hash, .finish = st.finish, .final_tok = st.final_tok, .ended = st.ended,
                   .tokens = sl_sessions_tokens(c->store, i), .n_tokens = st.n_tokens, .n_fed = st.n_fed,
                   .n_prompt = st.n_prompt, .n_predict = st.n_predict, .n_gen = st.n_gen,
                   .cancelled = st.cancelled != 0, .sp = st.sp, .ss = st.ss, .dt = st.dt, .seq = st.seq,
                   .t_start = now_s()};
    if (s->active)
        fprintf(stderr, "sluice-coordinator: '%s': resuming request %llu at token %u of %u (%u generated)\n",
                c->instance, (unsigned long long)s->req_id, s->n_fed, s->n_tokens, s->n_gen);
}

/* FNV-1a over the parts of a generate request that decide its tokens, so
 * that a resend is told from another request that reuses its id. */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t request_hash(const sl_msg_generate *g)
{
    _Static_assert(sizeof(sl_sampler_params) == 40, "sampler parameters have no padding to hash");
    uint64_t h = 0xcbf29ce484222325ull;
    uint8_t kind = g->prompt.ptr ? 1 : 2, bos = g->add_bos;
    h = hash_bytes(h, &kind, 1);
    if (g->prompt.ptr)
        h = hash_bytes(h, g->prompt.ptr, g->prompt.len);
    else if (g->tokens.packed)
        h = hash_bytes(h, g->tokens.packed, g->tokens.packed_len);
    h = hash_bytes(h, &g->n_predict, sizeof g->n_predict);
    h = hash_bytes(h, &g->sampling, sizeof g->sampling);
    return hash_bytes(h, &bos, 1);
}

/* ---- token events ---------------------------------------------------------- */

/* Sends event `seq` of s to its client, if it has one. A client that has
 * left is forgotten until it resends. */
static void send_event(coord *c, session *s, uint64_t seq, int32_t tok, const char *text, size_t len,
                       sl_msg_finish finish)
{
    if (!s->has_client || seq < s->skip_below)
        return;
    sl_msg m;
    sl_msg_init(&m, SL_MSG_TOKEN);
    m.id = s->req_id;
    m.token.seq = seq;
    m.token.tok = tok;
    m.token.text = (sl_msg_str){text ? text : "", len};
    m.token.finish = finish;
    if (finish != SL_FINISH_NONE) {
        m.token.n_prompt = s->n_prompt;
        m.token.n_gen = s->n_gen;
    }
    if (send_to(c, &s->client, &m) == -SL_ENOTFOUND)
        s->has_client = false;
}

/* Sends s's next token event; with finish != NONE it is the last one and
 * the session ends. The event is committed before it is sent. */
static void emit(coord *c, session *s, int32_t tok, const char *text, size_t len, sl_msg_finish finish)
{
    uint64_t seq = s->seq++;
    if (finish != SL_FINISH_NONE) {
        s->active = false;
        s->done = true;
        s->finish = finish;
        s->final_tok = tok;
    }
    commit(c, s);
    send_event(c, s, seq, tok, text, len, finish);
    if (tok >= 0) {
        double t = now_s();
        sl_monitor_token(c->mon, s->req_id, (uint32_t)(s - c->sess), seq, tok, s->n_gen,
                         (t - (s->t_last ? s->t_last : s->t_start)) * 1000.0);
        s->t_last = t;
    }
}

/* Sends s's events from seq `from` up to the last one sent, again: the
 * client missed them (it resent its request from another socket, or this
 * coordinator restarted). Each event is rebuilt from the committed tokens
 * exactly as it was first made: event j carries generated token j and the
 * text a fresh detokenizer releases for it; a finished session's last event
 * also carries the held-back bytes, and, when it has no token of its own
 * (end of generation, cancel, error), final_tok. */
static void replay(coord *c, session *s, uint64_t from)
{
    sl_detok d;
    sl_detok_init(&d, 0);
    for (uint64_t j = 0; j < s->seq; j++) {
        const bool last = s->done && j + 1 == s->seq;
        int32_t tok = s->final_tok;
        int len = 0;
        if (j < s->n_gen) {
            tok = s->tokens[s->n_prompt + j];
            len = sl_detok_push(&d, c->tok, tok, c->piece, c->piece_cap);
            len = len < 0 ? 0 : len;
        }
        if (last) {
            int k = sl_detok_flush(&d, c->piece + len, c->piece_cap - (size_t)len);
            len += k > 0 ? k : 0;
        }
        if (j >= from)
            send_event(c, s, j, tok, c->piece, (size_t)len, last ? (sl_msg_finish)s->finish : SL_FINISH_NONE);
    }
}

static const char *finish_name(sl_msg_finish f)
{
    static const char *const names[] = {"", "stop", "length", "cancel", "error"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "error";
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
        uint64_t cpu_end;
        if (s->cpu_ok && s->steps_first && steps && loaders_cpu_ns(c, &cpu_end))
            fprintf(stderr,
                    "sluice: request %llu: loaders' CPU time (user + system): %.1f ms per decode step (%llu steps)\n",
                    (unsigned long long)s->req_id, (cpu_end - s->cpu_first) / 1e6 / steps, (unsigned long long)steps);
        if (c->l->ecache && s->steps_first && steps) {
            sl_expcache_stats now, d;
            sl_expcache_stats_get(c->l->ecache, &now);
            expcache_diff(&now, &s->ex_first, &d);
            const double n = (double)steps;
            fprintf(stderr,
                    "sluice: request %llu: experts per decode step: %.1f used, %.1f from the cache (hit rate %.1f%%), "
                    "%.1f prefetched (%.1f of them used), %.1f loaded on demand; %.3f MiB of experts read per step, "
                    "%.1f ms waiting for them (expert cache: %u slots of %.2f MiB)\n",
                    (unsigned long long)s->req_id, d.used / n, d.hits / n,
                    d.used ? 100.0 * (double)(d.hits + d.prefetch_hits) / (double)d.used : 100.0, d.prefetched / n,
                    d.prefetch_hits / n, d.misses / n, d.loaded_bytes / 1048576.0 / n, d.wait_ns / 1e6 / n,
                    sl_slots_count(c->l->eslots), c->plan.expert_slot_bytes / 1048576.0);
        }
        double t = now_s(), gen_t = t - s->t_first;
        fprintf(stderr,
                "sluice: request %llu: prompt %u tokens in %.3f s; generated %u tokens in %.3f s (%.2f tokens/s); "
                "streamed %.1f MiB per step (pinned %.1f MiB of %.1f MiB)\n",
                (unsigned long long)s->req_id, s->n_prompt, s->t_first - s->t_start, s->n_gen, gen_t,
                s->n_gen > 1 && gen_t > 0 ? (s->n_gen - 1) / gen_t : 0.0, c->plan.streamed_bytes / 1048576.0,
                c->plan.pinned_bytes / 1048576.0, c->plan.model_bytes / 1048576.0);
    }
    s->active = false;
    sl_monitor_session(c->mon, s->req_id, (uint32_t)(s - c->sess), s->n_prompt, s->n_predict, s->n_gen,
                       finish_name(why));
}

/* Ends a session whose step failed. When the board records a fault (a
 * packed model's shard that cannot be loaded), the client first gets an
 * error saying which shard, rather than only a failed generation. */
static void fail_session(coord *c, session *s)
{
    int err = SL_EIO;
    const char *why = sl_layout_fault(c->l, &err);
    if (why && s->has_client)
        send_error(c, &s->client, s->req_id, err < 0 ? -err : err, why);
    finish_session(c, s, -1, NULL, 0, SL_FINISH_ERROR);
}

/* The running or finished session of request `id`, or NULL. */
static session *find_session(coord *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->req.max_sessions; i++)
        if ((c->sess[i].active || c->sess[i].done) && c->sess[i].req_id == id)
            return &c->sess[i];
    return NULL;
}

static void handle_generate(coord *c, const sl_envelope *env, const sl_msg *m)
{
    const sl_msg_generate *g = &m->generate;
    const uint64_t hash = request_hash(g);
    int err;
    const char *fault = sl_layout_fault(c->l, &err);
    if (fault) { /* nothing can be computed until the pipeline is restarted */
        send_error(c, env, m->id, err < 0 ? -err : err, fault);
        return;
    }
    session *s = find_session(c, m->id);
    if (s) {
        if (s->req_hash != hash) {
            send_error(c, env, m->id, SL_EINVAL, "this request id is in use by another request");
            return;
        }
        /* A resend (the client timed out, or this coordinator restarted):
         * keep going, answering wherever the client is now, from the first
         * event it lacks. */
        s->client = *env;
        s->has_client = true;
        if (g->resume_from > s->seq)
            s->skip_below = g->resume_from;
        else
            replay(c, s, g->resume_from);
        return;
    }
    if (sl_sampler_params_check(&g->sampling)) {
        send_error(c, env, m->id, SL_EINVAL, "sampling parameters out of range");
        return;
    }
    /* A free slot, else the one that finished longest ago. */
    for (uint32_t i = 0; i < c->req.max_sessions; i++) {
        session *t = &c->sess[i];
        if (!t->active && (!s || (s->done && (!t->done || t->ended < s->ended))))
            s = t;
    }
    if (!s) {
        send_error(c, env, m->id, SL_EAGAIN, "all sessions are busy; try again later");
        return;
    }
    if (s->done) {
        /* Forget the finished request before its tokens are overwritten. */
        s->done = false;
        commit(c, s);
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
    /* resume_from > 0: the client had this request's first events from a
     * coordinator that lost it; it gets the same tokens again, minus those. */
    *s = (session){.active = true, .req_id = m->id, .req_hash = hash, .client = *env, .has_client = true,
                   .skip_below = g->resume_from, .tokens = s->tokens, .n_tokens = (uint32_t)n,
                   .n_prompt = (uint32_t)n, .n_predict = g->n_predict, .sp = g->sampling, .t_start = now_s()};
    if (c->stats)
        s->io_ok = storage_read_bytes(c, &s->io_start);
    sl_sampler_init(&s->ss, &s->sp);
    for (int i = 0; i < n; i++)
        sl_sampler_accept(&s->ss, s->tokens[i]);
    sl_detok_init(&s->dt, 0);
    commit(c, s);
    sl_monitor_session(c->mon, s->req_id, (uint32_t)(s - c->sess), s->n_prompt, s->n_predict, 0, NULL);
    if (s->n_predict == 0) {
        s->t_first = now_s();
        finish_session(c, s, -1, NULL, 0, SL_FINISH_LENGTH);
    }
}

/* ---- run-time budget (coordinator/budget.h) ------------------------------- */

/* Asks for a budget of `bytes` on behalf of a client (env) or of the
 * pressure watcher (env NULL). Returns 0 when the change is pending (it is
 * applied between steps, then answered), else the refusal, already
 * answered and published. */
static int request_budget(coord *c, uint64_t bytes, const char *source, const sl_envelope *env, uint64_t id)
{
    uint64_t min, from = sl_budget_current(c->budget);
    int rc = sl_budget_request(c->budget, bytes, &min);
    if (rc) {
        sl_monitor_budget(c->mon, from, bytes, source, "refused", min, rc);
        if (env) {
            char text[200];
            if (rc == -SL_ERANGE)
                snprintf(text, sizeof text,
                         "a budget of %llu bytes is below this pipeline's minimum of %llu bytes (%.1f MiB)",
                         (unsigned long long)bytes, (unsigned long long)min, min / 1048576.0);
            else
                snprintf(text, sizeof text, "%s",
                         rc == -SL_EAGAIN ? "another budget change is being applied; try again" : sl_strerror(rc));
            send_error(c, env, id, rc, text);
        }
        return rc;
    }
    c->budget_req.active = true;
    c->budget_req.from_client = env != NULL;
    if (env)
        c->budget_req.env = *env;
    c->budget_req.id = id;
    c->budget_req.from = from;
    c->budget_req.to = bytes;
    c->budget_req.source = source;
    sl_monitor_budget(c->mon, from, bytes, source, "pending", min, 0);
    return 0;
}

/* Between steps: moves a pending budget change on, and answers it when it
 * is done or failed. */
static void apply_budget(coord *c)
{
    int rc = sl_budget_apply(c->budget, &c->plan);
    if (rc == 0)
        return;
    uint64_t min = sl_budget_min(c->budget);
    c->budget_req.active = false;
    if (rc < 0) {
        sl_monitor_budget(c->mon, c->budget_req.from, c->budget_req.to, c->budget_req.source, "failed", min, rc);
        if (c->budget_req.from_client)
            send_error(c, &c->budget_req.env, c->budget_req.id, rc, "the new budget could not be put in effect");
        return;
    }
    c->req.budget = sl_budget_current(c->budget);
    fprintf(stderr, "sluice-coordinator: '%s' budget %.1f MiB (%s): %.1f MiB pinned, %u x %.1f MiB ring; %.1f MiB "
                    "streamed per step\n",
            c->instance, c->req.budget / 1048576.0, c->budget_req.source, c->plan.pinned_bytes / 1048576.0,
            c->plan.ring_slots, c->plan.slot_bytes / 1048576.0, c->plan.streamed_bytes / 1048576.0);
    sl_monitor_budget(c->mon, c->budget_req.from, c->budget_req.to, c->budget_req.source, "done", min, 0);
    sl_monitor_mem_set(c->mon, c->l,
                       &(sl_monitor_mem){c->req.budget, min, &c->plan, c->budget_req.source});
    if (c->budget_req.from_client) {
        sl_msg r;
        sl_msg_init(&r, SL_MSG_BUDGET_REPLY);
        r.id = c->budget_req.id;
        r.budget_reply = (sl_msg_budget_reply){c->req.budget, c->plan.total_bytes, c->plan.pinned_bytes,
                                               c->plan.streamed_bytes, min};
        send_to(c, &c->budget_req.env, &r);
    }
}

/* The pressure trigger fired: shrink the budget by a quarter, down to the
 * minimum (PSI reports at most one event per window). */
static void on_pressure(coord *c)
{
    sl_monitor_pressure mp = {"triggered", "", sl_pressure_stall_ms(c->pressure), sl_pressure_window_ms(c->pressure),
                              0, 0, ++c->pressure_triggers};
    sl_pressure_averages(c->pressure, &mp.some_avg10, &mp.full_avg10);
    uint64_t cur = sl_budget_current(c->budget), min = sl_budget_min(c->budget);
    uint64_t want = cur - cur / 4 < min ? min : cur - cur / 4;
    if (cur <= min)
        mp.action = "at minimum";
    else if (!c->budget_req.active && request_budget(c, want, "pressure", NULL, 0) == 0)
        mp.action = "shrink";
    SL_WARN("memory pressure (some avg10 %.2f%%): %s", mp.some_avg10, mp.action[0] ? mp.action : "no action");
    sl_monitor_pressure_set(c->mon, &mp);
    mp.state = "watching";
    mp.action = "";
    sl_monitor_pressure_set(c->mon, &mp);
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
            if (!s || !s->active) {
                send_error(c, &env, m.id, SL_ENOTFOUND, "no such request is running");
            } else if (s->in_step) {
                s->cancelled = true; /* ends when the step in flight returns */
                commit(c, s);
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
        case SL_MSG_BUDGET:
            request_budget(c, m.budget, "ctl", &env, m.id);
            break;
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
    bool prompt = false;
    for (uint32_t i = 0; i < c->req.max_sessions && n < SL_LAYOUT_MAX_SEQS && used < c->req.n_batch; i++) {
        session *s = &c->sess[i];
        if (!s->active || s->n_fed == s->n_tokens)
            continue;
        uint32_t take = s->n_tokens - s->n_fed;
        if (take > c->req.n_batch - used)
            take = c->req.n_batch - used;
        b->seqs[n] = (sl_layout_seq){i, take, s->n_fed, used};
        memcpy(b->tokens + used, s->tokens + s->n_fed, take * sizeof(int32_t));
        prompt |= s->n_fed < s->n_prompt;
        s->in_step = take;
        c->step_sess[n++] = i;
        used += take;
    }
    if (!n)
        return false;
    b->n_seqs = n;
    c->step_n = n;
    c->step_t0 = now_s();
    c->step_prompt = prompt;
    atomic_store_explicit(&b->units_done, 0, memory_order_relaxed);
    c->step_paced_ms = c->next_paced_ms;
    c->next_paced_ms = 0;
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
    uint32_t step_tokens = 0;
    for (uint32_t k = 0; k < c->step_n; k++)
        step_tokens += c->sess[c->step_sess[k]].in_step;
    sl_monitor_step(c->mon, c->l, c->step_n, step_tokens, dt * 1000.0, c->step_paced_ms, c->plan.streamed_bytes,
                    status);
    if (c->l->ecache) {
        sl_expcache_stats now, step;
        sl_expcache_stats_get(c->l->ecache, &now);
        expcache_diff(&now, &c->ex_prev, &step);
        c->ex_prev = now;
        sl_monitor_experts(c->mon, &step, sl_slots_count(c->l->eslots));
    }
    /* Thermal pacing: the next step waits in proportion to this one. */
    c->next_paced_ms = sl_thermal_delay_ms(c->thermal, dt * 1000.0);
    c->post_after = now_s() + c->next_paced_ms / 1000.0;
    for (uint32_t k = 0; k < c->step_n; k++) {
        session *s = &c->sess[c->step_sess[k]];
        uint32_t fed = s->in_step;
        s->in_step = 0;
        if (!s->active)
            continue;
        if (status) {
            fail_session(c, s);
            continue;
        }
        s->n_fed += fed;
        if (s->n_fed - fed < s->n_prompt)
            sl_monitor_progress(c->mon, s->req_id, c->step_sess[k], s->n_fed < s->n_prompt ? s->n_fed : s->n_prompt,
                                s->n_prompt, 0, c->l->plan->n_units, c->l->plan->n_units);
        if (s->cancelled) {
            finish_session(c, s, -1, NULL, 0, SL_FINISH_CANCEL);
            continue;
        }
        if (s->n_fed < s->n_tokens) {
            commit(c, s);
            continue; /* more of the prompt to feed */
        }
        if (!s->t_first) {
            s->t_first = now_s();
            s->steps_first = c->steps;
            if (c->stats) {
                s->io_ok = s->io_ok && storage_read_bytes(c, &s->io_first);
                s->cpu_ok = loaders_cpu_ns(c, &s->cpu_first);
                if (c->l->ecache)
                    sl_expcache_stats_get(c->l->ecache, &s->ex_first);
            }
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
}

/* With a fault recorded (a shard that cannot be loaded, loader/shard.h) and
 * the step in flight unclaimed, no worker may ever take it (the workers
 * could not open the model): finish it as failed, as a worker would, after
 * claiming it so that none starts it meanwhile. A claimed step fails by
 * itself: its worker stops waiting for units on a fault. */
static void abandon_faulted_step(coord *c)
{
    sl_layout_board *b = c->l->board;
    int err;
    uint64_t none = 0;
    if (!sl_layout_fault(c->l, &err) || !atomic_compare_exchange_strong(&b->claimed_by, &none, sl_proc_self()))
        return;
    if (atomic_load(&b->done_seq) != c->step_seq) {
        atomic_store(&b->status, err < 0 ? err : -SL_EIO);
        atomic_store_explicit(&b->done_seq, c->step_seq, memory_order_release);
    }
    atomic_store(&b->claimed_by, 0);
}

/* While a step with prompt tokens is in flight: how far it got, every
 * SL_MONITOR_SAMPLE_MS (a long prompt step can take seconds). */
static void sample_progress(coord *c, double now)
{
    if (now - c->t_progress < SL_MONITOR_SAMPLE_MS / 1000.0)
        return;
    c->t_progress = now;
    uint32_t done = atomic_load_explicit(&c->l->board->units_done, memory_order_relaxed);
    for (uint32_t k = 0; k < c->step_n; k++) {
        const session *s = &c->sess[c->step_sess[k]];
        if (s->active && s->n_fed < s->n_prompt)
            sl_monitor_progress(c->mon, s->req_id, c->step_sess[k], s->n_fed, s->n_prompt, s->in_step, done,
                                c->l->plan->n_units);
    }
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
        if (c->l->eslots)
            sl_slots_reclaim_loader(c->l->eslots, owner_id);
    } else if (role == SL_ROLE_WORKER) {
        SL_WARN("compute worker %u died; releasing its slots", rid);
        sl_slots_reclaim_holder(c->l->slots, rid);
        if (c->l->eslots)
            sl_slots_reclaim_holder(c->l->eslots, rid);
    }
}

static void reap(coord *c)
{
    sl_layout_board *b = c->l->board;
    uint64_t claimer = atomic_load(&b->claimed_by);
    sl_proctab_reap(c->l->procs, c->stale_ns, on_dead, c, NULL);
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

/* After adopting the segments of a coordinator that died: the step it
 * posted may still be running on a worker. Its results are not used (every
 * session's committed state predates them; what it fed is fed again, over
 * the same KV positions), but it must be off the board before the next is
 * posted: wait while a live worker computes it; take it off (claiming the
 * board as a worker would, so none can start it meanwhile) when nobody
 * does. Then put the ring in order for the plan in effect, as at the start
 * of any step. Returns true when steps may be posted; called again from the
 * loop until then. */
static bool settle_board(coord *c)
{
    sl_layout_board *b = c->l->board;
    uint32_t posted = atomic_load_explicit(&b->post_seq, memory_order_acquire);
    if (posted != atomic_load_explicit(&b->done_seq, memory_order_acquire)) {
        uint64_t claimer = atomic_load(&b->claimed_by);
        if (claimer && sl_proc_alive(claimer))
            return false; /* a worker is finishing it */
        if (!atomic_compare_exchange_strong(&b->claimed_by, &claimer, sl_proc_self()))
            return false; /* a worker took it just now */
        atomic_store(&b->status, -SL_EAGAIN);
        atomic_store_explicit(&b->done_seq, posted, memory_order_release);
        atomic_store(&b->claimed_by, 0);
        sl_futex_wake(&b->done_seq, INT32_MAX);
    }
    /* Slots a dead worker still holds refuse until reap() releases them. */
    if (!sl_layout_ring_settle(c->l))
        return false;
    fprintf(stderr, "sluice-coordinator: '%s': the board is clear; generation resumes\n", c->instance);
    return true;
}

/* ---- start-up -------------------------------------------------------------- */

/* Reads the pinned units from the model (a GGUF file or a packed model,
 * loader/fetch.h); a corrupted shard among them stops the start-up, named
 * in the log. */
static int load_pinned(coord *c, const char *path)
{
    const sl_layout_plan *p = c->l->plan;
    if (!c->plan.pinned_bytes)
        return 0;
    sl_fetcher *f;
    int rc = sl_fetcher_open(path, p->model_size, NULL, &f);
    if (rc)
        return rc;
    for (uint32_t u = 0; u < p->n_units && rc == 0; u++) {
        const sl_layout_unit *lu = &sl_layout_units(c->l->plan)[u];
        if (lu->pinned)
            rc = sl_layout_fetch_unit(c->l, f, u, c->l->pinned + lu->pin_offset, lu->io_bytes);
    }
    sl_fetcher_close(f);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sluice-coordinator -m MODEL --instance NAME --client ENDPOINT [--monitor ENDPOINT]\n"
            "                          [--mem-budget SIZE] [-c N] [-b N] [--sessions N] [-t N] [--ring N] [--stats]\n"
            "                          [--pressure-stall MS] [--pressure-window MS] [--thermal-limit C]\n"
            "                          [--thermal-root DIR] [--hang-timeout S]\n"
            "                          [--expert-halflife N] [--expert-prefetch on|off]\n\n"
            "The coordinator of a sluice pipeline: plans the memory budget, creates the\n"
            "shared memory its loaders and compute workers attach to, and serves clients.\n"
            "Started again after it died, it takes that shared memory over and resumes\n"
            "every session where it was.\n\n"
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
            "      --pressure-stall MS   shrink the budget by a quarter when tasks stall on memory\n"
            "                        for MS per window (Linux PSI, /proc/pressure/memory; default\n"
            "                        150; 0: off)\n"
            "      --pressure-window MS  the window of that trigger (default 2000)\n"
            "      --thermal-limit C pace compute while the hottest thermal zone is above C\n"
            "                        degrees Celsius (default: no limit)\n"
            "      --thermal-root DIR where the thermal zones are (default /sys/class/thermal)\n"
            "      --hang-timeout S  a loader or worker silent for S seconds is hung: it is killed\n"
            "                        and its work redone (default 10)\n"
            "      --expert-halflife N  mixture of experts: the expert cache keeps the experts used\n"
            "                        most, each use counting half as much N steps later (default\n"
            "                        %u; 0: the most recently used)\n"
            "      --expert-prefetch on|off  load the experts a layer's router is predicted to\n"
            "                        choose before it runs (default off; see bench/RESULTS.md)\n"
            "  -h, --help            this text\n",
            SL_EXPCACHE_DEFAULT_HALFLIFE);
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
    enum { OPT_CLIENT = 256, OPT_MONITOR, OPT_BUDGET, OPT_SESSIONS, OPT_RING, OPT_STATS, OPT_PSTALL, OPT_PWINDOW,
           OPT_TLIMIT, OPT_TROOT, OPT_HANG, OPT_EHALF, OPT_EPREF };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},        {"instance", required_argument, 0, 'i'},
        {"client", required_argument, 0, OPT_CLIENT}, {"monitor", required_argument, 0, OPT_MONITOR},
        {"mem-budget", required_argument, 0, OPT_BUDGET}, {"ctx-size", required_argument, 0, 'c'},
        {"batch-size", required_argument, 0, 'b'},   {"sessions", required_argument, 0, OPT_SESSIONS},
        {"threads", required_argument, 0, 't'},      {"ring", required_argument, 0, OPT_RING},
        {"stats", no_argument, 0, OPT_STATS},        {"help", no_argument, 0, 'h'},
        {"pressure-stall", required_argument, 0, OPT_PSTALL}, {"pressure-window", required_argument, 0, OPT_PWINDOW},
        {"thermal-limit", required_argument, 0, OPT_TLIMIT}, {"thermal-root", required_argument, 0, OPT_TROOT},
        {"hang-timeout", required_argument, 0, OPT_HANG},
        {"expert-halflife", required_argument, 0, OPT_EHALF}, {"expert-prefetch", required_argument, 0, OPT_EPREF},
        {0}};
    uint32_t pressure_stall = 150, pressure_window = 2000, thermal_limit = 0;
    const char *thermal_root = NULL;
    coord c = {.wake_fd = -1, .stale_ns = HANG_TIMEOUT_S * 1000000000ull,
               .expert_halflife = SL_EXPCACHE_DEFAULT_HALFLIFE};
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
        case OPT_EHALF: bad |= parse_u32("--expert-halflife", optarg, 0, 1u << 20, &c.expert_halflife); break;
        case OPT_EPREF:
            if (!strcmp(optarg, "on") || !strcmp(optarg, "off")) {
                c.expert_prefetch = !strcmp(optarg, "on");
            } else {
                fprintf(stderr, "sluice-coordinator: --expert-prefetch expects on or off, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case OPT_PSTALL: bad |= parse_u32("--pressure-stall", optarg, 0, 10000, &pressure_stall); break;
        case OPT_PWINDOW: bad |= parse_u32("--pressure-window", optarg, 500, 10000, &pressure_window); break;
        case OPT_TLIMIT: bad |= parse_u32("--thermal-limit", optarg, 1, 200, &thermal_limit); break;
        case OPT_TROOT: thermal_root = optarg; break;
        case OPT_HANG: {
            char *end;
            errno = 0;
            double v = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(v >= 0.1 && v <= 3600)) {
                fprintf(stderr, "sluice-coordinator: --hang-timeout expects 0.1..3600 seconds, got '%s'\n", optarg);
                bad = 1;
            } else {
                c.stale_ns = (uint64_t)(v * 1e9);
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: bad = 1; break;
        }
    }
    if (!bad && pressure_stall > pressure_window) {
        fprintf(stderr, "sluice-coordinator: --pressure-stall (%u ms) exceeds --pressure-window (%u ms)\n",
                pressure_stall, pressure_window);
        bad = 1;
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
    bool watching = false, adopted = false, registered = false;
    sl_plan created = {0}; /* after a restart: the plan the segments were made from, when another is in effect */
    if (!realpath(model_path, abs_path)) {
        SL_ERROR("cannot resolve '%s': %s", model_path, strerror(errno));
        return 1;
    }
    /* A packed model: the description only; loaders read the weights. */
    if (sl_source_open_model(abs_path, SL_SOURCE_META, &c.model) || sl_tokenizer_new(sl_model_gguf(c.model), &c.tok))
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
                           c.epoch, c.model, c.expert_halflife, c.expert_prefetch};
    int lrc = sl_layout_adopt(&spec, &c.l);
    if (lrc == -SL_EINVAL)
        goto out; /* another coordinator runs this instance (logged) */
    adopted = lrc == 0;
    if (!adopted) {
        if (lrc != -SL_ENOTFOUND)
            SL_WARN("cannot take over the shared memory of '%s' (see above): making it anew; its sessions are lost "
                    "(their clients get their tokens again from the start when they resend)", c.instance);
        if (sl_layout_create(&spec, &c.l))
            goto out;
    } else if (c.l->plan->budget != c.req.budget) {
        /* The budget was changed at run time (memory pressure, a client)
         * before the restart: that plan stays in effect. */
        sl_plan now;
        uint64_t min;
        if (sl_plan_rebudget(&c.plan, c.l->plan->budget, sl_slots_count(c.l->slots), sl_slots_slot_size(c.l->slots),
                             &now, &min))
            goto out;
        created = c.plan;
        c.plan = now;
        c.req.budget = c.l->plan->budget;
    }
    int src = adopted ? sl_sessions_adopt(c.instance, c.req.max_sessions, c.req.n_ctx, c.epoch, &c.store) : -SL_ENOTFOUND;
    if (src == -SL_EINVAL)
        goto out;
    if (src) {
        if (adopted) {
            SL_WARN("the session records of '%s' cannot be taken over: its sessions are lost", c.instance);
            if (src != -SL_ENOTFOUND && sl_seg_clean(c.instance, 0) < 0) /* the stale records; ours are live */
                goto out;
        }
        if (sl_sessions_create(c.instance, c.req.max_sessions, c.req.n_ctx, c.epoch, &c.store))
            goto out;
    }
    /* A fault a predecessor recorded gets a new chance: the file may have
     * been repaired (if not, the first load records it again). */
    sl_layout_fault_clear(c.l);
    /* A predecessor that died while loading them leaves weights_ready 0. */
    if (!sl_sessions_weights_ready(c.store)) {
        if (load_pinned(&c, abs_path))
            goto out;
        sl_sessions_set_weights_ready(c.store, true);
    }
    /* The predecessor's entry (dead) is freed by the first reaping pass. */
    sl_proctab_reap(c.l->procs, c.stale_ns, on_dead, &c, NULL);
    if (sl_proctab_register(c.l->procs, SL_ROLE_COORDINATOR, &c.coord_rid))
        goto out;
    registered = true;

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
        restore(&c, i);
    c.settled = !adopted;

    c.zctx = zmq_ctx_new();
    if (!c.zctx || sl_endpoint_open(c.zctx, ZMQ_ROUTER, client_ep, true, &c.client))
        goto out;
    if (sl_monitor_open(c.zctx, monitor_ep ? monitor_ep : "inproc://monitor", &c.mon))
        goto out;
    if (sl_budget_new(c.l, created.units ? &created : &c.plan, c.req.budget, &c.budget) || sl_thermal_new(thermal_root, thermal_limit, &c.thermal))
        goto out;
    sl_monitor_config_set(c.mon, &(sl_monitor_config){c.model_name, c.instance, c.epoch, c.req.n_ctx, c.req.n_batch,
                                                      c.req.max_sessions, c.plan.n_units,
                                                      sl_slots_count(c.l->slots), c.req.n_threads, adopted});
    sl_monitor_mem_set(c.mon, c.l, &(sl_monitor_mem){c.req.budget, sl_budget_min(c.budget), &c.plan, "start"});
    sl_monitor_pressure mp = {"off", "", pressure_stall, pressure_window, 0, 0, 0};
    if (pressure_stall) {
        int prc = sl_pressure_open(NULL, pressure_stall, pressure_window, &c.pressure);
        if (prc && prc != -SL_EUNSUPPORTED)
            goto out;
        mp.state = c.pressure ? "watching" : "unavailable";
        if (c.pressure) {
            mp.stall_ms = sl_pressure_stall_ms(c.pressure);
            mp.window_ms = sl_pressure_window_ms(c.pressure);
            sl_pressure_averages(c.pressure, &mp.some_avg10, &mp.full_avg10);
        }
    }
    sl_monitor_pressure_set(c.mon, &mp);
    sl_thermal_sample(c.thermal, 0);
    sl_thermal_state ts = sl_thermal_get(c.thermal);
    sl_monitor_thermal_set(c.mon, &(sl_monitor_thermal){ts.state, ts.temp_c, ts.limit_c, ts.duty, ts.paced_ms,
                                                        ts.zones});
    c.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c.wake_fd < 0 || pthread_create(&w.thread, NULL, watch_board, &w))
        goto out;
    watching = true;
    fprintf(stderr, "sluice-coordinator: '%s' %s: %s; budget plan: %.1f MiB pinned, %u x %.1f MiB ring, "
                    "%.1f MiB KV, %.1f MiB activations; %.1f MiB streamed per step\n",
            c.instance, adopted ? "taken over after a restart" : "ready", c.model_name, c.plan.pinned_bytes / 1048576.0, c.plan.ring_slots,
            c.plan.slot_bytes / 1048576.0, c.plan.kv_bytes / 1048576.0, c.plan.act_bytes / 1048576.0,
            c.plan.streamed_bytes / 1048576.0);

    sl_layout_board *b = c.l->board;
    while (!g_stop) {
        zmq_pollitem_t items[4] = {{c.client, 0, ZMQ_POLLIN, 0},
                                   {NULL, c.wake_fd, ZMQ_POLLIN, 0},
                                   {sl_monitor_socket(c.mon), 0, ZMQ_POLLIN, 0},
                                   {NULL, c.pressure ? sl_pressure_fd(c.pressure) : -1, ZMQ_POLLPRI, 0}};
        /* Sleep less while a budget change waits for a loader's fill, or a
         * paced step for its time. */
        long timeout = POLL_MS;
        double now = now_s();
        if (!c.in_flight && sl_budget_pending(c.budget))
            timeout = 2;
        else if (!c.in_flight && c.post_after > now)
            timeout = (long)((c.post_after - now) * 1000.0) + 1 < POLL_MS ? (long)((c.post_after - now) * 1000.0) + 1
                                                                         : POLL_MS;
        if (zmq_poll(items, c.pressure ? 4 : 3, timeout) < 0 && zmq_errno() != EINTR)
            break;
        /* The heartbeat stages look at to tell a live coordinator. Failing
         * means another process reaped this one as dead or hung. */
        if (sl_proctab_heartbeat(c.l->procs, SL_ROLE_COORDINATOR, c.coord_rid)) {
            registered = false;
            goto out;
        }
        if (items[1].revents) {
            uint64_t v;
            ssize_t n = read(c.wake_fd, &v, sizeof v);
            (void)n;
        }
        if (items[0].revents)
            handle_client(&c);
        if (items[2].revents)
            sl_monitor_on_readable(c.mon);
        if (c.pressure && (items[3].revents & ZMQ_POLLERR)) {
            SL_WARN("the memory-pressure trigger failed; watching no more");
            sl_pressure_close(c.pressure);
            c.pressure = NULL;
            sl_monitor_pressure_set(c.mon, &(sl_monitor_pressure){"unavailable", "", pressure_stall, pressure_window,
                                                                  0, 0, c.pressure_triggers});
        } else if (c.pressure && (items[3].revents & ZMQ_POLLPRI)) {
            on_pressure(&c);
        }
        if (c.in_flight && !c.redo)
            abandon_faulted_step(&c);
        if (c.in_flight && !c.redo &&
            atomic_load_explicit(&b->done_seq, memory_order_acquire) == c.step_seq)
            complete_step(&c);
        reap(&c);
        if (!c.settled)
            c.settled = settle_board(&c);
        now = now_s();
        if (sl_thermal_sample(c.thermal, (uint64_t)(now * 1e9))) {
            ts = sl_thermal_get(c.thermal);
            sl_monitor_thermal_set(c.mon, &(sl_monitor_thermal){ts.state, ts.temp_c, ts.limit_c, ts.duty,
                                                                ts.paced_ms, ts.zones});
        }
        if (c.in_flight && c.step_prompt)
            sample_progress(&c, now);
        uint32_t active = 0;
        for (uint32_t i = 0; i < c.req.max_sessions; i++)
            active += c.sess[i].active;
        sl_monitor_tick(c.mon, c.l, active);
        /* A budget change happens between steps, before the next is posted. */
        if (c.settled && !c.in_flight && !c.redo && sl_budget_pending(c.budget))
            apply_budget(&c);
        if (c.settled && !c.in_flight && !sl_budget_pending(c.budget) && now >= c.post_after)
            post_step(&c);
    }
    status = 0;
out:
    if (registered)
        sl_proctab_deregister(c.l->procs, SL_ROLE_COORDINATOR, c.coord_rid);
    /* A coordinator that fails after taking over a predecessor's segments
     * leaves them, and its sessions, to the next one. */
    const bool keep = status != 0 && adopted;
    if (c.l && !keep) {
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
    sl_monitor_close(c.mon);
    sl_budget_free(c.budget);
    sl_pressure_close(c.pressure);
    sl_thermal_free(c.thermal);
    if (c.zctx)
        zmq_ctx_term(c.zctx);
    free(c.sess);
    free(c.sample_scratch);
    free(c.piece);
    free(c.msgbuf);
    free(c.outbuf);
    if (keep) {
        sl_sessions_close(c.store);
        sl_layout_close(c.l);
    } else {
        sl_sessions_remove(c.store);
        sl_layout_remove(c.l);
    }
    sl_plan_free(&c.plan);
    sl_plan_free(&created);
    sl_tokenizer_free(c.tok);
    sl_model_close(c.model);
    return status;
}
