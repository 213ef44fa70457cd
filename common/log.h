/* Logging, error codes and the invariant check shared by every sluice module.
 *
 * Two tiers of errors (DESIGN.md §7): SL_ASSERT for broken invariants (on in
 * release builds too; aborts with the location), and negative sl_err codes for
 * everything that outside input or the environment can cause. Such an error is
 * logged once, where it is detected, with __func__ and the values involved. */
#ifndef SL_COMMON_LOG_H
#define SL_COMMON_LOG_H

#include <stdarg.h>

/* Error codes. Functions return 0 (or a non-negative count) on success and
 * one of these, negated, on failure. */
enum sl_err {
    SL_OK = 0,
    SL_EIO = 1,        /* a read/write/open/mmap failed */
    SL_EFORMAT = 2,    /* malformed input: bad magic, bounds, counts */
    SL_EUNSUPPORTED = 3, /* well-formed, but a feature sluice does not implement */
    SL_ENOMEM = 4,     /* allocation failed */
    SL_ENOTFOUND = 5,  /* a key or tensor that was asked for is absent */
    SL_ETYPE = 6,      /* a value exists but has another type */
    SL_EINVAL = 7,     /* a caller passed an invalid argument */
    SL_ERANGE = 8,     /* a value is outside the range it must lie in */
    SL_EVERSION = 9,   /* a peer or file speaks a version sluice does not understand */
    SL_EAGAIN = 10,    /* nothing yet (would block, timed out, interrupted): try again */
};

/* Short English name of an error code (positive or negative). Static string. */
const char *sl_strerror(int err);

enum sl_log_level { SL_LOG_OFF = -1, SL_LOG_ERROR = 0, SL_LOG_WARN = 1, SL_LOG_INFO = 2, SL_LOG_DEBUG = 3 };

/* Messages at or below this level are written to stderr (SL_LOG_OFF: none;
 * tests use it around inputs that are meant to fail). Default: SL_LOG_WARN,
 * or the value of the environment variable SL_LOG (0..3) when set. */
void sl_log_set_level(enum sl_log_level level);

/* Writes "sluice: <func>: <message>\n" to stderr when level is enabled.
 * Never blocks for long (one write(2)); safe to call from any thread. */
void sl_log(enum sl_log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SL_ERROR(...) sl_log(SL_LOG_ERROR, __func__, __VA_ARGS__)
#define SL_WARN(...)  sl_log(SL_LOG_WARN, __func__, __VA_ARGS__)
#define SL_INFO(...)  sl_log(SL_LOG_INFO, __func__, __VA_ARGS__)
#define SL_DEBUG(...) sl_log(SL_LOG_DEBUG, __func__, __VA_ARGS__)

/* Aborts the process with file, line and the failed expression. Not for
 * errors that input can cause: those return a negative sl_err. */
_Noreturn void sl_assert_fail(const char *expr, const char *file, int line, const char *func);
#define SL_ASSERT(e) ((e) ? (void)0 : sl_assert_fail(#e, __FILE__, __LINE__, __func__))

#endif
