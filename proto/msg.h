/* The wire protocol: every message between clients, the coordinator,
 * loaders, compute workers and monitors, as msgpack (https://msgpack.org)
 * carried in one ZeroMQ frame (see proto/endpoint.h for the framing).
 *
 * This header is the protocol's specification; an independent client can be
 * written from it alone.
 *
 * ## Every message
 *
 * One msgpack map whose keys are strings (fixstr/str8/16/32) and unique.
 * Two keys are in every message:
 *   v   uint          protocol version: SL_PROTO_VERSION (1). A receiver that
 *                     does not speak it refuses the message (-SL_EVERSION) and,
 *                     where it can, answers with an `error` whose code is
 *                     SL_EVERSION and whose own `v` says what it speaks.
 *   t   str           the message type, one of the names below. An unknown type
 *                     is refused with -SL_EUNSUPPORTED (also answered by an
 *                     `error` where it can), so new types may be added without
 *                     changing v; changing the meaning of a field needs a new v.
 * Besides v and t the map holds the message's fields; keys may come in any
 * order. A key a receiver does not know is skipped (so later versions may add
 * optional fields without a version change), whatever its value, as long as
 * the value is well-formed msgpack with arrays and maps nested at most
 * SL_PROTO_MAX_DEPTH deep, the message's own map counting as the first.
 * A known key given twice is refused. Nothing may follow the map. A whole
 * message is at most SL_PROTO_MAX_MSG bytes.
 *
 * Value types used below (msgpack families; a receiver accepts any width):
 *   uint    an integer (positive fixint, uint 8-64, or int 8-64 holding a
 *           value >= 0) in the field's range; u32 fields <= 2^32-1.
 *   int     an integer in the field's range (i32: -2^31 .. 2^31-1).
 *   float   float 32 or 64, or an integer (converted); f32 fields must fit a
 *           float (NaN and infinities pass through: ranges of sampling
 *           parameters are checked by the sampler, not here). Senders of f32
 *           fields write float 32.
 *   bool    true / false (not an integer).
 *   str     bytes: str or bin is accepted (not checked for UTF-8); senders
 *           write str.
 *   bytes   bytes: str or bin is accepted; senders write bin (token text may
 *           be an incomplete or invalid UTF-8 sequence).
 *   name    str only, without NUL bytes (it becomes a C string: instance and
 *           segment names, kinds).
 *   ids     array of ints, each a token id in 0 .. 2^31-1, at most
 *           SL_PROTO_MAX_TOKENS entries.
 *   enum    str, one of the listed words.
 * A value of another family is refused (-SL_ETYPE); a value outside its range
 * or a length over its cap is refused (-SL_ERANGE); a required field that is
 * missing, or a map that is truncated or malformed, is refused (-SL_EFORMAT).
 * Optional fields have the default given; senders (sl_msg_pack) omit optional
 * fields that are 0 / empty unless marked "always written".
 *
 * Request ids: `id` is chosen by the client, unique among that client's
 * requests, never 0, and the same when a request is resent (Lazy Pirate
 * retries after a timeout): the coordinator recognises a resent request and
 * does not start it twice. Every reply carries the id of its request.
 *
 * ## Client -> coordinator (DEALER -> ROUTER)
 *
 * generate: start (or resume) a generation; answered by a stream of `token`.
 *   id                 uint  required  request id (>= 1)
 *   prompt             str   optional  prompt text, <= SL_PROTO_MAX_TEXT bytes
 *   tokens             ids   optional  prompt as token ids (exactly one of
 *                                      prompt and tokens must be present)
 *   n_predict          u32   required  tokens to generate, <= SL_PROTO_MAX_TOKENS
 *   temperature        float optional  default 0.8; <= 0 is greedy
 *   top_k              i32   optional  default 40; 0 disables
 *   top_p              float optional  default 0.95; 1 disables
 *   min_p              float optional  default 0.05; 0 disables
 *   repeat_penalty     float optional  default 1.0 (off)
 *   repeat_last_n      i32   optional  default 64: penalty window
 *   presence_penalty   float optional  default 0
 *   frequency_penalty  float optional  default 0
 *   seed               uint  optional  default 0: seeds the sampler's generator
 *   add_bos            bool  optional  default true: put BOS before a text prompt
 *                                      when the vocabulary asks for it
 *   resume_from        uint  optional  default 0: the first `seq` the client
 *                                      still needs; a resent request with
 *                                      resume_from = k gets the events from seq
 *                                      k on (those before were received)
 *   (the sampling fields and add_bos are always written; defaults are those
 *   of sl_sampler_params_default)
 *   A request the coordinator cannot take now because every session is in
 *   use is answered with an `error` of code SL_EAGAIN (10): send it again
 *   later.
 *
 * tokenize: text to token ids; answered by `tokens`.
 *   id       uint  required  request id (>= 1)
 *   text     str   required  <= SL_PROTO_MAX_TEXT bytes
 *   add_bos  bool  optional  default true (always written): add BOS/EOS as the
 *                            vocabulary asks
 *   special  bool  optional  default false: recognise control tokens in the text
 *
 * detokenize: token ids to text; answered by `text`.
 *   id       uint  required  request id (>= 1)
 *   tokens   ids   required
 *   special  bool  optional  default false: render control tokens as text
 *
 * cancel: stop a running generation; it ends with a `token` whose finish is
 *   "cancel" (or an `error` with code SL_ENOTFOUND when no such request runs).
 *   id       uint  required  the id of the generate request to stop (>= 1)
 *
 * status: ask for the coordinator's state; answered by `status_reply`.
 *   id       uint  required  request id (>= 1)
 *
 * budget: run under another memory budget (e.g. under memory pressure),
 *   without stopping generation: the coordinator re-plans the pinned set and
 *   the ring, switches to the new plan between two steps and frees (or
 *   reserves and loads) the difference. The output of every generation is
 *   unchanged. Answered by `budget_reply` once the new plan is in effect, or
 *   by an `error`: SL_ERANGE (8) when the budget is below the minimum (the
 *   message names the minimum in bytes), SL_EAGAIN (10) while another budget
 *   change is being applied, SL_ENOMEM (4) when the memory for a larger
 *   plan cannot be reserved (the old plan stays).
 *   id       uint  required  request id (>= 1)
 *   bytes    uint  required  the new budget in bytes, >= 1. Above what the
 *                            pipeline's segments can use (everything they
 *                            were created to pin) it pins that much.
 *
 * ## Coordinator -> client (ROUTER -> DEALER)
 *
 * token: one generated token of a generate request, in order.
 *   id        uint   required  the generate request's id
 *   seq       uint   required  0 for the request's first event, +1 for each next
 *   tok       i32    required  the token id; -1 when the event carries no token
 *                              (a final event after cancel or error)
 *   text      bytes  required  the text this token completes (may be empty: a
 *                              character split over tokens is released whole
 *                              with its last token), <= SL_PROTO_MAX_TEXT
 *   finish    enum   optional  only on the request's last event: "stop" (end of
 *                              generation token), "length" (n_predict reached
 *                              or the context is full), "cancel", "error"
 *   n_prompt  u32    optional  with finish: prompt tokens processed
 *   n_gen     u32    optional  with finish: tokens generated
 *
 * tokens: the reply to tokenize.
 *   id        uint  required
 *   tokens    ids   required
 *
 * text: the reply to detokenize.
 *   id        uint   required
 *   text      bytes  required  <= SL_PROTO_MAX_TEXT
 *
 * status_reply: the reply to status. All but model optional, default 0.
 *   id            uint  required
 *   model         str   required  the model's name (or file), <= SL_PROTO_MAX_NAME
 *   n_ctx         u32             context length per session
 *   n_vocab       u32             vocabulary size
 *   sessions      u32             sessions open now
 *   max_sessions  u32             sessions the budget allows
 *   loaders       u32             loaders registered
 *   workers       u32             compute workers registered
 *   mem_budget    uint            bytes: the memory budget
 *   mem_used      uint            bytes in use now (slots, pinned, KV, ...)
 *   pinned        uint            bytes of weights pinned
 *   epoch         uint            the coordinator's epoch (changes on restart)
 *
 * budget_reply: the reply to budget, sent when the new plan is in effect.
 *   All but id optional, default 0.
 *   id            uint  required
 *   mem_budget    uint            bytes: the budget now in effect
 *   mem_used      uint            bytes the new plan uses (pinned, ring, KV, activations)
 *   pinned        uint            bytes of weights pinned now
 *   streamed      uint            bytes of weights streamed from storage per step
 *   min_budget    uint            the smallest budget this pipeline accepts
 *
 * error: a request failed, or a message could not be read.
 *   id    uint  optional  the request's id when known, else absent (0)
 *   code  u32   required  an sl_err value (common/log.h), positive, >= 1:
 *                         e.g. SL_EFORMAT 2 (malformed message), SL_ETYPE 6,
 *                         SL_ERANGE 8, SL_EVERSION 9, SL_EUNSUPPORTED 3 (unknown
 *                         type), SL_ENOTFOUND 5 (unknown request), SL_EINVAL 7,
 *                         SL_EAGAIN 10 (every session busy: try again later)
 *   msg   str   required  one line for people, <= SL_PROTO_MAX_ERRMSG bytes
 *
 * ## Loader / compute worker <-> coordinator (DEALER <-> ROUTER)
 *
 * register: a loader or worker announces itself (at start, and again when it
 *   stops hearing the coordinator); answered by `welcome`.
 *   role     enum  required  "loader" or "compute"
 *   pid      u32   required  process id, 1 .. 2^31-1
 *   name     name  required  the instance name it was started for,
 *                            <= SL_PROTO_MAX_NAME
 *   threads  u32   optional  worker threads it runs
 *   caps     uint  optional  capability bits SL_CAP_* (unknown bits ignored)
 *   wid      u32   optional  the id a previous welcome gave it (0: none), so a
 *                            restarted coordinator can keep ids stable
 *
 * welcome: the coordinator accepts a registration.
 *   wid       u32   required  the id assigned to the process (>= 1)
 *   epoch     uint  required  the coordinator's epoch; segment headers carry it
 *   instance  name  required  instance name, <= SL_PROTO_MAX_NAME
 *   segs      array required  of name: the shared-memory segments to map,
 *                             <= SL_PROTO_MAX_SEGS entries, each <= SL_PROTO_MAX_NAME
 *   hb_ms     u32   optional  heartbeat interval in ms, default
 *                             SL_PROTO_HEARTBEAT_MS (always written), 1 .. 3600000
 *
 * heartbeat: sent both ways every hb_ms (Paranoid Pirate): a peer that has not
 *   been heard for a few intervals is presumed dead or hung.
 *   role    enum  required  "loader", "compute" or "coordinator"
 *   pid     u32   required  process id, 1 .. 2^31-1
 *   wid     u32   optional  the sender's assigned id (0 from the coordinator)
 *   epoch   uint  optional  the coordinator's epoch as the sender knows it
 *   jobs    uint  optional  units loaded / layer steps finished since start
 *   bytes   uint  optional  bytes read from storage / weight bytes consumed
 *   errors  uint  optional  jobs that failed since start
 *   rss     uint  optional  the sender's resident memory, bytes
 *
 * ## Monitoring (coordinator XPUB -> SUB)
 *
 * event: published as two frames, [kind][message] (the first frame is the
 *   kind's bytes so that subscribers can filter by prefix).
 *   kind  name  required  what happened ("token", "slot", "proc", "mem", ...),
 *                         <= SL_PROTO_MAX_KIND bytes
 *   seq   uint  optional  the publisher's event counter: a gap means events
 *                         were dropped (a slow subscriber)
 *   ts    uint  optional  wall-clock time, ns since the Unix epoch
 *   f     map   optional  name -> value, at most SL_PROTO_MAX_FIELDS entries,
 *                         names are unique `name`s <= SL_PROTO_MAX_KIND bytes;
 *                         values are nil, bool, int, float or str (strings
 *                         <= SL_PROTO_MAX_NAME bytes). Entries whose value is
 *                         a bin, array, map or ext are skipped (reserved for
 *                         later versions). The names each kind uses are documented by
 *                         its publisher: the coordinator's kinds and their fields, and
 *                         the snapshot a new subscriber gets first, are specified in
 *                         coordinator/monitor.h.
 *
 * ## In C
 *
 * sl_msg_unpack decodes into an sl_msg whose strings and token arrays point
 * into the received bytes: nothing is allocated and the message stays valid
 * as long as those bytes do. Memory and time are bounded by the message's
 * length (no allocation at all; skipping is depth-limited). sl_msg_pack
 * writes into a caller buffer and refuses anything the unpacker would refuse,
 * so a sluice peer never sends a message its receiver cannot read. */
