/* Test helpers; see testutil.h. */
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>

int sl_test_failures;
int sl_test_checks;

int sl_test_finish(void)
{
    printf("%d passed, %d failed\n", sl_test_checks - sl_test_failures, sl_test_failures);
    return sl_test_failures ? 1 : 0;
}

const char *sl_testdata_path(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", SL_TESTDATA_DIR, rel);
    return buf;
}

cJSON *sl_test_load_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "cannot read %s\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[len] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j)
        fprintf(stderr, "cannot parse JSON in %s\n", path);
    return j;
}

double sl_rel_err(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
