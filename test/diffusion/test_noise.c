/* Reproducible noise (noise.c, cl/diffusion.cl): Philox-4x32-10 against the
 * Random123 known answers, the integer Box-Muller against the formula in
 * double, the device against the host reference bit for bit, the layout
 * promised in diffusion.h, and the statistics of the numbers. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#define PI 3.14159265358979323846

START_TEST(test_philox_known_answers)
{
    /* Random123 tests/kat_vectors, philox4x32 10 */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e,
         0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb,
         0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        TU_OK(cld_philox4x32_10(kat[i], kat[i] + 4, out));
        for (int j = 0; j < 4; j++)
            ck_assert_msg(out[j] == kat[i][6 + j], "KAT %d word %d: %08x want %08x", i, j, out[j],
                          kat[i][6 + j]);
    }
}
END_TEST

/* The exact Box-Muller pair in double. */
static void box_muller_ref(uint32_t w0, uint32_t w1, double z[2])
{
    double u = ((double)w0 + 1.0) / 4294967296.0, th = 2.0 * PI * ((double)w1 / 4294967296.0);
    double r = sqrt(-2.0 * log(u));
    z[0] = r * cos(th);
    z[1] = r * sin(th);
}

/* The fixed-point pair is the correctly rounded float of the exact value up
 * to 1e-8 absolute: |got - ref| <= ulp(ref)/2 + 1e-8. */
static void check_pair(uint32_t w0, uint32_t w1, double *worst)
{
    float got[2];
    double ref[2];
    TU_OK(cld_box_muller_fixed(w0, w1, got));
    box_muller_ref(w0, w1, ref);
    for (int k = 0; k < 2; k++) {
        double err = fabs((double)got[k] - ref[k]);
        double tol = 0.5 * ldexp(1.0, ilogb(fabs(ref[k]) > 1e-30 ? ref[k] : 1e-30) - 23) + 1e-8;
        ck_assert_msg(err <= tol, "BoxMuller(%08x, %08x)[%d] = %.9g, exact %.12g (err %.3g)", w0, w1, k,
                      (double)got[k], ref[k], err);
        if (err > *worst) *worst = err;
    }
}

START_TEST(test_box_muller_accuracy)
{
    double worst = 0.0;
    /* edges: u = 1 (r = 0), u = 2^-32 (largest r), quadrant boundaries */
    const uint32_t w0s[] = {0u, 1u, 2u, 0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu};
    const uint32_t w1s[] = {0u,          1u,          0x3fffffffu, 0x40000000u, 0x7fffffffu,
                            0x80000000u, 0xbfffffffu, 0xc0000000u, 0xffffffffu, 0x20000000u};
    for (size_t i = 0; i < sizeof w0s / sizeof w0s[0]; i++)
        for (size_t j = 0; j < sizeof w1s / sizeof w1s[0]; j++) check_pair(w0s[i], w1s[j], &worst);
    float z[2];
    TU_OK(cld_box_muller_fixed(0xffffffffu, 12345u, z));
    ck_assert_msg(z[0] == 0.0f && z[1] == 0.0f && !signbit(z[0]) && !signbit(z[1]),
                  "u = 1 must give +0 exactly");
    /* random words from Philox itself */
    uint32_t key[2] = {7, 11};
    for (uint32_t c = 0; c < 200000; c++) {
        uint32_t ctr[4] = {c, 1, 2, 3}, w[4];
        cld_philox4x32_10(ctr, key, w);
        check_pair(w[0], w[1], &worst);
        check_pair(w[2], w[3], &worst);
    }
    printf("box-muller: worst |fixed - exact| = %.3g over 800070 values\n", worst);
}
END_TEST

/* The layout of the promise: element i of sample index n is lane i % 4 of
 * Philox({i / 4, n, step, stream}, {seed lo, seed hi}). */
START_TEST(test_layout_promise)
{
    cld_noise_key key = {0x0123456789abcdefull, 5, 40, 7};
    const int n = 2;
    const size_t per = 11;
    float out[22];
    TU_OK(cld_noise_host(&key, n, per, out));
    for (int s = 0; s < n; s++)
        for (size_t i = 0; i < per; i++) {
            uint32_t ctr[4] = {(uint32_t)(i / 4), key.index + (uint32_t)s, key.step, key.stream};
            uint32_t k[2] = {0x89abcdefu, 0x01234567u}, w[4];
            float z[2];
            TU_OK(cld_philox4x32_10(ctr, k, w));
            TU_OK(cld_box_muller_fixed(w[(i % 4) / 2 * 2], w[(i % 4) / 2 * 2 + 1], z));
            ck_assert_msg(memcmp(&z[i % 2], &out[(size_t)s * per + i], sizeof(float)) == 0,
                          "sample %d element %zu", s, i);
        }
    /* a sample does not depend on the batch it is made in */
    float one[11];
    cld_noise_key k1 = key;
    k1.index = 41;
    TU_OK(cld_noise_host(&k1, 1, per, one));
    ck_assert(memcmp(one, out + per, sizeof one) == 0);
}
END_TEST

