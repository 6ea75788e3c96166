/* libFuzzer: the IDX reader (images + labels, raw or gzip). The input is
 * split in two files at a position given by its first two bytes. */
#include "fuzz_common.h"

#include <cldiffusion/cldiffusion.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t cut = ((size_t)data[0] | (size_t)data[1] << 8) % (size - 1);
    const uint8_t *img = data + 2, *lab = data + 2 + cut;
    const char *pi = fuzz_file(0, img, cut), *pl = fuzz_file(1, lab, size - 2 - cut);
    cld_dataset *ds = NULL;
    if (cld_dataset_open_idx(pi, pl, &ds) == CLD_OK) {
        cld_dataset_info info;
        if (cld_dataset_get_info(ds, &info) == CLD_OK && info.n > 0) {
            size_t px = (size_t)info.channels * info.height * info.width;
            float *x = malloc(px * sizeof *x);
            int label;
            if (x) (void)cld_dataset_get(ds, info.n - 1, NULL, 1, 0, x, &label);
            free(x);
        }
        cld_dataset_free(ds);
    }
    return 0;
}
