/* diffusers model folders against diffusers itself: the fixtures in
 * test/fixtures/diffusers (made by make_diffusers_fixtures.py with torch
 * and diffusers) hold tiny UNet2DModel folders with random weights and what
 * diffusers computed with them: a forward pass, a DDIM run from a given
 * x_T, a one-step DDPM run and DDPM step coefficients. Relative error
 * (max |ours - ref| / max |ref|) below 1e-4. Also: refused config keys
 * and values, and wrong or partial folders, named in the error. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apptest.h"
#include "testutil.h"

#define FIX CLD_SOURCE_DIR "/test/fixtures/diffusers"
#define TOL 1e-4

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* Reference tensor `name` of a fixture (malloc'd), with its element count. */
static float *ref(const char *model, const char *name, size_t *count)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/ref.safetensors", FIX, model);
    int nd, sh[CLD_MAX_DIMS];
    float *v = NULL;
    TU_OK(cld_safetensors_read(path, name, &nd, sh, &v));
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)sh[i];
    if (count) *count = n;
    return v;
}

static double rel_err(const float *got, const float *want, size_t n)
{
    double emax = 0, wmax = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= emax)) emax = e; /* NaN propagates */
        if (fabs(want[i]) > wmax) wmax = fabs(want[i]);
    }
    return emax / (wmax > 0 ? wmax : 1.0);
}

#define ASSERT_REL(got, want, n, what)                                               \
    do {                                                                             \
        double e__ = rel_err((got), (want), (n));                                    \
        ck_assert_msg(e__ < TOL, "%s: relative error %.3g >= %g", (what), e__, TOL); \
        fprintf(stderr, "test_diffusers: %-28s relative error %.2e\n", (what), e__); \
    } while (0)

static cld_model *load(const char *name)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", FIX, name);
    cld_model *m = NULL;
    TU_OK(cld_model_load(tu_ctx(), dir, &m));
    ck_assert(m->diffusers);
    return m;
}

static const char *const models[] = {"ddpm_old", "heads_classes_f16", "learned_bf16"};

/* ------------------------------------------------------------- forward */

START_TEST(test_forward)
{
    const char *name = models[_i];
    cld_model *m = load(name);
    const cld_unet_config *c = &m->meta.unet;
    size_t nx, nout;
    float *x = ref(name, "x", &nx), *t = ref(name, "t", NULL), *want = ref(name, "out", &nout);
    float *lab = c->num_classes ? ref(name, "labels", NULL) : NULL;
    int labels[2] = {0, 0};
    if (lab) labels[0] = (int)lab[0], labels[1] = (int)lab[1];
    ck_assert_uint_eq(nx, 2 * m->per_sample);
    ck_assert_uint_eq(nout, nx / (size_t)c->in_channels * (size_t)c->out_channels);
    cld_unet_runner *r;
    TU_OK(cld_unet_runner_create(tu_ctx(), m->params, c, 2, &r));
    cl_mem xb = tu_upload(tu_ctx(), x, nx), ob;
    TU_OK(cld_buffer_alloc(tu_ctx(), nout * sizeof(float), &ob));
    TU_OK(cld_unet_runner_fn(r, xb, 0, ob, 0, 2, t, lab ? labels : NULL));
    float *got = tu_malloc(nout * sizeof *got);
    tu_download(tu_ctx(), ob, got, nout);
    char what[64];
    snprintf(what, sizeof what, "%s forward", name);
    ASSERT_REL(got, want, nout, what);
    cld_buffer_release(xb);
    cld_buffer_release(ob);
    cld_unet_runner_free(r);
    cld_model_free(m);
    free(x), free(t), free(want), free(lab), free(got);
}
END_TEST

/* ----------------------------------------------------------- samplers */

/* cld_model_sample from the fixture's x_T with the folder's scheduler defaults. */
static void run_from(const char *name, cld_sampler_kind kind, int steps, const char *xT, const char *x0)
{
    cld_model *m = load(name);
    size_t n;
    float *x = ref(name, xT, &n), *want = ref(name, x0, NULL);
    float *lab = m->meta.unet.num_classes ? ref(name, "labels", NULL) : NULL;
    int labels[2] = {0, 0};
    if (lab) labels[0] = (int)lab[0], labels[1] = (int)lab[1];
    cld_sample_spec sp;
    TU_OK(cld_sample_spec_default(&sp));
    TU_OK(cld_sampler_opts_default(kind, &sp.opts));
    TU_OK(cld_diffusers_sampler_defaults(&m->sched, &sp.opts));
    sp.opts.steps = steps;
    sp.n = 2;
    sp.batch = 2;
    sp.noise = x;
    sp.labels = lab ? labels : NULL;
    float *got = tu_malloc(n * sizeof *got);
    TU_OK(cld_model_sample(m, &sp, got));
    char what[64];
    snprintf(what, sizeof what, "%s %s", name, x0);
    ASSERT_REL(got, want, n, what);
    cld_model_free(m);
    free(x), free(want), free(lab), free(got);
}

