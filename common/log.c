/* Logging and the invariant check; see log.h. */
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_level = -2; /* not yet read from the environment */

static int current_level(void)
{
    if (g_level == -2) {
        const char *env = getenv("SL_LOG");
        g_level = (env && env[0] >= '0' && env[0] <= '3') ? env[0] - '0' : SL_LOG_WARN;
    }
    return g_level;
}

void sl_log_set_level(enum sl_log_level level) { g_level = (int)level; }

const char *sl_strerror(int err)
{
    switch (err < 0 ? -err : err) {
    case SL_OK: return "success";
    case SL_EIO: return "I/O error";
    case SL_EFORMAT: return "malformed input";
    case SL_EUNSUPPORTED: return "not supported";
    case SL_ENOMEM: return "out of memory";
    case SL_ENOTFOUND: return "not found";
    case SL_ETYPE: return "wrong type";
    case SL_EINVAL: return "invalid argument";
    case SL_ERANGE: return "out of range";
    case SL_EVERSION: return "unsupported version";
    case SL_EAGAIN: return "try again";
    default: return "unknown error";
    }
}

void sl_log(enum sl_log_level level, const char *func, const char *fmt, ...)
{
    if ((int)level > current_level())
        return;
    /* One buffer and one write so that lines from several threads or
     * processes sharing stderr do not interleave. */
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "sluice: %s: ", func);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    buf[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
}

_Noreturn void sl_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "sluice: %s: assertion failed: %s (%s:%d)\n", func, expr, file, line);
    abort();
}
