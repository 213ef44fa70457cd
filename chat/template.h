/* Chat templates: render a model's tokenizer.chat_template (Jinja) into the
 * text of a conversation, byte for byte as the model hubs do.
 *
 * The hubs render with Python's jinja2 configured so: a sandboxed,
 * immutable environment; trim_blocks and lstrip_blocks on; the loopcontrols
 * extension ({% break %}, {% continue %}); `tojson` is json.dumps with
 * ensure_ascii off and keys in their given order; `raise_exception(msg)`
 * fails the render with msg; `strftime_now(fmt)` formats the current local
 * time. This module implements that language for what templates use:
 *  - statements: if/elif/else, for (tuple targets, `if` filter, else,
 *    recursive, loop.index/index0/revindex/revindex0/first/last/length/
 *    depth/depth0/previtem/nextitem/cycle/changed), set (names, tuples,
 *    namespace attributes, block set), macro (defaults, varargs, kwargs,
 *    caller), call blocks, filter blocks, with, block, raw, print,
 *    generation, break, continue; whitespace control (-, +) and comments;
 *  - expressions: literals, lists, tuples, dicts, attribute and item access,
 *    slices, calls with keyword arguments, filters, tests, arithmetic, ~,
 *    comparisons (chained), in / not in, and/or/not, inline if;
 *  - filters: abs, attr, batch, capitalize, center, count, d, default,
 *    dictsort, e, escape, first, float, forceescape, format, indent, int,
 *    items, join, last, length, list, lower, map, max, min, reject,
 *    rejectattr, replace, reverse, round, safe, select, selectattr, sort,
 *    string, sum, title, tojson, trim, truncate, unique, upper, wordcount
 *    (jinja2's others fail with -SL_EUNSUPPORTED when used);
 *  - tests: defined, undefined, none, boolean, true, false, integer, float,
 *    number, string, mapping, iterable, sequence, callable, sameas, escaped,
 *    in, lower, upper, odd, even, divisibleby, eq/equalto/==, ne/!=,
 *    lt/lessthan/<, le/<=, gt/greaterthan/>, ge/>=, filter, test;
 *  - methods of strings (startswith, endswith, split, rsplit, splitlines,
 *    strip, lstrip, rstrip, upper, lower, title, capitalize, swapcase,
 *    replace, find, rfind, index, rindex, count, join, format, partition,
 *    rpartition, removeprefix, removesuffix, center, ljust, rjust, zfill,
 *    isalnum, isalpha, isdigit, isspace, islower, isupper), dicts (get,
 *    items, keys, values) and lists (count, index);
 *  - globals: range, namespace, dict, joiner, cycler, raise_exception,
 *    strftime_now.
 * Values follow Python: None/True/False print so, floats print as Python's
 * repr, lists and dicts print as Python's repr, undefined values print as ""
 * and fail when used. Differences: integers are 64-bit (overflow is an
 * error); an integral JSON number below 2^53 is an int (cJSON keeps no
 * other trace of how it was written), so 1.0 in the variables reads as 1;
 * `range` gives a list rather than a lazy range; escape/e do not make their
 * result "safe" for later concatenation (autoescaping is off, as on the hubs);
 * include, import, extends and the `do` tag are refused.
 *
 * Values come in as a cJSON object. A parsed template is immutable: several
 * threads may render it at once. */
#ifndef SL_CHAT_TEMPLATE_H
#define SL_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "model/model.h"
#include "model/tokenizer.h"

typedef struct sl_template sl_template;

/* Bounds on one render, so that a hostile template can neither hang nor
 * exhaust memory. A render that passes one fails with -SL_ERANGE. */
typedef struct sl_template_limits {
    uint64_t max_steps;  /* evaluation steps (expressions, statements, loop turns, items) */
    size_t max_output;   /* bytes of rendered text */
    size_t max_memory;   /* bytes of working memory (values, scopes, captures) */
    uint32_t max_depth;  /* nesting of evaluation (expressions, statements, macro calls) */
} sl_template_limits;

/* The defaults: 100 million steps (about a second), 64 MiB of output, 256
 * MiB of memory, depth 400 (at most about 256 KiB of stack in a release
 * build, 1 MiB under AddressSanitizer: render on threads with at least that). */
#define SL_TEMPLATE_DEFAULT_LIMITS {100000000u, (size_t)64 << 20, (size_t)256 << 20, 400u}

/* Largest template source accepted (1 MiB). */
#define SL_TEMPLATE_MAX_SOURCE ((size_t)1 << 20)

