/* Schedules and the forward process (schedule.c): alpha_bar of the linear,
 * cosine and scaled-linear schedules against the formulas computed here in
 * double, zero terminal SNR, continuous time, the posterior, prediction
 * conversion, q_sample and q_quantize on the device and the loss weights. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#define PI 3.14159265358979323846

static double rel(double got, double want) { return fabs(got - want) / fmax(fabs(want), 1e-300); }

/* alpha_bar_t = prod_{s <= t} (1 - beta_s), beta from the caller's formula. */
static double ref_alpha_bar(int t, int T, double (*beta)(int, int))
{
    double p = 1.0;
    for (int s = 0; s <= t; s++) p *= 1.0 - beta(s, T);
    return p;
}

static double beta_linear(int t, int T) { return 1e-4 + (0.02 - 1e-4) * t / (T - 1.0); }
static double beta_scaled(int t, int T)
{
    double r = sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * t / (T - 1.0);
    return r * r;
}

START_TEST(test_linear)
{
    const int Ts[] = {1000, 37, 4000};
    for (int k = 0; k < 3; k++) {
        int T = Ts[k];
        cld_schedule *s;
        TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, T, 0, 0, 0, &s));
        ck_assert_int_eq(s->T, T);
        const int ts[] = {0, 1, T / 10, T / 4, T / 2, T - 2, T - 1};
        for (int i = 0; i < 7; i++) {
            double want = ref_alpha_bar(ts[i], T, beta_linear);
            ck_assert_msg(rel(s->alpha_bar[ts[i]], want) < 1e-12, "T %d t %d: %.15g want %.15g", T, ts[i],
                          s->alpha_bar[ts[i]], want);
            ck_assert_msg(rel(s->beta[ts[i]], beta_linear(ts[i], T)) < 1e-12, "beta");
        }
        cld_schedule_free(s);
    }
    /* the published DDPM figure: sqrt(alpha_bar_999) = 0.00635 */
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    ck_assert_msg(fabs(sqrt(s->alpha_bar[999]) - 0.00635) < 0.00001, "sqrt(abar_T) %g",
                  sqrt(s->alpha_bar[999]));
    cld_schedule_free(s);
}
END_TEST

static double cos_f(double t, int T)
{
    double c = cos((t / T + 0.008) / 1.008 * PI / 2);
    return c * c;
}

START_TEST(test_cosine)
{
    const int Ts[] = {1000, 50, 4000};
    for (int k = 0; k < 3; k++) {
        int T = Ts[k];
        cld_schedule *s;
        TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, T, 0, 0, 0, &s));
        /* Nichol & Dhariwal: alpha_bar_t = f(t+1) / f(0) while beta is not clipped */
        int clipped = 0;
        for (int t = 0; t < T; t++) {
            double b = 1.0 - cos_f(t + 1, T) / cos_f(t, T);
            if (b > 0.999) {
                ck_assert_msg(s->beta[t] == 0.999, "T %d t %d: beta %g not clipped", T, t, s->beta[t]);
                clipped++;
                continue;
            }
            ck_assert_msg(rel(s->beta[t], b) < 1e-9, "T %d t %d beta %.12g want %.12g", T, t, s->beta[t], b);
            if (!clipped) {
                double want = cos_f(t + 1, T) / cos_f(0, T);
                ck_assert_msg(rel(s->alpha_bar[t], want) < 1e-9, "T %d t %d: %.15g want %.15g", T, t,
                              s->alpha_bar[t], want);
            }
        }
        /* f(T) = 0: the last beta is clipped, so alpha_bar_{T-1} = 0.001 alpha_bar_{T-2} */
        ck_assert_int_ge(clipped, 1);
        ck_assert_msg(rel(s->alpha_bar[T - 1], 0.001 * s->alpha_bar[T - 2]) < 1e-12, "last");
        cld_schedule_free(s);
    }
}
END_TEST