/* Device fill == host reference, bit for bit. */
static void check_device_bits(const cld_noise_key *key, int n, size_t per, size_t off)
{
    cld_ctx *ctx = tu_ctx();
    size_t total = (size_t)n * per, cap = total + off + 5;
    float *host = tu_malloc(total * sizeof(float));
    float *dev = tu_malloc(cap * sizeof(float));
    for (size_t i = 0; i < cap; i++) dev[i] = -12345.0f;
    cl_mem buf = tu_upload(ctx, dev, cap);
    TU_OK(cld_noise_host(key, n, per, host));
    TU_OK(cld_noise_fill(ctx, key, n, per, buf, off));
    tu_download(ctx, buf, dev, cap);
    for (size_t i = 0; i < off; i++) ck_assert_msg(dev[i] == -12345.0f, "wrote before the offset");
    for (size_t i = off + total; i < cap; i++) ck_assert_msg(dev[i] == -12345.0f, "wrote past the end");
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < total; i++)
        if (memcmp(&host[i], &dev[off + i], sizeof(float)) != 0 && bad++ == 0) first = i;
    ck_assert_msg(bad == 0,
                  "seed %llx stream %u index %u step %u (%d x %zu): %zu of %zu differ, "
                  "first [%zu] device %.9g host %.9g",
                  (unsigned long long)key->seed, key->stream, key->index, key->step, n, per, bad, total,
                  first, (double)dev[off + first], (double)host[first]);
    cld_buffer_release(buf);
    free(host);
    free(dev);
}

START_TEST(test_device_equals_host)
{
    cld_noise_key k[] = {
        {0, 0, 0, 0},
        {42, CLD_NOISE_STREAM_SAMPLER, 3, 17},
        {0xfedcba9876543210ull, CLD_NOISE_STREAM_TRAIN, 0xfffffff0u, 0xffffffffu},
        {1ull << 40, 9, 123456, 999},
    };
    check_device_bits(&k[0], 1, 1, 0);
    check_device_bits(&k[1], 3, 105, 7); /* (3, 3, 7, 5): 105 is not a multiple of 4 */
    check_device_bits(&k[2], 2, 4 * 28 * 28 + 3, 1);
    check_device_bits(&k[3], 5, 77777, 0); /* ~390k values */
}
END_TEST

/* The fused update and the forward process use the same numbers. */
START_TEST(test_fused_kernels_same_noise)
{
    cld_ctx *ctx = tu_ctx();
    const int n = 3;
    const size_t per = 2 * 9 * 13, total = n * per;
    cld_noise_key key = {777, CLD_NOISE_STREAM_TRAIN, 10, 3};
    float *host = tu_malloc(total * sizeof(float)), *got = tu_malloc(total * sizeof(float));
    float *zeros = tu_malloc(total * sizeof(float));
    memset(zeros, 0, total * sizeof(float));
    TU_OK(cld_noise_host(&key, n, per, host));
    cl_mem x0 = tu_upload(ctx, zeros, total), out = tu_upload(ctx, zeros, total),
           tgt = tu_upload(ctx, zeros, total);
    /* lincomb with only the noise term: out = 1 * z */
    cld_lincomb_term none[4] = {{NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}};
    TU_OK(cld_lincomb(ctx, n, per, none, 1.0, &key, out, 0));
    tu_download(ctx, out, got, total);
    ck_assert_msg(memcmp(got, host, total * sizeof(float)) == 0, "lincomb noise != reference");
    /* q_sample's eps target on x0 = 0: 0 * x0 + 1 * eps */
    cld_schedule *s;
    TU_OK(cld_schedule_create(CLD_SCHEDULE_LINEAR, 1000, 0, 0, 0, &s));
    int t[3] = {0, 500, 999};
    TU_OK(cld_q_sample(ctx, s, n, per, t, x0, 0, &key, out, 0, CLD_PRED_EPS, tgt, 0));
    tu_download(ctx, tgt, got, total);
    ck_assert_msg(memcmp(got, host, total * sizeof(float)) == 0, "q_sample noise != reference");
    cld_schedule_free(s);
    cld_buffer_release(x0);
    cld_buffer_release(out);
    cld_buffer_release(tgt);
    free(host);
    free(got);
    free(zeros);
}
END_TEST