#ifndef SL_PROTO_MSG_H
#define SL_PROTO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/sampler.h"

#define SL_PROTO_VERSION 1
/* Hard cap on one message (bytes); also each socket's ZMQ_MAXMSGSIZE. It
 * holds the largest valid message: SL_PROTO_MAX_TOKENS ids of 5 bytes each,
 * or SL_PROTO_MAX_TEXT bytes of text, plus the other fields. */
#define SL_PROTO_MAX_MSG ((size_t)8 << 20)
#define SL_PROTO_MAX_TOKENS ((uint32_t)1 << 20) /* ids in one array */
#define SL_PROTO_MAX_TEXT ((size_t)4 << 20)     /* bytes of prompt or text */
#define SL_PROTO_MAX_NAME 255                   /* model, instance and segment names */
#define SL_PROTO_MAX_KIND 32                    /* event kinds and field names */
#define SL_PROTO_MAX_ERRMSG 1024                /* error messages */
#define SL_PROTO_MAX_SEGS 16                    /* segments in a welcome */
#define SL_PROTO_MAX_FIELDS 32                  /* fields of one event */
#define SL_PROTO_MAX_DEPTH 8                    /* nesting of a skipped value */
#define SL_PROTO_HEARTBEAT_MS 1000              /* default heartbeat interval */

