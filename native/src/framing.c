/* Fixed-size structures (preamble §3, frame §4.1, trailer §7) and descriptors (§4.2), checked
 * in the order of §11.1. */
#include <stdio.h>
#include <zstd.h>

#include "internal.h"

static const uint8_t MAGIC[8] = {0x89, 'N', 'N', 'A', 'R', 0x0D, 0x0A, 0x1A};
static const uint8_t END_MAGIC[8] = {'N', 'N', 'A', 'R', 'E', 'N', 'D', 0x1A};

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

void nnar_type_text(const uint8_t type[4], char out[17])
{
    int i, k = 0;
    for (i = 0; i < 4; i++) {
        if (type[i] >= 0x20 && type[i] < 0x7F) out[k++] = (char)type[i];
        else k += sprintf(out + k, "\\x%02x", type[i]);
    }
    out[k] = 0;
}

nnar_status nnar_read_preamble(nnar_ctx *ctx, nnar_source *src, uint8_t preamble[16], uint16_t *minor)
{
    size_t got = 0;
    uint32_t flags;
    nnar_set_where(ctx, "preamble at offset 0");
    NNAR_TRY(src->read_at(ctx, src, 0, preamble, 16, &got));
    if (got < 16) return nnar_fail(ctx, NNAR_TRUNCATED, "expected %d bytes, found %zu", NNAR_PREAMBLE_SIZE, got);
    if (memcmp(preamble, MAGIC, 8) != 0)
        return nnar_fail(ctx, NNAR_BAD_MAGIC, "not an nnar archive: expected magic 89 4e 4e 41 52 0d 0a 1a, found "
                         "%02x %02x %02x %02x %02x %02x %02x %02x", preamble[0], preamble[1], preamble[2], preamble[3],
                         preamble[4], preamble[5], preamble[6], preamble[7]);
    if (le16(preamble + 8) != NNAR_FORMAT_MAJOR)
        return nnar_fail(ctx, NNAR_UNSUPPORTED_VERSION, "format version: expected major %d, found %u.%u", NNAR_FORMAT_MAJOR,
                         le16(preamble + 8), le16(preamble + 10));
    flags = le32(preamble + 12);
    if (flags) return nnar_fail(ctx, NNAR_RESERVED_NONZERO, "archive_flags: expected 0 (all bits reserved), found 0x%08x", flags);
    *minor = le16(preamble + 10);
    ctx->strict = *minor <= NNAR_FORMAT_MINOR;
    return NNAR_OK;
}

void nnar_head_free(nnar_ctx *ctx, nnar_head *h)
{
    mp_free(ctx, &h->doc);
    nnar_free(ctx, h->owned_plain);
    nnar_free(ctx, h->owned_stored);
    h->owned_plain = h->owned_stored = NULL;
    h->desc = NULL;
}

nnar_status nnar_zstd_frame(nnar_ctx *ctx, const uint8_t *in, size_t in_size, uint64_t max_size,
                            nnar_status fail_code, nnar_status limit_code, uint8_t **out, size_t *out_size)
{
    unsigned long long fcs;
    uint64_t window;
    size_t frame_size, r;
    uint8_t fhd, *buf, *into = *out;
    *out_size = 0;
    if (in_size < 6 || le32(in) != 0xFD2FB528u)
        return nnar_fail(ctx, fail_code, "zstd: expected a frame starting 28 b5 2f fd, found other bytes");
    fcs = ZSTD_getFrameContentSize(in, in_size);
    if (fcs == ZSTD_CONTENTSIZE_ERROR) return nnar_fail(ctx, fail_code, "zstd: expected a frame header, found a corrupt one");
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN)
        return nnar_fail(ctx, fail_code, "zstd: expected a frame that declares its content size, found none");
    if (fcs > max_size)
        return nnar_fail(ctx, limit_code, "zstd: frame declares %llu bytes, expected at most %llu", fcs,
                         (unsigned long long)max_size);
    fhd = in[4];
    if (fhd & 0x20) window = fcs;
    else {
        unsigned wlog = 10u + (in[5] >> 3);
        uint64_t base = 1ull << wlog;
        window = base + (base / 8) * (in[5] & 7u);
    }
    if (window > (1ull << 27))
        return nnar_fail(ctx, fail_code, "zstd: frame needs a %llu-byte window, expected at most 2^27",
                         (unsigned long long)window);
    frame_size = ZSTD_findFrameCompressedSize(in, in_size);
    if (ZSTD_isError(frame_size)) return nnar_fail(ctx, fail_code, "zstd: corrupt frame (%s)", ZSTD_getErrorName(frame_size));
    if (frame_size != in_size)
        return nnar_fail(ctx, fail_code, "zstd: expected exactly one frame of %zu bytes, found a frame of %zu bytes",
                         in_size, frame_size);
    if (!ctx->zstd) {
        ctx->zstd = ZSTD_createDCtx();
        if (!ctx->zstd) return nnar_fail(ctx, NNAR_OUT_OF_MEMORY, "zstd: cannot make a decoder");
    }
    buf = into ? into : (uint8_t *)nnar_alloc(ctx, (size_t)fcs);
    if (!buf) return NNAR_OUT_OF_MEMORY;
    r = ZSTD_decompressDCtx(ctx->zstd, buf, (size_t)fcs, in, in_size);
    if (ZSTD_isError(r) || r != fcs) {
        if (!into) nnar_free(ctx, buf);
        if (ZSTD_isError(r)) return nnar_fail(ctx, fail_code, "zstd: corrupt frame (%s)", ZSTD_getErrorName(r));
        return nnar_fail(ctx, fail_code, "zstd: frame declares %llu bytes, decoded %zu", fcs, r);
    }
    *out = buf;
    *out_size = (size_t)fcs;
    return NNAR_OK;
}