START_TEST(test_ddim_run) { run_from(models[_i], CLD_SAMPLER_DDIM, 4, "ddim_xT", "ddim_x0"); }
END_TEST

START_TEST(test_ddpm_one_step) { run_from(models[_i], CLD_SAMPLER_DDPM, 1, "ddpm1_xT", "ddpm1_x0"); }
END_TEST

/* DDPM steps of a 10-step run: diffusers' mean and std (x_prev = mean + std z)
 * against the posterior of our schedule at the sampler's points, the x_0
 * estimate clipped as the scheduler says. */
START_TEST(test_ddpm_steps)
{
    const char *name = models[_i];
    cld_model *m = load(name);
    size_t n, ne;
    float *x = ref(name, "ddpm_x", &n), *t = ref(name, "ddpm_t", NULL), *eps = ref(name, "ddpm_eps", &ne);
    float *mean = ref(name, "ddpm_mean", NULL), *std = ref(name, "ddpm_std", NULL);
    ck_assert_uint_eq(ne, n); /* learned_range fixtures are covered by the runs */
    cld_sampler_opts o;
    TU_OK(cld_sampler_opts_default(CLD_SAMPLER_DDPM, &o));
    TU_OK(cld_diffusers_sampler_defaults(&m->sched, &o));
    o.steps = 10;
    cld_sampler_point pts[11];
    TU_OK(cld_sampler_points(m->schedule, &o, pts, NULL));
    const size_t per = m->per_sample;
    float *gm = tu_malloc(n * sizeof *gm), *gs = tu_malloc(n * sizeof *gs);
    for (size_t s = 0; s < n / per; s++) {
        int k = 0;
        while (k < 10 && pts[k].t != t[s]) k++;
        ck_assert_msg(k < 10, "timestep %g of the fixture is not a point of our 10-step DDPM", (double)t[s]);
        int tp = k == 9 ? -1 : (int)pts[k + 1].t;
        double c0, ct, var, kx, kp;
        TU_OK(cld_q_posterior(m->schedule, (int)t[s], tp, &c0, &ct, &var));
        TU_OK(cld_pred_coefs(m->meta.diffusion.pred, CLD_PRED_X0, pts[k].a, pts[k].b, &kx, &kp));
        double ab_t = m->schedule->alpha_bar[(int)t[s]], ab_s = tp < 0 ? 1.0 : m->schedule->alpha_bar[tp];
        double sd = k == 9 ? 0.0 : sqrt(o.variance == CLD_VAR_BETA ? 1.0 - ab_t / ab_s : fmax(var, 1e-20));
        for (size_t e = s * per; e < (s + 1) * per; e++) {
            double x0 = kx * x[e] + kp * eps[e];
            if (o.clip_sample > 0) x0 = fmin(fmax(x0, -o.clip_sample), o.clip_sample);
            gm[e] = (float)(c0 * x0 + ct * x[e]);
            gs[e] = (float)sd;
        }
    }
    char what[64];
    snprintf(what, sizeof what, "%s ddpm step mean", name);
    ASSERT_REL(gm, mean, n, what);
    snprintf(what, sizeof what, "%s ddpm step std", name);
    ASSERT_REL(gs, std, n, what);
    cld_model_free(m);
    free(x), free(t), free(eps), free(mean), free(std), free(gm), free(gs);
}
END_TEST

/* ------------------------------------------------------------- configs */

