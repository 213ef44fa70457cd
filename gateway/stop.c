/* Stop-string matching over the growing generated text; see stop.h. */
#include "gateway/stop.h"

#include <string.h>

#include "common/log.h"

int sl_stop_init(sl_stop *s, const char *const *strs, const size_t *lens, size_t n)
{
    memset(s, 0, sizeof *s);
    if (n > SL_STOP_MAX)
        return -SL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] == 0 || lens[i] > SL_STOP_MAX_LEN)
            return -SL_EINVAL;
        s->str[i] = strs[i];
        s->len[i] = lens[i];
        if (lens[i] > s->max_len)
            s->max_len = lens[i];
    }
    s->n = n;
    return 0;
}

size_t sl_stop_scan(sl_stop *s, const char *text, size_t len, bool final, bool *matched)
{
    SL_ASSERT(len >= s->released);
    if (s->matched) {
        if (matched)
            *matched = true;
        return s->released;
    }
    /* The first position where a stop string begins, whole or (at the end
     * of the text so far) in part. Positions are tried in order, so the
     * first whole match found is the earliest one. */
    size_t hold = len;
    for (size_t p = s->scanned; p < len; p++) {
        size_t rest = len - p;
        bool partial = false;
        for (size_t i = 0; i < s->n; i++) {
            if (rest >= s->len[i]) {
                if (!memcmp(text + p, s->str[i], s->len[i])) {
                    s->matched = true;
                    s->released = s->scanned = p;
                    if (matched)
                        *matched = true;
                    return p;
                }
            } else if (!partial && !memcmp(text + p, s->str[i], rest)) {
                partial = true;
            }
        }
        if (partial && hold == len)
            hold = p;
        /* A position where every stop string fits is decided for good. */
        if (rest >= s->max_len)
            s->scanned = p + 1;
    }
    if (final)
        hold = len;
    if (hold > s->released)
        s->released = hold;
    if (matched)
        *matched = false;
    return s->released;
}
