/* Sleeping on a 32-bit word in shared memory until another process changes
 * it: the one place that knows the futex syscall.
 *
 * Processes that wait for a slot state change (loaders for work, workers for
 * a READY unit, the scheduler for a released slot) must not spin: on a phone
 * the cores are needed for compute. The word lives in a MAP_SHARED mapping,
 * so the shared (not private) futex operations are used; they key on the
 * physical page, which is what makes a wake in one process reach a waiter in
 * another. On a platform without futexes the wait degrades to short sleeps
 * (correct, only slower to react). */
#ifndef SL_SHM_FUTEX_H
#define SL_SHM_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>

/* Sleeps while *word == expected, for at most timeout_ns (negative: no
 * limit). Returns 1 when the timeout expired, 0 otherwise: woken, the word
 * already differed, or a signal or spurious wake-up interrupted the sleep.
 * The caller re-reads the word either way; a 0 does not promise a change.
 * Blocks. Never fails: an error from the kernel that the arguments cannot
 * cause (the word is always mapped) is an invariant failure. */
int sl_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns);

/* Wakes up to n processes sleeping on word (n >= 1; INT32_MAX for all) and
 * returns how many were woken (0 on platforms without futexes). Does not
 * block; never fails. */
int sl_futex_wake(_Atomic uint32_t *word, int32_t n);

#endif
