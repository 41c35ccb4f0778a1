/* CRC-32 of ISO-HDLC (FORMAT.md §1): the check value of "123456789" is 0xCBF43926.
 *
 * Five independent lanes of 64-bit words, as zlib's "braided" CRC does: each lane's table
 * lookups depend only on that lane, so the processor overlaps them, about twice the speed of
 * one chain of slicing-by-8. At the end the lanes are folded into one register word by word.
 * The tables are constants, not state. */
#include "internal.h"
#include "crc32_table.h"

#define LANES 5

static uint64_t load64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

/* a word through the register from 0: its 8 bytes, one at a time */
static uint32_t crc_word(uint64_t w)
{
    int k;
    for (k = 0; k < 8; k++) w = (w >> 8) ^ crc_table[w & 0xFF];
    return (uint32_t)w;
}

/* a lane's word advanced over one block: a macro, so the five lanes interleave */
#define LANE(w)                                                                                   \
    (crc_braid[0][(w) & 0xFF] ^ crc_braid[1][((w) >> 8) & 0xFF] ^ crc_braid[2][((w) >> 16) & 0xFF] ^ \
     crc_braid[3][((w) >> 24) & 0xFF] ^ crc_braid[4][((w) >> 32) & 0xFF] ^                        \
     crc_braid[5][((w) >> 40) & 0xFF] ^ crc_braid[6][((w) >> 48) & 0xFF] ^ crc_braid[7][(w) >> 56])

uint32_t nnar_crc32(uint32_t crc, const void *data, size_t size)
{
    const uint8_t *p = (const uint8_t *)data;
    size_t blocks = size / (LANES * 8);
    crc = ~crc;
    if (blocks >= 2) {
        uint32_t c0 = crc, c1 = 0, c2 = 0, c3 = 0, c4 = 0;
        uint64_t w0, w1, w2, w3, w4, comb;
        size -= blocks * LANES * 8;
        while (--blocks) {
#if defined(__GNUC__)
            __builtin_prefetch(p + 1024);   /* memory latency, not the tables, bounds a cold body */
#endif
            w0 = c0 ^ load64(p); w1 = c1 ^ load64(p + 8); w2 = c2 ^ load64(p + 16);
            w3 = c3 ^ load64(p + 24); w4 = c4 ^ load64(p + 32);
            p += LANES * 8;
            c0 = LANE(w0); c1 = LANE(w1); c2 = LANE(w2); c3 = LANE(w3); c4 = LANE(w4);
        }
        /* the last block: fold the lanes in order, each register at its word's start */
        comb = crc_word(c0 ^ load64(p));
        comb = crc_word(comb ^ c1 ^ load64(p + 8));
        comb = crc_word(comb ^ c2 ^ load64(p + 16));
        comb = crc_word(comb ^ c3 ^ load64(p + 24));
        crc = crc_word(comb ^ c4 ^ load64(p + 32));
        p += LANES * 8;
    }
    while (size--) crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* Buffers of at least this size go through the carry-less multiply when the CPU has it */
#define CLMUL_MIN 256

uint32_t nnar_crc32_cpu(unsigned cpu, uint32_t crc, const void *data, size_t size)
{
    const uint8_t *p = (const uint8_t *)data;
    if ((cpu & NNAR_CPU_PCLMUL) && size >= CLMUL_MIN) {
        size_t bulk = size & ~(size_t)63;
        crc = ~nnar_crc32_clmul(~crc, p, bulk, NULL);
        p += bulk;
        size -= bulk;
    }
    return nnar_crc32(crc, p, size);
}

uint32_t nnar_crc32_copy(unsigned cpu, uint32_t crc, void *dst, const void *src, size_t size)
{
    const uint8_t *s = (const uint8_t *)src;
    uint8_t *d = (uint8_t *)dst;
    if ((cpu & NNAR_CPU_PCLMUL) && size >= CLMUL_MIN) {
        size_t bulk = size & ~(size_t)63;
        crc = ~nnar_crc32_clmul(~crc, s, bulk, d);
        s += bulk;
        d += bulk;
        size -= bulk;
    }
    /* portable: a piece copied, then its CRC taken while it is in the first-level cache */
    while (size) {
        size_t k = size < (16u << 10) ? size : (16u << 10);
        memcpy(d, s, k);
        crc = nnar_crc32(crc, d, k);
        s += k; d += k; size -= k;
    }
    return crc;
}
