/* A generate client with Lazy Pirate retries; see client.h. */
#include "proto/client.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "common/log.h"
#include "proto/endpoint.h"

#define MAX_BACKOFF 8.0 /* the resend interval grows to at most this many times retry_s */

struct sl_client {
    void *zctx, *sock;
    char *endpoint;
    sl_client_opts o;
    sl_msg req;          /* copy of the request; resume_from set per send */
    bool started;
    uint64_t next_seq;   /* the first token event not yet delivered */
    uint64_t probe_id;
    uint64_t epoch;      /* coordinator epoch from the last probe reply; 0 none yet */
    double last_heard;   /* any message from the coordinator (or the start) */
    double last_try;     /* the last event of ours, or the last (re)send */
    double last_token;   /* when the last token event was delivered */
    double interval;     /* current resend interval */
    double base;         /* the interval after an event: retry_s, or twice the last gap between
                          * token events when that is longer (a model that streams its weights
                          * takes seconds per token: silence between tokens is then normal) */
    bool probe_resent;   /* sent the request again after a probe reply since last_try */
    sl_client_stats stats;
    uint8_t *in, *out;   /* SL_PROTO_MAX_MSG each */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int sl_client_new(void *zctx, const char *endpoint, const sl_client_opts *opts, sl_client **out)
{
    *out = NULL;
    sl_client *c = calloc(1, sizeof *c);
    if (c) {
        c->endpoint = strdup(endpoint);
        c->in = malloc(SL_PROTO_MAX_MSG);
        c->out = malloc(SL_PROTO_MAX_MSG);
    }
    if (!c || !c->endpoint || !c->in || !c->out) {
        SL_ERROR("out of memory");
        sl_client_free(c);
        return -SL_ENOMEM;
    }
    c->zctx = zctx;
    c->o.retry_s = opts && opts->retry_s > 0 ? opts->retry_s : SL_CLIENT_RETRY_S;
    c->o.give_up_s = opts && opts->give_up_s > 0 ? opts->give_up_s : SL_CLIENT_GIVE_UP_S;
    int rc = sl_endpoint_open(zctx, ZMQ_DEALER, endpoint, false, &c->sock);
    if (rc) {
        sl_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void sl_client_free(sl_client *c)
{
    if (!c)
        return;
    sl_endpoint_close(c->sock);
    free(c->endpoint);
    free(c->in);
    free(c->out);
    free(c);
}

/* Sends the request with resume_from = next_seq, and a status probe when
 * asked. A send that cannot go out now (a full queue) is not an error:
 * the next retry sends again. */
static int send_request(sl_client *c, bool probe)
{
    c->req.generate.resume_from = c->next_seq;
    int rc = sl_endpoint_send_msg(c->sock, NULL, &c->req, c->out, SL_PROTO_MAX_MSG, SL_EP_DONTWAIT);
    if (rc == 0 && probe) {
        sl_msg m;
        sl_msg_init(&m, SL_MSG_STATUS);
        m.id = ++c->probe_id;
        rc = sl_endpoint_send_msg(c->sock, NULL, &m, c->out, SL_PROTO_MAX_MSG, SL_EP_DONTWAIT);
    }
    return rc == -SL_EAGAIN ? 0 : rc;
}

int sl_client_start(sl_client *c, const sl_msg *req)
{
    if (req->type != SL_MSG_GENERATE || req->id == 0) {
        SL_ERROR("a client request is a generate with an id >= 1 (got type %s, id %llu)",
                 sl_msg_type_name(req->type), (unsigned long long)req->id);
        return -SL_EINVAL;
    }
    c->req = *req;
    c->next_seq = 0;
    /* Probe ids only need to differ from the request's. */
    c->probe_id = req->id ^ (1ull << 63);
    c->started = true;
    c->last_heard = c->last_try = now_s();
    c->interval = c->base = c->o.retry_s;
    c->probe_resent = true;
    int rc = send_request(c, false);
    return rc ? -SL_EINVAL : 0;
}

/* The request again, with a status probe. When nothing at all was heard
 * since the last try, the connection itself is suspect (a coordinator that
 * died, a half-open TCP connection): Lazy Pirate closes the socket, which
 * drops whatever it had queued, and opens a new one. Otherwise the same
 * socket is kept, so the coordinator answers wherever this client is. */
static int resend(sl_client *c, double t)
{
    if (c->last_heard <= c->last_try) {
        sl_endpoint_close(c->sock);
        c->sock = NULL;
        int rc = sl_endpoint_open(c->zctx, ZMQ_DEALER, c->endpoint, false, &c->sock);
        if (rc)
            return rc;
    }
    c->stats.resends++;
    c->last_try = t;
    c->probe_resent = false;
    return send_request(c, true);
}

int sl_client_next(sl_client *c, int timeout_ms, sl_msg *ev)
{
    if (!c->started)
        return -SL_EINVAL;
    const double deadline = now_s() + timeout_ms / 1000.0;
    for (;;) {
        double t = now_s();
        if (t - c->last_heard > c->o.give_up_s) {
            SL_ERROR("no reply from the coordinator at %s for %.0f s (%u resends)", c->endpoint,
                     t - c->last_heard, c->stats.resends);
            return -SL_EIO;
        }
        if (t - c->last_try > c->interval) {
            int rc = resend(c, t);
            if (rc)
                return rc;
            c->interval = c->interval * 2 < c->o.retry_s * MAX_BACKOFF ? c->interval * 2 : c->o.retry_s * MAX_BACKOFF;
        }
        double wait = deadline - t;
        double retry_in = c->last_try + c->interval - t;
        if (retry_in < wait)
            wait = retry_in;
        if (wait < 0)
            wait = 0;
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(wait * 1000.0) + 1) < 0 && zmq_errno() != EINTR) {
            SL_ERROR("polling the socket to %s: %s", c->endpoint, zmq_strerror(zmq_errno()));
            return -SL_EIO;
        }
        while (it.revents & ZMQ_POLLIN) {
            int rc = sl_endpoint_recv_msg(c->sock, NULL, c->in, SL_PROTO_MAX_MSG, ev, SL_EP_DONTWAIT);
            if (rc == -SL_EAGAIN)
                break;
            if (rc)
                continue; /* a message we cannot read: not ours to answer */
            if (ev->type == SL_MSG_STATUS_REPLY) {
                c->last_heard = now_s();
                if (c->epoch && ev->status_reply.epoch != c->epoch)
                    c->stats.restarts++;
                c->epoch = ev->status_reply.epoch;
                /* The coordinator is there but our request was silent: it
                 * may have read a copy from a closed socket last and be
                 * answering there. Sending once more now, after everything
                 * queued before the probe, points it back here. */
                if (!c->probe_resent) {
                    c->probe_resent = true;
                    int rs = send_request(c, false);
                    if (rs)
                        return rs;
                }
                continue;
            }
            if (ev->id != c->req.id)
                continue; /* a stale reply to something else */
            c->last_heard = now_s();
            if (ev->type == SL_MSG_ERROR)
                return 1;
            if (ev->type != SL_MSG_TOKEN || ev->token.seq != c->next_seq)
                continue; /* a duplicate, or ahead of a gap the resend will fill */
            /* From the second token on: the gap since the one before. */
            if (c->next_seq++ > 0) {
                const double gap2 = 2 * (c->last_heard - c->last_token), cap = c->o.retry_s * MAX_BACKOFF;
                c->base = gap2 < c->o.retry_s ? c->o.retry_s : gap2 > cap ? cap : gap2;
            }
            c->last_try = c->last_token = c->last_heard;
            c->interval = c->base;
            return 1;
        }
        if (now_s() >= deadline)
            return 0;
    }
}

sl_client_stats sl_client_get_stats(const sl_client *c) { return c->stats; }
