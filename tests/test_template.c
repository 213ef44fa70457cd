/* Chat templates (chat/template.h) against Python's jinja2 as the model hubs
 * configure it:
 *  - every case of ../shared/testdata/templates/<name>.cases.json (real
 *    models' templates) rendered byte for byte, or failing with the
 *    template's own message;
 *  - tests/data/jinja_cases.json, written by tests/gen_jinja_cases.py with
 *    jinja2: the language feature by feature, the same real templates with
 *    tools, tool calls and documents, and errors;
 *  - the built-in templates agree with the hub templates of their formats;
 *  - limits: endless loops, runaway output and memory, deep recursion and
 *    nesting fail with -SL_ERANGE instead of hanging or crashing;
 *  - renders from several threads at once; the model helpers (template of a
 *    model, BOS/EOS texts, tokenizing a rendering).
 *
 * usage: test_template JINJA_CASES_JSON */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat/template.h"
#include "common/log.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "testutil.h"

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    *len = b ? fread(b, 1, (size_t)n, f) : 0;
    if (b)
        b[*len] = 0;
    fclose(f);
    return b;
}

static sl_template *parse_file(const char *path)
{
    size_t n;
    char *src = read_all(path, &n), err[256];
    sl_template *t = NULL;
    CHECK(src != NULL, "read %s", path);
    if (src) {
        int rc = sl_template_parse(src, n, &t, err, sizeof err);
        CHECK(rc == 0, "parse %s: %s", path, err);
    }
    free(src);
    return t;
}

/* The variables of a case: everything but the expectations. */
static cJSON *case_vars(const cJSON *c)
{
    cJSON *v = cJSON_Duplicate(c, 1);
    cJSON_DeleteItemFromObject(v, "expected");
    cJSON_DeleteItemFromObject(v, "error");
    return v;
}

/* Renders and compares with `expected` (a string) or the raised `error`. */
static void check_render(const char *what, const sl_template *t, const cJSON *vars, const cJSON *expected,
                         const cJSON *error, bool raised)
{
    char *out = NULL, err[512];
    size_t len = 0;
    int rc = sl_template_render(t, vars, &out, &len, err, sizeof err);
    if (cJSON_IsString(expected)) {
        const char *want = expected->valuestring;
        CHECK(rc == 0, "%s: render failed (%d): %s", what, rc, err);
        if (rc == 0) {
            bool same = len == strlen(want) && !memcmp(out, want, len);
            size_t at = 0;
            while (at < len && want[at] && out[at] == want[at])
                at++;
            CHECK(same, "%s: differs at byte %zu of %zu/%zu:\n  got  ...%.60s\n  want ...%.60s", what, at, len,
                  strlen(want), out + (at > 20 ? at - 20 : 0), want + (at > 20 ? at - 20 : 0));
            CHECK(out[len] == 0, "%s: output NUL-terminated", what);
        }
    } else {
        CHECK(rc < 0 && out == NULL, "%s: should fail, rendered %.80s", what, out ? out : "");
        if (raised) {
            CHECK(rc == -SL_EINVAL, "%s: raise_exception gives -SL_EINVAL, got %d", what, rc);
            CHECK(!strcmp(err, error->valuestring), "%s: message '%s', want '%s'", what, err, error->valuestring);
        } else {
            CHECK(rc != -SL_EINVAL, "%s: a runtime error is not -SL_EINVAL", what);
            CHECK(strstr(err, error->valuestring) != NULL, "%s: message '%s' should contain '%s'", what, err,
                  error->valuestring);
        }
    }
    free(out);
}

