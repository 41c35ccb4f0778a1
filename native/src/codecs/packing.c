/* Index packing (spec/codecs/packing.md): slots of 1, 2, 4 or 8 bits, lowest bits first. Each
 * byte is checked with one lookup (does any slot exceed max_index?) and expanded slot by slot. */
#include "codecs.h"

static int slot_bits(int bits) { return bits == 1 ? 1 : bits == 2 ? 2 : bits <= 4 ? 4 : 8; }

uint64_t nnar_packed_length(uint64_t count, int bits)
{
    uint64_t per = 8u / (unsigned)slot_bits(bits);
    return count / per + (count % per != 0);
}

nnar_status nnar_unpack(nnar_ctx *ctx, const char *codec, const nnar_stream *st, uint64_t count, int bits,
                        uint32_t max_index, const uint8_t *table, size_t itemsize, uint8_t *out)
{
    int s = slot_bits(bits), per = 8 / s, k;
    unsigned mask = (1u << s) - 1;
    uint64_t nbytes = nnar_packed_length(count, bits), full = count / (uint64_t)per, b, i = 0;
    uint8_t bad[256];
    unsigned v;
    if (st->size != nbytes)
        return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: stream 'indices': expected %llu bytes, found %llu", codec,
                         (unsigned long long)nbytes, (unsigned long long)st->size);
    for (v = 0; v < 256; v++) {
        bad[v] = 0;
        for (k = 0; k < per; k++)
            if (((v >> (s * k)) & mask) > max_index) bad[v] = 1;
    }
    for (b = 0; max_index < mask && b < full; b++)   /* (every index fits when the table has 2^s entries) */
        if (bad[st->data[b]])
            return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: stream 'indices': byte %llu holds an index > %u", codec,
                             (unsigned long long)b, max_index);
    if (full < nbytes) {
        unsigned last = st->data[full], used = (unsigned)(count % (uint64_t)per);
        for (k = 0; k < (int)used; k++)
            if (((last >> (s * k)) & mask) > max_index)
                return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: stream 'indices': the last byte holds an index > %u", codec, max_index);
        if (last >> (s * used))
            return nnar_fail(ctx, NNAR_CODEC_DATA, "%s: stream 'indices': expected zero bits in the %u unused slots of "
                             "the last byte, found 0x%02x", codec, per - used, last);
    }
    if (itemsize == 4 && per == 2 && full >= 1024) {
        /* the common case (4-bit k-means of float32): a table of the 256 pairs a byte can
         * hold, so each byte is one 8-byte load and one 8-byte store */
        uint32_t t[16];
        uint8_t pairs[256][8];
        memset(t, 0, sizeof t);
        memcpy(t, table, (size_t)(max_index + 1) * 4);
        for (v = 0; v < 256; v++) {
            memcpy(pairs[v], &t[v & 15], 4);
            memcpy(pairs[v] + 4, &t[v >> 4], 4);
        }
        {
            const uint8_t *in = st->data;
            /* with AVX2: from the first byte whose output starts a 32-byte line */
            uint64_t head = (ctx->cpu & NNAR_CPU_AVX2) ? (uint64_t)((32 - ((uintptr_t)out & 31)) & 31) / 8 : full;
            for (b = 0; b < full; b++) {
                if (b == head) {
                    b = nnar_unpack4_avx2(in, b, full, t, out);
                    if (b >= full) break;
                }
                memcpy(out + 8 * b, pairs[in[b]], 8);
            }
        }
        i = full * 2;
    }
    for (; i < count; i++) {
        unsigned idx = (st->data[i / (uint64_t)per] >> (s * (int)(i % (uint64_t)per))) & mask;
        memcpy(out + itemsize * i, table + itemsize * idx, itemsize);
    }
    return NNAR_OK;
}
