/* nnar.zstd (spec/codecs/zstd.md): one Zstandard frame; the frame checks live in framing.c
 * (nnar_zstd_frame), shared with compressed descriptors. */
#include "codecs.h"

static const char *const no_keys[] = {NULL};
static const char *const required[] = {"level", NULL};
static const char *const overrides[] = {"window_log", "hash_log", "chain_log", "search_log", "min_match",
                                        "target_length", "strategy", NULL};
static const int64_t lo[] = {10, 6, 6, 1, 3, 0, 1}, hi[] = {27, 30, 30, 30, 7, 131072, 9};

static nnar_status config(nnar_ctx *ctx, nnar_stage *st)
{
    int64_t v;
    int i;
    NNAR_TRY(nnar_config_keys(ctx, st, required, overrides));
    NNAR_TRY(nnar_config_int(ctx, st, st->config, "level", -131072, 22, &v));
    for (i = 0; overrides[i]; i++)
        if (mp_get(st->doc, st->config, overrides[i]) != MP_NONE)
            NNAR_TRY(nnar_config_int(ctx, st, st->config, overrides[i], lo[i], hi[i], &v));
    return NNAR_OK;
}

/* libzstd's ZSTD_COMPRESSBOUND */
static uint64_t bound(uint64_t n)
{
    return n + (n >> 8) + (n < (128u << 10) ? ((128u << 10) - n) >> 11 : 0);
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint64_t max_out,
                          uint8_t **out, size_t *out_size)
{
    (void)st;
    return nnar_zstd_frame(ctx, in, in_size, max_out, NNAR_CODEC_DATA, NNAR_CODEC_DATA, out, out_size);
}

const nnar_codec nnar_codec_zstd = {"nnar.zstd", NNAR_BYTES_BYTES, no_keys, config, NULL, NULL, NULL, NULL, NULL, bound, decode};