START_TEST(test_config_mapping)
{
    cld_model *m = load("ddpm_old");
    const cld_unet_config *c = &m->meta.unet;
    ck_assert_int_eq(c->base_channels, 8);
    ck_assert_int_eq(c->n_levels, 2);
    ck_assert_int_eq(c->mult[1], 2);
    ck_assert_int_eq(c->num_res_blocks, 1);
    ck_assert_int_eq(c->downsample_padding, 0);
    ck_assert_int_eq(c->flip_sin_to_cos, 0);
    ck_assert(c->freq_shift == 1.0f);
    ck_assert(c->down_attn[0] == 0 && c->down_attn[1] == 1 && c->up_attn[0] == 1 && c->up_attn[1] == 0);
    ck_assert_int_eq(m->meta.diffusion.T, 1000);
    ck_assert_int_eq(m->sched.variance, CLD_VAR_BETA);
    ck_assert(m->sched.clip_sample == 1.0);
    ck_assert_int_eq(m->sched.spacing, CLD_SPACING_LEADING);
    /* the config survives the model metadata's JSON */
    char *json;
    TU_OK(cld_unet_config_to_json(c, &json));
    cld_unet_config back;
    TU_OK(cld_unet_config_from_json(json, &back));
    free(json);
    ck_assert(memcmp(&back, c, sizeof back) == 0);
    cld_model_free(m);
    m = load("heads_classes_f16");
    ck_assert_int_eq(m->meta.unet.head_dim, 4);
    ck_assert_int_eq(m->meta.unet.num_classes, 5);
    ck_assert_int_eq(m->meta.unet.class_no_null, 1);
    ck_assert_int_eq(m->meta.diffusion.pred, CLD_PRED_V);
    ck_assert_int_eq(m->sched.set_alpha_to_one, 0);
    ck_assert_int_eq(m->sched.spacing, CLD_SPACING_TRAILING);
    cld_model_free(m);
}
END_TEST

