/* libFuzzer: the JSON readers a model file feeds (UNet config, model
 * metadata, a PNG recipe) on arbitrary text. */
#include "fuzz_common.h"

#include <cldiffusion/cldiffusion.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    cld_unet_config cfg;
    cld_model_meta m;
    cld_recipe r;
    (void)cld_unet_config_from_json(text, &cfg);
    (void)cld_model_meta_from_json(text, &m);
    (void)cld_recipe_from_json(text, &r);
    free(text);
    return 0;
}