/* ../shared/testdata/templates: every case of every model. */
static void test_reference_cases(void)
{
    char dir[1024];
    sl_testdata_path(dir, sizeof dir, "templates");
    DIR *d = opendir(dir);
    CHECK(d != NULL, "open %s", dir);
    if (!d)
        return;
    int files = 0, cases = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        const char *suffix = ".cases.json";
        if (n <= strlen(suffix) || strcmp(e->d_name + n - strlen(suffix), suffix))
            continue;
        char path[2048], tpath[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(tpath, sizeof tpath, "%s/%.*s.jinja", dir, (int)(n - strlen(suffix)), e->d_name);
        sl_template *t = parse_file(tpath);
        cJSON *all = sl_test_load_json(path);
        CHECK(cJSON_IsArray(all), "%s is a list", path);
        int i = 0;
        for (const cJSON *c = all ? all->child : NULL; t && c; c = c->next, i++) {
            char what[512];
            snprintf(what, sizeof what, "%s case %d", e->d_name, i);
            cJSON *vars = case_vars(c);
            const cJSON *error = cJSON_GetObjectItem(c, "error");
            /* raise_exception is how these templates fail */
            check_render(what, t, vars, cJSON_GetObjectItem(c, "expected"), error, error != NULL);
            cJSON_Delete(vars);
            cases++;
        }
        cJSON_Delete(all);
        sl_template_free(t);
        files++;
    }
    closedir(d);
    CHECK(files >= 6 && cases >= 48, "reference templates: %d files, %d cases", files, cases);
    printf("reference templates: %d files, %d cases\n", files, cases);
}

/* tests/data/jinja_cases.json */
static void test_jinja_cases(const char *path)
{
    cJSON *root = sl_test_load_json(path);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    CHECK(cJSON_IsArray(cases) && cJSON_GetArraySize(cases) > 100, "%s has the cases", path);
    int n = 0;
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next, n++) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(c, "name"));
        const char *inline_src = cJSON_GetStringValue(cJSON_GetObjectItem(c, "template"));
        const char *file = cJSON_GetStringValue(cJSON_GetObjectItem(c, "template_file"));
        const cJSON *expected = cJSON_GetObjectItem(c, "expected"), *error = cJSON_GetObjectItem(c, "error");
        bool raised = cJSON_IsTrue(cJSON_GetObjectItem(c, "raised"));
        char *src = NULL, err[512];
        size_t len = 0;
        if (inline_src) {
            len = strlen(inline_src);
        } else {
            char rel[512], p[1024];
            snprintf(rel, sizeof rel, "templates/%s", file ? file : "");
            src = read_all(sl_testdata_path(p, sizeof p, rel), &len);
            CHECK(src != NULL, "%s: read %s", name, p);
            if (!src)
                continue;
        }
        sl_template *t = NULL;
        int rc = sl_template_parse(inline_src ? inline_src : src, len, &t, err, sizeof err);
        if (rc) {
            /* syntax errors: the case must expect one, and the message match */
            CHECK(cJSON_IsString(error) && strstr(err, error->valuestring) != NULL,
                  "%s: parse failed (%d): %s (want %s)", name, rc, err,
                  cJSON_IsString(error) ? error->valuestring : "success");
            CHECK(strstr(err, "line ") == err, "%s: syntax errors give the line: %s", name, err);
        } else {
            check_render(name, t, cJSON_GetObjectItem(c, "vars"), expected, error, raised);
        }
        sl_template_free(t);
        free(src);
    }
    cJSON_Delete(root);
    printf("jinja2 cases: %d\n", n);
}

/* A render of `src` with `vars_json`: its rc, output in out (caller frees). */
static int render_src(const char *src, const char *vars_json, char **out, char *err, size_t err_size,
                      const sl_template_limits *lim)
{
    sl_template *t;
    int rc = sl_template_parse(src, strlen(src), &t, err, err_size);
    if (rc)
        return rc;
    if (lim)
        sl_template_set_limits(t, lim);
    cJSON *vars = vars_json ? cJSON_Parse(vars_json) : NULL;
    size_t len;
    rc = sl_template_render(t, vars, out, &len, err, err_size);
    cJSON_Delete(vars);
    sl_template_free(t);
    return rc;
}

static void expect_fail(const char *src, int want_rc, const char *want_msg, const sl_template_limits *lim)
{
    char *out = NULL, err[512] = "x";
    int rc = render_src(src, NULL, &out, err, sizeof err, lim);
    CHECK(rc == want_rc && out == NULL, "'%.60s' gives %d (want %d): %s", src, rc, want_rc, err);
    CHECK(strstr(err, want_msg) != NULL, "'%.60s': message '%s' should contain '%s'", src, err, want_msg);
    free(out);
}

