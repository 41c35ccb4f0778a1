/* Runs the libFuzzer harness on files, without libFuzzer: how the tests replay the corpus
 * under the sanitizers with any compiler. usage: replay FILE... */
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int main(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        unsigned char *d;
        long n;
        if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
            fprintf(stderr, "replay: cannot read %s\n", argv[i]);
            return 2;
        }
        d = (unsigned char *)malloc((size_t)n + 1);
        if (!d || fread(d, 1, (size_t)n, f) != (size_t)n) return 2;
        fclose(f);
        LLVMFuzzerTestOneInput(d, (size_t)n);
        free(d);
    }
    printf("replayed %d inputs\n", argc - 1);
    return 0;
}
