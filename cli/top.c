/* `sluice top`: a terminal view of a coordinator's monitoring stream
 * (coordinator/monitor.h): throughput, storage reads, memory against the
 * budget, ring slots, sessions, processes and restarts, pressure and heat.
 *
 * It subscribes to everything, builds its state from the snapshot the
 * coordinator sends to a new subscriber and from the live events after
 * it, and redraws once per interval (plain ANSI: clear and home, when the
 * output is a terminal). Rates are differences of the coordinator's
 * once-a-second `stats` totals, so events lost by a slow terminal do not
 * skew them; lost events are counted from gaps in seq. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/cli.h"
#include "common/log.h"
#include "proto/endpoint.h"

#define MAX_PROCS 128
#define MAX_SLOTS 64
#define MAX_SESS 64
#define STR_CAP 64

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The fields of one event, copied out of the received bytes. */
typedef struct fields {
    bool valid;
    uint32_t n;
    char name[SL_PROTO_MAX_FIELDS][SL_PROTO_MAX_KIND + 1];
    sl_msg_val_type type[SL_PROTO_MAX_FIELDS];
    double num[SL_PROTO_MAX_FIELDS];
    char str[SL_PROTO_MAX_FIELDS][STR_CAP];
} fields;

static void fields_set(fields *f, const sl_msg_event *e)
{
    f->valid = true;
    f->n = e->n_fields;
    for (uint32_t i = 0; i < e->n_fields; i++) {
        const sl_msg_field *x = &e->fields[i];
        snprintf(f->name[i], sizeof f->name[i], "%.*s", (int)x->name.len, x->name.ptr);
        f->type[i] = x->type;
        f->str[i][0] = 0;
        switch (x->type) {
        case SL_VAL_BOOL: f->num[i] = x->val.b; break;
        case SL_VAL_INT: f->num[i] = (double)x->val.i; break;
        case SL_VAL_UINT: f->num[i] = (double)x->val.u; break;
        case SL_VAL_FLOAT: f->num[i] = x->val.f; break;
        case SL_VAL_STR:
            f->num[i] = 0;
            snprintf(f->str[i], sizeof f->str[i], "%.*s", (int)x->val.s.len, x->val.s.ptr);
            break;
        default: f->num[i] = 0; break;
        }
    }
}

static int fidx(const fields *f, const char *name)
{
    for (uint32_t i = 0; f->valid && i < f->n; i++)
        if (!strcmp(f->name[i], name))
            return (int)i;
    return -1;
}

static double num(const fields *f, const char *name)
{
    int i = fidx(f, name);
    return i < 0 ? 0 : f->num[i];
}

static const char *str(const fields *f, const char *name)
{
    int i = fidx(f, name);
    return i < 0 ? "" : f->str[i];
}

/* What the stream has said so far. */
typedef struct view {
    fields config, mem, pressure, thermal, stats, prev_stats, budget;
    fields procs[MAX_PROCS], slots[MAX_SLOTS], sess[MAX_SESS], progress[MAX_SESS];
    bool synced; /* a whole snapshot arrived */
    uint64_t last_seq, lost, events;
    double t_prev_stats;
} view;

static fields *proc_entry(view *v, const fields *f)
{
    const char *role = str(f, "role");
    int base = !strcmp(role, "coordinator") ? 0 : !strcmp(role, "compute") ? 2 : 24;
    int rid = (int)num(f, "rid");
    int k = base + rid;
    return rid >= 0 && k < MAX_PROCS ? &v->procs[k] : NULL;
}