/* Capability bits of `register.caps`. */
#define SL_CAP_DIRECT_IO (1u << 0) /* loader: reads with O_DIRECT */
#define SL_CAP_IO_URING (1u << 1)  /* loader: reads with io_uring */
#define SL_CAP_AVX2 (1u << 2)      /* compute: AVX2 kernels */
#define SL_CAP_AVX512 (1u << 3)    /* compute: AVX-512 kernels */
#define SL_CAP_NEON (1u << 4)      /* compute: NEON kernels */
#define SL_CAP_DOTPROD (1u << 5)   /* compute: Arm dot-product kernels */

typedef enum sl_msg_type {
    SL_MSG_NONE = 0,
    SL_MSG_GENERATE,     /* "generate" */
    SL_MSG_TOKENIZE,     /* "tokenize" */
    SL_MSG_DETOKENIZE,   /* "detokenize" */
    SL_MSG_CANCEL,       /* "cancel" */
    SL_MSG_STATUS,       /* "status" */
    SL_MSG_TOKEN,        /* "token" */
    SL_MSG_TOKENS,       /* "tokens" */
    SL_MSG_TEXT,         /* "text" */
    SL_MSG_STATUS_REPLY, /* "status_reply" */
    SL_MSG_ERROR,        /* "error" */
    SL_MSG_REGISTER,     /* "register" */
    SL_MSG_WELCOME,      /* "welcome" */
    SL_MSG_HEARTBEAT,    /* "heartbeat" */
    SL_MSG_EVENT,        /* "event" */
    SL_MSG_BUDGET,       /* "budget" */
    SL_MSG_BUDGET_REPLY, /* "budget_reply" */
    SL_MSG_TYPE_COUNT
} sl_msg_type;

