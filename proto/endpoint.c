/* ZeroMQ socket helpers and message framing; see endpoint.h. */
#include "proto/endpoint.h"

#include <errno.h>
#include <string.h>
#include <zmq.h>

#include "common/log.h"

/* XPUB: a bounded queue per subscriber that drops rather than blocks, and
 * every subscription passed up (a publisher answers each with a snapshot).
 * Set before binding: a listener copies the options it is bound with. */
static void xpub_options(void *s, const char **what)
{
    int hwm = SL_EP_XPUB_HWM, zero = 0, one = 1;
    if (zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0)
        *what = "ZMQ_SNDHWM";
    else if (zmq_setsockopt(s, ZMQ_XPUB_NODROP, &zero, sizeof zero) != 0)
        *what = "ZMQ_XPUB_NODROP";
    else if (zmq_setsockopt(s, ZMQ_XPUB_VERBOSE, &one, sizeof one) != 0)
        *what = "ZMQ_XPUB_VERBOSE";
}

int sl_endpoint_open(void *zctx, int type, const char *addr, bool bind, void **out)
{
    *out = NULL;
    void *s = zmq_socket(zctx, type);
    if (!s) {
        SL_ERROR("zmq_socket(type %d): %s", type, zmq_strerror(errno));
        return -SL_EIO;
    }
    int64_t maxmsg = (int64_t)SL_PROTO_MAX_MSG;
    int zero = 0, one = 1;
    const char *what = NULL;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0)
        what = "ZMQ_MAXMSGSIZE";
    else if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) != 0)
        what = "ZMQ_LINGER";
    else if (type == ZMQ_ROUTER && zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0)
        what = "ZMQ_ROUTER_MANDATORY";
    else if (type == ZMQ_SUB && zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0) != 0)
        what = "ZMQ_SUBSCRIBE";
    else if (type == ZMQ_XPUB)
        xpub_options(s, &what);
    if (what) {
        SL_ERROR("setting %s on a socket of type %d: %s", what, type, zmq_strerror(errno));
        zmq_close(s);
        return -SL_EIO;
    }
    if ((bind ? zmq_bind(s, addr) : zmq_connect(s, addr)) != 0) {
        int e = errno;
        SL_ERROR("%s %s: %s", bind ? "binding" : "connecting to", addr, zmq_strerror(e));
        zmq_close(s);
        return e == EINVAL || e == ENAMETOOLONG || e == EPROTONOSUPPORT || e == ENOENT ? -SL_EINVAL : -SL_EIO;
    }
    *out = s;
    return 0;
}

void sl_endpoint_close(void *sock)
{
    if (sock)
        zmq_close(sock);
}

void sl_envelope_set(sl_envelope *env, const char *s)
{
    size_t n = strlen(s);
    if (n > sizeof env->id)
        n = sizeof env->id;
    memcpy(env->id, s, n);
    env->id_len = (uint8_t)n;
    env->delim = false;
}

/* Maps a failed zmq send/recv to an sl_err; logs the unexpected ones. */
static int zerr(const char *func, const char *what)
{
    int e = errno;
    if (e == EAGAIN || e == EINTR)
        return -SL_EAGAIN;
    if (e == EHOSTUNREACH)
        return -SL_ENOTFOUND;
    sl_log(SL_LOG_ERROR, func, "%s: %s", what, zmq_strerror(e));
    return -SL_EIO;
}