/* Applies one event (a snapshot event restates a live kind). */
static void apply(view *v, const sl_msg_event *e)
{
    char kind[SL_PROTO_MAX_KIND + 1];
    snprintf(kind, sizeof kind, "%.*s", (int)e->kind.len, e->kind.ptr);
    if (v->last_seq && e->seq > v->last_seq + 1)
        v->lost += e->seq - v->last_seq - 1;
    if (e->seq > v->last_seq)
        v->last_seq = e->seq;
    v->events++;
    const char *k = kind;
    if (!strcmp(kind, "snapshot.begin")) {
        /* The snapshot restates every entity: forget what it will replace. */
        memset(v->procs, 0, sizeof v->procs);
        memset(v->slots, 0, sizeof v->slots);
        memset(v->sess, 0, sizeof v->sess);
        return;
    }
    if (!strcmp(kind, "snapshot.end")) {
        v->synced = true;
        return;
    }
    if (!strncmp(kind, "snapshot.", 9))
        k = kind + 9;
    fields f;
    fields_set(&f, e);
    if (!strcmp(k, "config")) {
        v->config = f;
    } else if (!strcmp(k, "mem")) {
        v->mem = f;
    } else if (!strcmp(k, "pressure")) {
        v->pressure = f;
    } else if (!strcmp(k, "thermal")) {
        v->thermal = f;
    } else if (!strcmp(k, "budget")) {
        v->budget = f;
    } else if (!strcmp(k, "stats")) {
        if (v->stats.valid && num(&f, "uptime_s") > num(&v->stats, "uptime_s"))
            v->prev_stats = v->stats;
        v->stats = f;
    } else if (!strcmp(k, "proc")) {
        fields *p = proc_entry(v, &f);
        if (p)
            *p = f;
        if (p && !strcmp(str(&f, "state"), "down"))
            p->valid = false;
    } else if (!strcmp(k, "slot")) {
        int i = (int)num(&f, "slot");
        if (i >= 0 && i < MAX_SLOTS)
            v->slots[i] = f;
    } else if (!strcmp(k, "session") || !strcmp(k, "progress")) {
        int i = (int)num(&f, "session");
        if (i < 0 || i >= MAX_SESS)
            return;
        if (!strcmp(k, "progress")) {
            v->progress[i] = f;
        } else if (!strcmp(str(&f, "state"), "end")) {
            v->sess[i].valid = false;
            v->progress[i].valid = false;
        } else {
            if (!v->sess[i].valid || num(&v->sess[i], "id") != num(&f, "id"))
                v->progress[i].valid = false;
            v->sess[i] = f;
        }
    } else if (!strcmp(k, "token")) {
        int i = (int)num(&f, "session");
        if (i >= 0 && i < MAX_SESS && v->sess[i].valid) {
            int g = fidx(&v->sess[i], "n_gen");
            if (g >= 0)
                v->sess[i].num[g] = num(&f, "n_gen");
        }
    }
}

static double mib(double b) { return b / 1048576.0; }

