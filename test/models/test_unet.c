/* The DDPM UNet: configs, parameter counts, gradients of a tiny UNet against
 * finite differences, shape errors, memory plans, AdamW, cld_unet_time. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/internal.h"
#include "testutil.h"

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* ------------------------------------------------------------------ helpers */

/* The tiny UNet of the gradient test: 8x8x1, base 8, mult 1,2, one res
 * block per level, attention at 4x4 (and the middle block), 4 groups,
 * no dropout, 3 classes (+ null). */
static cld_unet_config tiny_config(int heads)
{
    cld_unet_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = c.out_channels = 1;
    c.image_size = 8;
    c.base_channels = 8;
    c.n_levels = 2;
    c.mult[0] = 1;
    c.mult[1] = 2;
    c.num_res_blocks = 1;
    c.n_attn = 1;
    c.attn_res[0] = 4;
    c.heads = heads;
    c.norm_groups = 4;
    c.dropout = 0.0f;
    c.num_classes = 3;
    return c;
}

/* A UNet graph at batch `batch`: inputs x, t, labels (if conditional) and,
 * with `loss`, an MSE loss against input `target` (output: loss, else y). */
typedef struct net {
    cld_graph *g;
    cld_tensor *x, *t, *labels, *target, *y, *loss;
} net;

static void net_build(net *n, cld_params *p, const cld_unet_config *cfg, int batch, int loss, int backward)
{
    memset(n, 0, sizeof *n);
    const int S = cfg->image_size;
    TU_OK(cld_graph_create(tu_ctx(), p, &n->g));
    TU_OK(cld_graph_input(n->g, "x", 4, (int[]){batch, cfg->in_channels, S, S}, 0, &n->x));
    TU_OK(cld_graph_input(n->g, "t", 1, &batch, 0, &n->t));
    if (cfg->num_classes) TU_OK(cld_graph_input(n->g, "labels", 1, &batch, 0, &n->labels));
    TU_OK(cld_unet_build(n->g, cfg, n->x, n->t, n->labels, &n->y));
    if (loss) {
        TU_OK(cld_graph_input(n->g, "target", 4, (int[]){batch, cfg->out_channels, S, S}, 0, &n->target));
        TU_OK(cld_op_mse_loss(n->g, n->y, n->target, NULL, &n->loss));
        TU_OK(cld_graph_set_output(n->g, n->loss));
        if (backward) TU_OK(cld_graph_backward(n->g, n->loss));
    } else {
        TU_OK(cld_graph_set_output(n->g, n->y));
    }
}

static size_t param_numel(cld_params *p, int i, int *ndim, int shape[CLD_MAX_DIMS], const char **name,
                          size_t *off)
{
    TU_OK(cld_params_info(p, i, name, ndim, shape, off));
    size_t n = 1;
    for (int d = 0; d < *ndim; d++) n *= (size_t)shape[d];
    return n;
}

