/* A growable byte buffer for writing HTTP bodies: JSON, server-sent events
 * and Prometheus text.
 *
 * Generated text may hold bytes that are not valid UTF-8 (a model can emit
 * any byte) or NUL bytes; JSON strings written with sl_jbuf_str are always
 * valid: invalid sequences become U+FFFD and control characters are
 * escaped. A failed allocation is remembered (sl_jbuf_ok) instead of being
 * reported by every call, so a body is written straight through and
 * checked once. */
#ifndef SL_GATEWAY_JBUF_H
#define SL_GATEWAY_JBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sl_jbuf {
    char *ptr;  /* NUL-terminated while ok */
    size_t len;
    size_t cap;
    bool failed;
} sl_jbuf;

/* Appends len bytes. Does not block; on allocation failure the buffer is
 * marked failed and later appends do nothing. */
void sl_jbuf_add(sl_jbuf *b, const char *s, size_t len);
/* Appends a NUL-terminated string. */
void sl_jbuf_puts(sl_jbuf *b, const char *s);
/* Appends printf-formatted text. */
void sl_jbuf_printf(sl_jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s[0 .. len) as a quoted JSON string (see above). */
void sl_jbuf_str(sl_jbuf *b, const char *s, size_t len);
/* Appends a quoted JSON string of a NUL-terminated string; NULL gives null. */
void sl_jbuf_cstr(sl_jbuf *b, const char *s);
/* Appends a number as JSON (non-finite values become 0). */
void sl_jbuf_num(sl_jbuf *b, double v);
/* Removes the first n bytes (n <= len). */
void sl_jbuf_consume(sl_jbuf *b, size_t n);
/* Whether every append so far succeeded. */
bool sl_jbuf_ok(const sl_jbuf *b);
/* Gives the bytes to the caller (free() them; NULL after a failure) and
 * empties the buffer. */
char *sl_jbuf_take(sl_jbuf *b, size_t *len);
/* Frees the bytes; the buffer may be used again. */
void sl_jbuf_free(sl_jbuf *b);

/* Length of the longest prefix of s[0 .. len) that does not end inside a
 * UTF-8 sequence that more bytes could still complete. */
size_t sl_utf8_complete(const char *s, size_t len);

#endif
