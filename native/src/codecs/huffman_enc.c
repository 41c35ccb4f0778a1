/* nnar.huffman's encoder (spec/codecs/huffman.md, Encoding): the lengths nnar's encoder
 * chooses, so a byte patch whose segments used Huffman is rebuilt byte for byte. Optimal
 * Huffman lengths from the weights sorted by (count, symbol), merged from two queues (a leaf
 * wins ties); above 15 bits, package-merge with the same order (a leaf before a package of the
 * same weight). */
#include "codecs.h"

#define MAX_LEN 15

/* Huffman depths of n ascending weights (two-queue method). */
static void huffman_depths(const uint64_t *w, int n, unsigned *depth)
{
    uint64_t weight[511];
    int parent[511], d[511], leaf = 0, node = n, made, k, i;
    for (i = 0; i < n; i++) weight[i] = w[i];
    for (made = n; made < 2 * n - 1; made++) {
        int pair[2];
        for (k = 0; k < 2; k++) {
            if (leaf < n && (node == made || weight[leaf] <= weight[node])) pair[k] = leaf++;
            else pair[k] = node++;
        }
        weight[made] = weight[pair[0]] + weight[pair[1]];
        parent[pair[0]] = parent[pair[1]] = made;
    }
    d[2 * n - 2] = 0;
    for (i = 2 * n - 3; i >= 0; i--) d[i] = d[parent[i]] + 1;
    for (i = 0; i < n; i++) depth[i] = (unsigned)d[i];
}

typedef struct item { uint64_t w; int leaf; } item;

/* Optimal lengths of at most `limit` bits for n ascending weights (package-merge; each level
 * is the stable merge of the leaves and the packages of the level below). */
static nnar_status package_merge(nnar_ctx *ctx, const uint64_t *w, int n, int limit, unsigned *depth)
{
    item *levels = (item *)nnar_alloc(ctx, (size_t)limit * 2 * (size_t)n * sizeof *levels);
    int *count, level, i, take;
    if (!levels) return NNAR_OUT_OF_MEMORY;
    count = (int *)nnar_alloc(ctx, (size_t)limit * sizeof *count);
    if (!count) { nnar_free(ctx, levels); return NNAR_OUT_OF_MEMORY; }
    for (i = 0; i < n; i++) { levels[i].w = w[i]; levels[i].leaf = 1; }
    count[0] = n;
    for (level = 1; level < limit; level++) {
        const item *below = levels + (size_t)(level - 1) * 2 * (size_t)n;
        item *out = levels + (size_t)level * 2 * (size_t)n;
        int np = count[level - 1] / 2, a = 0, b = 0, m = 0;
        while (a < n || b < np) {
            uint64_t pw = b < np ? below[2 * b].w + below[2 * b + 1].w : 0;
            if (a < n && (b >= np || w[a] <= pw)) { out[m].w = w[a++]; out[m].leaf = 1; }
            else { out[m].w = pw; out[m].leaf = 0; b++; }
            m++;
        }
        count[level] = m;
    }
    for (i = 0; i < n; i++) depth[i] = 0;
    take = 2 * n - 2;
    for (level = limit - 1; level >= 0; level--) {
        const item *items = levels + (size_t)level * 2 * (size_t)n;
        int taken = 0;
        for (i = 0; i < take && i < count[level]; i++) taken += items[i].leaf;
        for (i = 0; i < taken; i++) depth[i]++;
        take = 2 * (take - taken);
    }
    nnar_free(ctx, count);
    nnar_free(ctx, levels);
    return NNAR_OK;
}

nnar_status nnar_huffman_encode(nnar_ctx *ctx, const nnar_stage *st, const uint8_t *in, size_t in_size, uint8_t **out,
                                size_t *out_size)
{
    uint64_t hist[256] = {0}, w[256], total_bits = 0, acc = 0;
    unsigned len[256] = {0}, depth[256], bl_count[MAX_LEN + 1] = {0}, next_code[MAX_LEN + 1], code[256] = {0};
    int order[256], n = 0, i, j, nacc = 0, longest = 0;
    size_t size, pos = 136, k;
    uint8_t *buf;
    unsigned c = 0;
    (void)st;
    *out = NULL;
    *out_size = 0;
    for (k = 0; k < in_size; k++) hist[in[k]]++;
    for (i = 0; i < 256; i++)
        if (hist[i]) order[n++] = i;
    /* insertion sort by (count, symbol): at most 256 symbols */
    for (i = 1; i < n; i++) {
        int s = order[i];
        for (j = i; j > 0 && hist[order[j - 1]] > hist[s]; j--) order[j] = order[j - 1];
        order[j] = s;
    }
    if (n == 1) len[order[0]] = 1;
    else if (n > 1) {
        for (i = 0; i < n; i++) w[i] = hist[order[i]];
        huffman_depths(w, n, depth);
        for (i = 0; i < n; i++) if ((int)depth[i] > longest) longest = (int)depth[i];
        if (longest > MAX_LEN) NNAR_TRY(package_merge(ctx, w, n, MAX_LEN, depth));
        for (i = 0; i < n; i++) len[order[i]] = depth[i];
    }
    for (i = 0; i < 256; i++) {
        total_bits += hist[i] * len[i];
        if (len[i]) bl_count[len[i]]++;
    }
    for (i = 1; i <= MAX_LEN; i++) {
        c = (c + (i > 1 ? bl_count[i - 1] : 0)) << 1;
        next_code[i] = c;
    }
    for (i = 0; i < 256; i++)
        if (len[i]) code[i] = next_code[len[i]]++;
    size = 136 + (size_t)((total_bits + 7) / 8);
    buf = (uint8_t *)nnar_alloc_zero(ctx, size);
    if (!buf) return NNAR_OUT_OF_MEMORY;
    for (i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)in_size >> (8 * i));
    for (i = 0; i < 128; i++) buf[8 + i] = (uint8_t)(len[2 * i] | len[2 * i + 1] << 4);
    for (k = 0; k < in_size; k++) {
        unsigned s = in[k];
        acc = acc << len[s] | code[s];
        nacc += (int)len[s];
        while (nacc >= 8) {
            nacc -= 8;
            buf[pos++] = (uint8_t)(acc >> nacc);
        }
    }
    if (nacc) buf[pos++] = (uint8_t)(acc << (8 - nacc));
    *out = buf;
    *out_size = size;
    return NNAR_OK;
}
