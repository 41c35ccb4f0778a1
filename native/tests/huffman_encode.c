/* nnar.huffman's encoder (src/codecs/huffman_enc.c) on a file's bytes, the stored bytes to
 * stdout: the tests compare them with the Python package's, byte for byte (a byte patch's
 * rebuilt Huffman segments must be the maker's). usage: huffman_encode FILE */
#include <stdio.h>
#include <stdlib.h>

#include "codecs/codecs.h"

int main(int argc, char **argv)
{
    nnar_ctx ctx;
    nnar_stage st;
    nnar_error err;
    FILE *f;
    unsigned char *in;
    uint8_t *out = NULL;
    size_t out_size = 0;
    long n;
    if (argc != 2 || !(f = fopen(argv[1], "rb")) || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0)
        return 2;
    in = (unsigned char *)malloc((size_t)n + 1);
    if (!in || fread(in, 1, (size_t)n, f) != (size_t)n) return 2;
    fclose(f);
    nnar_ctx_init(&ctx, NULL, &err);
    memset(&st, 0, sizeof st);
    st.codec = &nnar_codec_huffman;
    if (nnar_huffman_encode(&ctx, &st, in, (size_t)n, &out, &out_size) != NNAR_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    fwrite(out, 1, out_size, stdout);
    nnar_free(&ctx, out);
    nnar_ctx_free(&ctx);
    free(in);
    return 0;
}
