/* libFuzzer: the safetensors header and tensor table (cld_safetensors_metadata
 * validates every entry, the tiling of the data section and __metadata__),
 * then the model metadata JSON found in it. */
#include "fuzz_common.h"

#include <cldiffusion/cldiffusion.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *meta = NULL;
    if (cld_safetensors_metadata(fuzz_file(0, data, size), &meta) == CLD_OK) {
        cld_model_meta m;
        (void)cld_model_meta_from_json(meta, &m);
        free(meta);
    }
    return 0;
}