/* Standard normal CDF. */
static double phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

START_TEST(test_statistics)
{
    cld_ctx *ctx = tu_ctx();
    const int n = 8;
    const size_t per = 131071, total = n * per;
    cld_noise_key key = {2024, 0, 0, 1};
    float *z = tu_malloc(total * sizeof(float));
    cl_mem buf;
    TU_OK(cld_buffer_alloc(ctx, total * sizeof(float), &buf));
    TU_OK(cld_noise_fill(ctx, &key, n, per, buf, 0));
    tu_download(ctx, buf, z, total);
    double m1 = 0, m2 = 0, m3 = 0, m4 = 0, lag = 0, cross = 0;
    const double edges[] = {-3, -2, -1, -0.5, 0, 0.5, 1, 2, 3};
    size_t below[9] = {0};
    for (size_t i = 0; i < total; i++) {
        double v = z[i];
        m1 += v, m2 += v * v, m3 += v * v * v, m4 += v * v * v * v;
        if (i + 1 < total) lag += v * z[i + 1];
        if (i + per < total) cross += v * z[i + per];
        for (int e = 0; e < 9; e++) below[e] += v < edges[e];
    }
    double N = (double)total;
    m1 /= N, m2 /= N, m3 /= N, m4 /= N, lag /= N - 1, cross /= N - per;
    printf("noise stats over %zu: mean %.5f var %.5f skew %.5f kurt %.5f lag1 %.5f cross %.5f\n", total, m1,
           m2, m3, m4, lag, cross);
    /* 5 standard errors of each estimate (normal: var(z^k) = 1, 2, 15, 96) */
    double se = 1.0 / sqrt(N);
    ck_assert_msg(fabs(m1) < 5 * se, "mean %g", m1);
    ck_assert_msg(fabs(m2 - 1.0) < 5 * sqrt(2.0) * se, "variance %g", m2);
    ck_assert_msg(fabs(m3) < 5 * sqrt(15.0) * se, "third moment %g", m3);
    ck_assert_msg(fabs(m4 - 3.0) < 5 * sqrt(96.0) * se, "fourth moment %g", m4);
    ck_assert_msg(fabs(lag) < 5 * se, "neighbour correlation %g", lag);
    ck_assert_msg(fabs(cross) < 5 * sqrt(N / (N - per)) * se, "sample correlation %g", cross);
    for (int e = 0; e < 9; e++) {
        double p = phi(edges[e]), f = below[e] / N;
        ck_assert_msg(fabs(f - p) < 5 * sqrt(p * (1 - p) / N) + 1e-12, "P(z < %g) = %.6f, normal %.6f",
                      edges[e], f, p);
    }
    cld_buffer_release(buf);
    free(z);
}
END_TEST

/* Every input word changes the numbers. */
START_TEST(test_key_sensitivity)
{
    const size_t per = 64;
    float base[64], other[64];
    cld_noise_key k = {99, 2, 3, 4};
    TU_OK(cld_noise_host(&k, 1, per, base));
    for (int field = 0; field < 5; field++) {
        cld_noise_key m = k;
        switch (field) {
        case 0: m.seed ^= 1; break;
        case 1: m.seed ^= 1ull << 63; break;
        case 2: m.stream++; break;
        case 3: m.index++; break;
        case 4: m.step++; break;
        }
        TU_OK(cld_noise_host(&m, 1, per, other));
        int same = 0;
        for (size_t i = 0; i < per; i++) same += base[i] == other[i];
        ck_assert_msg(same < 4, "changing field %d left %d of %zu values equal", field, same, per);
    }
    cld_noise_key *null = NULL;
    TU_STATUS(cld_noise_host(null, 1, per, base), CLD_ERR_INVALID_ARG);
    TU_STATUS(cld_noise_host(&k, 0, per, base), CLD_ERR_INVALID_ARG);
}
END_TEST

static Suite *noise_suite(void)
{
    Suite *s = suite_create("noise");
    TCase *tc = tcase_create("host");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_philox_known_answers);
    tcase_add_test(tc, test_box_muller_accuracy);
    tcase_add_test(tc, test_layout_promise);
    tcase_add_test(tc, test_key_sensitivity);
    suite_add_tcase(s, tc);
    tc = tcase_create("device");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_device_equals_host);
    tcase_add_test(tc, test_fused_kernels_same_noise);
    tcase_add_test(tc, test_statistics);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run_suite(noise_suite()); }
