/* libFuzzer target for the packed-model manifest parser (model/pack.h): the
 * input is parsed as a whole manifest file, and again as a manifest body
 * wrapped in a valid frame (magic, version, length, checksum), so that the
 * fuzzer reaches the msgpack body without having to find checksums. A
 * manifest that parses is walked through every accessor, and when its image
 * is small its GGUF header is opened and the units' coverage of the tensors
 * checked (sl_pack_image_open), with every unit placed into the image, so
 * that AddressSanitizer checks every offset the parser let through. Seeds
 * come from make_pack_corpus; tests/fuzz/run.sh drives it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/pack.h"

#define MAX_IMAGE (64u << 20)  /* largest image opened per input: bounded for speed */
#define MAX_PLACED (256u << 20) /* bytes of payload placed per input */

static volatile uint64_t g_sink;

static void walk(const sl_pack *p)
{
    size_t hl;
    g_sink += sl_pack_image_size(p) + sl_pack_header(p, &hl)[0] + hl;
    g_sink += strlen(sl_pack_source(p)) + strlen(sl_pack_requant(p));
    for (uint32_t i = 0; i < sl_pack_file_count(p); i++)
        g_sink += strlen(sl_pack_file_name(p, i)) + sl_pack_file_size(p, i);
    for (uint32_t i = 0; i < sl_pack_unit_count(p); i++) {
        const sl_pack_unit *u = sl_pack_unit_at(p, i);
        g_sink += strlen(u->name) + u->size + u->stored + (uint64_t)sl_pack_unit_find(p, u->pieces[0].offset, 1);
        g_sink += strlen(sl_pack_kind_name(u->kind)) + strlen(sl_pack_codec_name(u->codec));
    }
    if (sl_pack_image_size(p) > MAX_IMAGE)
        return;
    sl_gguf *g;
    uint8_t *image;
    if (sl_pack_image_open(p, &g, &image) == 0) {
        uint64_t placed = 0;
        uint8_t *payload = sl_pack_max_size(p) <= MAX_IMAGE ? malloc(sl_pack_max_size(p) + 1) : NULL;
        for (uint32_t i = 0; payload && i < sl_pack_unit_count(p) && placed < MAX_PLACED; i++) {
            const sl_pack_unit *u = sl_pack_unit_at(p, i);
            memset(payload, (int)i, u->size);
            sl_pack_unit_place(u, payload, image);
            placed += u->size;
        }
        free(payload);
        g_sink += sl_gguf_tensor_count(g);
        sl_gguf_close(g);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_pack *p = NULL;
    if (sl_pack_parse(data, size, NULL, &p) == 0) {
        walk(p);
        sl_pack_close(p);
    }
    uint8_t *framed = malloc(SL_PACK_FRAME_BYTES + size);
    if (!framed)
        return 0;
    const uint64_t sum = sl_pack_checksum(data, size), len = size;
    memcpy(framed, SL_PACK_MAGIC, 8);
    for (int i = 0; i < 4; i++) {
        framed[8 + i] = (uint8_t)(SL_PACK_VERSION >> (8 * i));
        framed[12 + i] = 0;
    }
    for (int i = 0; i < 8; i++) {
        framed[16 + i] = (uint8_t)(len >> (8 * i));
        framed[24 + i] = (uint8_t)(sum >> (8 * i));
    }
    if (size)
        memcpy(framed + SL_PACK_FRAME_BYTES, data, size);
    if (sl_pack_parse(framed, SL_PACK_FRAME_BYTES + size, NULL, &p) == 0) {
        walk(p);
        sl_pack_close(p);
    }
    free(framed);
    return 0;
}
