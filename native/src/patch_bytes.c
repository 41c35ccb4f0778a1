/* Applying a byte patch (spec/patch.md §9, format 1.3): the base's exact bytes, the result's
 * exact bytes. Rebuilt streams must come out of this library's encoders as they came out of
 * the patch maker's (nnar.huffman always does; nnar.zstd when libzstd's version is the maker's):
 * otherwise `digest`, and nothing is kept. */
#include "patch.h"

/* Step 2: the length and SHA-256 of the whole base, read in chunks. */
static nnar_status base_digest(patcher *p, const char *path, const void *data, size_t size, uint64_t *length,
                               uint8_t out[32])
{
    nnar_ctx *ctx = &p->ctx;
    nnar_sha256 sha;
    nnar_sha256_init(&sha, ctx->cpu);
    if (!path) {
        nnar_sha256_update(&sha, data, size);
        *length = size;
    } else {
        nnar_source src;
        uint8_t *buf;
        uint64_t pos = 0;
        nnar_status s = NNAR_OK;
        NNAR_TRY(nnar_io_open(ctx, path, &src));
        buf = (uint8_t *)nnar_alloc(ctx, 1u << 20);
        if (!buf) s = NNAR_OUT_OF_MEMORY;
        while (s == NNAR_OK && pos < src.size) {
            size_t got = 0;
            s = src.read_at(ctx, &src, pos, buf, 1u << 20, &got);
            if (s == NNAR_OK && !got) s = nnar_fail(ctx, NNAR_IO_ERROR, "base: read nothing at offset %llu", (unsigned long long)pos);
            if (s == NNAR_OK) nnar_sha256_update(&sha, buf, got);
            pos += got;
        }
        nnar_free(ctx, buf);
        nnar_io_close(&src);
        NNAR_TRY(s);
        *length = pos;
    }
    nnar_sha256_final(&sha, out);
    return NNAR_OK;
}

/* Step 5 for one record op. */
static nnar_status byte_record(patcher *p, uint32_t i, const uint8_t *preamble)
{
    nnar_ctx *ctx = &p->ctx;
    const rec_op *op = &p->h.ops[i];
    const mp_doc *pd = p->h.doc;
    nnar_stored src;
    uint8_t type[4], *plain = NULL;
    const uint8_t *desc;
    uint32_t desc_len, flags, nref = 0, j, crc;
    nnar_segment *refs = NULL;
    nnar_out_segment *segs = NULL;
    uint64_t body_length;
    mp_doc doc;
    nnar_status s = NNAR_OK;
    memset(&doc, 0, sizeof doc);
    NNAR_TRY(nnar_patch_partner(p, i, op, &src, type));
    flags = op->has_flags ? op->flags : src.head->flags;
    if (op->desc != MP_NONE) {
        desc = pd->nodes[op->desc].v.p;
        desc_len = pd->nodes[op->desc].len;
    } else {
        desc = src.head->stored;
        desc_len = src.head->descriptor_length;
    }
    if (memcmp(type, "TENS", 4) && memcmp(type, "MODL", 4)) {
        if (op->has_segs && op->nseg)
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "a %.4s record has no segments, found %u", (const char *)type, (unsigned)op->nseg);
    } else {
        const uint8_t *d = desc;
        size_t n = desc_len;
        uint32_t sn;
        if (flags & NNAR_FLAG_DESCRIPTOR_ZSTD) {
            s = nnar_zstd_frame(ctx, desc, desc_len, ctx->limits.max_descriptor_bytes, NNAR_BAD_DESCRIPTOR, NNAR_LIMIT_EXCEEDED,
                                &plain, &n);
            d = plain;
        }
        if (s == NNAR_OK) s = mp_parse(ctx, d, n, &doc);
        if (s == NNAR_OK) {
            sn = mp_get(&doc, 0, "segments");
            if (sn == MP_NONE || doc.nodes[sn].type != MP_ARRAY)
                s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "rebuilt descriptor: expected a 'segments' list");
            else s = nnar_segment_entries(ctx, &doc, sn, 0, &refs, &nref);
        }
        if (s == NNAR_OK && op->has_segs && op->nseg != nref)
            s = nnar_fail(ctx, NNAR_BAD_DESCRIPTOR, "segments: expected one per segment of the descriptor (%u), found %u",
                          (unsigned)nref, (unsigned)op->nseg);
        if (s == NNAR_OK) {
            segs = (nnar_out_segment *)nnar_alloc_zero(ctx, ((size_t)nref + 1) * sizeof *segs);
            if (!segs) s = NNAR_OUT_OF_MEMORY;
        }
        for (j = 0; s == NNAR_OK && j < nref; j++) {
            static const seg_op from_base = {SRC_BASE, 0, 0, MP_NONE};
            const seg_op *sop = op->has_segs ? &p->h.segs[op->first_seg + j] : &from_base;
            uint8_t *data = NULL;
            size_t size = 0;
            s = nnar_patch_segment(p, sop, &refs[j], &doc, &src, 0, &data, &size);
            segs[j].data = data;
            segs[j].size = size;
            segs[j].verbatim = doc.nodes[refs[j].codecs].len == 0;
        }
    }
    if (s == NNAR_OK) {
        uint64_t body_offset = p->sink.pos + NNAR_FRAME_SIZE + desc_len;
        nnar_body_layout(ctx->cpu, body_offset, segs, nref, &crc, &body_length);
        if (op->has_crc && crc != op->body_crc)
            s = nnar_fail(ctx, NNAR_DIGEST, "rebuilt record: expected body CRC-32 0x%08x, computed 0x%08x; its segments were "
                          "encoded again and came out different", op->body_crc, crc);
    }
    if (s == NNAR_OK)
        s = nnar_write_record(&p->sink, type, flags, desc, desc_len, segs, nref, crc, body_length, i == 0 ? preamble : NULL);
    for (j = 0; segs && j < nref; j++) nnar_free(ctx, (void *)segs[j].data);
    nnar_free(ctx, segs);
    nnar_free(ctx, refs);
    mp_free(ctx, &doc);
    nnar_free(ctx, plain);
    nnar_stored_free(p->base, &src);
    return s;
}