START_TEST(test_scaled_linear)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_SCALED_LINEAR, 1000, 0, 0, 0, &s));
    const int ts[] = {0, 10, 250, 500, 999};
    for (int i = 0; i < 5; i++) {
        double want = ref_alpha_bar(ts[i], 1000, beta_scaled);
        ck_assert_msg(rel(s->alpha_bar[ts[i]], want) < 1e-12, "t %d", ts[i]);
    }
    /* Stable Diffusion's last alphas_cumprod is 0.0047 */
    ck_assert_msg(fabs(s->alpha_bar[999] - 0.0047) < 0.0001, "abar_T %g", s->alpha_bar[999]);
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_zero_terminal_snr)
{
    const cld_schedule_kind kinds[] = {CLD_SCHEDULE_LINEAR, CLD_SCHEDULE_SCALED_LINEAR, CLD_SCHEDULE_COSINE};
    for (int k = 0; k < 3; k++) {
        cld_schedule *s, *z;
        TU_OK(cld_schedule_create(kinds[k], 1000, 0, 0, 0, &s));
        TU_OK(cld_schedule_create(kinds[k], 1000, 0, 0, 1, &z));
        ck_assert(z->zero_terminal_snr);
        ck_assert_msg(z->alpha_bar[999] == 0.0, "kind %d: terminal alpha_bar %g", k, z->alpha_bar[999]);
        ck_assert_msg(rel(z->alpha_bar[0], s->alpha_bar[0]) < 1e-12, "first alpha_bar changed");
        double a0 = sqrt(s->alpha_bar[0]), aT = sqrt(s->alpha_bar[999]);
        double prod = 1.0;
        for (int t = 0; t < 1000; t++) {
            /* sqrt(alpha_bar) mapped affinely: a0 -> a0, aT -> 0 */
            double want = (sqrt(s->alpha_bar[t]) - aT) * a0 / (a0 - aT);
            ck_assert_msg(fabs(sqrt(z->alpha_bar[t]) - want) < 1e-12, "kind %d t %d", k, t);
            prod *= 1.0 - z->beta[t];
            ck_assert_msg(fabs(prod - z->alpha_bar[t]) < 1e-12, "betas inconsistent at t %d", t);
        }
        ck_assert(z->beta[999] == 1.0);
        /* sigma stays finite (alpha_bar clamped to 2^-24) */
        double sg;
        TU_OK(cld_schedule_sigma(z, 999, &sg));
        ck_assert_msg(isfinite(sg) && fabs(sg - sqrt((1 - 0x1p-24) / 0x1p-24)) < 1e-6 * sg, "%g", sg);
        cld_schedule_free(s);
        cld_schedule_free(z);
    }
}
END_TEST

