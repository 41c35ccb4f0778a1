/* The content digest (FORMAT.md §5.3.1): per record, SHA-256(record_type ‖ u64(len(D)) ‖ D ‖ X)
 * with D the canonical encoding of the decoded descriptor (segment lengths zeroed in TENS,
 * MODL and FILE), X the structure's SHA-256 (MODL) or the body's (unknown types). */
#include "internal.h"

void nnar_record_digest(const nnar_head *h, const uint8_t *extra, uint8_t out[32])
{
    nnar_sha256 s;
    uint8_t len[8];
    int zero = memcmp(h->type, "TENS", 4) == 0 || memcmp(h->type, "MODL", 4) == 0 ||
               memcmp(h->type, "FILE", 4) == 0, i;
    uint64_t n = mp_canonical(&h->doc, 0, zero, NULL);
    for (i = 0; i < 8; i++) len[i] = (uint8_t)(n >> (8 * i));
    nnar_sha256_init(&s, 0);   /* a descriptor: small */
    nnar_sha256_update(&s, h->type, 4);
    nnar_sha256_update(&s, len, 8);
    mp_canonical(&h->doc, 0, zero, &s);
    if (extra) nnar_sha256_update(&s, extra, 32);
    nnar_sha256_final(&s, out);
}