static void render(const view *v, FILE *out, bool tty)
{
    if (tty)
        fputs("\033[H\033[2J", out);
    const fields *c = &v->config;
    fprintf(out, "sluice top: %s on '%s' (coordinator pid %.0f, epoch %.0f)%s\n", str(c, "model"),
            str(c, "instance"), num(c, "pid"), num(c, "epoch"), v->synced ? "" : " [waiting for a snapshot]");
    /* Rates from the last two stats events. */
    double tps = 0, mbs = 0, sps = 0;
    if (v->prev_stats.valid && v->stats.valid) {
        double dt = num(&v->stats, "uptime_s") - num(&v->prev_stats, "uptime_s");
        if (dt > 0) {
            tps = (num(&v->stats, "tokens") - num(&v->prev_stats, "tokens")) / dt;
            sps = (num(&v->stats, "steps") - num(&v->prev_stats, "steps")) / dt;
            mbs = (num(&v->stats, "loaded_bytes") - num(&v->prev_stats, "loaded_bytes")) / dt / 1e6;
        }
    }
    double hits = num(&v->stats, "hits"), misses = num(&v->stats, "misses");
    fprintf(out, "throughput  %.1f tokens/s, %.1f steps/s, storage %.1f MB/s; %.0f tokens so far, units from "
                 "pinned memory %.1f%%\n",
            tps, sps, mbs, num(&v->stats, "tokens"), hits + misses > 0 ? 100.0 * hits / (hits + misses) : 0.0);
    const fields *m = &v->mem;
    double budget = num(m, "budget");
    char btext[48];
    if (budget >= 4.6e18)
        snprintf(btext, sizeof btext, "no budget (everything pinned)");
    else
        snprintf(btext, sizeof btext, "budget %.1f MiB", mib(budget));
    fprintf(out, "memory      %.1f MiB in use, %s (minimum %.1f); measured %.1f MiB of shared memory\n",
            mib(num(m, "used")), btext, mib(num(m, "min_budget")), mib(num(m, "shm")));
    fprintf(out, "            pinned %.1f MiB (%.0f of %.0f units), ring %.0f x %.1f MiB, KV %.1f MiB, activations "
                 "%.1f MiB; %.1f MiB streamed per step\n",
            mib(num(m, "pinned")), num(m, "units_pinned"), num(c, "n_units"), num(m, "ring_slots"),
            num(m, "ring_slots") > 0 ? mib(num(m, "ring")) / num(m, "ring_slots") : 0.0, mib(num(m, "kv")),
            mib(num(m, "act")), mib(num(m, "streamed")));
    if (v->budget.valid)
        fprintf(out, "            last budget change: %s, %.1f -> %.1f MiB, %s\n", str(&v->budget, "source"),
                mib(num(&v->budget, "from")), mib(num(&v->budget, "to")), str(&v->budget, "state"));
    const fields *p = &v->pressure;
    fprintf(out, "pressure    %s", str(p, "state"));
    if (num(p, "window_ms") > 0 && strcmp(str(p, "state"), "off") && strcmp(str(p, "state"), "unavailable"))
        fprintf(out, " (trigger %.0f ms per %.0f ms; some %.2f%%, full %.2f%% of the last 10 s)", num(p, "stall_ms"),
                num(p, "window_ms"), num(p, "some_avg10"), num(p, "full_avg10"));
    fprintf(out, ", %.0f triggers\n", num(p, "triggers"));
    const fields *t = &v->thermal;
    fprintf(out, "thermal     %s", str(t, "state"));
    if (num(t, "zones") > 0)
        fprintf(out, ", %.1f C over %.0f zones", num(t, "temp_c"), num(t, "zones"));
    if (num(t, "limit_c") > 0)
        fprintf(out, ", limit %.0f C, duty %.2f, %.0f ms paced", num(t, "limit_c"), num(t, "duty"),
                num(t, "paced_ms"));
    fputc('\n', out);
    int active = 0;
    for (int i = 0; i < MAX_SESS; i++)
        active += v->sess[i].valid;
    fprintf(out, "sessions    %d of %.0f\n", active, num(c, "max_sessions"));
    for (int i = 0; i < MAX_SESS; i++) {
        const fields *s = &v->sess[i];
        if (!s->valid)
            continue;
        fprintf(out, "  #%d request %.0f: prompt %.0f tokens, generated %.0f of %.0f", i, num(s, "id"),
                num(s, "n_prompt"), num(s, "n_gen"), num(s, "n_predict"));
        const fields *g = &v->progress[i];
        if (g->valid && num(g, "fed") < num(g, "total"))
            fprintf(out, "; prompt %.0f/%.0f, step at unit %.0f/%.0f", num(g, "fed"), num(g, "total"),
                    num(g, "units_done"), num(g, "units"));
        fputc('\n', out);
    }
    int n_slots = 0;
    for (int i = 0; i < MAX_SLOTS; i++)
        n_slots += v->slots[i].valid;
    fprintf(out, "ring        %d slots:", n_slots);
    for (int i = 0; i < MAX_SLOTS; i++) {
        const fields *s = &v->slots[i];
        if (!s->valid)
            continue;
        fprintf(out, " [%d %s", i, str(s, "state"));
        if (num(s, "unit") >= 0)
            fprintf(out, " unit %.0f", num(s, "unit"));
        fprintf(out, ", %.0f fills, last %.1f ms%s]", num(s, "fills"), num(s, "fill_ms"),
                num(s, "used") ? "" : ", unused");
    }
    fputc('\n', out);
    fprintf(out, "processes  ");
    for (int i = 0; i < MAX_PROCS; i++) {
        const fields *q = &v->procs[i];
        if (q->valid)
            fprintf(out, " %s %.0f (pid %.0f) %s;", str(q, "role"), num(q, "rid"), num(q, "pid"), str(q, "state"));
    }
    fprintf(out, " restarts %.0f\n", num(&v->stats, "restarts"));
    fprintf(out, "events      %llu received, %llu lost\n", (unsigned long long)v->events,
            (unsigned long long)v->lost);
    if (!tty)
        fputc('\n', out);
    fflush(out);
}

