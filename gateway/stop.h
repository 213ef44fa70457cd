/* Stop strings of an OpenAI request, matched across token boundaries.
 *
 * The generated text arrives a token at a time, and a stop string may be
 * split over several tokens ("\n\n" as "\n" then "\n"), so a piece of text
 * cannot be shown to the client while it could still be the start of a stop
 * string. The matcher looks at the whole text generated so far (the caller
 * keeps it) and says how much of it is safe to release: everything before
 * the earliest position where a stop string occurs (then the generation
 * stops there, the stop string itself excluded, as OpenAI does) or could
 * still begin. Each call only looks at the bytes that the previous call
 * could not decide, so the total work is linear in the text. */
#ifndef SL_GATEWAY_STOP_H
#define SL_GATEWAY_STOP_H

#include <stdbool.h>
#include <stddef.h>

#define SL_STOP_MAX 16       /* stop strings in one request */
#define SL_STOP_MAX_LEN 1024 /* bytes of one stop string */

typedef struct sl_stop {
    const char *str[SL_STOP_MAX]; /* not owned: must outlive the matcher */
    size_t len[SL_STOP_MAX];
    size_t n;
    size_t max_len;
    size_t scanned;  /* positions before this cannot start a match */
    size_t released; /* bytes released so far (never decreases) */
    bool matched;
} sl_stop;

/* Prepares a matcher for n strings (strs[i] of lens[i] bytes; the pointers
 * are kept, not copied). Returns 0, or -SL_EINVAL for more than SL_STOP_MAX
 * strings, an empty one or one over SL_STOP_MAX_LEN bytes (not logged: the
 * caller reports it to the client). n == 0 is a matcher that never stops.
 * Does not allocate or block. */
int sl_stop_init(sl_stop *s, const char *const *strs, const size_t *lens, size_t n);

/* Looks at text[0 .. len), the whole text generated so far (each call with
 * the previous text plus what came since; len never shrinks). Returns how
 * many bytes from the start may be released now; sets *matched (when not
 * NULL) once a stop string occurs, and the returned length is then where it
 * begins: the final text. The result never decreases between calls. With
 * final (the generation ended without a match), everything is released.
 * Never fails, allocates or blocks. */
size_t sl_stop_scan(sl_stop *s, const char *text, size_t len, bool final, bool *matched);

#endif
