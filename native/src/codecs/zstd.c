/* nnar.zstd (spec/codecs/zstd.md): one Zstandard frame; the frame checks live in framing.c
 * (nnar_zstd_frame), shared with compressed descriptors. */
/* ZSTD_getCParams is in libzstd's "experimental" section (exported by every build since 1.0) */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

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
static uint64_t bound(const nnar_stage *st, uint64_t n)
{
    (void)st;
    if (n > UINT64_MAX - (UINT64_MAX >> 8)) return UINT64_MAX;
    return n + (n >> 8) + (n < (128u << 10) ? ((128u << 10) - n) >> 11 : 0);
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint64_t max_out,
                          uint8_t **out, size_t *out_size)
{
    (void)st;
    return nnar_zstd_frame(ctx, in, in_size, max_out, NNAR_CODEC_DATA, NNAR_CODEC_DATA, out, out_size);
}

/* Encoding (zstd.md): the whole stream at once, content size in the frame header, no checksum;
 * with overrides, all seven parameters set explicitly from ZSTD_getCParams(level, 0, 0), as
 * nnar's encoder (python-zstandard's from_level) does, so equal libzstd versions give equal
 * bytes. The compressor is libzstd's own allocation, kept in the context and reused. */
static nnar_status encode(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint8_t **out,
                          size_t *out_size)
{
    static const ZSTD_cParameter cp[] = {ZSTD_c_windowLog, ZSTD_c_hashLog, ZSTD_c_chainLog, ZSTD_c_searchLog,
                                         ZSTD_c_minMatch, ZSTD_c_targetLength, ZSTD_c_strategy};
    ZSTD_CCtx *cc;
    int64_t level = 0, v;
    size_t cap = ZSTD_compressBound(in_size), r = 0;
    uint8_t *buf;
    int i, any = 0;
    *out = NULL;
    *out_size = 0;
    NNAR_TRY(nnar_config_int(ctx, st, st->config, "level", -131072, 22, &level));
    if (!ctx->zstd_c) {
        ctx->zstd_c = ZSTD_createCCtx();
        if (!ctx->zstd_c) return nnar_fail(ctx, NNAR_OUT_OF_MEMORY, "zstd: cannot make an encoder");
    }
    cc = ctx->zstd_c;
    ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
    for (i = 0; overrides[i]; i++) any |= mp_get(st->doc, st->config, overrides[i]) != MP_NONE;
    if (ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 0)))
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.zstd: the encoder refused its frame parameters");
    if (!any) {
        if (ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, (int)level)))
            return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.zstd: the encoder refused level %lld", (long long)level);
    } else {
        ZSTD_compressionParameters p = ZSTD_getCParams((int)level, 0, 0);
        int vals[7];
        vals[0] = (int)p.windowLog; vals[1] = (int)p.hashLog; vals[2] = (int)p.chainLog; vals[3] = (int)p.searchLog;
        vals[4] = (int)p.minMatch; vals[5] = (int)p.targetLength; vals[6] = (int)p.strategy;
        for (i = 0; overrides[i]; i++) {
            if (mp_get(st->doc, st->config, overrides[i]) != MP_NONE) {
                NNAR_TRY(nnar_config_int(ctx, st, st->config, overrides[i], lo[i], hi[i], &v));
                vals[i] = (int)v;
            }
            if (ZSTD_isError(ZSTD_CCtx_setParameter(cc, cp[i], vals[i])))
                return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.zstd: the encoder refused %s = %d", overrides[i], vals[i]);
        }
    }
    buf = (uint8_t *)nnar_alloc(ctx, cap);
    if (!buf) return NNAR_OUT_OF_MEMORY;
    r = ZSTD_compress2(cc, buf, cap, in, in_size);
    if (ZSTD_isError(r)) {
        nnar_free(ctx, buf);
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.zstd: encoding failed (%s)", ZSTD_getErrorName(r));
    }
    *out = buf;
    *out_size = r;
    return NNAR_OK;
}

const nnar_codec nnar_codec_zstd = {"nnar.zstd", NNAR_BYTES_BYTES, no_keys, config, NULL, NULL, NULL, NULL, NULL, bound, decode, encode};
