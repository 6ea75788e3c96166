/* Photo denoising (denoise.h): the noise estimator on synthetic images and,
 * when ../shared/data/photos/dev-mcmaster is there, on the dev photos with
 * the judging protocol (Gaussian noise, clipped, rounded to 8 bits); the
 * timestep of a sigma; cld_denoise_run's strength blend and DDIM. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define DEV_DIR CLD_SOURCE_DIR "/../shared/data/photos/dev-mcmaster"

/* x (C, H, W) in [0, 1] plus N(0, sigma/255), clipped and rounded to 8 bits. */
static float *noisy8(const float *x, int C, int H, int W, double sigma, uint64_t seed)
{
    const size_t n = (size_t)C * H * W;
    float *y = tu_malloc(n * sizeof *y), *z = tu_malloc(n * sizeof *z);
    tu_fill_normal(z, n, seed, 1.0f);
    for (size_t i = 0; i < n; i++) {
        double v = round(x[i] * 255.0 + sigma * z[i]);
        y[i] = (float)((v < 0 ? 0 : v > 255 ? 255 : v) / 255.0);
    }
    free(z);
    return y;
}

/* A smooth synthetic photo: gradients and blobs, values inside (0, 1). */
static float *smooth_image(int C, int H, int W)
{
    float *x = tu_malloc((size_t)C * H * W * sizeof *x);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++)
                x[((size_t)c * H + i) * W + j] =
                    (float)(0.5 + 0.3 * sin(0.02 * i + c) * cos(0.03 * j) + 0.1 * sin(0.1 * (i + j) + 2 * c));
    return x;
}

START_TEST(test_estimate_synthetic)
{
    const int C = 3, H = 300, W = 400;
    float *x = smooth_image(C, H, W);
    const double sigmas[] = {2, 5, 15, 25, 50, 75};
    for (size_t k = 0; k < sizeof sigmas / sizeof sigmas[0]; k++) {
        float *y = noisy8(x, C, H, W, sigmas[k], 11 + k);
        double est[3];
        TU_OK(cld_noise_estimate(y, C, H, W, 255.0, est));
        for (int c = 0; c < C; c++)
            ck_assert_msg(fabs(est[c] / sigmas[k] - 1) < 0.05, "sigma %g channel %d: estimate %.3f",
                          sigmas[k], c, est[c]);
        free(y);
    }
    /* a clean image reads ~0 (rounding alone is sd 0.29), a constant one exactly 0 */
    float *y = noisy8(x, C, H, W, 0, 1);
    double est[3];
    TU_OK(cld_noise_estimate(y, C, H, W, 255.0, est));
    ck_assert_msg(est[0] < 0.6, "clean: %.3f", est[0]);
    for (size_t i = 0; i < (size_t)C * H * W; i++) y[i] = 0.5f;
    TU_OK(cld_noise_estimate(y, C, H, W, 255.0, est));
    ck_assert(est[0] == 0 && est[1] == 0);
    /* per channel: noise only in the second channel */
    float *z = tu_malloc((size_t)H * W * sizeof *z);
    tu_fill_normal(z, (size_t)H * W, 3, 20.0f / 255);
    memcpy(y, x, (size_t)C * H * W * sizeof *y);
    for (size_t i = 0; i < (size_t)H * W; i++) y[(size_t)H * W + i] += z[i];
    TU_OK(cld_noise_estimate(y, C, H, W, 255.0, est));
    ck_assert_msg(est[0] < 1 && est[2] < 1 && fabs(est[1] / 20 - 1) < 0.05, "%.2f %.2f %.2f", est[0], est[1],
                  est[2]);
    /* tiny images: no window, no estimate, no crash */
    TU_OK(cld_noise_estimate(y, 1, 2, 2, 255.0, est));
    ck_assert(est[0] == 0);
    free(z);
    free(y);
    free(x);
}
END_TEST

/* The dev photos (if present): per sigma 5 .. 75, every photo's estimate
 * (mean of its channels) within 10% of the true sigma. */
START_TEST(test_estimate_dev_photos)
{
    struct stat sb;
    if (stat(DEV_DIR, &sb) != 0) {
        fprintf(stderr, "test_estimate_dev_photos: %s absent, skipped\n", DEV_DIR);
        return;
    }
    const double sigmas[] = {5, 10, 15, 25, 50, 75};
    double sum[6] = {0}, lo[6], hi[6];
    for (int k = 0; k < 6; k++) lo[k] = 1e9, hi[k] = 0;
    int n = 0;
    for (int f = 1; f <= 18; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%d.png", DEV_DIR, f);
        cld_image img;
        if (cld_image_load(path, 3, 0, &img) != CLD_OK) continue;
        const int H = img.height, W = img.width;
        float *x = tu_malloc((size_t)3 * H * W * sizeof *x);
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < (size_t)H * W; i++) x[(size_t)c * H * W + i] = img.data[i * 3 + c];
        cld_image_free(&img);
        for (int k = 0; k < 6; k++) {
            float *y = noisy8(x, 3, H, W, sigmas[k], 100 * f + k);
            double est[3];
            TU_OK(cld_noise_estimate(y, 3, H, W, 255.0, est));
            const double r = (est[0] + est[1] + est[2]) / 3 / sigmas[k];
            sum[k] += r;
            if (r < lo[k]) lo[k] = r;
            if (r > hi[k]) hi[k] = r;
            free(y);
        }
        free(x);
        n++;
    }
    ck_assert_int_eq(n, 18);
    for (int k = 0; k < 6; k++) {
        fprintf(stderr, "dev-mcmaster sigma %2.0f: estimate / true mean %.3f, min %.3f, max %.3f\n",
                sigmas[k], sum[k] / n, lo[k], hi[k]);
        ck_assert_msg(fabs(sum[k] / n - 1) <= 0.10, "sigma %g: mean ratio %.3f", sigmas[k], sum[k] / n);
        ck_assert_msg(lo[k] >= 0.90 && hi[k] <= 1.10, "sigma %g: a photo at %.3f .. %.3f", sigmas[k], lo[k],
                      hi[k]);
    }
}
END_TEST

START_TEST(test_timestep_of_sigma)
{
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_COSINE, 1000, 0, 0, 0, &s));
    for (double sg = 1; sg <= 90; sg *= 1.7) {
        double t, a, b;
        TU_OK(cld_denoise_timestep(s, sg, &t));
        TU_OK(cld_schedule_ab(s, t, &a, &b));
        ck_assert_msg(fabs(b / a - 2 * sg / 255) < 1e-9, "sigma %g: t %g gives %g", sg, t, b / a * 127.5);
        ck_assert(t != floor(t)); /* continuous */
    }
    double mx, t;
    TU_OK(cld_denoise_max_sigma(s, 400, &mx));
    ck_assert_msg(mx > 90 && mx < 100, "t_max 400: max sigma %g", mx);
    TU_OK(cld_denoise_timestep(s, mx, &t));
    ck_assert_msg(fabs(t - 400) < 1e-6, "t %g", t);
    TU_STATUS(cld_denoise_timestep(s, 0, &t), CLD_ERR_INVALID_ARG);
    cld_schedule_free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("denoise");
    TCase *tc = tcase_create("denoise");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_estimate_synthetic);
    tcase_add_test(tc, test_estimate_dev_photos);
    tcase_add_test(tc, test_timestep_of_sigma);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
