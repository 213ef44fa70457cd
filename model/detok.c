/* Streaming detokenizer: releases token text in complete UTF-8 characters.
 * See detok.h. */
#include "model/detok.h"

#include "common/log.h"

#include <string.h>

void sl_detok_init(sl_detok *d, unsigned flags)
{
    memset(d, 0, sizeof *d);
    d->flags = flags & SL_TOK_RENDER_SPECIAL;
}

/* Length of the unfinished character at the end of buf[0..n): the bytes
 * from the last lead byte on, when that lead byte announces more bytes than
 * follow it and only continuation bytes follow it. 0 when the end is
 * complete or cannot be completed. */
static size_t unfinished_tail(const uint8_t *buf, size_t n)
{
    /* A lead byte further back than 3 bytes would need 5+ bytes: none does. */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t c = buf[n - k];
        if ((c & 0xC0) == 0x80)
            continue; /* continuation byte: keep looking for its lead */
        size_t need;
        if ((c & 0xE0) == 0xC0)
            need = 2;
        else if ((c & 0xF0) == 0xE0)
            need = 3;
        else if ((c & 0xF8) == 0xF0)
            need = 4;
        else
            return 0; /* ASCII or a byte that starts nothing */
        return need > k ? k : 0;
    }
    return 0; /* only continuation bytes at the end: nothing can complete them */
}

int sl_detok_push(sl_detok *d, const sl_tokenizer *tk, int32_t id, char *out, size_t cap)
{
    const char *piece;
    size_t plen;
    int rc = sl_tokenizer_piece(tk, id, d->flags, &piece, &plen);
    if (rc < 0)
        return rc;
    SL_ASSERT(d->n_pending <= 3);
    size_t total = d->n_pending + plen;

    /* Decide what is held back by looking at the end of pending + piece;
     * the tail lies within the last 3 bytes, which may straddle both. */
    uint8_t last[3];
    size_t nl = total < 3 ? total : 3;
    for (size_t i = 0; i < nl; i++) {
        size_t pos = total - nl + i;
        last[i] = pos < d->n_pending ? d->pending[pos] : (uint8_t)piece[pos - d->n_pending];
    }
    size_t hold = unfinished_tail(last, nl);
    size_t emit = total - hold;
    if (emit > cap)
        return -SL_EINVAL;

    uint8_t tail[4];
    for (size_t i = 0; i < hold; i++) {
        size_t pos = emit + i;
        tail[i] = pos < d->n_pending ? d->pending[pos] : (uint8_t)piece[pos - d->n_pending];
    }
    size_t from_pending = emit < d->n_pending ? emit : d->n_pending;
    if (from_pending)
        memcpy(out, d->pending, from_pending);
    if (emit > from_pending)
        memcpy(out + from_pending, piece, emit - from_pending);
    memcpy(d->pending, tail, hold);
    d->n_pending = (uint32_t)hold;
    return (int)emit;
}

int sl_detok_flush(sl_detok *d, char *out, size_t cap)
{
    size_t n = d->n_pending;
    if (n > cap)
        return -SL_EINVAL;
    if (n)
        memcpy(out, d->pending, n);
    d->n_pending = 0;
    return (int)n;
}