static void expect_param(cld_params *p, const char *name, int ndim, const int *shape)
{
    int idx, nd, sh[CLD_MAX_DIMS];
    TU_OK(cld_params_find(p, name, &idx));
    TU_OK(cld_params_info(p, idx, NULL, &nd, sh, NULL));
    ck_assert_msg(nd == ndim, "%s: rank %d, expected %d", name, nd, ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(sh[d] == shape[d], "%s: dim %d is %d, expected %d", name, d, sh[d], shape[d]);
}

/* ------------------------------------------------------------- param counts */

START_TEST(test_param_counts)
{
    const struct {
        const char *preset;
        size_t want;
    } cases[] = {{"cifar10", 35746307u}, {"fashion-mnist", 6469889u}};
    for (int c = 0; c < 2; c++) {
        cld_unet_config cfg;
        TU_OK(cld_unet_config_preset(cases[c].preset, &cfg));
        size_t counted = 0, declared = 0;
        TU_OK(cld_unet_param_count(&cfg, &counted));
        ck_assert_msg(counted == cases[c].want, "%s: cld_unet_param_count %zu, expected %zu", cases[c].preset,
                      counted, cases[c].want);
        /* the same through a graph on the real context, at another batch size */
        cld_params *p;
        TU_OK(cld_params_create(tu_ctx(), &p));
        net n;
        net_build(&n, p, &cfg, 3, 0, 0);
        int tensors;
        TU_OK(cld_params_count(p, &tensors, &declared));
        ck_assert_msg(declared == cases[c].want, "%s: store holds %zu, expected %zu", cases[c].preset,
                      declared, cases[c].want);
        fprintf(stderr, "unet %-14s %zu parameters in %d tensors\n", cases[c].preset, declared, tensors);
        if (c == 0) { /* diffusers' names and shapes */
            expect_param(p, "conv_in.weight", 4, (int[]){128, 3, 3, 3});
            expect_param(p, "time_embedding.linear_1.weight", 2, (int[]){512, 128});
            expect_param(p, "down_blocks.0.resnets.0.conv1.weight", 4, (int[]){128, 128, 3, 3});
            expect_param(p, "down_blocks.1.resnets.0.conv_shortcut.weight", 4, (int[]){256, 128, 1, 1});
            expect_param(p, "down_blocks.1.attentions.1.to_q.weight", 2, (int[]){256, 256});
            expect_param(p, "down_blocks.2.downsamplers.0.conv.bias", 1, (int[]){256});
            expect_param(p, "mid_block.attentions.0.to_out.0.weight", 2, (int[]){256, 256});
            expect_param(p, "up_blocks.0.resnets.0.conv1.weight", 4, (int[]){256, 512, 3, 3});
            expect_param(p, "up_blocks.2.attentions.2.group_norm.weight", 1, (int[]){256});
            expect_param(p, "up_blocks.3.resnets.2.conv_shortcut.weight", 4, (int[]){128, 256, 1, 1});
            expect_param(p, "up_blocks.2.upsamplers.0.conv.weight", 4, (int[]){256, 256, 3, 3});
            expect_param(p, "conv_out.weight", 4, (int[]){3, 128, 3, 3});
            TU_STATUS(cld_params_find(p, "up_blocks.3.upsamplers.0.conv.weight", NULL), CLD_ERR_INVALID_ARG);
            TU_STATUS(cld_params_find(p, "down_blocks.3.downsamplers.0.conv.weight", NULL),
                      CLD_ERR_INVALID_ARG);
        }
        cld_graph_free(n.g);
        cld_params_free(p);
    }
    /* class conditioning adds the (num_classes + 1, 4 base) table */
    cld_unet_config cfg;
    size_t n0, n1;
    TU_OK(cld_unet_config_preset("cifar10", &cfg));
    TU_OK(cld_unet_param_count(&cfg, &n0));
    cfg.num_classes = 10;
    TU_OK(cld_unet_param_count(&cfg, &n1));
    ck_assert_uint_eq(n1 - n0, 11u * 512u);
}
END_TEST

/* ------------------------------------------------------------------ configs */

START_TEST(test_config_json)
{
    cld_unet_config a, b;
    char *js;
    TU_OK(cld_unet_config_preset("cifar10", &a));
    TU_OK(cld_unet_config_to_json(&a, &js));
    ck_assert_msg(contains(js, "\"dropout\":\t0.1") || contains(js, "\"dropout\": 0.1"), "%s", js);
    memset(&b, 0x5a, sizeof b);
    TU_OK(cld_unet_config_from_json(js, &b));
    free(js);
    ck_assert(memcmp(&a, &b, sizeof a) == 0); /* presets are zeroed, so padding and unused slots compare */

    /* optional keys take their defaults */
    const char *minimal =
        "{\"in_channels\": 1, \"out_channels\": 1, \"image_size\": 28, \"base_channels\": 64, "
        "\"mult\": [1, 2, 2], \"num_res_blocks\": 2}";
    TU_OK(cld_unet_config_from_json(minimal, &b));
    ck_assert_int_eq(b.n_levels, 3);
    ck_assert_int_eq(b.n_attn, 0);
    ck_assert_int_eq(b.heads, 1);
    ck_assert_int_eq(b.norm_groups, 32);

    const struct {
        const char *json, *needle;
        cld_status want;
    } bad[] = {
        {"{\"in_channels\": 1", "parse", CLD_ERR_FORMAT},
        {"[1, 2]", "not an object", CLD_ERR_FORMAT},
        {"{\"in_channels\": 1, \"out_channels\": 1, \"image_size\": 28, \"base_channels\": 64, "
         "\"mult\": [1, 2, 2]}",
         "num_res_blocks", CLD_ERR_FORMAT},
        {"{\"in_channels\": 1, \"out_channels\": 1, \"image_size\": 28, \"base_channels\": 64, "
         "\"mult\": [1, 2, 2], \"num_res_blocks\": 2, \"colour\": 1}",
         "colour", CLD_ERR_FORMAT},
        {"{\"in_channels\": 1.5, \"out_channels\": 1, \"image_size\": 28, \"base_channels\": 64, "
         "\"mult\": [1, 2, 2], \"num_res_blocks\": 2}",
         "in_channels", CLD_ERR_FORMAT},
        {"{\"in_channels\": 1, \"out_channels\": 1, \"image_size\": 28, \"base_channels\": 64, "
         "\"mult\": [1, \"2\"], \"num_res_blocks\": 2}",
         "mult", CLD_ERR_FORMAT},
        {"{\"in_channels\": 1, \"in_channels\": 1, \"out_channels\": 1, \"image_size\": 28, \"base_channels\": 64, "
         "\"mult\": [1, 2, 2], \"num_res_blocks\": 2}",
         "duplicate", CLD_ERR_FORMAT},
        /* well-formed, but 28 does not halve 3 times */
        {"{\"in_channels\": 1, \"out_channels\": 1, \"image_size\": 28, \"base_channels\": 64, "
         "\"mult\": [1, 2, 2, 2], \"num_res_blocks\": 2}",
         "image_size", CLD_ERR_INVALID_ARG},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TU_STATUS(cld_unet_config_from_json(bad[i].json, &b), bad[i].want);
        ck_assert_msg(contains(cld_last_error(), bad[i].needle), "case %zu: '%s' lacks '%s'", i,
                      cld_last_error(), bad[i].needle);
    }
}
END_TEST

START_TEST(test_config_check)
{
    cld_unet_config ok, c;
    TU_OK(cld_unet_config_preset("fashion-mnist", &ok));
    TU_OK(cld_unet_config_check(&ok));
    TU_STATUS(cld_unet_config_preset("imagenet", &c), CLD_ERR_INVALID_ARG);
#define EXPECT_BAD(field_expr, needle)                                                                \
    do {                                                                                              \
        c = ok;                                                                                       \
        field_expr;                                                                                   \
        TU_STATUS(cld_unet_config_check(&c), CLD_ERR_INVALID_ARG);                                    \
        ck_assert_msg(contains(cld_last_error(), needle), "%s: '%s'", #field_expr, cld_last_error()); \
    } while (0)
    EXPECT_BAD(c.in_channels = 0, "in_channels");
    EXPECT_BAD(c.base_channels = 63, "base_channels");
    EXPECT_BAD(c.n_levels = 0, "n_levels");
    EXPECT_BAD(c.n_levels = 9, "n_levels");
    EXPECT_BAD(c.mult[1] = 0, "mult[1]");
    EXPECT_BAD(c.norm_groups = 24, "norm_groups");
    EXPECT_BAD(c.attn_res[0] = 5, "attn_res[0]");
    EXPECT_BAD(c.heads = 3, "heads");
    EXPECT_BAD(c.dropout = 1.0f, "dropout");
    EXPECT_BAD(c.num_classes = -1, "num_classes");
    EXPECT_BAD(c.image_size = 30, "image_size");
    /* products of hostile sizes are refused before they are formed (found by fuzzing) */
    EXPECT_BAD(c.mult[1] = 1 << 30, "more than 65536 channels");
    EXPECT_BAD(c.base_channels = 1 << 30, "more than 65536 channels");
    EXPECT_BAD(c.out_channels = 1 << 20, "out_channels");
    EXPECT_BAD(c.image_size = 1 << 20, "image_size");
    EXPECT_BAD(c.num_res_blocks = 1 << 20, "num_res_blocks");
#undef EXPECT_BAD
}
END_TEST

/* ---------------------------------------------------------------- gradients */

/* Random parameters of unit-variance scale: weights U(-a, a) with
 * a = sqrt(3 / fan_in), GN scales 1 + U(-0.2, 0.2), biases U(-0.1, 0.1).
 * (The default init zeroes the last conv of every block, under which most
 * gradients vanish: useless for a gradient check.) */
static void randomize_params(cld_params *p, uint64_t seed)
{
    int count;
    TU_OK(cld_params_count(p, &count, NULL));
    uint64_t rng = seed;
    for (int i = 0; i < count; i++) {
        int nd, sh[CLD_MAX_DIMS];
        const char *name;
        size_t off, n = param_numel(p, i, &nd, sh, &name, &off);
        float *v = tu_malloc(n * sizeof *v);
        int is_weight = strlen(name) > 7 && !strcmp(name + strlen(name) - 7, ".weight");
        double a = nd >= 2 ? sqrt(3.0 * (double)sh[0] / (double)n) : (is_weight ? 0.2 : 0.1);
        double center = nd == 1 && is_weight ? 1.0 : 0.0;
        for (size_t j = 0; j < n; j++) v[j] = (float)(center + a * (2.0 * cld__rand_uniform(&rng) - 1.0));
        TU_OK(cld_params_write(p, i, v));
        free(v);
    }
}

static void net_inputs(net *n, const cld_unet_config *cfg, int batch, uint64_t seed)
{
    size_t nx = (size_t)batch * (size_t)cfg->in_channels * (size_t)(cfg->image_size * cfg->image_size);
    size_t ny = (size_t)batch * (size_t)cfg->out_channels * (size_t)(cfg->image_size * cfg->image_size);
    float *buf = tu_malloc((nx > ny ? nx : ny) * sizeof *buf);
    tu_fill_normal(buf, nx, seed, 1.0f);
    TU_OK(cld_tensor_write(n->g, n->x, buf));
    for (int i = 0; i < batch; i++) buf[i] = (float)((37 + 875 * i) % 1000); /* t = 37, 912, ... */
    TU_OK(cld_tensor_write(n->g, n->t, buf));
    if (n->labels) {
        for (int i = 0; i < batch; i++)
            buf[i] = (float)((1 + 2 * i) % (cfg->num_classes + 1)); /* 1, 3 (null) */
        TU_OK(cld_tensor_write(n->g, n->labels, buf));
    }
    if (n->target) {
        tu_fill_normal(buf, ny, seed + 1, 1.0f);
        TU_OK(cld_tensor_write(n->g, n->target, buf));
    }
    free(buf);
}

static double run_loss(net *n)
{
    float l;
    TU_OK(cld_graph_run(n->g));
    TU_OK(cld_tensor_read(n->g, n->loss, &l));
    return l;
}

static void poke(cl_mem values, size_t at, float v)
{
    TU_OK(cld_buffer_write(tu_ctx(), values, at * sizeof v, sizeof v, &v));
}

/* Parameter gradients of an MSE loss through the whole tiny UNet against
 * central differences of the device forward (float), h = 1e-2.
 * Error budget: the loss is a mean of 128 squares in float, rounded to
 * ~1e-7 relative per op over a few hundred ops, so two loss evaluations
 * differ by noise of order 1e-6 L; divided by 2h that is ~5e-5 L in the
 * difference quotient. The O(h^2) truncation term is of the same order for
 * these unit-scale activations. So an entry is checked to 5% relative where
 * its gradient exceeds 2e-3 L (noise <= ~2.5% of it), and to an absolute
 * 1e-4 L + 5% elsewhere. Per tensor the largest-gradient entry and two random
 * ones are checked; most sampled entries must be large enough to count.
 * On top, the directional derivative along a random +-1 direction through
 * all 45k parameters at once is checked to 1%: it sees every gradient
 * entry, not only the sampled ones. The step 3e-4 keeps the O(eps^2)
 * truncation near 2e-4 relative (measured: 0.5% at 1e-3, 10% at 3e-3), and
 * the float noise of the loss difference, ~1e-6 L / (2 eps), near 0.2%. */
START_TEST(test_tiny_unet_gradients)
{
    const int heads = _i + 1, batch = 2;
    cld_unet_config cfg = tiny_config(heads);
    cld_params *p;
    TU_OK(cld_params_create(tu_ctx(), &p));
    net train, fwd;
    net_build(&train, p, &cfg, batch, 1, 1);
    net_build(&fwd, p, &cfg, batch, 1, 0);
    /* released buffers turn to NaN: a liveness error in the UNet graph fails loudly */
    TU_OK(cld_graph_set_poison(train.g, 1));
    TU_OK(cld_graph_set_poison(fwd.g, 1));
    TU_OK(cld_graph_plan(train.g, NULL));
    TU_OK(cld_graph_plan(fwd.g, NULL));
    randomize_params(p, 1234 + (uint64_t)heads);
    net_inputs(&train, &cfg, batch, 99);
    net_inputs(&fwd, &cfg, batch, 99);

    TU_OK(cld_params_zero_grad(p));
    const double L = run_loss(&train);
    ck_assert_msg(isfinite(L) && L > 0.1, "loss %g", L);
    ck_assert_msg(fabs(run_loss(&fwd) - L) <= 1e-6 * L, "forward-only graph disagrees");

    int count;
    TU_OK(cld_params_count(p, &count, NULL));
    const size_t total = p->total; /* floats in the store, alignment padding included */
    cl_mem values;
    TU_OK(cld_params_buffers(p, &values, NULL));
    const double h = 1e-2, big = 2e-3 * L;
    uint64_t rng = 77;
    int checked = 0, sampled = 0;
    double worst = 0;
    const char *worst_name = "";
    float **grads = tu_malloc((size_t)count * sizeof *grads);
    for (int i = 0; i < count; i++) {
        int nd, sh[CLD_MAX_DIMS];
        const char *name;
        size_t off, n = param_numel(p, i, &nd, sh, &name, &off);
        float *v = tu_malloc(n * sizeof *v);
        grads[i] = tu_malloc(n * sizeof(float));
        TU_OK(cld_params_read(p, i, v));
        TU_OK(cld_params_read_grad(p, i, grads[i]));
        size_t jmax = 0;
        for (size_t j = 1; j < n; j++)
            if (fabsf(grads[i][j]) > fabsf(grads[i][jmax])) jmax = j;
        for (int k = 0; k < 3; k++) {
            size_t j = k == 0 ? jmax : (size_t)(cld__rand_uniform(&rng) * (double)n);
            poke(values, off + j, v[j] + (float)h);
            double lp = run_loss(&fwd);
            poke(values, off + j, v[j] - (float)h);
            double lm = run_loss(&fwd);
            poke(values, off + j, v[j]);
            /* the step actually taken in float */
            double hp = (double)(v[j] + (float)h) - v[j], hm = v[j] - (double)(v[j] - (float)h);
            double fd = (lp - lm) / (hp + hm), g = grads[i][j];
            double err = fabs(g - fd);
            sampled++;
            if (fabs(fd) > big) {
                checked++;
                double rel = err / fabs(fd);
                if (rel > worst) {
                    worst = rel;
                    worst_name = name;
                }
                ck_assert_msg(rel < 5e-2, "%s[%zu]: gradient %.6g, finite difference %.6g (rel err %.3g)",
                              name, j, g, fd, rel);
            } else {
                ck_assert_msg(err < 1e-4 * L + 5e-2 * fabs(fd),
                              "%s[%zu]: gradient %.6g, finite difference %.6g (small entry, abs err %.3g)",
                              name, j, g, fd, err);
            }
        }
        free(v);
    }
    fprintf(stderr,
            "tiny unet (heads %d): loss %.5f, %d tensors, %d of %d sampled entries checked "
            "relatively, worst rel err %.3g (%s)\n",
            heads, L, count, checked, sampled, worst, worst_name);
    ck_assert_msg(checked >= sampled / 2, "only %d of %d sampled gradients are large enough to check",
                  checked, sampled);

    /* directional derivative through every parameter: d/de L(p + e u) = g . u */
    float *all = tu_malloc(total * sizeof *all), *moved = tu_malloc(total * sizeof *moved);
    float *dir = tu_malloc(total * sizeof *dir);
    TU_OK(cld_buffer_read(tu_ctx(), values, 0, total * sizeof *all, all));
    double gu = 0, eps = 3e-4;
    memset(dir, 0, total * sizeof *dir);
    for (int i = 0; i < count; i++) {
        int nd, sh[CLD_MAX_DIMS];
        const char *name;
        size_t off, n = param_numel(p, i, &nd, sh, &name, &off);
        for (size_t j = 0; j < n; j++) {
            dir[off + j] = cld__rand_uniform(&rng) < 0.5 ? -1.0f : 1.0f;
            gu += (double)grads[i][j] * dir[off + j];
        }
    }
    double lpm[2];
    for (int sgn = 0; sgn < 2; sgn++) {
        for (size_t j = 0; j < total; j++) moved[j] = all[j] + (float)((sgn ? -eps : eps) * dir[j]);
        TU_OK(cld_buffer_write(tu_ctx(), values, 0, total * sizeof *moved, moved));
        lpm[sgn] = run_loss(&fwd);
    }
    double fdu = (lpm[0] - lpm[1]) / (2 * eps);
    fprintf(stderr, "tiny unet (heads %d): directional derivative %.6g, finite difference %.6g\n", heads, gu,
            fdu);
    ck_assert_msg(fabs(gu - fdu) < 1e-2 * fabs(fdu), "directional derivative %.6g vs finite difference %.6g",
                  gu, fdu);
    for (int i = 0; i < count; i++) free(grads[i]);
    free(grads);
    free(all);
    free(moved);
    free(dir);
    cld_graph_free(train.g);
    cld_graph_free(fwd.g);
    cld_params_free(p);
}
END_TEST

/* The Fashion-MNIST UNet (6.5 M parameters, batch 2) with every 3x3 stride-1
 * conv on Winograd F(4x4, 3x3) against the same network with none (the
 * implicit GEMM): the loss and all parameter gradients of one step (the
 * backward uses Winograd for dx) must agree. Error budget: Winograd's
 * transforms cost a few ulps per layer (opcheck: ~3e-6 relative against a
 * double reference per conv, the direct kernel ~2e-7); through ~30 conv
 * layers that stays near 1e-5 (README: 1.4e-5; measured on PoCL: worst
 * gradient 1.37e-5 of its tensor's largest entry, loss 1e-7), so gradients
 * are held to 4e-5 and the loss to 1e-5 relative, while a wrong tile, lane
 * or transform gives O(1). */
START_TEST(test_winograd_matches_direct)
{
    cld_unet_config cfg;
    TU_OK(cld_unet_config_preset("fashion-mnist", &cfg));
    cfg.dropout = 0.0f;
    const int batch = 2;
    cld_params *p;
    TU_OK(cld_params_create(tu_ctx(), &p));
    net nets[2];
    for (int k = 0; k < 2; k++) {
        tu_ctx()->settings.conv_winograd_mode = k == 0 ? 2 : 1; /* 0: always Winograd, 1: never */
        net_build(&nets[k], p, &cfg, batch, 1, 1);
        TU_OK(cld_graph_set_poison(nets[k].g, 1)); /* stale workspace reads turn to NaN */
        TU_OK(cld_graph_plan(nets[k].g, NULL));
    }
    tu_ctx()->settings.conv_winograd_mode = 0;
    randomize_params(p, 4321);
    double L[2];
    int count;
    TU_OK(cld_params_count(p, &count, NULL));
    float **grads[2];
    for (int k = 0; k < 2; k++) {
        net_inputs(&nets[k], &cfg, batch, 5);
        TU_OK(cld_params_zero_grad(p));
        L[k] = run_loss(&nets[k]);
        grads[k] = tu_malloc((size_t)count * sizeof *grads[k]);
        for (int i = 0; i < count; i++) {
            int nd, sh[CLD_MAX_DIMS];
            const char *name;
            size_t off, n = param_numel(p, i, &nd, sh, &name, &off);
            grads[k][i] = tu_malloc(n * sizeof(float));
            TU_OK(cld_params_read_grad(p, i, grads[k][i]));
        }
    }
    ck_assert_msg(isfinite(L[0]) && fabs(L[0] - L[1]) <= 1e-5 * fabs(L[1]),
                  "loss: winograd %.9g, direct %.9g", L[0], L[1]);
    /* tensors whose gradient is zero in exact arithmetic (the key bias of
     * attention: softmax ignores a constant added to every key score) hold
     * rounding noise: they are measured against 1e-4 of the largest gradient */
    double gmax = 0;
    for (int i = 0; i < count; i++) {
        int nd, sh[CLD_MAX_DIMS];
        const char *name;
        size_t off, n = param_numel(p, i, &nd, sh, &name, &off);
        for (size_t j = 0; j < n; j++)
            if (fabs(grads[1][i][j]) > gmax) gmax = fabs(grads[1][i][j]);
    }
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < count; i++) {
        int nd, sh[CLD_MAX_DIMS];
        const char *name;
        size_t off, n = param_numel(p, i, &nd, sh, &name, &off);
        double amax = 1e-4 * gmax, dmax = 0;
        for (size_t j = 0; j < n; j++) {
            double a = fabs(grads[1][i][j]), d = fabs((double)grads[0][i][j] - grads[1][i][j]);
            if (a > amax) amax = a;
            if (!(d <= dmax)) dmax = d; /* NaN sticks */
        }
        double rel = amax > 0 ? dmax / amax : dmax;
        ck_assert_msg(gmax > 0, "all gradients are zero");
        ck_assert_msg(rel <= 4e-5, "%s: gradients differ by %.3g of their largest entry %.3g", name, rel,
                      amax);
        if (rel > worst) {
            worst = rel;
            worst_name = name;
        }
        free(grads[0][i]);
        free(grads[1][i]);
    }
    fprintf(stderr, "fashion-mnist unet, winograd vs direct: loss %.9g vs %.9g, worst gradient %.3g (%s)\n",
            L[0], L[1], worst, worst_name);
    free(grads[0]);
    free(grads[1]);
    for (int k = 0; k < 2; k++) cld_graph_free(nets[k].g);
    cld_params_free(p);
}
END_TEST

/* With the default (DDPM) init conv_out and each res block's conv2 start at
 * zero, so the output is 0; the other weights look like U(-b, b). */
START_TEST(test_default_init)
{
    cld_unet_config cfg = tiny_config(1);
    cld_params *p;
    TU_OK(cld_params_create(tu_ctx(), &p));
    TU_OK(cld_params_set_seed(p, 5));
    net n;
    net_build(&n, p, &cfg, 2, 0, 0);
    TU_OK(cld_graph_plan(n.g, NULL));
    net_inputs(&n, &cfg, 2, 3);
    TU_OK(cld_graph_run(n.g));
    float y[2 * 64];
    TU_OK(cld_tensor_read(n.g, n.y, y));
    for (int i = 0; i < 2 * 64; i++) ck_assert_msg(y[i] == 0.0f, "y[%d] = %g", i, y[i]);
    /* the weights that are not zeroed look like U(-b, b), b = sqrt(3 / fan_avg) */
    int idx;
    float w[8 * 8 * 9];
    TU_OK(cld_params_find(p, "down_blocks.0.resnets.0.conv1.weight", &idx));
    TU_OK(cld_params_read(p, idx, w));
    double b = sqrt(3.0 / (0.5 * (8 * 9 + 8 * 9))), m = 0;
    for (int i = 0; i < 8 * 8 * 9; i++) m = fmax(m, fabs(w[i]));
    ck_assert_msg(m <= b && m > 0.9 * b, "max |w| %g, bound %g", m, b);
    TU_OK(cld_params_find(p, "down_blocks.0.resnets.0.conv2.weight", &idx));
    TU_OK(cld_params_read(p, idx, w));
    for (int i = 0; i < 8 * 8 * 9; i++) ck_assert(w[i] == 0.0f);
    cld_graph_free(n.g);
    cld_params_free(p);
}
END_TEST

START_TEST(test_shape_errors)
{
    cld_unet_config cfg = tiny_config(1);
    cld_params *p;
    cld_graph *g;
    cld_tensor *x, *t, *l, *y = (cld_tensor *)1;
    TU_OK(cld_params_create(tu_ctx(), &p));
    TU_OK(cld_graph_create(tu_ctx(), p, &g));
    TU_OK(cld_graph_input(g, "x", 4, (int[]){2, 3, 8, 8}, 0, &x)); /* 3 channels, the UNet takes 1 */
    TU_OK(cld_graph_input(g, "t", 1, (int[]){2}, 0, &t));
    TU_OK(cld_graph_input(g, "labels", 1, (int[]){2}, 0, &l));
    TU_STATUS(cld_unet_build(g, &cfg, x, t, l, &y), CLD_ERR_SHAPE);
    ck_assert_msg(contains(cld_last_error(), "conv2d") && contains(cld_last_error(), "(2, 3, 8, 8)") &&
                      contains(cld_last_error(), "conv_in"),
                  "%s", cld_last_error());
    ck_assert_ptr_null(y);
    cld_tensor *x1, *t3, *x16;
    TU_OK(cld_graph_input(g, "x1", 4, (int[]){2, 1, 8, 8}, 0, &x1));
    TU_OK(cld_graph_input(g, "t3", 1, (int[]){3}, 0, &t3));
    TU_STATUS(cld_unet_build(g, &cfg, x1, t3, l, &y), CLD_ERR_SHAPE);
    ck_assert_msg(contains(cld_last_error(), "timesteps"), "%s", cld_last_error());
    TU_OK(cld_graph_input(g, "x16", 4, (int[]){2, 1, 16, 16}, 0, &x16));
    TU_STATUS(cld_unet_build(g, &cfg, x16, t, l, &y), CLD_ERR_SHAPE);
    ck_assert_msg(contains(cld_last_error(), "(2, 1, 16, 16)"), "%s", cld_last_error());
    TU_STATUS(cld_unet_build(g, &cfg, x1, t, NULL, &y), CLD_ERR_INVALID_ARG); /* conditional needs labels */
    TU_STATUS(cld_unet_build(g, &cfg, x1, t, t3, &y), CLD_ERR_SHAPE);         /* labels (3) for batch 2 */
    ck_assert_ptr_null(y);
    cld_graph_free(g);
    cld_params_free(p);
}
END_TEST

/* --------------------------------------------------------------- planning */

static void plan_stats(const char *preset, int batch, int train, cld_plan_stats *st)
{
    cld_unet_config cfg;
    TU_OK(cld_unet_config_preset(preset, &cfg));
    if (!train) cfg.dropout = 0.0f;
    cld_params *p;
    TU_OK(cld_params_create(tu_ctx(), &p));
    net n;
    net_build(&n, p, &cfg, batch, train, train);
    TU_OK(cld_graph_plan(n.g, st));
    fprintf(stderr,
            "plan %-13s batch %2d %-9s: %4d nodes, peak %8.1f MiB, sum %8.1f MiB, params %.1f MiB, "
            "pinned %.2f MiB, %d in place\n",
            preset, batch, train ? "training" : "inference", st->n_nodes, st->peak_bytes / 1048576.0,
            st->sum_bytes / 1048576.0, st->param_bytes / 1048576.0, st->pinned_bytes / 1048576.0,
            st->n_inplace);
    cld_graph_free(n.g);
    cld_params_free(p);
}

START_TEST(test_plan_fashion_mnist)
{
    cld_plan_stats inf, tr;
    plan_stats("fashion-mnist", 2, 0, &inf);
    plan_stats("fashion-mnist", 2, 1, &tr);
    ck_assert_msg(inf.peak_bytes < inf.sum_bytes / 2, "inference peak %zu vs sum %zu", inf.peak_bytes,
                  inf.sum_bytes);
    ck_assert_msg(tr.peak_bytes < tr.sum_bytes, "training peak %zu vs sum %zu", tr.peak_bytes, tr.sum_bytes);
    ck_assert(tr.peak_bytes > inf.peak_bytes);
}
END_TEST

/* Only planned (the arena is allocated, nothing runs): the number goes in
 * the notes. */
START_TEST(test_plan_cifar10_b16)
{
    cld_plan_stats inf;
    plan_stats("cifar10", 16, 0, &inf);
    ck_assert_msg(inf.peak_bytes < inf.sum_bytes, "peak %zu vs sum %zu", inf.peak_bytes, inf.sum_bytes);
}
END_TEST

/* ------------------------------------------------------------------- AdamW */

START_TEST(test_adamw)
{
    cld_params *p;
    TU_OK(cld_params_create(tu_ctx(), &p));
    int iw, ib;
    TU_OK(cld_params_declare(p, "w", 2, (int[]){3, 5}, CLD_INIT_UNIFORM, 1.0f, &iw));
    TU_OK(cld_params_declare(p, "b", 1, (int[]){7}, CLD_INIT_UNIFORM, 1.0f, &ib));
    TU_OK(cld_params_alloc(p));
    const int ns[2] = {15, 7}, idx[2] = {iw, ib};
    double val[2][15], m[2][15] = {{0}}, v[2][15] = {{0}};
    float f[15];
    for (int t = 0; t < 2; t++) {
        TU_OK(cld_params_read(p, idx[t], f));
        for (int j = 0; j < ns[t]; j++) val[t][j] = f[j];
    }
    const double lr = 1e-2, b1 = 0.9, b2 = 0.99, eps = 1e-8, wd = 0.1;
    cl_mem grads;
    TU_OK(cld_params_buffers(p, NULL, &grads));
    uint64_t rng = 4;
    for (int step = 1; step <= 3; step++) {
        for (int t = 0; t < 2; t++) {
            size_t off;
            float gf[15];
            TU_OK(cld_params_info(p, idx[t], NULL, NULL, NULL, &off));
            for (int j = 0; j < ns[t]; j++) gf[j] = (float)(2.0 * cld__rand_uniform(&rng) - 1.0);
            gf[0] = 0.0f; /* a zero gradient moves only by decay and momentum */
            TU_OK(cld_buffer_write(tu_ctx(), grads, off * sizeof(float), (size_t)ns[t] * sizeof(float), gf));
            for (int j = 0; j < ns[t]; j++) { /* torch.optim.AdamW */
                double g = gf[j];
                if (t == 0) val[t][j] *= 1.0 - lr * wd; /* decay on matrices only */
                m[t][j] = b1 * m[t][j] + (1 - b1) * g;
                v[t][j] = b2 * v[t][j] + (1 - b2) * g * g;
                double mh = m[t][j] / (1 - pow(b1, step)), vh = v[t][j] / (1 - pow(b2, step));
                val[t][j] -= lr * mh / (sqrt(vh) + eps);
            }
        }
        TU_OK(cld_params_adamw(p, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, step));
    }
    for (int t = 0; t < 2; t++) {
        float want[15];
        TU_OK(cld_params_read(p, idx[t], f));
        for (int j = 0; j < ns[t]; j++) want[j] = (float)val[t][j];
        TU_ASSERT_CLOSE(f, want, (size_t)ns[t], 1e-5, t ? "adamw bias" : "adamw matrix");
    }
    TU_STATUS(cld_params_adamw(p, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_params_adamw(p, 1e-3f, 1.0f, 0.999f, 1e-8f, 0.0f, 1), CLD_ERR_INVALID_ARG);
    cld_params_free(p);
}
END_TEST

/* ------------------------------------------------------- allocation limit */

/* Everything a training step and an inference forward of the tiny UNet
 * produce: loss, every gradient and updated parameter (the store's layout),
 * the inference output; and how many buffers held the arena and the store. */
typedef struct step_out {
    float loss, *grads, *values, *y;
    size_t n_params, n_y;
    int arena_chunks, fwd_arena_chunks, param_chunks;
    size_t largest; /* bytes of the largest planned tensor, workspace or parameter */
} step_out;

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* Train step (forward, MSE, backward, AdamW) at batch 2 and then a forward
 * of the inference graph on the updated weights, with the context's
 * allocation limit at `limit` bytes (0: the device's), poisoning or not. */
static void limited_step(size_t limit, int poison, step_out *o)
{
    cld_ctx *ctx = tu_ctx();
    size_t saved = ctx->settings.max_alloc_bytes;
    int saved_poison = ctx->settings.poison;
    if (limit) ctx->settings.max_alloc_bytes = limit;
    ctx->settings.poison = poison; /* released blocks (in every chunk) filled with NaN */
    cld_unet_config cfg = tiny_config(2);
    cld_params *p;
    TU_OK(cld_params_create(ctx, &p));
    net n, f;
    net_build(&n, p, &cfg, 2, 1, 1);
    cld_plan_stats st, fst;
    TU_OK(cld_graph_plan(n.g, &st));
    randomize_params(p, 11);
    net_inputs(&n, &cfg, 2, 5);
    TU_OK(cld_params_zero_grad(p));
    o->loss = (float)run_loss(&n);
    int count;
    TU_OK(cld_params_count(p, &count, NULL));
    o->n_params = 0;
    o->largest = 0;
    for (int i = 0; i < count; i++) {
        int nd, sh[CLD_MAX_DIMS];
        o->n_params += param_numel(p, i, &nd, sh, NULL, NULL);
    }
    o->grads = tu_malloc(o->n_params * sizeof(float));
    o->values = tu_malloc(o->n_params * sizeof(float));
    size_t at = 0;
    for (int i = 0; i < count; i++) {
        int nd, sh[CLD_MAX_DIMS];
        size_t k = param_numel(p, i, &nd, sh, NULL, NULL);
        TU_OK(cld_params_read_grad(p, i, o->grads + at));
        o->largest = max_sz(o->largest, k * sizeof(float));
        at += k;
    }
    TU_OK(cld_params_adamw(p, 1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f, 1));
    for (int i = 0, a = 0; i < count; i++) {
        int nd, sh[CLD_MAX_DIMS];
        size_t k = param_numel(p, i, &nd, sh, NULL, NULL);
        TU_OK(cld_params_read(p, i, o->values + a));
        a += (int)k;
    }
    for (int i = 0; cld__graph_node(n.g, i); i++) {
        const cld_tensor *t = cld__graph_node(n.g, i);
        if (!(t->flags & CLD_TF_PARAM)) o->largest = max_sz(o->largest, max_sz(t->n, t->ws) * sizeof(float));
    }
    net_build(&f, p, &cfg, 2, 0, 0);
    TU_OK(cld_graph_plan(f.g, &fst));
    net_inputs(&f, &cfg, 2, 6);
    TU_OK(cld_graph_run(f.g));
    o->n_y = f.y->n;
    o->y = tu_malloc(o->n_y * sizeof(float));
    TU_OK(cld_tensor_read(f.g, f.y, o->y));
    o->arena_chunks = st.n_arena_chunks;
    o->fwd_arena_chunks = fst.n_arena_chunks;
    o->param_chunks = p->n_chunks;
    cld_graph_free(n.g);
    cld_graph_free(f.g);
    cld_params_free(p);
    ctx->settings.max_alloc_bytes = saved;
    ctx->settings.poison = saved_poison;
}

static void step_free(step_out *o)
{
    free(o->grads);
    free(o->values);
    free(o->y);
}

/* Issue 15: with the allocation limit lowered (as CLD_MAX_ALLOC does)
 * so that the arena, the pinned buffer and the parameter store each need
 * several chunks, a training step and a forward give the same bits as in
 * one buffer each (the chunked run poisons released memory: a block read
 * after its release, in any chunk, would show as NaN). */
START_TEST(test_chunked_buffers_bit_identical)
{
    step_out a, b;
    limited_step(0, 0, &a);
    ck_assert_int_eq(a.arena_chunks, 1);
    ck_assert_int_eq(a.param_chunks, 1);
    /* the smallest limit every block fits under, rounded up to 128 bytes */
    size_t limit = (a.largest + 2 * 128 - 1) / 128 * 128;
    limited_step(limit, 1, &b);
    fprintf(stderr, "allocation limit %zu bytes: train arena %d chunks, forward arena %d, params %d\n", limit,
            b.arena_chunks, b.fwd_arena_chunks, b.param_chunks);
    ck_assert_int_ge(b.arena_chunks, 3);
    ck_assert_int_ge(b.fwd_arena_chunks, 2);
    ck_assert_int_ge(b.param_chunks, 2);
    ck_assert_uint_eq(a.n_params, b.n_params);
    ck_assert_msg(!memcmp(&a.loss, &b.loss, sizeof a.loss), "loss %.9g vs %.9g", (double)a.loss,
                  (double)b.loss);
    ck_assert_msg(!memcmp(a.grads, b.grads, a.n_params * sizeof(float)), "gradients differ");
    ck_assert_msg(!memcmp(a.values, b.values, a.n_params * sizeof(float)), "updated parameters differ");
    ck_assert_msg(!memcmp(a.y, b.y, a.n_y * sizeof(float)), "forward output differs");
    step_free(&a);
    step_free(&b);
}
END_TEST

/* ---------------------------------------------------------------- timing */

START_TEST(test_unet_time)
{
    cld_unet_config cfg = tiny_config(1);
    cfg.dropout = 0.1f;
    cld_unet_timing r;
    size_t n;
    TU_OK(cld_unet_time(tu_ctx(), &cfg, 2, 3, &r));
    TU_OK(cld_unet_param_count(&cfg, &n));
    fprintf(stderr,
            "tiny unet timing: forward %.4f s, train step %.4f s, fwd peak %zu / sum %zu, "
            "train peak %zu / sum %zu\n",
            r.forward_s, r.train_step_s, r.fwd_peak_bytes, r.fwd_sum_bytes, r.train_peak_bytes,
            r.train_sum_bytes);
    ck_assert_uint_eq(r.n_params, n);
    ck_assert(r.forward_s > 0 && r.train_step_s > 0); /* too small a net to compare the two reliably */
    ck_assert(r.fwd_peak_bytes > 0 && r.fwd_peak_bytes <= r.fwd_sum_bytes);
    ck_assert(r.train_peak_bytes > r.fwd_peak_bytes && r.train_peak_bytes <= r.train_sum_bytes);
    TU_STATUS(cld_unet_time(tu_ctx(), &cfg, 0, 3, &r), CLD_ERR_INVALID_ARG);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("unet");
    TCase *tc = tcase_create("unet");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_param_counts);
    tcase_add_test(tc, test_config_json);
    tcase_add_test(tc, test_config_check);
    tcase_add_test(tc, test_default_init);
    tcase_add_test(tc, test_winograd_matches_direct);
    tcase_add_loop_test(tc, test_tiny_unet_gradients, 0, 2);
    tcase_add_test(tc, test_shape_errors);
    tcase_add_test(tc, test_plan_fashion_mnist);
    tcase_add_test(tc, test_plan_cifar10_b16);
    tcase_add_test(tc, test_adamw);
    tcase_add_test(tc, test_chunked_buffers_bit_identical);
    tcase_add_test(tc, test_unet_time);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