static void test_limits(void)
{
    sl_log_set_level(SL_LOG_OFF);
    sl_template_limits small = {.max_steps = 200000, .max_output = 1 << 16, .max_memory = 8 << 20, .max_depth = 64};
    /* endless in practice: 10^15 loop turns (each inner range is 2.4 MB of garbage: room for it) */
    sl_template_limits steps = small;
    steps.max_memory = 64 << 20;
    expect_fail("{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
                "{% endfor %}{% endfor %}{% endfor %}",
                -SL_ERANGE, "steps", &steps);
    /* runaway output */
    expect_fail("{% for a in range(100000) %}{{ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' }}{% endfor %}", -SL_ERANGE,
                "bytes", &small);
    /* runaway memory: a string doubled 40 times */
    expect_fail("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"
                "{{ ns.s | length }}",
                -SL_ERANGE, "memory", &small);
    expect_fail("{{ 'x' * 100000000000 }}", -SL_ERANGE, "", &small);
    /* unbounded recursion */
    expect_fail("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", -SL_ERANGE, "nested", &small);
    expect_fail("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", -SL_ERANGE, "nested", NULL);
    /* values nested deeper than the printers walk */
    expect_fail("{% set ns = namespace(v=[]) %}{% for i in range(300) %}{% set ns.v = [ns.v] %}{% endfor %}"
                "{{ ns.v | tojson }}",
                -SL_ERANGE, "nested", NULL);
    /* the default limits stop an endless loop too (10^10 turns; a second or so) */
    expect_fail("{% set r = range(100000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}", -SL_ERANGE,
                "steps", NULL);
    expect_fail("{{ range(100001) | length }}", -SL_ERANGE, "MAX_RANGE", NULL);
    expect_fail("{{ 9223372036854775807 + 1 }}", -SL_ERANGE, "overflow", NULL);

    /* parse-time bounds */
    char *deep = malloc(200001);
    for (int i = 0; i < 100000; i++) {
        deep[i] = '(';
        deep[100000 + i] = ')';
    }
    deep[200000] = 0;
    char *src = malloc(200010);
    snprintf(src, 200010, "{{ %s }}", deep);
    sl_template *t = NULL;
    char err[256];
    int rc = sl_template_parse(src, strlen(src), &t, err, sizeof err);
    CHECK(rc == -SL_ERANGE && !t, "deep parentheses refused: %d %s", rc, err);
    free(src);
    free(deep);
    char *ifs = malloc(20 * 1000 + 1);
    ifs[0] = 0;
    for (int i = 0; i < 1000; i++)
        strcat(ifs, "{% if true %}");
    rc = sl_template_parse(ifs, strlen(ifs), &t, err, sizeof err);
    CHECK(rc == -SL_ERANGE && !t, "deeply nested statements refused: %d %s", rc, err);
    free(ifs);
    char *big = calloc(SL_TEMPLATE_MAX_SOURCE + 2, 1);
    memset(big, 'x', SL_TEMPLATE_MAX_SOURCE + 1);
    rc = sl_template_parse(big, SL_TEMPLATE_MAX_SOURCE + 1, &t, err, sizeof err);
    CHECK(rc == -SL_ERANGE && !t, "oversized source refused: %d", rc);
    free(big);
    sl_log_set_level(SL_LOG_WARN);
}

