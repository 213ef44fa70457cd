/* Chat templates: the public face of the Jinja interpreter (chat/jinja_*.c),
 * the templates sluice ships for models without one, and the glue to a
 * model (its tokenizer.chat_template, its BOS/EOS texts, tokenizing a
 * rendering). See chat/template.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "chat/template.h"
#include "common/log.h"

/* ---- built-in templates ----
 * Written for sluice from the published turn formats; each renders
 * messages[].role/content and honours add_generation_prompt. */

static const char k_chatml[] =
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

static const char k_llama3[] =
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/* Llama 2 chat: the system prompt goes inside the first [INST]. */
static const char k_llama2[] =
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set system = '<<SYS>>\\n' + messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}"
    "{{- bos_token + '[INST] ' + (system if loop.first else '') + message['content'] | trim + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] | trim + ' ' + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}";

/* Mistral instruct: [INST] turns; a system prompt is put before the first user message. */
static const char k_mistral[] =
    "{{- bos_token }}"
    "{%- set ns = namespace(system='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- set ns.system = message['content'] + '\\n\\n' %}"
    "{%- elif message['role'] == 'user' %}{{- '[INST] ' + ns.system + message['content'] + '[/INST]' }}"
    "{%- set ns.system = '' %}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}";

/* Gemma: user/model turns; a system prompt is put before the first user message. */
static const char k_gemma[] =
    "{{- bos_token }}"
    "{%- set ns = namespace(system='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- set ns.system = message['content'] | trim + '\\n\\n' %}"
    "{%- else %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + ns.system + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- set ns.system = '' %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}";

static const char k_phi3[] =
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' or message['content'] %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- else %}{{- eos_token }}{%- endif %}";

static const char k_zephyr[] =
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}";

static const struct {
    const char *name, *src;
} k_builtin[] = {
    {"chatml", k_chatml}, {"llama2", k_llama2}, {"llama3", k_llama3}, {"mistral", k_mistral},
    {"gemma", k_gemma},   {"phi3", k_phi3},     {"zephyr", k_zephyr},
};

static const char *const k_builtin_names[] = {"chatml", "llama2", "llama3", "mistral", "gemma", "phi3", "zephyr",
                                              NULL};

const char *sl_template_builtin(const char *name)
{
    for (size_t i = 0; name && i < sizeof k_builtin / sizeof k_builtin[0]; i++)
        if (!strcmp(k_builtin[i].name, name))
            return k_builtin[i].src;
    return NULL;
}

const char *const *sl_template_builtin_names(void) { return k_builtin_names; }

/* ---- parse / render ---- */

static void set_err(char *err, size_t err_size, const char *msg)
{
    if (err && err_size)
        snprintf(err, err_size, "%s", msg);
}

