/* Writing an archive front to back (FORMAT.md §3, §4, §5.2.3, §5.3, §7): the output counted
 * and hashed on its way out, record frames and bodies laid out, descriptors stored (compressed
 * when smaller), msgpack for the index, the trailer. Used by the patcher. */
#include <zstd.h>

#include "internal.h"
#include "writer.h"

static const uint8_t MAGIC[8] = {0x89, 'N', 'N', 'A', 'R', 0x0D, 0x0A, 0x1A};
static const uint8_t END_MAGIC[8] = {'N', 'N', 'A', 'R', 'E', 'N', 'D', 0x1A};
static const uint8_t ZEROS[NNAR_ALIGN] = {0};

static void put32(uint8_t *p, uint32_t v) { int i; for (i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { int i; for (i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

nnar_status nnar_sink_put(nnar_sink *s, const void *data, size_t size)
{
    if (!size) return NNAR_OK;
    if (s->hash) nnar_sha256_update(&s->sha, data, size);
    s->pos += size;
    if (s->write && s->write(s->user, data, size) != 0)
        return nnar_fail(s->ctx, NNAR_IO_ERROR, "write failed at offset %llu", (unsigned long long)(s->pos - size));
    return NNAR_OK;
}

void nnar_preamble(uint8_t out[16], uint16_t minor)
{
    memcpy(out, MAGIC, 8);
    out[8] = NNAR_FORMAT_MAJOR;
    out[9] = 0;
    out[10] = (uint8_t)minor;
    out[11] = (uint8_t)(minor >> 8);
    put32(out + 12, 0);
}

void nnar_body_layout(unsigned cpu, uint64_t body_offset, const nnar_out_segment *segs, uint32_t n, uint32_t *crc, uint64_t *length)
{
    uint64_t pos = body_offset;
    uint32_t c = 0, j;
    for (j = 0; j < n; j++) {
        if (n == 1 && segs[j].verbatim) {
            uint64_t pad = (NNAR_ALIGN - pos % NNAR_ALIGN) % NNAR_ALIGN;
            c = nnar_crc32(c, ZEROS, (size_t)pad);
            pos += pad;
        }
        c = nnar_crc32_cpu(cpu, c, segs[j].data, segs[j].size);
        pos += segs[j].size;
    }
    *crc = c;
    *length = pos - body_offset;
}

nnar_status nnar_write_record(nnar_sink *s, const uint8_t type[4], uint32_t flags, const uint8_t *desc, uint32_t desc_len,
                              const nnar_out_segment *segs, uint32_t n, uint32_t body_crc, uint64_t body_length,
                              const uint8_t *crc_prefix)
{
    uint8_t f[NNAR_FRAME_SIZE];
    uint32_t crc;
    uint64_t pos;
    uint32_t j;
    memcpy(f, type, 4);
    put32(f + 4, flags);
    put64(f + 8, body_length);
    put32(f + 16, desc_len);
    put32(f + 20, body_crc);
    put32(f + 24, 0);
    crc = crc_prefix ? nnar_crc32(0, crc_prefix, NNAR_PREAMBLE_SIZE) : 0;
    crc = nnar_crc32(nnar_crc32(crc, f, 28), desc, desc_len);
    put32(f + 28, crc);
    NNAR_TRY(nnar_sink_put(s, f, sizeof f));
    NNAR_TRY(nnar_sink_put(s, desc, desc_len));
    pos = s->pos;
    for (j = 0; j < n; j++) {
        if (n == 1 && segs[j].verbatim) NNAR_TRY(nnar_sink_put(s, ZEROS, (size_t)((NNAR_ALIGN - pos % NNAR_ALIGN) % NNAR_ALIGN)));
        NNAR_TRY(nnar_sink_put(s, segs[j].data, segs[j].size));
    }
    return NNAR_OK;
}

nnar_status nnar_store_descriptor(nnar_ctx *ctx, const uint8_t *plain, size_t n, uint8_t **stored, size_t *stored_size,
                                  uint32_t *flag)
{
    uint8_t *buf;
    size_t cap, r;
    *stored = NULL;
    *flag = 0;
    *stored_size = n;
    if (n < NNAR_DESCRIPTOR_ZSTD_MIN_BYTES) return NNAR_OK;
    if (!ctx->zstd_c) {
        ctx->zstd_c = ZSTD_createCCtx();
        if (!ctx->zstd_c) return nnar_fail(ctx, NNAR_OUT_OF_MEMORY, "zstd: cannot make an encoder");
    }
    ZSTD_CCtx_reset(ctx->zstd_c, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(ctx->zstd_c, ZSTD_c_compressionLevel, NNAR_DESCRIPTOR_ZSTD_LEVEL);
    ZSTD_CCtx_setParameter(ctx->zstd_c, ZSTD_c_contentSizeFlag, 1);
    ZSTD_CCtx_setParameter(ctx->zstd_c, ZSTD_c_checksumFlag, 0);
    cap = ZSTD_compressBound(n);
    buf = (uint8_t *)nnar_alloc(ctx, cap);
    if (!buf) return NNAR_OUT_OF_MEMORY;
    r = ZSTD_compress2(ctx->zstd_c, buf, cap, plain, n);
    if (ZSTD_isError(r) || r >= n) { nnar_free(ctx, buf); return NNAR_OK; }
    *stored = buf;
    *stored_size = r;
    *flag = NNAR_FLAG_DESCRIPTOR_ZSTD;
    return NNAR_OK;
}

void nnar_trailer(uint8_t out[32], uint64_t index_offset, uint64_t archive_length)
{
    put64(out, index_offset);
    put64(out + 8, archive_length);
    put32(out + 16, 0);
    put32(out + 20, nnar_crc32(0, out, 20));
    memcpy(out + 24, END_MAGIC, 8);
}

/* ---- msgpack out (the shortest forms, as nnar writes) ----------------------------------------- */

nnar_status nnar_buf_put(nnar_ctx *ctx, nnar_buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        uint8_t *p;
        while (cap < b->len + n) cap *= 2;
        p = (uint8_t *)nnar_alloc(ctx, cap);
        if (!p) return NNAR_OUT_OF_MEMORY;
        if (b->len) memcpy(p, b->p, b->len);
        nnar_free(ctx, b->p);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    return NNAR_OK;
}

static nnar_status put_be(nnar_ctx *ctx, nnar_buf *b, uint8_t tag, uint64_t v, int width)
{
    uint8_t x[9];
    int i;
    x[0] = tag;
    for (i = 0; i < width; i++) x[1 + i] = (uint8_t)(v >> (8 * (width - 1 - i)));
    return nnar_buf_put(ctx, b, x, (size_t)width + 1);
}

nnar_status nnar_mp_uint(nnar_ctx *ctx, nnar_buf *b, uint64_t v)
{
    uint8_t x = (uint8_t)v;
    if (v <= 0x7F) return nnar_buf_put(ctx, b, &x, 1);
    if (v <= 0xFF) return put_be(ctx, b, 0xCC, v, 1);
    if (v <= 0xFFFF) return put_be(ctx, b, 0xCD, v, 2);
    if (v <= 0xFFFFFFFFu) return put_be(ctx, b, 0xCE, v, 4);
    return put_be(ctx, b, 0xCF, v, 8);
}

nnar_status nnar_mp_head(nnar_ctx *ctx, nnar_buf *b, int kind, uint32_t n)
{
    uint8_t x;
    switch (kind) {
    case MP_ARRAY:
        if (n <= 15) { x = (uint8_t)(0x90 | n); return nnar_buf_put(ctx, b, &x, 1); }
        return n <= 0xFFFF ? put_be(ctx, b, 0xDC, n, 2) : put_be(ctx, b, 0xDD, n, 4);
    case MP_MAP:
        if (n <= 15) { x = (uint8_t)(0x80 | n); return nnar_buf_put(ctx, b, &x, 1); }
        return n <= 0xFFFF ? put_be(ctx, b, 0xDE, n, 2) : put_be(ctx, b, 0xDF, n, 4);
    case MP_STR:
        if (n <= 31) { x = (uint8_t)(0xA0 | n); return nnar_buf_put(ctx, b, &x, 1); }
        return n <= 0xFF ? put_be(ctx, b, 0xD9, n, 1) : n <= 0xFFFF ? put_be(ctx, b, 0xDA, n, 2) : put_be(ctx, b, 0xDB, n, 4);
    default: /* MP_BIN */
        return n <= 0xFF ? put_be(ctx, b, 0xC4, n, 1) : n <= 0xFFFF ? put_be(ctx, b, 0xC5, n, 2) : put_be(ctx, b, 0xC6, n, 4);
    }
}

nnar_status nnar_mp_bytes(nnar_ctx *ctx, nnar_buf *b, int kind, const void *p, uint32_t n)
{
    NNAR_TRY(nnar_mp_head(ctx, b, kind, n));
    return nnar_buf_put(ctx, b, p, n);
}