static void test_api_edges(void)
{
    sl_log_set_level(SL_LOG_OFF);
    sl_template *t;
    char err[8];
    /* the message is cut to the buffer and NUL-terminated */
    int rc = sl_template_parse("{% if %}", 8, &t, err, sizeof err);
    CHECK(rc == -SL_EFORMAT && strlen(err) == sizeof err - 1, "short error buffer: %d '%s'", rc, err);
    rc = sl_template_parse("{{ x", 4, &t, NULL, 0);
    CHECK(rc == -SL_EFORMAT && !t, "no error buffer: %d", rc);
    /* not NUL-terminated source: only len bytes are read */
    rc = sl_template_parse("{{ 'a' }}garbage", 9, &t, NULL, 0);
    CHECK(rc == 0, "source of len bytes");
    char *out;
    size_t len;
    char e2[128];
    rc = sl_template_render(t, NULL, &out, &len, e2, sizeof e2);
    CHECK(rc == 0 && len == 1 && !strcmp(out, "a"), "NULL vars render");
    free(out);
    cJSON *arr = cJSON_CreateArray();
    rc = sl_template_render(t, arr, &out, &len, e2, sizeof e2);
    CHECK(rc == -SL_EFORMAT && !out, "vars must be an object: %d %s", rc, e2);
    cJSON_Delete(arr);
    sl_template_free(t);
    sl_template_free(NULL);
    /* an empty template renders nothing */
    rc = sl_template_parse("", 0, &t, NULL, 0);
    CHECK(rc == 0, "empty template parses");
    rc = sl_template_render(t, NULL, &out, &len, NULL, 0);
    CHECK(rc == 0 && len == 0 && out && out[0] == 0, "empty template renders \"\"");
    free(out);
    sl_template_free(t);
    /* include and friends are refused */
    rc = sl_template_parse("{% include 'x' %}", 17, &t, e2, sizeof e2);
    CHECK(rc == -SL_EUNSUPPORTED && strstr(e2, "line 1"), "include refused: %d %s", rc, e2);
    /* a filter jinja2 has but sluice lacks fails when used, not before */
    char *o = NULL;
    rc = render_src("{% if false %}{{ x | wordwrap }}{% endif %}ok", NULL, &o, e2, sizeof e2, NULL);
    CHECK(rc == 0 && !strcmp(o, "ok"), "unused unsupported filter: %d", rc);
    free(o);
    o = NULL;
    rc = render_src("{{ 'x' | wordwrap }}", NULL, &o, e2, sizeof e2, NULL);
    CHECK(rc == -SL_EUNSUPPORTED, "unsupported filter used: %d %s", rc, e2);
    free(o);
    o = NULL;
    rc = render_src("{{ 'x' | nosuchfilter }}", NULL, &o, e2, sizeof e2, NULL);
    CHECK(rc == -SL_EFORMAT && strstr(e2, "No filter named 'nosuchfilter'"), "unknown filter: %d %s", rc, e2);
    free(o);
    /* strftime_now formats the current time */
    o = NULL;
    time_t before = time(NULL);
    rc = render_src("{{ strftime_now('%Y') }}", NULL, &o, e2, sizeof e2, NULL);
    time_t after = time(NULL);
    struct tm a, b;
    localtime_r(&before, &a);
    localtime_r(&after, &b);
    int year = o ? atoi(o) : 0;
    CHECK(rc == 0 && (year == a.tm_year + 1900 || year == b.tm_year + 1900), "strftime_now('%%Y') = %s", o);
    free(o);
    sl_log_set_level(SL_LOG_WARN);
}

/* The built-in templates agree with the hub templates of the same formats,
 * on the reference cases where both apply. */
static void agree(const char *builtin, const char *hub, bool needs_system, bool skip_system)
{
    char dir[1024], path[2048];
    sl_testdata_path(dir, sizeof dir, "templates");
    snprintf(path, sizeof path, "%s/%s.cases.json", dir, hub);
    cJSON *all = sl_test_load_json(path);
    sl_template *t;
    const char *src = sl_template_builtin(builtin);
    CHECK(src && sl_template_parse(src, strlen(src), &t, NULL, 0) == 0, "built-in %s parses", builtin);
    int compared = 0;
    for (const cJSON *c = all ? all->child : NULL; src && c; c = c->next) {
        const cJSON *m0 = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "messages"), 0);
        bool has_system = !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(m0, "role")), "system");
        if (cJSON_GetObjectItem(c, "error") || (needs_system && !has_system) || (skip_system && has_system))
            continue;
        cJSON *vars = case_vars(c);
        char what[128];
        snprintf(what, sizeof what, "built-in %s vs %s", builtin, hub);
        check_render(what, t, vars, cJSON_GetObjectItem(c, "expected"), NULL, false);
        cJSON_Delete(vars);
        compared++;
    }
    CHECK(compared >= 2, "built-in %s compared on %d cases", builtin, compared);
    if (src)
        sl_template_free(t);
    cJSON_Delete(all);
}