typedef enum sl_msg_role {
    SL_MSG_ROLE_NONE = 0,
    SL_MSG_ROLE_LOADER,      /* "loader" */
    SL_MSG_ROLE_COMPUTE,     /* "compute" */
    SL_MSG_ROLE_COORDINATOR, /* "coordinator" (heartbeat only) */
} sl_msg_role;

typedef enum sl_msg_finish {
    SL_FINISH_NONE = 0, /* not the last event */
    SL_FINISH_STOP,     /* "stop" */
    SL_FINISH_LENGTH,   /* "length" */
    SL_FINISH_CANCEL,   /* "cancel" */
    SL_FINISH_ERROR,    /* "error" */
} sl_msg_finish;

/* Bytes that are not NUL-terminated. ptr == NULL means absent. */
typedef struct sl_msg_str {
    const char *ptr;
    size_t len;
} sl_msg_str;

/* A list of token ids. To pack, set ids (and n); after unpacking, `packed`
 * points at the msgpack array's packed_len bytes of elements in the
 * received bytes (already checked) and ids is NULL: read them with
 * sl_msg_tokens_get. Present when either pointer is set, even with n == 0. */
typedef struct sl_msg_tokens {
    uint32_t n;
    const int32_t *ids;
    const uint8_t *packed;
    size_t packed_len;
} sl_msg_tokens;

