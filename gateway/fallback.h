/* Forwarding a request to another OpenAI-compatible endpoint (hybrid
 * routing: --fallback-url), with libcurl, so that https endpoints work as
 * well as plain http ones.
 *
 * One forward is one POST of the client's body to BASE_URL + path (BASE_URL
 * is what OpenAI clients call base_url, e.g. https://api.openai.com/v1, and
 * path is "/chat/completions" or "/completions"), with the fallback's own
 * key as the bearer token. The response is read as it arrives, so a
 * streamed (server-sent events) answer streams through. The caller drives
 * the transfer from its own thread with sl_fwd_read, which waits at most a
 * given time, so that it can watch its own client meanwhile. Freeing a
 * forward that has not finished aborts it (the remote sees the connection
 * close, as a client's disconnect). */
#ifndef SL_GATEWAY_FALLBACK_H
#define SL_GATEWAY_FALLBACK_H

#include <stddef.h>
#include <sys/types.h>

typedef struct sl_fwd sl_fwd;

/* Once per process, before any thread uses libcurl; returns 0 or -SL_EIO
 * (logged). */
int sl_fwd_global_init(void);
void sl_fwd_global_cleanup(void);

/* Starts a POST of body[0 .. len) to base_url + path with "Authorization:
 * Bearer key" (when key is not NULL) and waits up to timeout_ms for the
 * response's status line and headers. Returns 0 with *out set (free with
 * sl_fwd_free); -SL_EAGAIN when the headers did not come in time (*out is
 * set: call sl_fwd_wait_headers again, or free it); -SL_EIO when the
 * endpoint cannot be reached or the transfer failed (err holds curl's
 * reason; *out NULL); -SL_ENOMEM. Blocks up to timeout_ms. */
int sl_fwd_start(const char *base_url, const char *path, const char *key, const char *body, size_t len,
                 int timeout_ms, sl_fwd **out, char *err, size_t err_size);

/* Waits up to timeout_ms more for the headers; returns like sl_fwd_start
 * (on -SL_EIO the forward stays allocated: free it). */
int sl_fwd_wait_headers(sl_fwd *f, int timeout_ms, char *err, size_t err_size);

/* The response's HTTP status, and its Content-Type ("application/json"
 * when it gave none). Valid once the headers came. */
long sl_fwd_status(const sl_fwd *f);
const char *sl_fwd_content_type(const sl_fwd *f);

/* Copies up to cap bytes of the response body into buf, waiting up to
 * timeout_ms for some. Returns the bytes copied (> 0), 0 at the end of the
 * body, -SL_EAGAIN when nothing came in time, -SL_EIO when the transfer
 * failed (logged). */
ssize_t sl_fwd_read(sl_fwd *f, char *buf, size_t cap, int timeout_ms);

/* Aborts the transfer if it is still running and frees everything. NULL
 * accepted. */
void sl_fwd_free(sl_fwd *f);

#endif
