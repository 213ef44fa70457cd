/* Monitoring events on the coordinator's XPUB socket; see monitor.h for the
 * stream's specification.
 *
 * Stateful events (config, mem, pressure, thermal, stats, proc, slot,
 * session) are also kept in a table of entities, one per (kind, key), which
 * is what a snapshot replays; transient ones (step, token, progress, budget)
 * are only sent. Everything is sized at open: publishing allocates nothing
 * and never blocks (DONTWAIT on a socket that drops at its high-water mark). */
#include "coordinator/monitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "common/log.h"
#include "proto/endpoint.h"

#define MAX_F 24     /* fields of one event (<= SL_PROTO_MAX_FIELDS) */
#define MAX_S 4      /* string values of one event */
#define MAX_SLOTS 64 /* ring slots monitored (the coordinator's --ring maximum) */
#define OUT_CAP 8192 /* one packed event */

_Static_assert(MAX_F <= SL_PROTO_MAX_FIELDS, "event fields");

/* One field: names are string literals; strings are indexes into strs. */
typedef struct mfield {
    const char *name;
    sl_msg_val_type type;
    union {
        bool b;
        int64_t i;
        double f;
        uint32_t s;
    } v;
} mfield;

/* An event being built, or kept as an entity's state. Self-contained (no
 * pointers into itself), so it can be copied. */
typedef struct mev {
    const char *kind; /* a string literal */
    uint64_t key;
    uint32_t n, n_strs;
    mfield f[MAX_F];
    char strs[MAX_S][SL_PROTO_MAX_NAME + 1];
} mev;

/* What is kept for snapshots, by kind; the order is the snapshot's. */
static const char *const k_retained[] = {"config", "mem", "pressure", "thermal", "stats", "proc", "slot", "session"};
#define N_RETAINED (sizeof k_retained / sizeof k_retained[0])
#define MAX_ENTITIES ((int)(8 + SL_PROCTAB_ENTRIES + MAX_SLOTS + SL_LAYOUT_MAX_SEQS))

enum { RETAIN_NONE, RETAIN_KEEP, RETAIN_FORGET };

/* A process-table entry as last seen. */
typedef struct proc_seen {
    sl_proc_ident ident; /* the running process we reported up; 0: none */
} proc_seen;

typedef struct slot_seen {
    bool valid;
    uint64_t word, fills;
    bool used;
} slot_seen;