nnar_status nnar_read_head(nnar_ctx *ctx, nnar_source *src, uint64_t offset, const uint8_t *crc_prefix,
                           nnar_head *h)
{
    const uint8_t *f, *stored;
    uint8_t *owned = NULL;
    uint32_t reserved, header_crc, crc;
    uint64_t slack;
    char tt[17];
    memset(h, 0, sizeof *h);
    h->offset = offset;
    nnar_set_where(ctx, "record at offset %llu", (unsigned long long)offset);
    NNAR_TRY(nnar_read_bytes(ctx, src, offset, NNAR_FRAME_SIZE, &f, &owned, "record frame"));
    memcpy(h->type, f, 4);
    h->flags = le32(f + 4);
    h->body_length = le64(f + 8);
    h->descriptor_length = le32(f + 16);
    h->body_crc = le32(f + 20);
    reserved = le32(f + 24);
    header_crc = le32(f + 28);
    crc = nnar_crc32(crc_prefix ? nnar_crc32(0, crc_prefix, NNAR_PREAMBLE_SIZE) : 0, f, 28);
    nnar_free(ctx, owned);
    nnar_type_text(h->type, tt);
    nnar_set_where(ctx, "%s record at offset %llu", tt, (unsigned long long)offset);
    if (h->flags & ~3u)
        return nnar_fail(ctx, NNAR_RESERVED_NONZERO, "record_flags: expected only bits 0 and 1 used, found 0x%08x", h->flags);
    if (reserved) return nnar_fail(ctx, NNAR_RESERVED_NONZERO, "frame reserved field: expected 0, found 0x%08x", reserved);
    NNAR_TRY(nnar_check_limit(ctx, "descriptor_length", h->descriptor_length, ctx->limits.max_descriptor_bytes,
                              "max_descriptor_bytes"));
    slack = ctx->limits.max_segments * NNAR_ALIGN;
    NNAR_TRY(nnar_check_limit(ctx, "body_length", h->body_length, ctx->limits.max_tensor_bytes + slack,
                              "max_tensor_bytes + 64 x max_segments"));
    NNAR_TRY(nnar_read_bytes(ctx, src, offset + NNAR_FRAME_SIZE, h->descriptor_length, &stored, &h->owned_stored,
                             "descriptor"));
    crc = nnar_crc32(crc, stored, h->descriptor_length);
    if (NNAR_CRC_DIFFERS(crc, header_crc)) {
        nnar_head_free(ctx, h);
        return nnar_fail(ctx, NNAR_CHECKSUM, "record header: expected CRC-32 0x%08x, computed 0x%08x", header_crc, crc);
    }
    h->stored = stored;
    h->desc = stored;
    h->desc_size = h->descriptor_length;
    if (h->flags & NNAR_FLAG_DESCRIPTOR_ZSTD) {
        size_t n;
        nnar_status s = nnar_zstd_frame(ctx, stored, h->descriptor_length, ctx->limits.max_descriptor_bytes,
                                        NNAR_BAD_DESCRIPTOR, NNAR_LIMIT_EXCEEDED, &h->owned_plain, &n);
        if (s != NNAR_OK) { nnar_head_free(ctx, h); return s; }
        h->desc = h->owned_plain;
        h->desc_size = n;
    }
    {
        nnar_status s = mp_parse(ctx, h->desc, h->desc_size, &h->doc);
        if (s != NNAR_OK) { nnar_head_free(ctx, h); return s; }
    }
    return NNAR_OK;
}

nnar_status nnar_parse_trailer(nnar_ctx *ctx, const uint8_t *t, uint64_t offset, uint64_t *index_offset)
{
    uint64_t archive_length = le64(t + 8);
    uint32_t reserved = le32(t + 16), crc = le32(t + 20), found = nnar_crc32(0, t, 20);
    nnar_set_where(ctx, "trailer at offset %llu", (unsigned long long)offset);
    if (memcmp(t + 24, END_MAGIC, 8) != 0)
        return nnar_fail(ctx, NNAR_TRUNCATED, "expected end magic 4e 4e 41 52 45 4e 44 1a, found other bytes (the archive "
                         "is truncated, or its writer did not finish)");
    if (NNAR_CRC_DIFFERS(crc, found)) return nnar_fail(ctx, NNAR_CHECKSUM, "expected CRC-32 0x%08x, computed 0x%08x", crc, found);
    if (reserved) return nnar_fail(ctx, NNAR_RESERVED_NONZERO, "reserved field: expected 0, found 0x%08x", reserved);
    if (archive_length != offset + NNAR_TRAILER_SIZE)
        return nnar_fail(ctx, NNAR_BAD_LAYOUT, "archive_length says %llu bytes, the archive has %llu",
                         (unsigned long long)archive_length, (unsigned long long)(offset + NNAR_TRAILER_SIZE));
    *index_offset = le64(t);
    return NNAR_OK;
}
