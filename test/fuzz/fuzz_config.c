/* libFuzzer: the JSON readers a model file feeds (UNet config, model
 * metadata, a PNG recipe, a diffusers config.json and scheduler config) on
 * arbitrary text. */
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
    cld_diffusion_config d;
    cld_diffusers_scheduler sched;
    cld_sampler_opts so;
    if (cld_diffusers_unet_config(text, &cfg) == CLD_OK &&
        cld_diffusers_scheduler_config(text, &cfg, &d, &sched) == CLD_OK)
        (void)cld_diffusers_sampler_defaults(&sched, &so);
    /* the scheduler reader on its own, against a plain 3-channel UNet */
    cld_unet_config plain;
    if (cld_unet_config_preset("small", &plain) == CLD_OK &&
        cld_diffusers_scheduler_config(text, &plain, &d, &sched) == CLD_OK)
        (void)cld_diffusers_sampler_defaults(&sched, &so);
    free(text);
    return 0;
}