START_TEST(test_continuous_time)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_SCALED_LINEAR, 1000, 0, 0, 0, &s));
    for (int t = 0; t < 1000; t += 37) {
        double sg, a, b, tt;
        TU_OK(cld_schedule_sigma(s, t, &sg));
        ck_assert(rel(sg, sqrt((1 - s->alpha_bar[t]) / s->alpha_bar[t])) < 1e-12);
        TU_OK(cld_schedule_ab(s, t, &a, &b));
        ck_assert(a == sqrt(s->alpha_bar[t]) && b == sqrt(1 - s->alpha_bar[t]));
        TU_OK(cld_schedule_sigma_to_t(s, sg, &tt));
        ck_assert_msg(fabs(tt - t) < 1e-9, "t %d -> %g", t, tt);
    }
    double prev = 0;
    for (double t = 0.0; t <= 999.0; t += 0.3) {
        double sg, tt, a, b;
        TU_OK(cld_schedule_sigma(s, t, &sg));
        ck_assert(sg > prev);
        prev = sg;
        TU_OK(cld_schedule_sigma_to_t(s, sg, &tt));
        ck_assert_msg(fabs(tt - t) < 1e-9, "t %g -> %g", t, tt);
        /* log sigma is linear between integer steps */
        int lo = (int)t < 998 ? (int)t : 998;
        double w = t - lo, want = exp((1 - w) * s->log_sigma[lo] + w * s->log_sigma[lo + 1]);
        ck_assert(rel(sg, want) < 1e-12);
        TU_OK(cld_schedule_ab(s, t, &a, &b));
        ck_assert(fabs(a * a + b * b - 1) < 1e-12 && rel(b / a, sg) < 1e-12);
    }
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_posterior)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    const int pairs[][2] = {{1, 0}, {500, 499}, {999, 998}, {0, -1}, {999, -1}, {800, 600}, {40, 0}};
    for (int i = 0; i < 7; i++) {
        int t = pairs[i][0], p = pairs[i][1];
        double c0, ct, var;
        TU_OK(cld_q_posterior(s, t, p, &c0, &ct, &var));
        double at = s->alpha_bar[t], ap = p >= 0 ? s->alpha_bar[p] : 1.0;
        /* consistency with q(x_s | x_0) = N(sqrt(ap) x0, 1 - ap) through x_t:
         * mean c0 + ct sqrt(at) = sqrt(ap); variance ct^2 (1 - at) + var = 1 - ap */
        ck_assert_msg(fabs(c0 + ct * sqrt(at) - sqrt(ap)) < 1e-12, "mean (%d, %d)", t, p);
        ck_assert_msg(fabs(ct * ct * (1 - at) + var - (1 - ap)) < 1e-12, "variance (%d, %d)", t, p);
        if (p == t - 1) { /* Ho et al. eq. 7 */
            double beta = s->beta[t];
            ck_assert(rel(var, beta * (1 - ap) / (1 - at)) < 1e-9);
            ck_assert(rel(c0, sqrt(ap) * beta / (1 - at)) < 1e-9);
            if (p >= 0) ck_assert(rel(ct, sqrt(1 - beta) * (1 - ap) / (1 - at)) < 1e-9);
        }
    }
    double c0, ct, var;
    TU_STATUS(cld_q_posterior(s, 10, 10, &c0, &ct, &var), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_q_posterior(s, 1000, 5, &c0, &ct, &var), CLD_ERR_INVALID_ARG);

    /* device mean */
    cld_ctx *ctx = tu_ctx();
    const size_t n = 3 * 11 * 13;
    float *x0 = tu_rand_uniform(n, 1, -1, 1), *xt = tu_rand_uniform(n, 2, -2, 2);
    float *got = tu_malloc(n * sizeof(float)), *want = tu_malloc(n * sizeof(float));
    cl_mem bx0 = tu_upload(ctx, x0, n), bxt = tu_upload(ctx, xt, n), bo = tu_upload(ctx, xt, n);
    TU_OK(cld_q_posterior(s, 700, 650, &c0, &ct, &var));
    TU_OK(cld_q_posterior_mean(ctx, s, 700, 650, n, bx0, 0, bxt, 0, bo, 0));
    tu_download(ctx, bo, got, n);
    for (size_t i = 0; i < n; i++) want[i] = (float)(c0 * x0[i] + ct * xt[i]);
    TU_ASSERT_CLOSE(got, want, n, 1e-5, "posterior mean");
    cld_buffer_release(bx0);
    cld_buffer_release(bxt);
    cld_buffer_release(bo);
    free(x0), free(xt), free(got), free(want);
    cld_schedule_free(s);
}
END_TEST

/* The value of each prediction type for x_t = a x0 + b eps. */
static double truth(cld_pred_type p, double a, double b, double x0, double eps)
{
    return p == CLD_PRED_EPS ? eps : (p == CLD_PRED_V ? a * eps - b * x0 : x0);
}