/* Refused keys and values, each named. */
START_TEST(test_config_refused)
{
    static const char *const bad[][2] = {
        {"{\"sample_size\": 8, \"center_input_sample\": true}", "center_input_sample"},
        {"{\"sample_size\": 8, \"resnet_time_scale_shift\": \"scale_shift\"}", "resnet_time_scale_shift"},
        {"{\"sample_size\": 8, \"time_embedding_type\": \"fourier\"}", "time_embedding_type"},
        {"{\"sample_size\": 8, \"class_embed_type\": \"timestep\"}", "class_embed_type"},
        {"{\"sample_size\": 8, \"downsample_type\": \"resnet\"}", "downsample_type"},
        {"{\"sample_size\": 8, \"act_fn\": \"gelu\"}", "act_fn"},
        {"{\"sample_size\": 8, \"mid_block_scale_factor\": 1.414}", "mid_block_scale_factor"},
        {"{\"sample_size\": 8, \"attn_norm_num_groups\": 8}", "attn_norm_num_groups"},
        {"{\"sample_size\": 8, \"down_block_types\": [\"DownBlock2D\", \"SkipDownBlock2D\", \"DownBlock2D\", "
         "\"DownBlock2D\"]}",
         "SkipDownBlock2D"},
        {"{\"sample_size\": 8, \"some_new_option\": 3}", "some_new_option"},
        {"{\"_class_name\": \"UNet2DConditionModel\", \"sample_size\": 8}", "UNet2DModel"},
        {"{\"in_channels\": 3}", "sample_size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cld_unet_config c;
        TU_STATUS(cld_diffusers_unet_config(bad[i][0], &c), CLD_ERR_FORMAT);
        ck_assert_msg(contains(cld_last_error(), bad[i][1]), "'%s': error '%s' does not name %s", bad[i][0],
                      cld_last_error(), bad[i][1]);
    }
    /* keys at their defaults, as newer versions write them, are fine: UNet2DModel's own defaults */
    cld_unet_config c;
    TU_OK(cld_diffusers_unet_config("{\"sample_size\": 32, \"add_attention\": true, \"dropout\": 0.0, "
                                    "\"upsample_type\": \"conv\", \"attn_norm_num_groups\": null, "
                                    "\"num_train_timesteps\": null, \"_use_default_values\": [\"dropout\"]}",
                                    &c));
    ck_assert_int_eq(c.base_channels, 224);
    ck_assert_int_eq(c.head_dim, 8);
    static const char *const sbad[][2] = {
        {"{\"thresholding\": true}", "thresholding"},
        {"{\"variance_type\": \"learned\"}", "variance_type"},
        {"{\"beta_schedule\": \"sigmoid\"}", "beta_schedule"},
        {"{\"trained_betas\": [0.1, 0.2]}", "trained_betas"},
        {"{\"_class_name\": \"PNDMScheduler\"}", "PNDMScheduler"},
        {"{\"timestep_spacing\": \"karras\"}", "timestep_spacing"},
        {"{\"unknown_thing\": 1}", "unknown_thing"},
        {"{\"variance_type\": \"learned_range\"}", "learned_range"}, /* the UNet has 3 outputs */
    };
    cld_unet_config u;
    memset(&u, 0, sizeof u);
    u.in_channels = u.out_channels = 3;
    for (size_t i = 0; i < sizeof sbad / sizeof sbad[0]; i++) {
        cld_diffusion_config d;
        cld_diffusers_scheduler s;
        TU_STATUS(cld_diffusers_scheduler_config(sbad[i][0], &u, &d, &s), CLD_ERR_FORMAT);
        ck_assert_msg(contains(cld_last_error(), sbad[i][1]), "'%s': error '%s' does not name %s", sbad[i][0],
                      cld_last_error(), sbad[i][1]);
    }
}
END_TEST

/* ------------------------------------------------------------- folders */

static void copy_file(const char *from, const char *to, long drop_tail)
{
    FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
    ck_assert(f && g);
    fseek(f, 0, SEEK_END);
    long n = ftell(f) - drop_tail;
    fseek(f, 0, SEEK_SET);
    char *buf = tu_malloc((size_t)n + 1);
    ck_assert_int_eq((long)fread(buf, 1, (size_t)n, f), n);
    ck_assert_int_eq((long)fwrite(buf, 1, (size_t)n, g), n);
    free(buf);
    fclose(f);
    fclose(g);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert(f);
    fputs(text, f);
    fclose(f);
}

/* A copy of fixture ddpm_old in tmp/unet/ (the other layout), config edited
 * by replacing `from` with `to`, the weights cut by drop_tail bytes. */
static char *variant(const char *from, const char *to, long drop_tail)
{
    char *tmp = tu_mkdtemp("cld-diffusers");
    char path[1024], src[1024];
    snprintf(path, sizeof path, "%s/unet", tmp);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    snprintf(src, sizeof src, "%s/ddpm_old/diffusion_pytorch_model.safetensors", FIX);
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", tmp);
    copy_file(src, path, drop_tail);
    snprintf(src, sizeof src, "%s/ddpm_old/config.json", FIX);
    FILE *f = fopen(src, "rb");
    ck_assert(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char edited[8192];
    char *at = from ? strstr(text, from) : NULL;
    ck_assert(!from || at);
    if (at)
        snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    else
        snprintf(edited, sizeof edited, "%s", text);
    snprintf(path, sizeof path, "%s/unet/config.json", tmp);
    write_text(path, edited);
    return tmp;
}

static void expect_fail(char *dir, cld_status want, const char *needle)
{
    cld_model *m = NULL;
    TU_STATUS(cld_model_load(tu_ctx(), dir, &m), want);
    ck_assert_msg(contains(cld_last_error(), needle), "error '%s' does not name '%s'", cld_last_error(),
                  needle);
    ck_assert(m == NULL);
    tu_rm_rf(dir);
    free(dir);
}

START_TEST(test_folders)
{
    /* the unet/ layout without a scheduler config loads (DDPM defaults) */
    char *dir = variant(NULL, NULL, 0);
    cld_model *m = NULL;
    TU_OK(cld_model_load(tu_ctx(), dir, &m));
    ck_assert_int_eq(m->sched.present, 0);
    cld_model_free(m);
    tu_rm_rf(dir);
    free(dir);
    /* one more resnet per block: the first tensor the file lacks is named */
    expect_fail(variant("\"layers_per_block\": 1", "\"layers_per_block\": 2", 0), CLD_ERR_FORMAT,
                "down_blocks.0.resnets.1.norm1.weight' is missing");
    /* no attention in block 1: its tensors are unexpected */
    expect_fail(variant("\"AttnDownBlock2D\"", "\"DownBlock2D\"", 0), CLD_ERR_FORMAT,
                "unexpected tensor 'down_blocks.1.attentions.0");
    /* other channel counts: a shape mismatch names the tensor */
    expect_fail(
        variant("\"block_out_channels\": [\n    8,\n    16\n  ]", "\"block_out_channels\": [8, 32]", 0),
        CLD_ERR_FORMAT, "has shape");
    /* a truncated weights file, seen from the header */
    expect_fail(variant(NULL, NULL, 100), CLD_ERR_FORMAT, "past the data section");
    /* a config naming an unsupported value */
    expect_fail(variant("\"resnet_time_scale_shift\": \"default\"",
                        "\"resnet_time_scale_shift\": \"scale_shift\"", 0),
                CLD_ERR_FORMAT, "resnet_time_scale_shift");
    /* no weights */
    char *empty = tu_mkdtemp("cld-diffusers");
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", empty);
    write_text(path, "{\"sample_size\": 8}");
    expect_fail(empty, CLD_ERR_IO, "diffusion_pytorch_model.safetensors");
}
END_TEST

/* ------------------------------------------------------------ cld-sample */

/* A safetensors file of one (n, 3, 8, 8) normal tensor named `name`. */
static void write_noise(const char *path, const char *name, int n, uint64_t seed)
{
    cld_params *p;
    const int shape[4] = {n, 3, 8, 8};
    TU_OK(cld_params_create(tu_ctx(), &p));
    TU_OK(cld_params_set_seed(p, seed));
    TU_OK(cld_params_declare(p, name, 4, shape, CLD_INIT_NORMAL, 1.0f, NULL));
    TU_OK(cld_params_alloc(p));
    TU_OK(cld_params_save(p, path, NULL));
    cld_params_free(p);
}

START_TEST(test_app)
{
    char *dir = tu_mkdtemp("cld-diffusers-app");
    char *xt = at_path(dir, "xt.safetensors"), *bad = at_path(dir, "bad.safetensors");
    char *a = at_path(dir, "a.png"), *b = at_path(dir, "b.png"), *c = at_path(dir, "c.png"),
         *r = at_path(dir, "r.png");
    write_noise(xt, "latents", 3, 5);
    write_noise(bad, "latents", 1, 5);
    char args[2048], *err = NULL;
    const char *common = "--model " FIX "/ddpm_old --sampler ddim --steps 4 --progress none";
    snprintf(args, sizeof args, "%s --noise xt.safetensors --out a.png", common);
    ck_assert_int_eq(at_run(at_app("cld-sample", "CLD_SAMPLE"), dir, args, NULL, &err), 0);
    ck_assert_msg(contains(err, "DDPMScheduler") && contains(err, "clip_sample 1"), "%s", err);
    free(err);
    /* all three rows by default; the recipe names the noise file and replays it */
    snprintf(args, sizeof args, "%s --noise xt.safetensors --n 3 --out b.png", common);
    ck_assert_int_eq(at_run(at_app("cld-sample", "CLD_SAMPLE"), dir, args, NULL, NULL), 0);
    at_files_equal(a, b);
    ck_assert_int_eq(at_run(at_app("cld-sample", "CLD_SAMPLE"), dir,
                            "--replay a.png --out r.png --progress none", NULL, NULL),
                     0);
    at_files_equal(a, r);
    /* without --noise: the seed's noise, another picture */
    snprintf(args, sizeof args, "%s --n 3 --out c.png", common);
    ck_assert_int_eq(at_run(at_app("cld-sample", "CLD_SAMPLE"), dir, args, NULL, NULL), 0);
    size_t la, lc;
    unsigned char *pa = at_read_file(a, &la), *pc = at_read_file(c, &lc);
    ck_assert(la != lc || memcmp(pa, pc, la) != 0);
    free(pa), free(pc);
    const app_case cases[] = {
        {"--model " FIX "/ddpm_old --noise bad.safetensors --n 2 --out x.png", 1, "N >= 2"},
        {"--model " FIX "/ddpm_old --noise missing.safetensors --out x.png", 1, "missing.safetensors"},
        {"--model " FIX "/ddpm_old --noise xt.safetensors --init a.png --out x.png", 2, "not both"},
        {"--model " FIX "/heads_classes_f16 --guidance 2 --out x.png", 2, "no null class"},
        {"--model " FIX " --out x.png", 1, "config.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *e = NULL;
        int st = at_run(at_app("cld-sample", "CLD_SAMPLE"), dir, cases[i].args, NULL, &e);
        ck_assert_msg(st == cases[i].status && contains(e, cases[i].message), "'%s': status %d, stderr: %s",
                      cases[i].args, st, e);
        free(e);
    }
    char *x = at_path(dir, "x.png");
    ck_assert(!at_exists(x));
    free(x);
    tu_rm_rf(dir);
    free(dir), free(xt), free(bad), free(a), free(b), free(c), free(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("diffusers");
    TCase *tc = tcase_create("diffusers");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_forward, 0, 3);
    tcase_add_loop_test(tc, test_ddim_run, 0, 3);
    tcase_add_loop_test(tc, test_ddpm_one_step, 0, 3);
    tcase_add_loop_test(tc, test_ddpm_steps, 0, 2);
    tcase_add_test(tc, test_config_mapping);
    tcase_add_test(tc, test_config_refused);
    tcase_add_test(tc, test_folders);
    tcase_add_test(tc, test_app);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
