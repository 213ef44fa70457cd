/* The gateway's coordinator connection: status polling, monitor events,
 * cancels, and request-reply calls; see backend.h. */
#include "gateway/backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "common/log.h"
#include "proto/endpoint.h"

#define POLL_MS 100
#define STATUS_EVERY_S 1.0   /* status requests while the coordinator answers */
#define STATUS_DOWN_S 0.25   /* ... and while it does not (start-up) */
#define DOWN_AFTER_S 3.5     /* no status reply for this long: down */
#define REOPEN_AFTER_S 2.0   /* no reply for this long: a new socket */
#define MAX_CANCELS 256
#define CALL_RETRY_S 1.0

struct sl_backend {
    void *zctx;
    char *endpoint, *monitor;
    pthread_t thread;
    bool running;
    _Atomic bool stop;
    _Atomic uint64_t next_id;
    int wake_fd;
    pthread_mutex_t mu;
    sl_backend_status st;       /* under mu */
    uint64_t cancels[MAX_CANCELS]; /* under mu */
    uint32_t n_cancels;
    /* thread-owned */
    void *sock, *sub;
    uint8_t *in, *out;
    double last_reply, last_status_sent, opened_at;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t sl_backend_new_id(sl_backend *b)
{
    uint64_t id;
    do
        id = atomic_fetch_add(&b->next_id, 1) & ~(1ull << 63); /* the top bit is the client's probe ids */
    while (id == 0);
    return id;
}

/* A field of a monitor event as a number, or -1 when absent. */
static double event_num(const sl_msg_event *ev, const char *name)
{
    for (uint32_t i = 0; i < ev->n_fields; i++) {
        const sl_msg_field *f = &ev->fields[i];
        if (f->name.len != strlen(name) || memcmp(f->name.ptr, name, f->name.len))
            continue;
        switch (f->type) {
        case SL_VAL_INT: return (double)f->val.i;
        case SL_VAL_UINT: return (double)f->val.u;
        case SL_VAL_FLOAT: return f->val.f;
        default: return -1;
        }
    }
    return -1;
}

static void on_reply(sl_backend *b, const sl_msg *m)
{
    if (m->type != SL_MSG_STATUS_REPLY)
        return; /* answers to cancels of requests that had already ended */
    const sl_msg_status_reply *r = &m->status_reply;
    pthread_mutex_lock(&b->mu);
    sl_backend_status *st = &b->st;
    if (st->epoch && r->epoch != st->epoch)
        st->restarts++;
    st->up = st->ever_up = true;
    sl_msg_str_copy(r->model, st->model, sizeof st->model);
    st->n_ctx = r->n_ctx;
    st->n_vocab = r->n_vocab;
    st->sessions = r->sessions;
    st->max_sessions = r->max_sessions;
    st->loaders = r->loaders;
    st->workers = r->workers;
    st->mem_budget = r->mem_budget;
    st->mem_used = r->mem_used;
    st->pinned = r->pinned;
    st->epoch = r->epoch;
    pthread_mutex_unlock(&b->mu);
}

static uint64_t count(double v) { return v > 0 ? (uint64_t)v : 0; }

static void on_event(sl_backend *b, const sl_msg *m)
{
    const sl_msg_event *ev = &m->event;
    if (m->type != SL_MSG_EVENT)
        return;
    bool step = ev->kind.len == 4 && !memcmp(ev->kind.ptr, "step", 4);
    bool stats = (ev->kind.len == 5 && !memcmp(ev->kind.ptr, "stats", 5)) ||
                 (ev->kind.len == 14 && !memcmp(ev->kind.ptr, "snapshot.stats", 14));
    pthread_mutex_lock(&b->mu);
    sl_backend_status *st = &b->st;
    if (step) {
        st->step_events++;
        st->step_seqs += count(event_num(ev, "seqs"));
    } else if (stats) {
        st->monitored = true;
        st->steps = count(event_num(ev, "steps"));
        st->tokens = count(event_num(ev, "tokens"));
        st->loaded_bytes = count(event_num(ev, "loaded_bytes"));
        st->hits = count(event_num(ev, "hits"));
        st->misses = count(event_num(ev, "misses"));
        st->proc_restarts = count(event_num(ev, "restarts"));
    }
    pthread_mutex_unlock(&b->mu);
}

static void send_msg(sl_backend *b, const sl_msg *m)
{
    int rc = sl_endpoint_send_msg(b->sock, NULL, m, b->out, SL_PROTO_MAX_MSG, SL_EP_DONTWAIT);
    if (rc && rc != -SL_EAGAIN)
        SL_WARN("cannot send %s to %s: %s", sl_msg_type_name(m->type), b->endpoint, sl_strerror(rc));
}

static void *run(void *arg)
{
    sl_backend *b = arg;
    while (!atomic_load(&b->stop)) {
        double t = now_s();
        /* Lazy Pirate for the status socket: whatever was queued on a
         * socket nobody answers is dropped with it. */
        if (t - b->last_reply > REOPEN_AFTER_S && t - b->opened_at > REOPEN_AFTER_S) {
            sl_endpoint_close(b->sock);
            b->sock = NULL;
            if (sl_endpoint_open(b->zctx, ZMQ_DEALER, b->endpoint, false, &b->sock) == 0)
                b->opened_at = t;
        }
        if (t - b->last_reply > DOWN_AFTER_S) {
            pthread_mutex_lock(&b->mu);
            b->st.up = false;
            pthread_mutex_unlock(&b->mu);
        }
        if (!b->sock) {
            usleep(POLL_MS * 1000);
            continue;
        }
        bool up = t - b->last_reply <= DOWN_AFTER_S;
        if (t - b->last_status_sent >= (up ? STATUS_EVERY_S : STATUS_DOWN_S)) {
            sl_msg m;
            sl_msg_init(&m, SL_MSG_STATUS);
            m.id = sl_backend_new_id(b);
            send_msg(b, &m);
            b->last_status_sent = t;
        }
        uint64_t ids[MAX_CANCELS];
        pthread_mutex_lock(&b->mu);
        uint32_t n = b->n_cancels;
        memcpy(ids, b->cancels, n * sizeof ids[0]);
        b->n_cancels = 0;
        pthread_mutex_unlock(&b->mu);
        for (uint32_t i = 0; i < n; i++) {
            sl_msg m;
            sl_msg_init(&m, SL_MSG_CANCEL);
            m.id = ids[i];
            send_msg(b, &m);
        }
        zmq_pollitem_t items[3] = {{b->sock, 0, ZMQ_POLLIN, 0}, {NULL, b->wake_fd, ZMQ_POLLIN, 0},
                                   {b->sub, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, b->sub ? 3 : 2, POLL_MS) < 0 && zmq_errno() != EINTR) {
            SL_ERROR("polling the sockets to %s: %s", b->endpoint, zmq_strerror(zmq_errno()));
            usleep(POLL_MS * 1000);
            continue;
        }
        if (items[1].revents) {
            uint64_t v;
            ssize_t r = read(b->wake_fd, &v, sizeof v);
            (void)r;
        }
        sl_msg m;
        while (items[0].revents &&
               sl_endpoint_recv_msg(b->sock, NULL, b->in, SL_PROTO_MAX_MSG, &m, SL_EP_DONTWAIT) != -SL_EAGAIN) {
            b->last_reply = now_s();
            on_reply(b, &m);
        }
        sl_envelope env;
        while (b->sub && items[2].revents &&
               sl_endpoint_recv_msg(b->sub, &env, b->in, SL_PROTO_MAX_MSG, &m, SL_EP_DONTWAIT) != -SL_EAGAIN)
            on_event(b, &m);
    }
    return NULL;
}

int sl_backend_new(const char *endpoint, const char *monitor, sl_backend **out)
{
    *out = NULL;
    sl_backend *b = calloc(1, sizeof *b);
    if (!b) {
        SL_ERROR("out of memory");
        return -SL_ENOMEM;
    }
    pthread_mutex_init(&b->mu, NULL);
    b->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    b->endpoint = strdup(endpoint);
    b->monitor = monitor ? strdup(monitor) : NULL;
    b->in = malloc(SL_PROTO_MAX_MSG);
    b->out = malloc(SL_PROTO_MAX_MSG);
    b->zctx = zmq_ctx_new();
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
    /* Random high bits: ids of this gateway differ from every other
     * client's (the coordinator tells requests apart by id alone). */
    atomic_store(&b->next_id, seed << 24);
    int rc = -SL_ENOMEM;
    if (b->wake_fd < 0 || !b->endpoint || (monitor && !b->monitor) || !b->in || !b->out || !b->zctx) {
        SL_ERROR("out of memory (or no eventfd: %s)", strerror(errno));
        goto fail;
    }
    if ((rc = sl_endpoint_open(b->zctx, ZMQ_DEALER, endpoint, false, &b->sock)))
        goto fail;
    if (monitor && (rc = sl_endpoint_open(b->zctx, ZMQ_SUB, monitor, false, &b->sub)))
        goto fail;
    /* Only the kinds /metrics reads: the stream also has an event per token
     * and per slot change. */
    static const char *const kinds[] = {"stats", "step", "snapshot.stats"};
    for (size_t i = 0; b->sub && i < sizeof kinds / sizeof kinds[0]; i++)
        if (zmq_setsockopt(b->sub, ZMQ_SUBSCRIBE, kinds[i], strlen(kinds[i])) != 0) {
            SL_ERROR("subscribing to %s on %s: %s", kinds[i], monitor, zmq_strerror(zmq_errno()));
            rc = -SL_EIO;
            goto fail;
        }
    if (b->sub && zmq_setsockopt(b->sub, ZMQ_UNSUBSCRIBE, "", 0) != 0) {
        SL_ERROR("unsubscribing from everything on %s: %s", monitor, zmq_strerror(zmq_errno()));
        rc = -SL_EIO;
        goto fail;
    }
    b->opened_at = now_s();
    b->last_reply = -1e9;
    b->last_status_sent = -1e9;
    if (pthread_create(&b->thread, NULL, run, b)) {
        SL_ERROR("cannot start the coordinator thread");
        rc = -SL_ENOMEM;
        goto fail;
    }
    b->running = true;
    *out = b;
    return 0;
fail:
    sl_backend_free(b);
    return rc;
}

void sl_backend_free(sl_backend *b)
{
    if (!b)
        return;
    if (b->running) {
        atomic_store(&b->stop, true);
        pthread_join(b->thread, NULL);
    }
    sl_endpoint_close(b->sock);
    sl_endpoint_close(b->sub);
    if (b->zctx)
        zmq_ctx_term(b->zctx);
    if (b->wake_fd >= 0)
        close(b->wake_fd);
    pthread_mutex_destroy(&b->mu);
    free(b->endpoint);
    free(b->monitor);
    free(b->in);
    free(b->out);
    free(b);
}

void sl_backend_status_get(sl_backend *b, sl_backend_status *out)
{
    pthread_mutex_lock(&b->mu);
    *out = b->st;
    pthread_mutex_unlock(&b->mu);
}

void sl_backend_cancel(sl_backend *b, uint64_t id)
{
    pthread_mutex_lock(&b->mu);
    bool queued = b->n_cancels < MAX_CANCELS;
    if (queued)
        b->cancels[b->n_cancels++] = id;
    pthread_mutex_unlock(&b->mu);
    if (!queued) {
        SL_WARN("%d cancels are waiting already; dropping the cancel of request %llu", MAX_CANCELS,
                (unsigned long long)id);
        return;
    }
    uint64_t one = 1;
    ssize_t r = write(b->wake_fd, &one, sizeof one);
    (void)r;
}

int sl_backend_generate(sl_backend *b, sl_msg *req, sl_client **out)
{
    req->id = sl_backend_new_id(b);
    int rc = sl_client_new(b->zctx, b->endpoint, NULL, out);
    if (rc)
        return rc;
    if ((rc = sl_client_start(*out, req))) {
        sl_client_free(*out);
        *out = NULL;
    }
    return rc;
}

int sl_backend_call(sl_backend *b, sl_msg *req, uint8_t **buf, sl_msg *reply, double timeout_s)
{
    *buf = NULL;
    req->id = sl_backend_new_id(b);
    uint8_t *out = malloc(SL_PROTO_MAX_MSG), *in = malloc(SL_PROTO_MAX_MSG);
    void *sock = NULL;
    int rc = -SL_ENOMEM;
    size_t len;
    if (!out || !in) {
        SL_ERROR("out of memory");
        goto done;
    }
    if ((rc = sl_msg_pack(req, out, SL_PROTO_MAX_MSG, &len)))
        goto done;
    const double t0 = now_s();
    double interval = CALL_RETRY_S;
    rc = -SL_EIO;
    while (now_s() - t0 < timeout_s) {
        /* Each try on a new socket: a reply to an old one is not waited for. */
        sl_endpoint_close(sock);
        sock = NULL;
        if (sl_endpoint_open(b->zctx, ZMQ_DEALER, b->endpoint, false, &sock) ||
            sl_endpoint_send(sock, NULL, out, len, SL_EP_DONTWAIT)) {
            usleep(100000);
            continue;
        }
        double until = now_s() + interval;
        if (until > t0 + timeout_s)
            until = t0 + timeout_s;
        for (double t = now_s(); t < until; t = now_s()) {
            zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, (long)((until - t) * 1000) + 1) <= 0)
                continue;
            if (sl_endpoint_recv_msg(sock, NULL, in, SL_PROTO_MAX_MSG, reply, SL_EP_DONTWAIT))
                continue;
            if (reply->id != req->id)
                continue;
            *buf = in;
            in = NULL;
            rc = 0;
            goto done;
        }
        interval *= 2;
    }
    SL_ERROR("no reply to %s from the coordinator at %s in %.0f s", sl_msg_type_name(req->type), b->endpoint,
             timeout_s);
done:
    sl_endpoint_close(sock);
    free(in);
    free(out);
    return rc;
}