/* One entry of an event's `f` map. */
typedef enum sl_msg_val_type {
    SL_VAL_NIL = 0,
    SL_VAL_BOOL,
    SL_VAL_INT,   /* any integer that fits int64 (unpacking gives INT for those) */
    SL_VAL_UINT,  /* integers above INT64_MAX */
    SL_VAL_FLOAT, /* written as float 64 */
    SL_VAL_STR,
} sl_msg_val_type;

typedef struct sl_msg_field {
    sl_msg_str name;
    sl_msg_val_type type;
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double f;
        sl_msg_str s;
    } val;
} sl_msg_field;

typedef struct sl_msg_generate {
    sl_msg_str prompt;
    sl_msg_tokens tokens;
    uint32_t n_predict;
    sl_sampler_params sampling; /* penalty_last_n is the wire's repeat_last_n */
    bool add_bos;
    uint64_t resume_from;
} sl_msg_generate;

typedef struct sl_msg_tokenize {
    sl_msg_str text;
    bool add_bos;
    bool special;
} sl_msg_tokenize;

typedef struct sl_msg_detokenize {
    sl_msg_tokens tokens;
    bool special;
} sl_msg_detokenize;

typedef struct sl_msg_token {
    uint64_t seq;
    int32_t tok;
    sl_msg_str text;
    sl_msg_finish finish;
    uint32_t n_prompt;
    uint32_t n_gen;
} sl_msg_token;

typedef struct sl_msg_status_reply {
    sl_msg_str model;
    uint32_t n_ctx, n_vocab, sessions, max_sessions, loaders, workers;
    uint64_t mem_budget, mem_used, pinned, epoch;
} sl_msg_status_reply;

typedef struct sl_msg_budget_reply {
    uint64_t mem_budget, mem_used, pinned, streamed, min_budget;
} sl_msg_budget_reply;

typedef struct sl_msg_error {
    uint32_t code;
    sl_msg_str msg;
} sl_msg_error;

typedef struct sl_msg_register {
    sl_msg_role role;
    uint32_t pid;
    sl_msg_str name;
    uint32_t threads;
    uint64_t caps;
    uint32_t wid;
} sl_msg_register;

typedef struct sl_msg_welcome {
    uint32_t wid;
    uint64_t epoch;
    sl_msg_str instance;
    uint32_t n_segs;
    sl_msg_str segs[SL_PROTO_MAX_SEGS];
    uint32_t hb_ms;
} sl_msg_welcome;

typedef struct sl_msg_heartbeat {
    sl_msg_role role;
    uint32_t pid;
    uint32_t wid;
    uint64_t epoch, jobs, bytes, errors, rss;
} sl_msg_heartbeat;

typedef struct sl_msg_event {
    sl_msg_str kind;
    uint64_t seq;
    uint64_t ts;
    uint32_t n_fields;
    sl_msg_field fields[SL_PROTO_MAX_FIELDS];
} sl_msg_event;

/* A decoded (or to-be-encoded) message. `id` is the request id of the
 * client messages and their replies (0 elsewhere); the body that `type`
 * names is the member of the union to use. tokens.ids/tokens.packed hold
 * the `tokens` field of generate, detokenize and the `tokens` reply. */