START_TEST(test_pred_conversion)
{
    const double abars[] = {0.9999, 0.7, 0.2, 4e-5};
    for (int k = 0; k < 4; k++) {
        double a = sqrt(abars[k]), b = sqrt(1 - abars[k]), x0 = 0.37, eps = -1.3;
        double x = a * x0 + b * eps;
        for (int f = 0; f < 3; f++)
            for (int t = 0; t < 3; t++) {
                double kx, kp;
                TU_OK(cld_pred_coefs((cld_pred_type)f, (cld_pred_type)t, a, b, &kx, &kp));
                double got = kx * x + kp * truth((cld_pred_type)f, a, b, x0, eps);
                ck_assert_msg(fabs(got - truth((cld_pred_type)t, a, b, x0, eps)) < 1e-9,
                              "abar %g: %d -> %d gives %.12g", abars[k], f, t, got);
            }
    }
    double kx, kp;
    TU_STATUS(cld_pred_coefs(CLD_PRED_EPS, CLD_PRED_X0, 0.0, 1.0, &kx, &kp), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_pred_coefs(CLD_PRED_X0, CLD_PRED_EPS, 1.0, 0.0, &kx, &kp), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_pred_coefs(CLD_PRED_V, CLD_PRED_X0, 0.5, 0.5, &kx, &kp), CLD_ERR_INVALID_ARG);
    TU_OK(cld_pred_coefs(CLD_PRED_V, CLD_PRED_X0, 0.0, 1.0, &kx, &kp)); /* zero SNR: x0 = -v */
    ck_assert(kx == 0.0 && kp == -1.0);

    /* device, per-sample continuous timesteps */
    cld_ctx *ctx = tu_ctx();
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, 1000, 0, 0, 0, &s));
    const int n = 3;
    const size_t per = 5 * 7, total = n * per;
    const float t[3] = {0.0f, 417.25f, 990.0f};
    float *x = tu_rand_uniform(total, 3, -2, 2), *p = tu_rand_uniform(total, 4, -2, 2);
    float *got = tu_malloc(total * sizeof(float));
    cl_mem bx = tu_upload(ctx, x, total), bp = tu_upload(ctx, p, total), bo = tu_upload(ctx, p, total);
    for (int f = 0; f < 3; f++)
        for (int to = 0; to < 3; to++) {
            TU_OK(cld_pred_convert(ctx, s, (cld_pred_type)f, (cld_pred_type)to, n, per, t, bx, 0, bp, 0, bo,
                                   0));
            tu_download(ctx, bo, got, total);
            for (int i = 0; i < n; i++) {
                double a, b;
                TU_OK(cld_schedule_ab(s, t[i], &a, &b));
                TU_OK(cld_pred_coefs((cld_pred_type)f, (cld_pred_type)to, a, b, &kx, &kp));
                /* kx x and kp p can cancel (1/a is ~100 at t = 990): bound the
                 * error by a few float roundings of the terms' magnitude */
                for (size_t j = 0; j < per; j++) {
                    size_t k = i * per + j;
                    double w = kx * x[k] + kp * p[k], mag = fabs(kx * x[k]) + fabs(kp * p[k]);
                    ck_assert_msg(fabs(got[k] - w) <= 5e-7 * mag + 1e-30,
                                  "pred_convert %d -> %d [%zu]: %.9g want %.9g", f, to, k, (double)got[k], w);
                }
            }
        }
    cld_buffer_release(bx), cld_buffer_release(bp), cld_buffer_release(bo);
    free(x), free(p), free(got);
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_q_sample)
{
    cld_ctx *ctx = tu_ctx();
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 1, &s)); /* zero SNR: t = 999 has a = 0 */
    const int n = 4;
    const size_t per = 3 * 9 * 7, total = n * per;
    const int t[4] = {0, 999, 123, 500};
    cld_noise_key key = {31337, CLD_NOISE_STREAM_TRAIN, 8, 2};
    float *x0 = tu_rand_uniform(total, 5, -1, 1), *eps = tu_malloc(total * sizeof(float));
    float *xt = tu_malloc(total * sizeof(float)), *tg = tu_malloc(total * sizeof(float));
    float *want = tu_malloc(total * sizeof(float)), *want_t = tu_malloc(total * sizeof(float));
    TU_OK(cld_noise_host(&key, n, per, eps));
    cl_mem bx0 = tu_upload(ctx, x0, total), bxt = tu_upload(ctx, x0, total), btg = tu_upload(ctx, x0, total);
    for (int type = 0; type < 3; type++) {
        TU_OK(cld_q_sample(ctx, s, n, per, t, bx0, 0, &key, bxt, 0, (cld_pred_type)type, btg, 0));
        tu_download(ctx, bxt, xt, total);
        tu_download(ctx, btg, tg, total);
        for (int i = 0; i < n; i++) {
            double a = sqrt(s->alpha_bar[t[i]]), b = sqrt(1 - s->alpha_bar[t[i]]);
            for (size_t j = 0; j < per; j++) {
                size_t k = i * per + j;
                want[k] = (float)(a * x0[k] + b * eps[k]);
                want_t[k] = (float)truth((cld_pred_type)type, a, b, x0[k], eps[k]);
            }
        }
        TU_ASSERT_CLOSE(xt, want, total, 1e-6, "q_sample x_t");
        TU_ASSERT_CLOSE(tg, want_t, total, 1e-6, "q_sample target");
    }
    /* without a target buffer */
    TU_OK(cld_q_sample(ctx, s, n, per, t, bx0, 0, &key, bxt, 0, CLD_PRED_EPS, NULL, 0));
    int bad_t[4] = {0, 1000, 1, 2};
    TU_STATUS(cld_q_sample(ctx, s, n, per, bad_t, bx0, 0, &key, bxt, 0, CLD_PRED_EPS, NULL, 0),
              CLD_ERR_INVALID_ARG);
    cld_buffer_release(bx0), cld_buffer_release(bxt), cld_buffer_release(btg);
    free(x0), free(eps), free(xt), free(tg), free(want), free(want_t);
    cld_schedule_free(s);
}
END_TEST

