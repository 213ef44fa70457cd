/* Memory-pressure triggers (coordinator/pressure.h): the text of pressure
 * files is parsed strictly; a missing PSI file is "unsupported", not a
 * crash; and where this kernel offers PSI, a real trigger opens and its
 * averages read back. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/pressure.h"
#include "tests/testutil.h"

int main(void)
{
    double some, full;
    CHECK(sl_pressure_parse("some avg10=1.50 avg60=0.20 avg300=0.00 total=123\n"
                            "full avg10=0.75 avg60=0.00 avg300=0.00 total=45\n",
                            &some, &full) == 0 &&
              some == 1.5 && full == 0.75,
          "both lines: %.2f %.2f", some, full);
    CHECK(sl_pressure_parse("some avg10=12.00 avg60=0.20 avg300=0.00 total=123\n", &some, &full) == 0 &&
              some == 12.0 && full == 0,
          "no full line");
    static const char *bad[] = {"", "full avg10=1.00\n", "some avg60=1.00 total=3\n", "some avg10=abc\n",
                                "some avg10=150.00\n", "some avg10=-1\n",
                                "some avg10=1.00\nfull avg60=1.00\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(sl_pressure_parse(bad[i], &some, &full) == -SL_EFORMAT, "refused: '%s'", bad[i]);

    sl_pressure *p = NULL;
    sl_log_set_level(SL_LOG_OFF);
    CHECK(sl_pressure_open("/nonexistent/pressure/memory", 150, 2000, &p) == -SL_EUNSUPPORTED && !p,
          "a missing file is unsupported");
    CHECK(sl_pressure_open(NULL, 0, 2000, &p) == -SL_EINVAL && sl_pressure_open(NULL, 3000, 2000, &p) == -SL_EINVAL,
          "bad triggers refused");
    int rc = sl_pressure_open(NULL, 150, 1000, &p);
    sl_log_set_level(SL_LOG_WARN);
    if (access(SL_PRESSURE_PATH, R_OK) != 0) {
        CHECK(rc == -SL_EUNSUPPORTED, "no PSI here: unsupported (%d)", rc);
    } else if (rc == 0) {
        /* A 1 s window is privileged on recent kernels: then it was
         * rounded up to 2 s, with the stall scaled along. */
        uint32_t w = sl_pressure_window_ms(p), s = sl_pressure_stall_ms(p);
        CHECK((w == 1000 && s == 150) || (w == 2000 && s == 300), "trigger %u ms per %u ms", s, w);
        CHECK(sl_pressure_averages(p, &some, &full) == 0 && some >= 0 && some <= 100, "averages %.2f", some);
        struct pollfd pf = {sl_pressure_fd(p), POLLPRI, 0};
        CHECK(poll(&pf, 1, 0) >= 0 && !(pf.revents & (POLLERR | POLLNVAL)), "the trigger polls");
        sl_pressure_close(p);
    } else {
        CHECK(rc == -SL_EUNSUPPORTED, "a refused trigger is unsupported (%d)", rc);
        printf("note: this kernel refuses PSI triggers here\n");
    }
    return sl_test_finish();
}