static void help(FILE *out)
{
    fprintf(out, "usage: sluice top --connect ENDPOINT [--interval S] [--once | --count N]\n\n"
                 "A live view of a coordinator's monitoring stream (its --monitor endpoint):\n"
                 "tokens/s, storage MB/s, memory against the budget, ring slots, sessions,\n"
                 "processes and restarts, memory pressure and the thermal governor.\n\n"
                 "  --connect EP   the coordinator's monitor endpoint (required)\n"
                 "  --interval S   seconds between redraws (default 1)\n"
                 "  --once         wait for the snapshot, print one view after one interval, exit\n"
                 "  --count N      print N views, then exit\n"
                 "  --timeout S    with --once / --count: give up after S seconds without a\n"
                 "                 snapshot (default 10; exit status 1)\n"
                 "  -h, --help     this text\n");
}

int sl_cmd_top(int argc, char **argv)
{
    enum { OPT_CONNECT = 256, OPT_INTERVAL, OPT_ONCE, OPT_COUNT, OPT_TIMEOUT };
    static const struct option opts[] = {{"connect", required_argument, 0, OPT_CONNECT},
                                         {"interval", required_argument, 0, OPT_INTERVAL},
                                         {"once", no_argument, 0, OPT_ONCE},
                                         {"count", required_argument, 0, OPT_COUNT},
                                         {"timeout", required_argument, 0, OPT_TIMEOUT},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *connect = NULL;
    double interval = 1.0, timeout = 10.0;
    long long count = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_CONNECT: connect = optarg; break;
        case OPT_INTERVAL:
            if (sl_cli_float("--interval", optarg, 0.05, 3600, &interval))
                return 2;
            break;
        case OPT_ONCE: count = 1; break;
        case OPT_COUNT:
            if (sl_cli_int("--count", optarg, 1, 1000000, &count))
                return 2;
            break;
        case OPT_TIMEOUT:
            if (sl_cli_float("--timeout", optarg, 0.1, 86400, &timeout))
                return 2;
            break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (!connect || optind != argc) {
        if (!connect)
            fprintf(stderr, "sluice top: --connect ENDPOINT is required\n");
        help(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int status = 1;
    void *zctx = zmq_ctx_new(), *sock = NULL;
    uint8_t *buf = malloc(SL_PROTO_MAX_MSG);
    view *v = calloc(1, sizeof *v);
    if (!zctx || !buf || !v || sl_endpoint_open(zctx, ZMQ_SUB, connect, false, &sock))
        goto done;
    const bool tty = isatty(STDOUT_FILENO);
    const double t0 = now_s();
    double next = 0; /* first frame: one interval after the snapshot */
    long long frames = 0;
    while (!g_stop) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 50);
        for (int k = 0; k < 10000 && (it.revents & ZMQ_POLLIN); k++) {
            sl_envelope env;
            sl_msg m;
            int rc = sl_endpoint_recv_msg(sock, &env, buf, SL_PROTO_MAX_MSG, &m, SL_EP_DONTWAIT);
            if (rc == -SL_EAGAIN)
                break;
            if (rc == 0 && m.type == SL_MSG_EVENT)
                apply(v, &m.event);
        }
        double t = now_s();
        if (!v->synced) {
            if (count && t - t0 > timeout) {
                fprintf(stderr, "sluice top: no snapshot from %s within %.0f s\n", connect, timeout);
                goto done;
            }
            continue;
        }
        if (!next)
            next = t + interval;
        if (t >= next) {
            render(v, stdout, tty);
            next += interval;
            if (next < t)
                next = t + interval;
            if (count && ++frames >= count)
                break;
        }
    }
    status = 0;
done:
    sl_endpoint_close(sock);
    if (zctx)
        zmq_ctx_term(zctx);
    free(buf);
    free(v);
    return status;
}