/* q_quantize against the same steps in double from q_sample's float x_t:
 * every noisy image value clipped to [-1, 1] and on one of the levels, the
 * target from the effective noise. Values within 1e-4 of a rounding boundary
 * (where float and double may pick neighbouring levels) are counted, not
 * compared: with random data they are a few in 10^4. */
START_TEST(test_q_quantize)
{
    cld_ctx *ctx = tu_ctx();
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, 1000, 0, 0, 0, &s));
    const int n = 5;
    const size_t per = 3 * 11 * 7, total = n * per;
    const int t[5] = {0, 37, 400, 650, 999};
    const int levels_list[3] = {256, 2, 1023};
    cld_noise_key key = {77, CLD_NOISE_STREAM_TRAIN, 3, 0};
    float *x0 = tu_rand_uniform(total, 9, -1, 1);
    for (size_t i = 0; i < total; i += 3)
        x0[i] = -1.0f + 2.0f * (float)(i % 256) / 255.0f; /* 8-bit values too */
    float *xt = tu_malloc(total * sizeof(float)), *q = tu_malloc(total * sizeof(float));
    float *tg = tu_malloc(total * sizeof(float));
    cl_mem bx0 = tu_upload(ctx, x0, total), bxt = tu_upload(ctx, x0, total), btg = tu_upload(ctx, x0, total);
    size_t near = 0, clipped = 0, checked = 0;
    for (int li = 0; li < 3; li++) {
        const int levels = levels_list[li];
        const double h = (levels - 1) / 2.0;
        for (int type = 0; type < 3; type++) {
            TU_OK(cld_q_sample(ctx, s, n, per, t, bx0, 0, &key, bxt, 0, (cld_pred_type)type, btg, 0));
            tu_download(ctx, bxt, xt, total);
            TU_OK(cld_q_quantize(ctx, s, n, per, t, levels, bx0, 0, bxt, 0, (cld_pred_type)type, btg, 0));
            tu_download(ctx, bxt, q, total);
            tu_download(ctx, btg, tg, total);
            for (int i = 0; i < n; i++) {
                double a = sqrt(s->alpha_bar[t[i]]), b = sqrt(1 - s->alpha_bar[t[i]]);
                for (size_t j = 0; j < per; j++) {
                    size_t k = i * per + j;
                    double v = ((double)xt[k] / (float)a + 1.0) * h, r = floor(v + 0.5);
                    if (fabs(v + 0.5 - r) < 1e-4 || fabs(v + 0.5 - r - 1.0) < 1e-4) {
                        near++;
                        continue;
                    }
                    double u = fmin(fmax(r, 0.0), 2.0 * h);
                    clipped += r != u;
                    double want = a * ((u - h) / h);
                    ck_assert_msg(fabs(q[k] - want) <= 1e-6, "q_quantize levels %d x_t [%zu]: %.9g want %.9g",
                                  levels, k, (double)q[k], want);
                    double e = (want - a * x0[k]) / b;
                    double tx = type == 0 ? 0.0 : (type == 1 ? -b : 1.0),
                           te = type == 0 ? 1.0 : (type == 1 ? a : 0.0);
                    double wt = tx * x0[k] + te * e;
                    double mag = fabs(tx * x0[k]) + fabs(te) * (fabs(want) + fabs(a * x0[k])) / b;
                    ck_assert_msg(fabs(tg[k] - wt) <= 1e-6 * mag + 1e-30,
                                  "q_quantize levels %d target %d [%zu]: %.9g want %.9g", levels, type, k,
                                  (double)tg[k], wt);
                    checked++;
                }
            }
        }
    }
    ck_assert_msg(near * 1000 < checked, "%zu of %zu values near a rounding boundary", near, checked);
    ck_assert_msg(clipped > total / 10, "only %zu clipped values: the clip is not exercised", clipped);
    /* without a target; bad levels; t with b = 0 or a = 0 */
    TU_OK(cld_q_quantize(ctx, s, n, per, t, 256, bx0, 0, bxt, 0, CLD_PRED_EPS, NULL, 0));
    TU_STATUS(cld_q_quantize(ctx, s, n, per, t, 1, bx0, 0, bxt, 0, CLD_PRED_EPS, NULL, 0),
              CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_q_quantize(ctx, s, n, per, t, 65537, bx0, 0, bxt, 0, CLD_PRED_EPS, NULL, 0),
              CLD_ERR_INVALID_ARG);
    int bad_t[5] = {0, 1000, 1, 2, 3};
    TU_STATUS(cld_q_quantize(ctx, s, n, per, bad_t, 256, bx0, 0, bxt, 0, CLD_PRED_V, btg, 0),
              CLD_ERR_INVALID_ARG);
    cld_schedule *z;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 1, &z)); /* zero SNR: t = 999 has a = 0 */
    TU_STATUS(cld_q_quantize(ctx, z, n, per, t, 256, bx0, 0, bxt, 0, CLD_PRED_V, btg, 0),
              CLD_ERR_INVALID_ARG);
    ck_assert(strstr(cld_last_error(), "t[4] = 999") != NULL);
    cld_schedule_free(z);
    cld_buffer_release(bx0), cld_buffer_release(bxt), cld_buffer_release(btg);
    free(x0), free(xt), free(q), free(tg);
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_loss_weights)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    const double gamma = 5.0;
    int seen_low = 0, seen_high = 0;
    for (int t = 0; t < 1000; t += 7) {
        double snr = s->alpha_bar[t] / (1 - s->alpha_bar[t]), we, wv, wx, wu;
        TU_OK(cld_loss_weight(s, t, CLD_PRED_EPS, CLD_LOSS_MIN_SNR, gamma, &we));
        TU_OK(cld_loss_weight(s, t, CLD_PRED_V, CLD_LOSS_MIN_SNR, gamma, &wv));
        TU_OK(cld_loss_weight(s, t, CLD_PRED_X0, CLD_LOSS_MIN_SNR, gamma, &wx));
        TU_OK(cld_loss_weight(s, t, CLD_PRED_V, CLD_LOSS_UNIFORM, gamma, &wu));
        ck_assert(wu == 1.0);
        ck_assert(rel(wx, fmin(snr, gamma)) < 1e-12);
        /* ||eps - eps^||^2 = snr ||x0 - x0^||^2 and ||v - v^||^2 = (snr + 1) ||x0 - x0^||^2:
         * every type weights the same x0 loss by min(snr, gamma) */
        ck_assert(rel(we * snr, wx) < 1e-12);
        ck_assert(rel(wv * (snr + 1), wx) < 1e-12);
        if (snr < gamma)
            seen_low = 1, ck_assert(we == 1.0);
        else
            seen_high = 1;
    }
    ck_assert(seen_low && seen_high);
    double w;
    TU_STATUS(cld_loss_weight(s, 1000, CLD_PRED_EPS, CLD_LOSS_MIN_SNR, gamma, &w), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_loss_weight(s, 3, CLD_PRED_EPS, CLD_LOSS_MIN_SNR, 0.0, &w), CLD_ERR_INVALID_ARG);
    cld_schedule_free(s);
}
END_TEST