typedef struct sl_msg {
    sl_msg_type type;
    uint8_t version; /* set by sl_msg_unpack; sl_msg_pack writes SL_PROTO_VERSION */
    uint64_t id;
    union {
        sl_msg_generate generate;
        sl_msg_tokenize tokenize;
        sl_msg_detokenize detokenize;
        sl_msg_token token;
        sl_msg_tokens tokens; /* SL_MSG_TOKENS */
        sl_msg_str text;      /* SL_MSG_TEXT */
        sl_msg_status_reply status_reply;
        sl_msg_error error;
        sl_msg_register reg;
        sl_msg_welcome welcome;
        sl_msg_heartbeat heartbeat;
        sl_msg_event event;
        uint64_t budget; /* SL_MSG_BUDGET: bytes */
        sl_msg_budget_reply budget_reply;
    };
} sl_msg;

/* Clears *m and sets type and every field's default (see above: sampling
 * defaults, add_bos true, hb_ms SL_PROTO_HEARTBEAT_MS, the rest 0 / absent).
 * SL_ASSERTs that type is a valid message type. Never fails or allocates. */
void sl_msg_init(sl_msg *m, sl_msg_type type);

/* Fills *m as an `error` message with request id `id` (0: unknown), code
 * -err or err (an sl_err value, either sign; 0 becomes SL_EINVAL) and text
 * `msg` (a NUL-terminated string that must outlive *m; cut to
 * SL_PROTO_MAX_ERRMSG bytes). Never fails. */
void sl_msg_error_init(sl_msg *m, uint64_t id, int err, const char *msg);

/* Encodes *m into buf[0 .. cap) and stores the byte count in *len. Checks
 * everything the unpacker checks (required fields present, lengths and
 * counts within their caps, enum values valid, ids in range) first.
 * Returns 0, -SL_EINVAL when *m could not be unpacked by a receiver, or
 * -SL_ERANGE when the message does not fit in cap (or in SL_PROTO_MAX_MSG);
 * each logged once. Allocates nothing; does not block. */
int sl_msg_pack(const sl_msg *m, uint8_t *buf, size_t cap, size_t *len);

/* Decodes one message of exactly len bytes. On success returns 0 with *m
 * filled; its strings and token lists point into buf, which must outlive
 * the use of *m. On failure returns (after one log line naming the field
 * and the values):
 *   -SL_EVERSION      the message's `v` is not SL_PROTO_VERSION;
 *   -SL_EUNSUPPORTED  `t` names no message type this version knows;
 *   -SL_EFORMAT       not one msgpack map, truncated, trailing bytes, a
 *                     required field missing, a key twice, too deep;
 *   -SL_ETYPE         a field of the wrong msgpack type;
 *   -SL_ERANGE        a value out of range, a string, array or message over
 *                     its cap (len > SL_PROTO_MAX_MSG);
 * and leaves *m cleared except m->type (the type when `v` was right and `t`
 * known, else SL_MSG_NONE), m->version (`v` when it was an integer, capped
 * at 255; else 0) and m->id (the top-level `id` when it was an unsigned
 * integer), so that the caller can address an error reply.
 * Allocates nothing; does not block; time is linear in len. */
int sl_msg_unpack(const uint8_t *buf, size_t len, sl_msg *m);

/* Copies the ids of t into out (at most cap of them) and returns t->n, the
 * number of ids (like snprintf: a result above cap means out was too
 * small). Works for lists built for packing and for unpacked ones. Never
 * fails (an unpacked list was checked); does not allocate. */
uint32_t sl_msg_tokens_get(const sl_msg_tokens *t, int32_t *out, size_t cap);

/* Copies s into buf as a NUL-terminated string. Returns 0, or -SL_ERANGE
 * when s.len + 1 > cap or s holds a NUL byte (buf then holds ""); not
 * logged. */
int sl_msg_str_copy(sl_msg_str s, char *buf, size_t cap);

/* An sl_msg_str over a NUL-terminated C string (NULL gives absent). */
sl_msg_str sl_msg_cstr(const char *s);

/* The wire name of a type ("generate", ...), or "?" for an invalid one. */
const char *sl_msg_type_name(sl_msg_type type);

/* The type whose wire name is the len bytes at name, or SL_MSG_NONE. */
sl_msg_type sl_msg_type_from_name(const char *name, size_t len);

#endif