/* Parses Jinja source (len bytes, need not be NUL-terminated). Returns 0
 * and *out (free with sl_template_free), or a negative sl_err with a
 * one-line message including the line number in err (err_size bytes,
 * always NUL-terminated when err_size > 0) and *out NULL:
 * -SL_EFORMAT for a syntax error, -SL_EUNSUPPORTED for a construct sluice
 * refuses (include, import, extends), -SL_ERANGE for a source over
 * SL_TEMPLATE_MAX_SOURCE or nested too deeply, -SL_ENOMEM. Logs the message
 * once. Never blocks. The template uses SL_TEMPLATE_DEFAULT_LIMITS. */
int sl_template_parse(const char *src, size_t len, sl_template **out, char *err, size_t err_size);

/* Replaces the template's render limits (zero fields keep their value).
 * Not thread-safe against renders of the same template in progress. */
void sl_template_set_limits(sl_template *t, const sl_template_limits *lim);

/* Renders with the variables of `vars` (a cJSON object: messages,
 * add_generation_prompt, bos_token, eos_token, tools, date_string, ...;
 * NULL for none). On success returns 0, *out is a malloc'd NUL-terminated
 * string (the caller frees it) and *out_len its length. On failure *out is
 * NULL and err holds one line:
 *  -SL_EINVAL: the template called raise_exception(msg); err is msg exactly
 *   (truncated to err_size - 1 bytes); logged at info level only, since it
 *   is the template's own answer (e.g. "System role not supported");
 *  -SL_EFORMAT: a runtime error ("line 3: 'x' is undefined", a type error,
 *   division by zero, ...), or vars is not an object;
 *  -SL_EUNSUPPORTED: the template uses a filter, test or method sluice does
 *   not implement;
 *  -SL_ERANGE: a limit was passed (steps, output, memory, depth, a range
 *   over 100000 items as the hub's sandbox refuses, integer overflow);
 *  -SL_ENOMEM.
 * Other than raise_exception, failures are logged once. Does not block;
 * bounded by the template's limits. Thread-safe. */
int sl_template_render(const sl_template *t, const cJSON *vars, char **out, size_t *out_len, char *err,
                       size_t err_size);

/* Frees a template. NULL is accepted. */
void sl_template_free(sl_template *t);

/* The Jinja source of a template sluice ships for models without one
 * ("chatml", "llama2", "llama3", "mistral", "gemma", "phi3", "zephyr"), or
 * NULL. Static string. */
const char *sl_template_builtin(const char *name);

/* Names of the built-in templates, NULL-terminated. Static. */
const char *const *sl_template_builtin_names(void);

/* The template for a model: with override NULL (or ""), the model's
 * tokenizer.chat_template; otherwise override is, in this order, the name of
 * one of the model's named templates (tokenizer.chat_template.NAME), a
 * built-in name (sl_template_builtin) or the path of a file of Jinja source.
 * Returns 0 and *out (sl_template_free), or -SL_ENOTFOUND (the model has no
 * template and none was given: err says to use --chat-template), -SL_EIO
 * (the file cannot be read), or the errors of sl_template_parse; the message
 * in err, logged. Blocks reading the file. */
int sl_template_for_model(const sl_model *m, const char *override, sl_template **out, char *err,
                          size_t err_size);

/* Renders a conversation for model `tk`: vars = `extra` (a cJSON object
 * with tools, documents, date_string, ...; may be NULL) plus messages (a
 * cJSON array of {role, content, ...}), add_generation_prompt, and bos_token
 * / eos_token set to the texts of the tokenizer's BOS and EOS tokens ("" when
 * it has none); keys of `extra` win over these. Returns what
 * sl_template_render returns (-SL_EINVAL also for messages not an array or
 * extra not an object). Thread-safe. */
int sl_template_render_chat(const sl_template *t, const sl_tokenizer *tk, const cJSON *messages,
                            bool add_generation_prompt, const cJSON *extra, char **out, size_t *out_len,
                            char *err, size_t err_size);

/* Tokenizes a rendering: special tokens written in the text are recognised
 * (SL_TOK_PARSE_SPECIAL), and BOS is put first only when the vocabulary adds
 * one and the text does not already begin with it (templates usually write
 * it themselves). Returns the count and a malloc'd array in *ids (caller
 * frees), or the negative errors of sl_tokenizer_encode (-SL_ENOMEM too),
 * logged. Does not block. */
int sl_template_encode(const sl_tokenizer *tk, const char *text, size_t len, int32_t **ids);

#endif
