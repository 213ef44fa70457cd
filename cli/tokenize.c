/* `sluice tokenize`: text to token ids with a model's (or a vocabulary
 * file's) tokenizer. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/gguf.h"
#include "model/source.h"
#include "model/tokenizer.h"

static void help(FILE *out)
{
    fprintf(out, "usage: sluice tokenize -m MODEL (--text TEXT | -f FILE) [--no-bos] [--no-parse-special] [--json]\n\n"
                 "Prints the token ids of the text, one '<id> -> '<piece>'' line each, or with\n"
                 "--json one JSON array of ids on stdout.\n\n"
                 "  -m, --model PATH        GGUF model, vocabulary file or packed directory\n"
                 "      --text TEXT         the text\n"
                 "  -f, --file PATH         read the text from a file (bytes as they are)\n"
                 "      --no-bos            do not add BOS/EOS even when the vocabulary asks for them\n"
                 "      --no-parse-special  treat special-token text (e.g. <s>) as plain text\n"
                 "      --json              print a JSON array\n"
                 "  -h, --help              this text\n");
}

/* Writes a piece for humans: printable bytes as they are, others escaped. */
static void print_piece(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\n')
            fputs("\\n", stdout);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
}

int sl_cmd_tokenize(int argc, char **argv)
{
    enum { OPT_TEXT = 256, OPT_NO_BOS, OPT_NO_SPECIAL, OPT_JSON };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"text", required_argument, 0, OPT_TEXT},
        {"file", required_argument, 0, 'f'},  {"no-bos", no_argument, 0, OPT_NO_BOS},
        {"no-parse-special", no_argument, 0, OPT_NO_SPECIAL}, {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},        {0}};
    const char *path = NULL, *text = NULL, *file = NULL;
    bool add_special = true, parse_special = true, json = false;
    int c;
    while ((c = getopt_long(argc, argv, "m:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case OPT_TEXT: text = optarg; break;
        case 'f': file = optarg; break;
        case OPT_NO_BOS: add_special = false; break;
        case OPT_NO_SPECIAL: parse_special = false; break;
        case OPT_JSON: json = true; break;
        case 'h': help(stdout); return 0;
        default: help(stderr); return 2;
        }
    }
    if (!path || !text == !file || optind != argc) {
        fprintf(stderr, "sluice tokenize: %s\n",
                !path ? "-m MODEL is required"
                      : optind != argc ? "unexpected argument" : "give exactly one of --text and -f");
        help(stderr);
        return 2;
    }
    char *buf = NULL;
    size_t len;
    if (file) {
        if (sl_cli_read_file(file, &buf, &len))
            return 1;
        text = buf;
    } else {
        len = strlen(text);
    }
    int status = 1;
    sl_gguf *g = NULL;
    sl_tokenizer *tk = NULL;
    int32_t *ids = NULL;
    if (sl_source_open_gguf(path, &g) || sl_tokenizer_new(g, &tk))
        goto out;
    unsigned flags = (add_special ? SL_TOK_ADD_SPECIAL : 0) | (parse_special ? SL_TOK_PARSE_SPECIAL : 0);
    int n = sl_tokenizer_encode(tk, text, len, flags, NULL, 0);
    if (n < 0)
        goto out;
    ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (!ids || sl_tokenizer_encode(tk, text, len, flags, ids, (size_t)n) != n)
        goto out;
    if (json) {
        putchar('[');
        for (int i = 0; i < n; i++)
            printf(i ? ", %d" : "%d", ids[i]);
        puts("]");
    } else {
        for (int i = 0; i < n; i++) {
            const char *piece;
            size_t plen;
            sl_tokenizer_piece(tk, ids[i], SL_TOK_RENDER_SPECIAL, &piece, &plen);
            printf("%6d -> '", ids[i]);
            print_piece(piece, plen);
            puts("'");
        }
    }
    status = 0;
out:
    free(ids);
    sl_tokenizer_free(tk);
    sl_gguf_close(g);
    free(buf);
    return status;
}