int sl_template_parse(const char *src, size_t len, sl_template **out, char *err, size_t err_size)
{
    *out = NULL;
    if (err && err_size)
        err[0] = 0;
    if (len > SL_TEMPLATE_MAX_SOURCE) {
        SL_ERROR("a template of %zu bytes is larger than the limit of %zu", len, SL_TEMPLATE_MAX_SOURCE);
        if (err && err_size)
            snprintf(err, err_size, "a template of %zu bytes is larger than the limit of %zu bytes", len,
                     SL_TEMPLATE_MAX_SOURCE);
        return -SL_ERANGE;
    }
    if (!src && len) {
        set_err(err, err_size, "no template source");
        return -SL_EINVAL;
    }
    sl_template *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, err_size, "out of memory");
        return -SL_ENOMEM;
    }
    /* Nodes and tokens take a bounded multiple of the source. */
    t->arena.cap = ((size_t)1 << 20) + len * 256;
    sl_template_limits dl = SL_TEMPLATE_DEFAULT_LIMITS;
    t->lim = dl;
    char msg[512] = "";
    int rc = jinja_parse(t, src ? src : "", len, msg, sizeof msg);
    if (rc) {
        SL_ERROR("template syntax: %s", msg);
        set_err(err, err_size, msg);
        sl_template_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void sl_template_set_limits(sl_template *t, const sl_template_limits *lim)
{
    if (lim->max_steps)
        t->lim.max_steps = lim->max_steps;
    if (lim->max_output)
        t->lim.max_output = lim->max_output;
    if (lim->max_memory)
        t->lim.max_memory = lim->max_memory;
    if (lim->max_depth)
        t->lim.max_depth = lim->max_depth;
}

int sl_template_render(const sl_template *t, const cJSON *vars, char **out, size_t *out_len, char *err,
                       size_t err_size)
{
    *out = NULL;
    *out_len = 0;
    size_t cap = err_size > 1024 ? err_size : 1024;
    char *msg = malloc(cap);
    if (!msg) {
        set_err(err, err_size, "out of memory");
        return -SL_ENOMEM;
    }
    msg[0] = 0;
    int rc = jinja_render(t, vars, out, out_len, msg, cap);
    if (rc == -SL_EINVAL)
        SL_INFO("the template raised: %s", msg);
    else if (rc)
        SL_ERROR("template: %s", msg);
    if (err && err_size)
        snprintf(err, err_size, "%s", rc ? msg : "");
    free(msg);
    return rc;
}

void sl_template_free(sl_template *t)
{
    if (!t)
        return;
    jarena_free(&t->arena);
    free(t);
}

/* ---- models ---- */

static int read_source(const char *path, char **buf, size_t *len, char *err, size_t err_size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && err_size)
            snprintf(err, err_size, "cannot open the template file '%s'", path);
        SL_ERROR("cannot open the template file '%s'", path);
        return -SL_EIO;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n == cap) {
            if (cap > SL_TEMPLATE_MAX_SOURCE)
                break;
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    bool bad = !b || ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        if (err && err_size)
            snprintf(err, err_size, "cannot read the template file '%s'", path);
        SL_ERROR("cannot read the template file '%s'", path);
        return -SL_EIO;
    }
    *buf = b;
    *len = n; /* a file over the limit is refused by sl_template_parse */
    return 0;
}

static int parse_named(const char *what, const char *src, size_t len, sl_template **out, char *err,
                       size_t err_size)
{
    char msg[512];
    int rc = sl_template_parse(src, len, out, msg, sizeof msg);
    if (rc && err && err_size)
        snprintf(err, err_size, "%s: %s", what, msg);
    return rc;
}

int sl_template_for_model(const sl_model *m, const char *override, sl_template **out, char *err,
                          size_t err_size)
{
    *out = NULL;
    const sl_gguf *g = m ? sl_model_gguf(m) : NULL;
    sl_str s;
    if (!override || !*override) {
        if (g && sl_gguf_get_str(g, "tokenizer.chat_template", &s) == 0)
            return parse_named("the model's chat template", s.ptr, (size_t)s.len, out, err, err_size);
        char names[256] = "";
        for (const char *const *n = k_builtin_names; *n; n++) {
            size_t k = strlen(names);
            snprintf(names + k, sizeof names - k, "%s%s", k ? ", " : "", *n);
        }
        if (err && err_size)
            snprintf(err, err_size,
                     "the model has no chat template (tokenizer.chat_template); give one with --chat-template "
                     "NAME|FILE (built-in: %s)", names);
        SL_ERROR("the model has no chat template (tokenizer.chat_template)");
        return -SL_ENOTFOUND;
    }
    char key[256];
    snprintf(key, sizeof key, "tokenizer.chat_template.%s", override);
    if (g && strlen(override) < 200 && sl_gguf_get_str(g, key, &s) == 0)
        return parse_named(key, s.ptr, (size_t)s.len, out, err, err_size);
    const char *builtin = sl_template_builtin(override);
    if (builtin)
        return parse_named(override, builtin, strlen(builtin), out, err, err_size);
    char *buf;
    size_t len;
    int rc = read_source(override, &buf, &len, err, err_size);
    if (rc)
        return rc;
    rc = parse_named(override, buf, len, out, err, err_size);
    free(buf);
    return rc;
}

