/* Streaming detokenizer: turns generated tokens into text one token at a
 * time, releasing only complete UTF-8 characters.
 *
 * A token's piece can end in the middle of a character (byte tokens
 * <0xE2><0x82><0xAC> spell one "€"; BPE pieces split characters too). The
 * stream holds back such an unfinished tail, at most 3 bytes, and releases
 * it with the bytes that complete it. Bytes that can never become a valid
 * character (a stray continuation byte, a lead byte followed by a
 * non-continuation) are released as they are, never replaced: the
 * concatenation of everything a stream releases, flush included, is exactly
 * the concatenation of the pieces pushed into it.
 *
 * The state is a small plain struct that the caller owns and may keep
 * anywhere (a session record in shared memory, on the stack); it holds no
 * pointers, so it can be copied and survives a restart of the process as
 * long as it is given the same tokenizer. No function allocates or blocks. */
#ifndef SL_MODEL_DETOK_H
#define SL_MODEL_DETOK_H

#include <stddef.h>
#include <stdint.h>

#include "model/tokenizer.h"

/* Fields are private to detok.c. */
typedef struct sl_detok {
    uint32_t flags;     /* SL_TOK_RENDER_SPECIAL or 0 */
    uint32_t n_pending; /* bytes held back, 0..3 */
    uint8_t pending[4];
} sl_detok;

/* Bytes that one push can release at most: a held tail plus one piece. */
#define SL_DETOK_OUT_MAX(tk) (sl_tokenizer_max_piece(tk) + 3)

/* Starts an empty stream. flags: SL_TOK_RENDER_SPECIAL to include the text
 * of control tokens, else 0. */
void sl_detok_init(sl_detok *d, unsigned flags);

/* Appends token `id` and writes the bytes that are now complete to out.
 * Returns their count (possibly 0). -SL_ERANGE (not logged) for an id
 * outside tk's vocabulary, -SL_EINVAL when cap is below the bytes to
 * release (cap >= SL_DETOK_OUT_MAX(tk) always suffices); on error the
 * stream is unchanged. */
int sl_detok_push(sl_detok *d, const sl_tokenizer *tk, int32_t id, char *out, size_t cap);

/* Ends the stream: writes whatever is held back (0..3 bytes, an unfinished
 * character) to out and empties the stream. Returns the count, or
 * -SL_EINVAL when cap is too small (nothing written). */
int sl_detok_flush(sl_detok *d, char *out, size_t cap);

#endif