struct sl_monitor {
    void *sock;
    uint64_t seq;
    uint8_t *out;
    sl_msg msg;
    mev ev; /* the event being built */
    mev *ents;
    bool *ent_used;
    /* sampling */
    uint64_t t_start, t_sample, t_stats;
    proc_seen procs[3][SL_PROCTAB_LOADERS];
    uint32_t pending_down[3], restarts[3];
    slot_seen slots[MAX_SLOTS];
    uint64_t last_shm;
    bool have_mem;
    mev mem; /* the last mem event, re-published when the footprint changes */
    /* counters */
    uint64_t tokens, steps;
    uint64_t b_loaded, b_hits, b_misses; /* board totals at the last step */
    uint64_t step_bytes, step_hits, step_misses;
    double paced_ms;
    uint32_t max_sessions;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- building and sending events ------------------------------------------ */

static mev *ev_begin(sl_monitor *m, const char *kind, uint64_t key)
{
    mev *e = &m->ev;
    e->kind = kind;
    e->key = key;
    e->n = 0;
    e->n_strs = 0;
    return e;
}

static mfield *ev_field(mev *e, const char *name, sl_msg_val_type type)
{
    SL_ASSERT(e->n < MAX_F);
    mfield *f = &e->f[e->n++];
    f->name = name;
    f->type = type;
    return f;
}

static void ev_int(mev *e, const char *name, int64_t v) { ev_field(e, name, SL_VAL_INT)->v.i = v; }
static void ev_uint(mev *e, const char *name, uint64_t v)
{
    ev_int(e, name, v > INT64_MAX ? INT64_MAX : (int64_t)v);
}
static void ev_float(mev *e, const char *name, double v) { ev_field(e, name, SL_VAL_FLOAT)->v.f = v; }
static void ev_bool(mev *e, const char *name, bool v) { ev_field(e, name, SL_VAL_BOOL)->v.b = v; }
static void ev_str(mev *e, const char *name, const char *s)
{
    SL_ASSERT(e->n_strs < MAX_S);
    uint32_t k = e->n_strs++;
    snprintf(e->strs[k], sizeof e->strs[k], "%s", s ? s : "");
    ev_field(e, name, SL_VAL_STR)->v.s = k;
}

/* Packs and sends e under `kind` (which may differ from e->kind: the
 * snapshot's "snapshot.<kind>"). Drops silently when a subscriber's queue
 * is full: that is the contract. */
static void send_ev(sl_monitor *m, const mev *e, const char *kind)
{
    sl_msg *msg = &m->msg;
    sl_msg_init(msg, SL_MSG_EVENT);
    msg->event.kind = sl_msg_cstr(kind);
    msg->event.seq = ++m->seq;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    msg->event.ts = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    msg->event.n_fields = e->n;
    for (uint32_t i = 0; i < e->n; i++) {
        sl_msg_field *f = &msg->event.fields[i];
        f->name = sl_msg_cstr(e->f[i].name);
        f->type = e->f[i].type;
        switch (e->f[i].type) {
        case SL_VAL_BOOL: f->val.b = e->f[i].v.b; break;
        case SL_VAL_INT: f->val.i = e->f[i].v.i; break;
        case SL_VAL_FLOAT: f->val.f = e->f[i].v.f; break;
        case SL_VAL_STR: f->val.s = sl_msg_cstr(e->strs[e->f[i].v.s]); break;
        default: break;
        }
    }
    sl_envelope topic;
    sl_envelope_set(&topic, kind);
    int rc = sl_endpoint_send_msg(m->sock, &topic, msg, m->out, OUT_CAP, SL_EP_DONTWAIT);
    if (rc && rc != -SL_EAGAIN)
        SL_WARN("cannot publish a %s event: %s", kind, sl_strerror(rc));
}

static int find_entity(const sl_monitor *m, const char *kind, uint64_t key)
{
    for (int i = 0; i < MAX_ENTITIES; i++)
        if (m->ent_used[i] && m->ents[i].key == key && !strcmp(m->ents[i].kind, kind))
            return i;
    return -1;
}

/* Publishes the event being built; RETAIN_KEEP stores it as its entity's
 * state, RETAIN_FORGET drops that entity. */
static void publish(sl_monitor *m, int retain)
{
    const mev *e = &m->ev;
    send_ev(m, e, e->kind);
    if (retain == RETAIN_NONE)
        return;
    int i = find_entity(m, e->kind, e->key);
    if (retain == RETAIN_FORGET) {
        if (i >= 0)
            m->ent_used[i] = false;
        return;
    }
    for (int k = 0; i < 0 && k < MAX_ENTITIES; k++)
        if (!m->ent_used[k])
            i = k;
    if (i < 0) {
        SL_WARN("monitoring keeps no more than %d entities; %s %llu left out of snapshots", MAX_ENTITIES, e->kind,
                (unsigned long long)e->key);
        return;
    }
    m->ents[i] = *e;
    m->ent_used[i] = true;
}

static void snapshot(sl_monitor *m, uint64_t epoch)
{
    uint64_t last = m->seq;
    int64_t n = 0;
    for (int i = 0; i < MAX_ENTITIES; i++)
        n += m->ent_used[i];
    mev *e = ev_begin(m, "snapshot.begin", 0);
    ev_int(e, "n", n);
    ev_uint(e, "epoch", epoch);
    ev_uint(e, "last", last);
    send_ev(m, e, e->kind);
    char kind[SL_PROTO_MAX_KIND + 1];
    for (size_t r = 0; r < N_RETAINED; r++) {
        snprintf(kind, sizeof kind, "snapshot.%s", k_retained[r]);
        for (int i = 0; i < MAX_ENTITIES; i++)
            if (m->ent_used[i] && !strcmp(m->ents[i].kind, k_retained[r]))
                send_ev(m, &m->ents[i], kind);
    }
    e = ev_begin(m, "snapshot.end", 0);
    ev_int(e, "n", n);
    send_ev(m, e, e->kind);
}

/* ---- life cycle -------------------------------------------------------------- */

int sl_monitor_open(void *zctx, const char *endpoint, sl_monitor **out)
{
    *out = NULL;
    sl_monitor *m = calloc(1, sizeof *m);
    if (!m)
        return -SL_ENOMEM;
    m->out = malloc(OUT_CAP);
    m->ents = calloc(MAX_ENTITIES, sizeof *m->ents);
    m->ent_used = calloc(MAX_ENTITIES, sizeof *m->ent_used);
    if (!m->out || !m->ents || !m->ent_used) {
        sl_monitor_close(m);
        return -SL_ENOMEM;
    }
    int rc = sl_endpoint_open(zctx, ZMQ_XPUB, endpoint, true, &m->sock);
    if (rc) {
        sl_monitor_close(m);
        return rc;
    }
    m->t_start = mono_ns();
    *out = m;
    return 0;
}

void sl_monitor_close(sl_monitor *m)
{
    if (!m)
        return;
    sl_endpoint_close(m->sock);
    free(m->out);
    free(m->ents);
    free(m->ent_used);
    free(m);
}

void *sl_monitor_socket(const sl_monitor *m) { return m->sock; }

uint64_t sl_monitor_events(const sl_monitor *m) { return m->seq; }

void sl_monitor_on_readable(sl_monitor *m)
{
    uint8_t buf[256];
    bool subscribed = false;
    for (;;) {
        int n = zmq_recv(m->sock, buf, sizeof buf, ZMQ_DONTWAIT);
        if (n < 0)
            break;
        /* [1][prefix]: subscribe; [0][prefix]: unsubscribe. */
        if (n >= 1 && buf[0] == 1)
            subscribed = true;
    }
    if (subscribed) {
        int i = find_entity(m, "config", 0);
        uint64_t epoch = 0;
        for (uint32_t k = 0; i >= 0 && k < m->ents[i].n; k++)
            if (!strcmp(m->ents[i].f[k].name, "epoch"))
                epoch = (uint64_t)m->ents[i].f[k].v.i;
        snapshot(m, epoch);
    }
}

static const char *const k_roles[3] = {"coordinator", "compute", "loader"}; /* by enum sl_role */

static void proc_event(sl_monitor *m, enum sl_role role, uint32_t rid, int pid, const char *state)
{
    mev *e = ev_begin(m, "proc", (uint64_t)role << 32 | rid);
    ev_str(e, "role", k_roles[role]);
    ev_int(e, "rid", rid);
    ev_int(e, "pid", pid);
    ev_str(e, "state", state);
    ev_int(e, "restarts", m->restarts[role]);
    publish(m, strcmp(state, "down") ? RETAIN_KEEP : RETAIN_FORGET);
}

void sl_monitor_config_set(sl_monitor *m, const sl_monitor_config *c)
{
    mev *e = ev_begin(m, "config", 0);
    ev_str(e, "model", c->model);
    ev_str(e, "instance", c->instance);
    ev_uint(e, "epoch", c->epoch);
    ev_int(e, "pid", getpid());
    ev_int(e, "n_ctx", c->n_ctx);
    ev_int(e, "n_batch", c->n_batch);
    ev_int(e, "max_sessions", c->max_sessions);
    ev_int(e, "n_units", c->n_units);
    ev_int(e, "ring_depth", c->ring_depth);
    ev_int(e, "threads", c->threads);
    publish(m, RETAIN_KEEP);
    m->max_sessions = c->max_sessions;
    if (c->restarted)
        m->restarts[SL_ROLE_COORDINATOR]++;
    proc_event(m, SL_ROLE_COORDINATOR, 0, getpid(), c->restarted ? "restarted" : "up");
}

/* ---- sampling ---------------------------------------------------------------- */

static void sample_procs(sl_monitor *m, const sl_layout *l)
{
    const enum sl_role roles[] = {SL_ROLE_WORKER, SL_ROLE_LOADER};
    for (int r = 0; r < 2; r++) {
        enum sl_role role = roles[r];
        uint32_t cap = sl_proctab_capacity(role);
        for (uint32_t rid = 0; rid < cap && rid < SL_PROCTAB_LOADERS; rid++) {
            sl_proc_ident id;
            enum sl_proc_state st = sl_proctab_check(l->procs, role, rid, 0, 0, &id);
            sl_proc_ident running = st == SL_PROC_ALIVE || st == SL_PROC_STALE ? id : 0;
            proc_seen *p = &m->procs[role][rid];
            if (p->ident && p->ident != running) {
                proc_event(m, role, rid, (int)sl_proc_pid(p->ident), "down");
                m->pending_down[role]++;
                p->ident = 0;
            }
            if (running && running != p->ident) {
                bool restarted = m->pending_down[role] > 0;
                if (restarted) {
                    m->pending_down[role]--;
                    m->restarts[role]++;
                }
                p->ident = running;
                proc_event(m, role, rid, (int)sl_proc_pid(running), restarted ? "restarted" : "up");
            }
        }
    }
}

static const char *const k_states[] = {"free", "wanted", "filling", "ready"};

static void sample_slots(sl_monitor *m, const sl_layout *l)
{
    uint32_t n = sl_slots_count(l->slots);
    for (uint32_t i = 0; i < n && i < MAX_SLOTS; i++) {
        uint64_t word = sl_slots_word(l->slots, i), fills, fill_ns;
        sl_slots_stats(l->slots, i, &fills, &fill_ns);
        bool used = i < l->plan->ring_slots;
        slot_seen *s = &m->slots[i];
        if (s->valid && s->word == word && s->fills == fills && s->used == used)
            continue;
        *s = (slot_seen){true, word, fills, used};
        sl_slot_view v = sl_slots_decode(word);
        mev *e = ev_begin(m, "slot", i);
        ev_int(e, "slot", i);
        ev_str(e, "state", k_states[v.state & 3]);
        ev_int(e, "unit", v.state == SL_SLOT_FREE ? -1 : (int64_t)v.unit);
        ev_int(e, "holders", __builtin_popcount(v.holders));
        ev_uint(e, "fills", fills);
        ev_float(e, "fill_ms", fill_ns / 1e6);
        ev_bool(e, "used", used);
        publish(m, RETAIN_KEEP);
    }
}

static void stats_event(sl_monitor *m, const sl_layout *l, uint32_t sessions, uint64_t now)
{
    const sl_layout_board *b = l->board;
    mev *e = ev_begin(m, "stats", 0);
    ev_float(e, "uptime_s", (now - m->t_start) / 1e9);
    ev_uint(e, "tokens", m->tokens);
    ev_uint(e, "steps", m->steps);
    ev_uint(e, "loaded_bytes", atomic_load_explicit(&b->loaded_bytes, memory_order_relaxed));
    ev_uint(e, "loaded_units", atomic_load_explicit(&b->loaded_units, memory_order_relaxed));
    ev_uint(e, "hits", atomic_load_explicit(&b->hits, memory_order_relaxed));
    ev_uint(e, "misses", atomic_load_explicit(&b->misses, memory_order_relaxed));
    ev_uint(e, "restarts", m->restarts[0] + m->restarts[1] + m->restarts[2]);
    ev_int(e, "sessions", sessions);
    ev_int(e, "max_sessions", m->max_sessions);
    ev_float(e, "paced_ms", m->paced_ms);
    ev_uint(e, "events", m->seq + 1); /* the seq this event gets */
    publish(m, RETAIN_KEEP);
}

/* Re-publishes the kept mem event with a new measured footprint. */
static void mem_resample(sl_monitor *m, uint64_t shm)
{
    m->last_shm = shm;
    m->ev = m->mem;
    for (uint32_t i = 0; i < m->ev.n; i++) {
        if (!strcmp(m->ev.f[i].name, "shm"))
            m->ev.f[i].v.i = (int64_t)shm;
        if (!strcmp(m->ev.f[i].name, "reason"))
            snprintf(m->ev.strs[m->ev.f[i].v.s], sizeof m->ev.strs[0], "sample");
    }
    m->mem = m->ev;
    publish(m, RETAIN_KEEP);
}

void sl_monitor_tick(sl_monitor *m, const sl_layout *l, uint32_t sessions)
{
    uint64_t now = mono_ns();
    if (now - m->t_sample < SL_MONITOR_SAMPLE_MS * 1000000ull)
        return;
    m->t_sample = now;
    sample_procs(m, l);
    sample_slots(m, l);
    if (now - m->t_stats >= SL_MONITOR_STATS_MS * 1000000ull) {
        m->t_stats = now;
        uint64_t shm = sl_layout_allocated(l);
        if (m->have_mem && shm != m->last_shm)
            mem_resample(m, shm);
        stats_event(m, l, sessions, now);
    }
}

/* ---- events from the coordinator ----------------------------------------- */

void sl_monitor_mem_set(sl_monitor *m, const sl_layout *l, const sl_monitor_mem *mem)
{
    const sl_plan *p = mem->plan;
    uint64_t ring = (uint64_t)p->ring_slots * p->slot_bytes;
    uint32_t pinned_units = 0;
    for (uint32_t i = 0; i < p->n_units; i++)
        pinned_units += p->units[i].pinned;
    m->last_shm = sl_layout_allocated(l);
    mev *e = ev_begin(m, "mem", 0);
    ev_uint(e, "budget", mem->budget);
    ev_uint(e, "used", p->total_bytes);
    ev_uint(e, "pinned", p->pinned_bytes);
    ev_uint(e, "ring", ring);
    ev_uint(e, "kv", p->kv_bytes);
    ev_uint(e, "act", p->act_bytes);
    ev_uint(e, "streamed", p->streamed_bytes);
    ev_uint(e, "min_budget", mem->min_budget);
    ev_uint(e, "shm", m->last_shm);
    ev_int(e, "units_pinned", pinned_units);
    ev_int(e, "ring_slots", p->ring_slots);
    ev_str(e, "reason", mem->reason);
    m->mem = *e;
    m->have_mem = true;
    publish(m, RETAIN_KEEP);
}

void sl_monitor_session(sl_monitor *m, uint64_t id, uint32_t session, uint32_t n_prompt, uint32_t n_predict,
                        uint32_t n_gen, const char *finish)
{
    mev *e = ev_begin(m, "session", session);
    ev_uint(e, "id", id);
    ev_int(e, "session", session);
    ev_str(e, "state", finish ? "end" : "start");
    ev_int(e, "n_prompt", n_prompt);
    ev_int(e, "n_predict", n_predict);
    ev_int(e, "n_gen", n_gen);
    ev_str(e, "finish", finish ? finish : "");
    publish(m, finish ? RETAIN_FORGET : RETAIN_KEEP);
}

void sl_monitor_step(sl_monitor *m, const sl_layout *l, uint32_t seqs, uint32_t tokens, double ms, double paced_ms,
                     uint64_t streamed, int status)
{
    const sl_layout_board *b = l->board;
    uint64_t loaded = atomic_load_explicit(&b->loaded_bytes, memory_order_relaxed);
    uint64_t hits = atomic_load_explicit(&b->hits, memory_order_relaxed);
    uint64_t misses = atomic_load_explicit(&b->misses, memory_order_relaxed);
    m->step_bytes = loaded - m->b_loaded;
    m->step_hits = hits - m->b_hits;
    m->step_misses = misses - m->b_misses;
    m->b_loaded = loaded;
    m->b_hits = hits;
    m->b_misses = misses;
    m->steps++;
    m->paced_ms += paced_ms;
    mev *e = ev_begin(m, "step", 0);
    ev_uint(e, "n", m->steps);
    ev_int(e, "seqs", seqs);
    ev_int(e, "tokens", tokens);
    ev_float(e, "ms", ms);
    ev_float(e, "paced_ms", paced_ms);
    ev_uint(e, "bytes", m->step_bytes);
    ev_uint(e, "hits", m->step_hits);
    ev_uint(e, "misses", m->step_misses);
    ev_uint(e, "streamed", streamed);
    ev_int(e, "status", status);
    publish(m, RETAIN_NONE);
}

void sl_monitor_experts(sl_monitor *m, const sl_expcache_stats *st, uint32_t slots)
{
    mev *e = ev_begin(m, "experts", 0);
    ev_uint(e, "used", st->used);
    ev_uint(e, "hits", st->hits);
    ev_uint(e, "prefetch_hits", st->prefetch_hits);
    ev_uint(e, "misses", st->misses);
    ev_uint(e, "prefetched", st->prefetched);
    ev_uint(e, "wasted", st->prefetch_wasted);
    ev_uint(e, "bytes", st->loaded_bytes);
    ev_float(e, "hit_rate", st->used ? (double)(st->hits + st->prefetch_hits) / (double)st->used : 1.0);
    ev_float(e, "wait_ms", (double)st->wait_ns / 1e6);
    ev_uint(e, "slots", slots);
    publish(m, RETAIN_NONE);
}

void sl_monitor_token(sl_monitor *m, uint64_t id, uint32_t session, uint64_t seq, int32_t tok, uint32_t n_gen,
                      double ms)
{
    m->tokens++;
    /* The session's entity follows its progress, so that a snapshot says
     * how far it got. */
    int i = find_entity(m, "session", session);
    for (uint32_t k = 0; i >= 0 && k < m->ents[i].n; k++)
        if (!strcmp(m->ents[i].f[k].name, "n_gen"))
            m->ents[i].f[k].v.i = n_gen;
    mev *e = ev_begin(m, "token", 0);
    ev_uint(e, "id", id);
    ev_int(e, "session", session);
    ev_uint(e, "seq", seq);
    ev_int(e, "tok", tok);
    ev_int(e, "n_gen", n_gen);
    ev_float(e, "ms", ms);
    ev_uint(e, "bytes", m->step_bytes);
    ev_uint(e, "hits", m->step_hits);
    ev_uint(e, "misses", m->step_misses);
    publish(m, RETAIN_NONE);
}

void sl_monitor_progress(sl_monitor *m, uint64_t id, uint32_t session, uint32_t fed, uint32_t total,
                         uint32_t step_tokens, uint32_t units_done, uint32_t units)
{
    mev *e = ev_begin(m, "progress", 0);
    ev_uint(e, "id", id);
    ev_int(e, "session", session);
    ev_int(e, "fed", fed);
    ev_int(e, "total", total);
    ev_int(e, "step_tokens", step_tokens);
    ev_int(e, "units_done", units_done);
    ev_int(e, "units", units);
    publish(m, RETAIN_NONE);
}

void sl_monitor_budget(sl_monitor *m, uint64_t from, uint64_t to, const char *source, const char *state,
                       uint64_t min_budget, int err)
{
    mev *e = ev_begin(m, "budget", 0);
    ev_uint(e, "from", from);
    ev_uint(e, "to", to);
    ev_str(e, "source", source);
    ev_str(e, "state", state);
    ev_uint(e, "min_budget", min_budget);
    ev_int(e, "error", err < 0 ? -err : err);
    publish(m, RETAIN_NONE);
}

void sl_monitor_pressure_set(sl_monitor *m, const sl_monitor_pressure *p)
{
    mev *e = ev_begin(m, "pressure", 0);
    ev_str(e, "state", p->state);
    ev_int(e, "stall_ms", p->stall_ms);
    ev_int(e, "window_ms", p->window_ms);
    ev_float(e, "some_avg10", p->some_avg10);
    ev_float(e, "full_avg10", p->full_avg10);
    ev_uint(e, "triggers", p->triggers);
    ev_str(e, "action", p->action);
    publish(m, RETAIN_KEEP);
}

void sl_monitor_thermal_set(sl_monitor *m, const sl_monitor_thermal *t)
{
    mev *e = ev_begin(m, "thermal", 0);
    ev_str(e, "state", t->state);
    ev_float(e, "temp_c", t->temp_c);
    ev_float(e, "limit_c", t->limit_c);
    ev_int(e, "zones", t->zones);
    ev_float(e, "duty", t->duty);
    ev_float(e, "paced_ms", t->paced_ms);
    publish(m, RETAIN_KEEP);
}