nnar_status nnar_patch_bytes(patcher *p, const char *base_path, const void *base_data, size_t base_size,
                             const nnar_options *options)
{
    nnar_ctx *ctx = &p->ctx;
    uint8_t digest[32], preamble[16], trailer[32], sha[32];
    uint64_t length, index_offset, body_length;
    uint32_t i, crc;
    nnar_payload extra;
    nnar_status s;
    int end;
    static const uint8_t indx[4] = {'I', 'N', 'D', 'X'};
    const mp_node *ixd = &p->h.doc->nodes[p->h.index_desc];
    NNAR_TRY(base_digest(p, base_path, base_data, base_size, &length, digest));
    nnar_set_where(ctx, "patch");
    if (length != p->h.base_length || memcmp(digest, p->h.base_digest, 32) != 0)
        return nnar_fail(ctx, NNAR_WRONG_BASE, "this patch (format 1.3, bound to its base's exact bytes) applies to the archive "
                         "with SHA-256 %02x%02x%02x%02x... (%llu bytes); the base given has %02x%02x%02x%02x... (%llu bytes)",
                         p->h.base_digest[0], p->h.base_digest[1], p->h.base_digest[2], p->h.base_digest[3],
                         (unsigned long long)p->h.base_length, digest[0], digest[1], digest[2], digest[3],
                         (unsigned long long)length);
    s = base_path ? nnar_open_file(base_path, options, &p->base, p->err)
                  : nnar_open_memory(base_data, base_size, options, &p->base, p->err);
    NNAR_TRY(s);
    p->n_base = nnar_archive_records(p->base) + 1;
    ctx->strict = p->h.result_minor <= NNAR_FORMAT_MINOR;
    p->sink.hash = 1;   /* step 8: the result's SHA-256 */
    nnar_preamble(preamble, p->h.result_minor);
    NNAR_TRY(nnar_sink_put(&p->sink, preamble, 16));
    for (i = 0; i < p->h.nops; i++) NNAR_TRY(byte_record(p, i, preamble));
    index_offset = p->sink.pos;
    nnar_body_layout(ctx->cpu, 0, NULL, 0, &crc, &body_length);
    NNAR_TRY(nnar_write_record(&p->sink, indx, p->h.index_flags, ixd->v.p, ixd->len, NULL, 0, crc, body_length, NULL));
    nnar_trailer(trailer, index_offset, p->sink.pos + NNAR_TRAILER_SIZE);
    NNAR_TRY(nnar_sink_put(&p->sink, trailer, 32));
    NNAR_TRY(nnar_instream_next(p->in, &extra, &end));
    nnar_set_where(ctx, "patch");
    if (!end) return nnar_fail(ctx, NNAR_BAD_LAYOUT, "patch: it holds more tensors than its records use");
    nnar_sha256_final(&p->sink.sha, sha);
    if (p->sink.pos != p->h.result_length || memcmp(sha, p->h.result_digest, 32) != 0)
        return nnar_fail(ctx, NNAR_DIGEST, "result: expected SHA-256 %02x%02x%02x%02x... (%llu bytes), built %02x%02x%02x%02x... "
                         "(%llu bytes)", p->h.result_digest[0], p->h.result_digest[1], p->h.result_digest[2],
                         p->h.result_digest[3], (unsigned long long)p->h.result_length, sha[0], sha[1], sha[2], sha[3],
                         (unsigned long long)p->sink.pos);
    return NNAR_OK;
}
