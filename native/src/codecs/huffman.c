/* nnar.huffman (spec/codecs/huffman.md): order-0 canonical Huffman over bytes, codes of at
 * most 15 bits, written most significant bit first. Decoded through one table of 2^hi
 * entries (hi the longest length). */
#include "codecs.h"

static const char *const no_keys[] = {NULL};

static nnar_status config(nnar_ctx *ctx, nnar_stage *st) { return nnar_config_keys(ctx, st, no_keys, no_keys); }

static uint64_t bound(const nnar_stage *st, uint64_t n)
{
    (void)st;
    return n > (UINT64_MAX - 7) / 15 ? UINT64_MAX : 136 + (15 * n + 7) / 8;
}

static nnar_status decode(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint64_t max_out,
                          uint8_t **out, size_t *out_size)
{
    uint64_t count = 0, bits_len, total_bits, pos = 0, i;
    unsigned len[256], bl_count[16] = {0}, next_code[16], lo = 16, hi = 0, nonzero = 0, s, n;
    uint32_t kraft = 0, code = 0;
    uint16_t *table;
    uint8_t *buf, *into = *out;
    const uint8_t *bits;
    (void)st;
    *out_size = 0;
    if (in_size < 136) return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: expected at least 136 bytes, found %zu", in_size);
    for (i = 0; i < 8; i++) count |= (uint64_t)in[i] << (8 * i);
    if (count > max_out)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: count %llu, expected at most %llu", (unsigned long long)count,
                         (unsigned long long)max_out);
    for (s = 0; s < 256; s++) {
        len[s] = (in[8 + s / 2] >> (4 * (s & 1))) & 15;
        if (len[s]) {
            nonzero++;
            bl_count[len[s]]++;
            kraft += 1u << (15 - len[s]);
            if (len[s] < lo) lo = len[s];
            if (len[s] > hi) hi = len[s];
        }
    }
    if (count == 0 && nonzero)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: count 0, expected every length 0, found %u non-zero", nonzero);
    if (count > 0 && nonzero == 0) return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: expected a non-zero length, found none");
    if (nonzero == 1 && hi != 1)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: a single code must have length 1, found %u", hi);
    if (nonzero >= 2 && kraft != 1u << 15)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: lengths make an %s code (Kraft sum %u/32768)",
                         kraft > 1u << 15 ? "over-subscribed" : "incomplete", kraft);
    bits = in + 136;
    bits_len = in_size - 136;
    if (count == 0) {
        if (bits_len) return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: count 0, expected no bits, found %llu bytes",
                                       (unsigned long long)bits_len);
        if (!into) *out = (uint8_t *)nnar_alloc(ctx, 1);
        return *out ? NNAR_OK : NNAR_OUT_OF_MEMORY;
    }
    if (bits_len < (count * lo + 7) / 8 || bits_len > (count * hi + 7) / 8)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: %llu symbols of %u to %u bits, found %llu bytes of bits",
                         (unsigned long long)count, lo, hi, (unsigned long long)bits_len);
    table = (uint16_t *)nnar_alloc_zero(ctx, ((size_t)1 << hi) * sizeof *table);
    if (!table) return NNAR_OUT_OF_MEMORY;
    for (n = 1; n <= 15; n++) { code = (code + bl_count[n - 1]) << 1; next_code[n] = code; }
    bl_count[0] = 0;
    for (s = 0; s < 256; s++) {
        if (len[s]) {
            uint32_t c = next_code[len[s]]++, first = c << (hi - len[s]), last = (c + 1) << (hi - len[s]), e;
            /* entry: symbol in the low byte, length above it; length 0 marks an invalid code */
            for (e = first; e < last; e++) table[e] = (uint16_t)(s | len[s] << 8);
        }
    }
    buf = into ? into : (uint8_t *)nnar_alloc(ctx, (size_t)count);
    if (!buf) { nnar_free(ctx, table); return NNAR_OUT_OF_MEMORY; }
    total_bits = bits_len * 8;
    {
        uint64_t acc = 0, next = 0;   /* acc holds nbits bits, the next ones highest */
        unsigned nbits = 0, mask = (1u << hi) - 1;
        for (i = 0; i < count; i++) {
            unsigned peek, l;
            uint16_t e;
            while (nbits <= 56) {
                acc = acc << 8 | (next < bits_len ? bits[next] : 0);
                next++;
                nbits += 8;
            }
            peek = (unsigned)(acc >> (nbits - hi)) & mask;
            e = table[peek];
            l = e >> 8;
            if (!l || pos + l > total_bits) {
                nnar_free(ctx, table);
                if (!into) nnar_free(ctx, buf);
                return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: %s at bit %llu (symbol %llu of %llu)",
                                 l ? "a code runs past the end of the bits" : "an invalid code", (unsigned long long)pos,
                                 (unsigned long long)i, (unsigned long long)count);
            }
            buf[i] = (uint8_t)e;
            nbits -= l;
            pos += l;
        }
    }
    nnar_free(ctx, table);
    if ((pos + 7) / 8 != bits_len || (pos % 8 && (bits[pos / 8] & (0xFFu >> (pos % 8))))) {
        if (!into) nnar_free(ctx, buf);
        return nnar_fail(ctx, NNAR_CODEC_DATA, "nnar.huffman: codes end at bit %llu, expected %llu bytes of bits with zero "
                         "padding, found %llu bytes", (unsigned long long)pos, (unsigned long long)((pos + 7) / 8),
                         (unsigned long long)bits_len);
    }
    *out = buf;
    *out_size = (size_t)count;
    return NNAR_OK;
}

const nnar_codec nnar_codec_huffman = {"nnar.huffman", NNAR_BYTES_BYTES, no_keys, config, NULL, NULL, NULL, NULL, NULL, bound, decode, nnar_huffman_encode};