static void test_builtins(void)
{
    agree("phi3", "microsoft-Phi-3.5-mini-instruct", false, false);
    agree("gemma", "google-gemma-2-2b-it", false, true);
    agree("chatml", "Qwen-Qwen2.5-7B-Instruct", true, false);
    /* every built-in renders a conversation with a system prompt, ending in its generation prompt */
    static const char *const gen_prompt[][2] = {
        {"chatml", "<|im_start|>assistant\n"}, {"llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n"},
        {"llama2", "Hi [/INST]"},              {"mistral", "Hi[/INST]"},
        {"gemma", "<start_of_turn>model\n"},    {"phi3", "<|assistant|>\n"},
        {"zephyr", "<|assistant|>\n"}};
    const char *vars = "{\"messages\": [{\"role\": \"system\", \"content\": \"Sys\"}, {\"role\": \"user\", "
                       "\"content\": \"Hi\"}], \"add_generation_prompt\": true, \"bos_token\": \"<s>\", "
                       "\"eos_token\": \"</s>\"}";
    int n = 0;
    for (const char *const *name = sl_template_builtin_names(); *name; name++, n++) {
        char *out = NULL, err[256];
        int rc = render_src(sl_template_builtin(*name), vars, &out, err, sizeof err, NULL);
        CHECK(rc == 0, "built-in %s renders: %s", *name, err);
        bool found = false;
        for (size_t i = 0; i < sizeof gen_prompt / sizeof gen_prompt[0]; i++)
            if (!strcmp(gen_prompt[i][0], *name)) {
                size_t k = strlen(gen_prompt[i][1]);
                found = out && strlen(out) >= k && !strcmp(out + strlen(out) - k, gen_prompt[i][1]);
            }
        CHECK(found, "built-in %s ends with its generation prompt: %s", *name, out ? out : "");
        CHECK(out && strstr(out, "Sys"), "built-in %s keeps the system prompt", *name);
        free(out);
    }
    CHECK(n == 7 && !sl_template_builtin("nonesuch"), "7 built-ins");
}

typedef struct {
    const sl_template *t;
    const cJSON *vars;
    const char *want;
    int ok;
} thread_arg;

static void *render_many(void *p)
{
    thread_arg *a = p;
    a->ok = 1;
    for (int i = 0; i < 50; i++) {
        char *out = NULL;
        size_t len;
        if (sl_template_render(a->t, a->vars, &out, &len, NULL, 0) || strcmp(out, a->want))
            a->ok = 0;
        free(out);
    }
    return NULL;
}

static void test_threads(void)
{
    char dir[1024], path[2048];
    sl_testdata_path(dir, sizeof dir, "templates");
    snprintf(path, sizeof path, "%s/CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", dir);
    sl_template *t = parse_file(path);
    snprintf(path, sizeof path, "%s/CohereForAI-c4ai-command-r7b-12-2024-tool_use.cases.json", dir);
    cJSON *all = sl_test_load_json(path);
    const cJSON *c = cJSON_GetArrayItem(all, 4);
    cJSON *vars = case_vars(c);
    thread_arg args[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (thread_arg){t, vars, cJSON_GetStringValue(cJSON_GetObjectItem(c, "expected")), 0};
        pthread_create(&th[i], NULL, render_many, &args[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].ok, "thread %d rendered the same text 50 times", i);
    }
    cJSON_Delete(vars);
    cJSON_Delete(all);
    sl_template_free(t);
}

