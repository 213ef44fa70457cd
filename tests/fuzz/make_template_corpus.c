/* Writes a seed corpus for fuzz_template: the real chat templates of
 * ../shared/testdata/templates (*.jinja), sluice's built-in templates and
 * the template of every case in tests/data/jinja_cases.json.
 *
 * Usage: make_template_corpus DIR   (DIR must exist; files are DIR/seed-NNN.jinja) */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat/template.h"

#ifndef SL_TESTDATA_DIR
#error "SL_TESTDATA_DIR must name ../shared/testdata"
#endif
#ifndef SL_JINJA_CASES
#error "SL_JINJA_CASES must name tests/data/jinja_cases.json"
#endif

static int g_failed, g_n;

static void save(const char *dir, const char *p, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%03d.jinja", dir, g_n++);
    FILE *f = fopen(path, "wb");
    int ok = f && (len == 0 || fwrite(p, 1, len, f) == len);
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok) {
        fprintf(stderr, "make_template_corpus: cannot write %s\n", path);
        g_failed = 1;
    }
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    *len = b ? fread(b, 1, (size_t)n, f) : 0;
    if (b)
        b[*len] = 0;
    fclose(f);
    return b;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_template_corpus DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    const char *tdir = SL_TESTDATA_DIR "/templates";
    DIR *d = opendir(tdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 7 || strcmp(e->d_name + n - 6, ".jinja"))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", tdir, e->d_name);
        size_t len;
        char *src = slurp(path, &len);
        if (src)
            save(dir, src, len);
        free(src);
    }
    if (d)
        closedir(d);
    for (const char *const *n = sl_template_builtin_names(); *n; n++)
        save(dir, sl_template_builtin(*n), strlen(sl_template_builtin(*n)));
    size_t len;
    char *json = slurp(SL_JINJA_CASES, &len);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases"))
    {
        const char *src = cJSON_GetStringValue(cJSON_GetObjectItem(c, "template"));
        if (src)
            save(dir, src, strlen(src));
    }
    cJSON_Delete(root);
    free(json);
    if (g_n < 20) {
        fprintf(stderr, "make_template_corpus: only %d seeds (testdata missing?)\n", g_n);
        return 1;
    }
    return g_failed;
}