/* The text of a special token as a NUL-terminated cJSON string ("" when absent). */
static cJSON *token_text(const sl_tokenizer *tk, int32_t id)
{
    size_t len = 0;
    const char *p = id >= 0 ? sl_tokenizer_token_text(tk, id, &len) : NULL;
    char *s = malloc(len + 1);
    if (!s)
        return NULL;
    if (len)
        memcpy(s, p, len);
    s[len] = 0;
    cJSON *j = cJSON_CreateString(s);
    free(s);
    return j;
}

int sl_template_render_chat(const sl_template *t, const sl_tokenizer *tk, const cJSON *messages,
                            bool add_generation_prompt, const cJSON *extra, char **out, size_t *out_len,
                            char *err, size_t err_size)
{
    *out = NULL;
    *out_len = 0;
    if (!cJSON_IsArray(messages) || (extra && !cJSON_IsObject(extra))) {
        set_err(err, err_size, !cJSON_IsArray(messages) ? "messages must be a JSON array" : "extra variables must "
                                                                                            "be a JSON object");
        SL_ERROR("%s", !cJSON_IsArray(messages) ? "messages is not an array" : "extra is not an object");
        return -SL_EINVAL;
    }
    cJSON *vars = cJSON_CreateObject();
    cJSON *bos = token_text(tk, sl_tokenizer_bos(tk)), *eos = token_text(tk, sl_tokenizer_eos(tk));
    bool ok = vars && bos && eos;
    if (ok) {
        /* references: the caller's trees are not copied, and not freed with vars */
        ok = cJSON_AddItemReferenceToObject(vars, "messages", (cJSON *)messages) &&
             cJSON_AddItemToObject(vars, "add_generation_prompt", cJSON_CreateBool(add_generation_prompt)) &&
             cJSON_AddItemToObject(vars, "bos_token", bos) && cJSON_AddItemToObject(vars, "eos_token", eos);
        bos = eos = NULL;
    }
    for (const cJSON *e = extra ? extra->child : NULL; ok && e; e = e->next) {
        if (!e->string)
            continue;
        cJSON_DeleteItemFromObjectCaseSensitive(vars, e->string);
        ok = cJSON_AddItemReferenceToObject(vars, e->string, (cJSON *)e);
    }
    int rc;
    if (!ok) {
        set_err(err, err_size, "out of memory");
        SL_ERROR("out of memory building the template's variables");
        rc = -SL_ENOMEM;
    } else {
        rc = sl_template_render(t, vars, out, out_len, err, err_size);
    }
    cJSON_Delete(bos);
    cJSON_Delete(eos);
    cJSON_Delete(vars);
    return rc;
}

int sl_template_encode(const sl_tokenizer *tk, const char *text, size_t len, int32_t **ids)
{
    *ids = NULL;
    int32_t bos = sl_tokenizer_bos(tk);
    bool add_bos = sl_tokenizer_add_bos(tk) && bos >= 0;
    if (add_bos) {
        size_t blen = 0;
        const char *b = sl_tokenizer_token_text(tk, bos, &blen);
        if (b && blen && len >= blen && !memcmp(text, b, blen))
            add_bos = false; /* the template wrote it */
    }
    int n = sl_tokenizer_encode(tk, text, len, SL_TOK_PARSE_SPECIAL, NULL, 0);
    if (n < 0)
        return n;
    size_t total = (size_t)n + (add_bos ? 1 : 0);
    int32_t *v = malloc((total + 1) * sizeof *v);
    if (!v) {
        SL_ERROR("out of memory for %zu tokens", total);
        return -SL_ENOMEM;
    }
    if (add_bos)
        v[0] = bos;
    int k = sl_tokenizer_encode(tk, text, len, SL_TOK_PARSE_SPECIAL, v + (add_bos ? 1 : 0), (size_t)n);
    if (k != n) {
        free(v);
        return k < 0 ? k : -SL_EFORMAT;
    }
    *ids = v;
    return (int)total;
}
