/* ZeroMQ sockets the way every sluice process uses them, and the framing
 * of protocol messages (proto/msg.h) on them.
 *
 * Framing. A protocol message is one frame. What comes before it:
 *   DEALER -> ROUTER   [message]                 the ROUTER sees [id][message]
 *   ROUTER -> DEALER   [id][message]             the DEALER sees [message]
 *   XPUB   -> SUB      [topic][message]          topic = the event's kind
 * A peer may put one empty delimiter frame before the message (REQ sockets
 * do); a ROUTER remembers that in the envelope and replies the same way.
 * Any other shape is refused, after its frames are drained, so one bad peer
 * cannot leave half a message in the socket for the next read.
 *
 * Every socket made here has ZMQ_MAXMSGSIZE = SL_PROTO_MAX_MSG: libzmq drops
 * the connection of a peer that sends a larger frame before any of it is
 * buffered (the peer's DEALER reconnects by itself; it gets no reply, which
 * its Lazy Pirate timeout handles). A frame within the cap but malformed is
 * returned to the caller, who answers with an `error` message. Sockets have
 * ZMQ_LINGER 0 (closing never waits for a gone peer), and ROUTER sockets
 * ZMQ_ROUTER_MANDATORY (a reply to a client that has left is reported,
 * -SL_ENOTFOUND, instead of vanishing). XPUB sockets keep at most
 * SL_EP_XPUB_HWM messages per subscriber and drop the rest
 * (ZMQ_SNDHWM, ZMQ_XPUB_NODROP 0: a stuck subscriber never blocks the
 * publisher), and pass every subscription message up, repeated ones too
 * (ZMQ_XPUB_VERBOSE), so that the publisher can greet each subscriber.
 *
 * The functions take and return libzmq socket handles (void *), so callers
 * poll them with zmq_poll as usual. No function here allocates beyond what
 * libzmq does internally. */
#ifndef SL_PROTO_ENDPOINT_H
#define SL_PROTO_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/msg.h"

#define SL_EP_XPUB_HWM 1000 /* XPUB: messages queued per subscriber */

/* Flags for sl_endpoint_send / recv. */
#define SL_EP_DONTWAIT 1u /* do not block: -SL_EAGAIN when nothing can be done now */

/* The frames before a message: a ROUTER's peer routing id, or a SUB's topic. */
typedef struct sl_envelope {
    uint8_t id[255]; /* libzmq routing ids are 1..255 bytes */
    uint8_t id_len;
    bool delim; /* an empty delimiter frame came (and goes) after id */
} sl_envelope;

/* Creates a socket of libzmq type `type` (ZMQ_ROUTER, ZMQ_DEALER, ZMQ_XPUB,
 * ZMQ_SUB, ...) in context zctx with the options above, then binds it to
 * `addr` (bind true) or connects it. A SUB socket is subscribed to
 * everything. Returns 0 and stores the socket in *out (close it with
 * sl_endpoint_close); on failure leaves *out NULL and returns -SL_EINVAL
 * (a bad address, e.g. an ipc path over the 107-byte limit) or -SL_EIO,
 * logged with the address and libzmq's reason. Does not block. */
int sl_endpoint_open(void *zctx, int type, const char *addr, bool bind, void **out);

/* Closes a socket from sl_endpoint_open; NULL is accepted. Does not block
 * (LINGER 0: unsent messages are dropped). */
void sl_endpoint_close(void *sock);

/* Sends buf[0 .. len) as one message, preceded by env's frames when env is
 * not NULL (ROUTER: the peer's id; XPUB: the topic). Blocks while the
 * socket's queue is full unless flags has SL_EP_DONTWAIT. Returns 0,
 * -SL_EAGAIN (queue full with DONTWAIT, or interrupted by a signal; nothing
 * was sent; not logged), -SL_ENOTFOUND (ROUTER: no peer with that id; not
 * logged: clients leave), -SL_ERANGE (len over SL_PROTO_MAX_MSG, logged) or
 * -SL_EIO (logged). */
int sl_endpoint_send(void *sock, const sl_envelope *env, const uint8_t *buf, size_t len, unsigned flags);

/* Receives one message into buf[0 .. cap) and stores its length in *len.
 * With env (ROUTER, SUB), the frames before the message are stored there;
 * without, only an optional empty delimiter may precede it. Blocks until a
 * message comes (or the socket's ZMQ_RCVTIMEO) unless SL_EP_DONTWAIT.
 * Returns 0; -SL_EAGAIN (nothing yet, or interrupted; not logged);
 * -SL_EFORMAT (frames of another shape) or -SL_ERANGE (a message over cap):
 * logged, every frame of the bad message drained, env filled as far as it
 * was read, so the caller can reply with an error; -SL_EIO (logged). */
int sl_endpoint_recv(void *sock, sl_envelope *env, uint8_t *buf, size_t cap, size_t *len, unsigned flags);

/* Packs m into scratch[0 .. cap) (see sl_msg_pack) and sends it as
 * sl_endpoint_send does. For an event, pass an env holding its kind as the
 * topic. Returns what those return. */
int sl_endpoint_send_msg(void *sock, const sl_envelope *env, const sl_msg *m, uint8_t *scratch, size_t cap,
                         unsigned flags);

/* Receives a message into buf (see sl_endpoint_recv) and unpacks it into m
 * (see sl_msg_unpack: m points into buf afterwards). Returns 0 or the
 * negative error of either step; after an unpack error env and m->id are
 * filled so that the caller can answer with an `error` message. */
int sl_endpoint_recv_msg(void *sock, sl_envelope *env, uint8_t *buf, size_t cap, sl_msg *m, unsigned flags);

/* Sets env to a topic / routing id of the bytes of a NUL-terminated string
 * (cut to 255 bytes), without delimiter. */
void sl_envelope_set(sl_envelope *env, const char *s);

#endif
