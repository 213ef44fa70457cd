/* Memory-pressure notification through Linux PSI (pressure stall
 * information): a trigger on /proc/pressure/memory makes its file
 * descriptor poll with POLLPRI when tasks stalled on memory for more than
 * `stall` within a `window`. The coordinator polls the descriptor with its
 * sockets and, on an event, shrinks its budget (coordinator/budget.h).
 *
 * Unprivileged processes (without CAP_SYS_RESOURCE) may only use windows
 * that are multiples of 2 s on recent kernels; when the kernel refuses the
 * window asked for, the trigger is retried with the window rounded up to
 * that and the stall scaled with it. Where PSI is missing (an old kernel, a
 * kernel without CONFIG_PSI, a container without /proc/pressure) or the
 * trigger is refused, sl_pressure_open says so and the coordinator runs
 * without it.
 *
 * Single-threaded; nothing here blocks. */
#ifndef SL_COORDINATOR_PRESSURE_H
#define SL_COORDINATOR_PRESSURE_H

#include <stdbool.h>
#include <stdint.h>

#define SL_PRESSURE_PATH "/proc/pressure/memory"

typedef struct sl_pressure sl_pressure;

/* Opens a "some" trigger of stall_ms per window_ms (both > 0, stall <=
 * window) on `path` (NULL: SL_PRESSURE_PATH). Returns 0 and *out
 * (sl_pressure_close); -SL_EUNSUPPORTED when the file is missing or the
 * kernel refuses every form of the trigger (logged at SL_LOG_INFO with the
 * reason: running without PSI is normal, and monitoring says so);
 * -SL_EINVAL for bad arguments (logged); -SL_ENOMEM. */
int sl_pressure_open(const char *path, uint32_t stall_ms, uint32_t window_ms, sl_pressure **out);

/* Closes the trigger. NULL accepted. */
void sl_pressure_close(sl_pressure *p);

/* The descriptor to poll for POLLPRI (ZMQ_POLLPRI in zmq_poll). */
int sl_pressure_fd(const sl_pressure *p);

/* The trigger in effect (after any rounding of the window). */
uint32_t sl_pressure_stall_ms(const sl_pressure *p);
uint32_t sl_pressure_window_ms(const sl_pressure *p);

/* Reads the current averages from the pressure file: percent of the last
 * 10 s during which some / all tasks were stalled on memory. Returns 0, or
 * -SL_EIO (not logged) when the file cannot be read or parsed. */
int sl_pressure_averages(const sl_pressure *p, double *some_avg10, double *full_avg10);

/* Parses the text of a pressure file ("some avg10=... avg60=... avg300=...
 * total=...\nfull avg10=..."): the avg10 values. A missing "full" line
 * (CPU pressure files of older kernels) gives 0. Returns 0 or -SL_EFORMAT. */
int sl_pressure_parse(const char *text, double *some_avg10, double *full_avg10);

#endif