START_TEST(test_bad_arguments)
{
    cld_schedule *s = NULL;
    TU_STATUS(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1, 0, 0, 0, &s), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_schedule_create(CLD_SCHEDULE_LINEAR, 100, 0.5, 0.1, 0, &s), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_schedule_create((cld_schedule_kind)9, 100, 0, 0, 0, &s), CLD_ERR_INVALID_ARG);
    ck_assert(s == NULL);
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 100, 0.001, 0.01, 0, &s));
    ck_assert(rel(s->beta[0], 0.001) < 1e-12 && rel(s->beta[99], 0.01) < 1e-12);
    double sg;
    TU_STATUS(cld_schedule_sigma_to_t(s, -1.0, &sg), CLD_ERR_INVALID_ARG);
    TU_OK(cld_schedule_free(s));
    TU_OK(cld_schedule_free(NULL));
}
END_TEST

static Suite *schedule_suite(void)
{
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("tables");
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_cosine);
    tcase_add_test(tc, test_scaled_linear);
    tcase_add_test(tc, test_zero_terminal_snr);
    tcase_add_test(tc, test_continuous_time);
    tcase_add_test(tc, test_loss_weights);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    tc = tcase_create("device");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_posterior);
    tcase_add_test(tc, test_pred_conversion);
    tcase_add_test(tc, test_q_sample);
    tcase_add_test(tc, test_q_quantize);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(schedule_suite()); }
