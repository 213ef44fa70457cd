/* Process identity and liveness, as the shared-memory runtime needs them.
 *
 * Slots filled by a loader that died, references held by a worker that
 * died, segments left by a coordinator that died: all of them are found by
 * asking "is the process that wrote this still running?". A bare pid is not
 * enough to answer, because pids are reused (pid_max is often 32768), so an
 * identity is the pid together with the process's start time. A zombie
 * (killed but not yet waited for) counts as dead: it can no longer touch
 * shared memory. This is also the module that reads the clock heartbeats
 * are stamped with. Linux specifics (/proc, pidfd) live only here. */
#ifndef SL_SHM_PROC_H
#define SL_SHM_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A process identity, packed so that it fits one atomic word in shared
 * memory: bits 63..32 the pid, bits 31..0 the low 32 bits of the process's
 * start time (clock ticks after boot, /proc/<pid>/stat field 22; 0 when it
 * could not be read, and then only the pid is compared). 0 means "nobody". */
typedef uint64_t sl_proc_ident;

/* The identity of the calling process; right in a child after fork too.
 * Cheap after the first call in a thread (a getpid). Never fails; never 0. */
sl_proc_ident sl_proc_self(void);

/* The identity of the running process `pid`, or 0 when there is none (or
 * it is a zombie). Does not block; never logs. */
sl_proc_ident sl_proc_ident_of(pid_t pid);

/* The pid part of an identity. */
static inline pid_t sl_proc_pid(sl_proc_ident id) { return (pid_t)(id >> 32); }

/* Whether the process `id` names is still running: its pid exists, is not
 * a zombie, and (when both start times are known) started at the same time.
 * A process of another user counts as alive. 0 is never alive. Does not
 * block; never logs. */
bool sl_proc_alive(sl_proc_ident id);

/* Sends SIGKILL to the process `id`, only if that identity is still the
 * running process (a pidfd closes the pid-reuse race where the kernel has
 * one). Returns 0 when the signal was sent, -SL_ENOTFOUND when the process
 * is already gone, -SL_EIO (logged) when the kernel refused. Does not wait
 * for the process to exit: poll sl_proc_alive. */
int sl_proc_kill(sl_proc_ident id);

/* CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the
 * machine, so heartbeats written by one process can be aged by another. */
uint64_t sl_proc_clock_ns(void);

#endif