int sl_endpoint_send(void *sock, const sl_envelope *env, const uint8_t *buf, size_t len, unsigned flags)
{
    if (len > SL_PROTO_MAX_MSG) {
        SL_ERROR("message of %zu bytes, at most %zu allowed", len, (size_t)SL_PROTO_MAX_MSG);
        return -SL_ERANGE;
    }
    int zf = (flags & SL_EP_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    /* Once the first frame is accepted the rest of the message is too
     * (libzmq queues multipart messages whole), so only the first send can
     * report EAGAIN or an unknown peer. */
    if (env) {
        if (zmq_send(sock, env->id, env->id_len, zf | ZMQ_SNDMORE) < 0)
            return zerr(__func__, "sending the envelope");
        if (env->delim && zmq_send(sock, "", 0, ZMQ_SNDMORE) < 0)
            return zerr(__func__, "sending the delimiter");
    }
    if (zmq_send(sock, buf, len, env ? 0 : zf) < 0)
        return zerr(__func__, "sending the message");
    return 0;
}

/* Receives one frame into f (initialised here); EINTR after the first frame
 * of a message is retried, since the rest is already queued. */
static int recv_frame(void *sock, zmq_msg_t *f, int zf, bool first)
{
    zmq_msg_init(f);
    for (;;) {
        if (zmq_msg_recv(f, sock, zf) >= 0)
            return 0;
        if (errno == EINTR && !first)
            continue;
        int rc = zerr("sl_endpoint_recv", "receiving");
        zmq_msg_close(f);
        return rc;
    }
}

/* Drains what is left of a message whose last frame read was f. */
static void drain(void *sock, zmq_msg_t *f)
{
    bool more = zmq_msg_more(f);
    zmq_msg_close(f);
    while (more) {
        if (recv_frame(sock, f, 0, false) < 0)
            return;
        more = zmq_msg_more(f);
        zmq_msg_close(f);
    }
}

int sl_endpoint_recv(void *sock, sl_envelope *env, uint8_t *buf, size_t cap, size_t *len, unsigned flags)
{
    *len = 0;
    if (env) {
        env->id_len = 0;
        env->delim = false;
    }
    zmq_msg_t f;
    int rc = recv_frame(sock, &f, (flags & SL_EP_DONTWAIT) ? ZMQ_DONTWAIT : 0, true);
    if (rc < 0)
        return rc;
    unsigned frame = 0;
    if (env) {
        size_t n = zmq_msg_size(&f);
        if (!zmq_msg_more(&f) || n == 0 || n > sizeof env->id) {
            SL_ERROR("expected an envelope frame of 1..%zu bytes before the message, got %zu bytes%s",
                     sizeof env->id, n, zmq_msg_more(&f) ? "" : " and nothing after");
            drain(sock, &f);
            return -SL_EFORMAT;
        }
        memcpy(env->id, zmq_msg_data(&f), n);
        env->id_len = (uint8_t)n;
        zmq_msg_close(&f);
        if ((rc = recv_frame(sock, &f, 0, false)) < 0)
            return rc;
        frame++;
    }
    if (zmq_msg_size(&f) == 0 && zmq_msg_more(&f)) { /* a REQ-style delimiter */
        if (env)
            env->delim = true;
        zmq_msg_close(&f);
        if ((rc = recv_frame(sock, &f, 0, false)) < 0)
            return rc;
        frame++;
    }
    size_t n = zmq_msg_size(&f);
    if (zmq_msg_more(&f)) {
        SL_ERROR("more frames than expected after frame %u (%zu bytes)", frame, n);
        drain(sock, &f);
        return -SL_EFORMAT;
    }
    if (n > cap) {
        SL_ERROR("message of %zu bytes, the buffer holds %zu", n, cap);
        zmq_msg_close(&f);
        return -SL_ERANGE;
    }
    if (n)
        memcpy(buf, zmq_msg_data(&f), n);
    *len = n;
    zmq_msg_close(&f);
    return 0;
}

int sl_endpoint_send_msg(void *sock, const sl_envelope *env, const sl_msg *m, uint8_t *scratch, size_t cap,
                         unsigned flags)
{
    size_t len;
    int rc = sl_msg_pack(m, scratch, cap, &len);
    return rc < 0 ? rc : sl_endpoint_send(sock, env, scratch, len, flags);
}

int sl_endpoint_recv_msg(void *sock, sl_envelope *env, uint8_t *buf, size_t cap, sl_msg *m, unsigned flags)
{
    size_t len;
    memset(m, 0, sizeof *m);
    int rc = sl_endpoint_recv(sock, env, buf, cap, &len, flags);
    return rc < 0 ? rc : sl_msg_unpack(buf, len, m);
}