/* The model helpers, on stories260K (no chat template; BOS "<s>", EOS "</s>"). */
static void test_model_helpers(void)
{
    char path[1024];
    sl_model *m = NULL;
    sl_tokenizer *tk = NULL;
    CHECK(sl_model_open(sl_testdata_path(path, sizeof path, "models/stories260K.gguf"), &m) == 0, "open model");
    if (!m)
        return;
    CHECK(sl_tokenizer_new(sl_model_gguf(m), &tk) == 0, "tokenizer");
    sl_template *t = NULL;
    char err[512];
    sl_log_set_level(SL_LOG_OFF);
    int rc = sl_template_for_model(m, NULL, &t, err, sizeof err);
    CHECK(rc == -SL_ENOTFOUND && !t && strstr(err, "--chat-template"), "no template: %d %s", rc, err);
    rc = sl_template_for_model(m, "/nonexistent/file.jinja", &t, err, sizeof err);
    CHECK(rc == -SL_EIO && !t, "missing file: %d %s", rc, err);
    char tmp[] = "/tmp/sluice-template-XXXXXX";
    int fd = mkstemp(tmp);
    const char *bad = "{% if %}";
    CHECK(fd >= 0 && write(fd, bad, strlen(bad)) == (ssize_t)strlen(bad), "temp file");
    close(fd);
    rc = sl_template_for_model(m, tmp, &t, err, sizeof err);
    CHECK(rc == -SL_EFORMAT && strstr(err, tmp) && strstr(err, "line 1"), "bad file: %d %s", rc, err);
    sl_log_set_level(SL_LOG_WARN);
    const char *good = "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
                       "{% if add_generation_prompt %}>{% endif %}{{ extra_var }}{{ eos_token }}";
    FILE *f = fopen(tmp, "w");
    fputs(good, f);
    fclose(f);
    rc = sl_template_for_model(m, tmp, &t, err, sizeof err);
    CHECK(rc == 0 && t, "template from a file: %d %s", rc, err);
    unlink(tmp);
    cJSON *msgs = cJSON_Parse("[{\"role\": \"user\", \"content\": \"Once\"}]");
    cJSON *extra = cJSON_Parse("{\"extra_var\": \"!\", \"bos_token\": \"B\"}");
    char *out = NULL;
    size_t len;
    rc = sl_template_render_chat(t, tk, msgs, true, NULL, &out, &len, err, sizeof err);
    CHECK(rc == 0 && out && !strcmp(out, "<s>[user:Once]></s>"), "render_chat with BOS/EOS texts: %s", out);
    free(out);
    rc = sl_template_render_chat(t, tk, msgs, false, extra, &out, &len, err, sizeof err);
    CHECK(rc == 0 && out && !strcmp(out, "B[user:Once]!</s>"), "render_chat with extra variables: %s", out);
    free(out);
    sl_log_set_level(SL_LOG_OFF);
    rc = sl_template_render_chat(t, tk, extra, false, NULL, &out, &len, err, sizeof err);
    CHECK(rc == -SL_EINVAL && !out, "messages must be an array: %d", rc);
    sl_log_set_level(SL_LOG_WARN);
    sl_template_free(t);
    t = NULL;
    rc = sl_template_for_model(m, "chatml", &t, err, sizeof err);
    CHECK(rc == 0 && t, "built-in by name");
    sl_template_free(t);

    /* tokenizing a rendering: BOS once, whether or not the template wrote it */
    int32_t *ids = NULL;
    int n = sl_template_encode(tk, "<s>Once upon", 12, &ids);
    int32_t bos = sl_tokenizer_bos(tk);
    CHECK(n >= 2 && ids[0] == bos && ids[1] != bos, "template's BOS is not doubled (%d tokens)", n);
    int32_t *ids2 = NULL;
    int n2 = sl_template_encode(tk, "Once upon", 9, &ids2);
    CHECK(n2 == n && ids2[0] == bos && !memcmp(ids + 1, ids2 + 1, (size_t)(n - 1) * sizeof *ids),
          "BOS added when the text lacks it (%d vs %d tokens)", n2, n);
    free(ids);
    free(ids2);
    cJSON_Delete(msgs);
    cJSON_Delete(extra);
    sl_tokenizer_free(tk);
    sl_model_close(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_template JINJA_CASES_JSON\n");
        return 2;
    }
    test_reference_cases();
    test_jinja_cases(argv[1]);
    test_limits();
    test_api_edges();
    test_builtins();
    test_threads();
    test_model_helpers();
    return sl_test_finish();
}
