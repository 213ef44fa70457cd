/* `sluice template`: renders a chat template with a conversation from a JSON
 * file and prints the text exactly (no newline added), as a model would be
 * prompted with it. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/template.h"
#include "cli/cli.h"
#include "common/log.h"
#include "model/source.h"

static void help(FILE *out)
{
    fprintf(out,
            "usage: sluice template (--template-file FILE | --chat-template NAME|FILE | -m MODEL)\n"
            "                       --messages FILE.json [--add-generation-prompt] [--bos S] [--eos S]\n\n"
            "Renders a chat template (Jinja, as the model hubs render tokenizer.chat_template)\n"
            "and prints the text on stdout, byte for byte. If the template raises an error\n"
            "(raise_exception), prints its message on stderr and exits 1.\n\n"
            "  --template-file FILE       the template's Jinja source\n"
            "  --chat-template NAME|FILE  a built-in template (");
    for (const char *const *n = sl_template_builtin_names(); *n; n++)
        fprintf(out, "%s%s", *n, n[1] ? ", " : "");
    fprintf(out,
            "),\n"
            "                             a template named in the model's metadata, or a file\n"
            "  -m, --model PATH           take the template (unless given) and the BOS/EOS texts\n"
            "                             from this model\n"
            "  --messages FILE.json       a JSON array of messages ({\"role\", \"content\", ...}), or an\n"
            "                             object of variables with \"messages\" (and \"tools\",\n"
            "                             \"documents\", ...); - reads standard input\n"
            "  --add-generation-prompt    end with the start of the assistant's turn\n"
            "  --bos S, --eos S           the bos_token / eos_token texts (default: the model's, or \"\")\n"
            "  -h, --help                 this text\n");
}

/* Reads a whole stream into a malloc'd NUL-terminated buffer. */
static char *read_stream(FILE *f, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - 1 - n, f);
        if (n < cap - 1)
            break;
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            return NULL;
        }
        b = nb;
        cap *= 2;
    }
    if (b)
        b[n] = 0;
    *len = n;
    return b;
}

int sl_cmd_template(int argc, char **argv)
{
    enum { OPT_FILE = 256, OPT_NAME, OPT_MESSAGES, OPT_AGP, OPT_BOS, OPT_EOS };
    static const struct option opts[] = {
        {"template-file", required_argument, 0, OPT_FILE}, {"chat-template", required_argument, 0, OPT_NAME},
        {"model", required_argument, 0, 'm'},             {"messages", required_argument, 0, OPT_MESSAGES},
        {"add-generation-prompt", no_argument, 0, OPT_AGP}, {"bos", required_argument, 0, OPT_BOS},
        {"eos", required_argument, 0, OPT_EOS},            {"help", no_argument, 0, 'h'},
        {0}};
    const char *file = NULL, *name = NULL, *model = NULL, *messages = NULL, *bos = NULL, *eos = NULL;
    bool agp = false;
    int c;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_FILE: file = optarg; break;
        case OPT_NAME: name = optarg; break;
        case 'm': model = optarg; break;
        case OPT_MESSAGES: messages = optarg; break;
        case OPT_AGP: agp = true; break;
        case OPT_BOS: bos = optarg; break;
        case OPT_EOS: eos = optarg; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    const char *why = optind != argc              ? "unexpected argument"
                      : !messages                 ? "--messages FILE.json is required"
                      : file && name              ? "give one of --template-file and --chat-template"
                      : !file && !name && !model  ? "give --template-file, --chat-template or -m"
                                                  : NULL;
    if (why) {
        fprintf(stderr, "sluice template: %s\n", why);
        help(stderr);
        return 2;
    }

    int status = 1;
    char *json_text = NULL, *out = NULL, err[1024];
    size_t json_len = 0, out_len = 0;
    cJSON *root = NULL, *vars = NULL;
    sl_model *m = NULL;
    sl_tokenizer *tk = NULL;
    sl_template *t = NULL;

    if (!strcmp(messages, "-")) {
        json_text = read_stream(stdin, &json_len);
        if (!json_text)
            fprintf(stderr, "sluice template: cannot read standard input\n");
    } else if (sl_cli_read_file(messages, &json_text, &json_len)) {
        json_text = NULL;
    }
    if (!json_text)
        goto out;
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(json_text, json_len + 1, &end, true); /* the NUL ends it */
    if (!root) {
        fprintf(stderr, "sluice template: %s is not valid JSON (at byte %zu)\n", messages,
                end ? (size_t)(end - json_text) : (size_t)0);
        goto out;
    }
    const cJSON *msgs = cJSON_IsArray(root) ? root : cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(msgs)) {
        fprintf(stderr, "sluice template: %s must hold a JSON array of messages, or an object with \"messages\"\n",
                messages);
        goto out;
    }
    /* the variables other than messages: the object's other keys, then --bos / --eos */
    vars = cJSON_CreateObject();
    if (!vars)
        goto out;
    if (cJSON_IsObject(root))
        for (const cJSON *e = root->child; e; e = e->next)
            if (e->string && strcmp(e->string, "messages"))
                cJSON_AddItemReferenceToObject(vars, e->string, (cJSON *)e);
    if (bos)
        cJSON_AddStringToObject(vars, "bos_token", bos);
    if (eos)
        cJSON_AddStringToObject(vars, "eos_token", eos);

    if (model) {
        if (sl_source_open_model(model, SL_SOURCE_META, &m) || sl_tokenizer_new(sl_model_gguf(m), &tk))
            goto out;
    }
    if (file && !model) {
        char *src;
        size_t len;
        if (sl_cli_read_file(file, &src, &len))
            goto out;
        int rc = sl_template_parse(src, len, &t, err, sizeof err);
        free(src);
        if (rc) {
            fprintf(stderr, "sluice template: %s: %s\n", file, err);
            goto out;
        }
    } else if (sl_template_for_model(m, file ? file : name, &t, err, sizeof err)) {
        fprintf(stderr, "sluice template: %s\n", err);
        goto out;
    }

    int rc;
    if (tk) {
        rc = sl_template_render_chat(t, tk, msgs, agp, vars, &out, &out_len, err, sizeof err);
    } else {
        if (!cJSON_GetObjectItemCaseSensitive(vars, "bos_token"))
            cJSON_AddStringToObject(vars, "bos_token", "");
        if (!cJSON_GetObjectItemCaseSensitive(vars, "eos_token"))
            cJSON_AddStringToObject(vars, "eos_token", "");
        cJSON_DeleteItemFromObjectCaseSensitive(vars, "add_generation_prompt");
        cJSON_AddBoolToObject(vars, "add_generation_prompt", agp);
        cJSON_AddItemReferenceToObject(vars, "messages", (cJSON *)msgs);
        rc = sl_template_render(t, vars, &out, &out_len, err, sizeof err);
    }
    if (rc) {
        /* other failures were logged where they were found */
        if (rc == -SL_EINVAL)
            fprintf(stderr, "sluice template: the template raised an error: %s\n", err);
        goto out;
    }
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout)) {
        fprintf(stderr, "sluice template: cannot write the rendering\n");
        goto out;
    }
    status = 0;
out:
    free(out);
    sl_template_free(t);
    sl_tokenizer_free(tk);
    sl_model_close(m);
    cJSON_Delete(vars);
    cJSON_Delete(root);
    free(json_text);
    return status;
}
