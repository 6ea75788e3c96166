/* Reproducible noise: the host reference of Philox-4x32-10 and the integer
 * Box-Muller (the promise is stated in diffusion.h), the device fill, and the
 * samplers' fused update out = sum w_k v_k + w_noise z.
 *
 * The host functions below mirror cl/diffusion.cl step for step on the same
 * integer constants; from the Philox words to the float's bits every result
 * is decided by integer arithmetic, so the two agree bit for bit on any
 * device. */
#include "internal.h"

#include <limits.h>
#include <string.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Tables (computed with mpmath at 300 bits, rounded to nearest unless said):
 * LOG_RECIP_Q63[k] = ceil(2^63 / (1 + k/64)), LOG_LNR_Q63[k] = -ln(LOG_RECIP_Q63[k] 2^-63) 2^63,
 * COS_Q63[k], SIN_Q63[k] = cos, sin(k pi / 128) 2^63, k = 0 .. 63. */
static const uint64_t LOG_RECIP_Q63[64] = {
    0x8000000000000000ull, 0x7e07e07e07e07e08ull, 0x7c1f07c1f07c1f08ull, 0x7a44c6afc2dd9ca9ull,
    0x7878787878787879ull, 0x76b981dae6076b99ull, 0x7507507507507508ull, 0x73615a240e6c2b45ull,
    0x71c71c71c71c71c8ull, 0x70381c0e070381c1ull, 0x6eb3e45306eb3e46ull, 0x6d3a06d3a06d3a07ull,
    0x6bca1af286bca1b0ull, 0x6a63bd81a98ef607ull, 0x6906906906906907ull, 0x67b23a5440cf6475ull,
    0x6666666666666667ull, 0x6522c3f35ba78195ull, 0x63e7063e7063e707ull, 0x62b2e43dafcea68eull,
    0x6186186186186187ull, 0x6060606060606061ull, 0x5f417d05f417d060ull, 0x5e293205e293205full,
    0x5d1745d1745d1746ull, 0x5c0b81702e05c0b9ull, 0x5b05b05b05b05b06ull, 0x5a05a05a05a05a06ull,
    0x590b21642c8590b3ull, 0x5816058160581606ull, 0x572620ae4c415c99ull, 0x563b48c20563b48dull,
    0x5555555555555556ull, 0x54741fab8be05475ull, 0x5397829cbc14e5e1ull, 0x52bf5a814afd6a06ull,
    0x51eb851eb851eb86ull, 0x511be1958b67ebbaull, 0x5050505050505051ull, 0x4f88b2f392a409f2ull,
    0x4ec4ec4ec4ec4ec5ull, 0x4e04e04e04e04e05ull, 0x4d4873ecade304d5ull, 0x4c8f8d28ac42fd9cull,
    0x4bda12f684bda130ull, 0x4b27ed3604b27ed4ull, 0x4a7904a7904a7905ull, 0x49cd42e2049cd42full,
    0x4924924924924925ull, 0x487ede0487ede049ull, 0x47dc11f7047dc120ull, 0x473c1ab68a0473c2ull,
    0x469ee58469ee5847ull, 0x4604604604604605ull, 0x456c797dd49c3412ull, 0x44d72044d72044d8ull,
    0x4444444444444445ull, 0x43b3d5af9a723f79ull, 0x4325c53ef368eb05ull, 0x429a0429a0429a05ull,
    0x4210842108421085ull, 0x4189374bc6a7ef9eull, 0x4104104104104105ull, 0x4081020408102041ull,
};
static const uint64_t LOG_LNR_Q63[64] = {
    0x0000000000000000ull, 0x01fc0a8b0fc03e3dull, 0x03f05361cf066009ull, 0x05dd163d8cb73f11ull,
    0x07c28c300458a998ull, 0x09a0ebcb0de8e848ull, 0x0b78694572b5a5cdull, 0x0d49369d256ab1b2ull,
    0x0f1383b7157972f4ull, 0x10d77e7cd08e5966ull, 0x129552f81ff5234bull, 0x144d2b6ccb7d1e68ull,
    0x15ff3070a793d3c7ull, 0x17ab890210d9091bull, 0x19525a9cf456b476ull, 0x1af3c94e80bff2d8ull,
    0x1c8ff7c79a9a21abull, 0x1e27076e2af2e5e9ull, 0x1fb9186d5e3e2a8cull, 0x214649c4e721c6bfull,
    0x22ceb957574c1c06ull, 0x245283f79ef2cb44ull, 0x25d1c575c23a6137ull, 0x274c98aad28bd38dull,
    0x28c3178438bd84faull, 0x2a355b0e5bf05a12ull, 0x2ba37b7eb01394a1ull, 0x2d0d903d36295d88ull,
    0x2e73afed77a00d38ull, 0x2fd5f077055f86c9ull, 0x3134670d8284b56bull, 0x328f2838422df573ull,
    0x33e647d97f3097e4ull, 0x3539d93534109319ull, 0x3689eef7991ec519ull, 0x37d69b3b4e36f7eeull,
    0x391fef8f35344357ull, 0x3a65fcfc01d7aac2ull, 0x3ba8d4098389417dull, 0x3ce884c3ad0f0fc6ull,
    0x3e251ebf5e0dd967ull, 0x3f5eb11ef1e63db3ull, 0x40954a969743fb1aull, 0x41c8f970737d0139ull,
    0x42f9cb9094aa0ad9ull, 0x4427ce78b5325bf6ull, 0x45530f4bd357a6a6ull, 0x467b9ad19f25bb30ull,
    0x47a17d79c10340f7ull, 0x48c4c35efafd0a0bull, 0x49e5784a26c46badull, 0x4b03a7b5123a2ee5ull,
    0x4c1f5ccd3c42f87eull, 0x4d38a27673874c5bull, 0x4e4f834d58a866a6ull, 0x4f6409a9c55bea8eull,
    0x50763fa119cab990ull, 0x51862f08717b09f3ull, 0x5293e176c0faec07ull, 0x539f6046dd6ec271ull,
    0x54a8b4996f16abb8ull, 0x55afe756cfce6504ull, 0x56b50130d67cb3ebull, 0x57b80aa49059d5c2ull,
};
static const uint64_t COS_Q63[64] = {
    0x8000000000000000ull, 0x7ff62182133432edull, 0x7fd8878de5b5f78full, 0x7fa736b40620e855ull,
    0x7f62368f44949678ull, 0x7f0991c3867f4d1full, 0x7e9d55fc22945a86ull, 0x7e1d93e9c52ea4d6ull,
    0x7d8a5f3fdd72c0abull, 0x7ce3ceb193962314ull, 0x7c29fbee48c35ca9ull, 0x7b5d039da1258cf4ull,
    0x7a7d055b18b76976ull, 0x798a23b1238447baull, 0x78848413da1b92ffull, 0x776c4edb3308f184ull,
    0x7641af3cca3518a3ull, 0x7504d3453724e6b1ull, 0x73b5ebd0f31dcbc3ull, 0x72552c84d047d3daull,
    0x70e2cbc602f6c349ull, 0x6f5f02b1be54a67eull, 0x6dca0d1465b8f644ull, 0x6c2429605407fe6eull,
    0x6a6d98a43a868c0dull, 0x68a69e81189e0777ull, 0x66cf811fce1d02cfull, 0x64e88926498fed3dull,
    0x62f201ac545d02d4ull, 0x60ec382ffe5db748ull, 0x5ed77c89aabebb78ull, 0x5cb420dfbffe590dull,
    0x5a827999fcef3242ull, 0x5842dd5474b37b6dull, 0x55f5a4d233b27e8bull, 0x539b2aef8f97a44full,
    0x5133cc9424775860ull, 0x4ebfe8a48142e4f2ull, 0x4c3fdff385c0d384ull, 0x49b41533744b7aa2ull,
    0x471cece6b9a321b2ull, 0x447acd506d2c8a11ull, 0x41ce1e648bffb65aull, 0x3f1749b7f13573f7ull,
    0x3c56ba700dec763cull, 0x398cdd326388bc2dull, 0x36ba2013c2b98057ull, 0x33def28751db145bull,
    0x30fbc54d5d52c5a3ull, 0x2e110a61f48b3d5eull, 0x2b1f34eb563fb9fcull, 0x2826b9282ecc0286ull,
    0x25280c5dab3e0b51ull, 0x2223a4c563eceec1ull, 0x1f19f97b215f1aafull, 0x1c0b826a7e4f62fdull,
    0x18f8b83c69a60ab6ull, 0x15e214448b3fc655ull, 0x12c8106e8e613a22ull, 0x0fab272b54b9871aull,
    0x0c8bd35e14da15f1ull, 0x096a9049670cfae6ull, 0x0647d97c437604faull, 0x03242abef46ccfbfull,
};
static const uint64_t SIN_Q63[64] = {
    0x0000000000000000ull, 0x03242abef46ccfbfull, 0x0647d97c437604faull, 0x096a9049670cfae6ull,
    0x0c8bd35e14da15f1ull, 0x0fab272b54b9871aull, 0x12c8106e8e613a22ull, 0x15e214448b3fc655ull,
    0x18f8b83c69a60ab6ull, 0x1c0b826a7e4f62fdull, 0x1f19f97b215f1aafull, 0x2223a4c563eceec1ull,
    0x25280c5dab3e0b51ull, 0x2826b9282ecc0286ull, 0x2b1f34eb563fb9fcull, 0x2e110a61f48b3d5eull,
    0x30fbc54d5d52c5a3ull, 0x33def28751db145bull, 0x36ba2013c2b98057ull, 0x398cdd326388bc2dull,
    0x3c56ba700dec763cull, 0x3f1749b7f13573f7ull, 0x41ce1e648bffb65aull, 0x447acd506d2c8a11ull,
    0x471cece6b9a321b2ull, 0x49b41533744b7aa2ull, 0x4c3fdff385c0d384ull, 0x4ebfe8a48142e4f2ull,
    0x5133cc9424775860ull, 0x539b2aef8f97a44full, 0x55f5a4d233b27e8bull, 0x5842dd5474b37b6dull,
    0x5a827999fcef3242ull, 0x5cb420dfbffe590dull, 0x5ed77c89aabebb78ull, 0x60ec382ffe5db748ull,
    0x62f201ac545d02d4ull, 0x64e88926498fed3dull, 0x66cf811fce1d02cfull, 0x68a69e81189e0777ull,
    0x6a6d98a43a868c0dull, 0x6c2429605407fe6eull, 0x6dca0d1465b8f644ull, 0x6f5f02b1be54a67eull,
    0x70e2cbc602f6c349ull, 0x72552c84d047d3daull, 0x73b5ebd0f31dcbc3ull, 0x7504d3453724e6b1ull,
    0x7641af3cca3518a3ull, 0x776c4edb3308f184ull, 0x78848413da1b92ffull, 0x798a23b1238447baull,
    0x7a7d055b18b76976ull, 0x7b5d039da1258cf4ull, 0x7c29fbee48c35ca9ull, 0x7ce3ceb193962314ull,
    0x7d8a5f3fdd72c0abull, 0x7e1d93e9c52ea4d6ull, 0x7e9d55fc22945a86ull, 0x7f0991c3867f4d1full,
    0x7f62368f44949678ull, 0x7fa736b40620e855ull, 0x7fd8878de5b5f78full, 0x7ff62182133432edull,
};

#define Q63_ONE 0x8000000000000000ull     /* 1.0 in Q63 */
#define LN2_Q59 0x058b90bfbe8e7bcdull     /* ln 2 * 2^59 */
#define HALF_PI_Q32 0x00000001921fb544ull /* pi/2 * 2^32 */
/* 1/j * 2^63 (ln(1 + e) series) and 1/j! * 2^63 (sin, cos series) */
#define INV2 0x4000000000000000ull
#define INV3 0x2aaaaaaaaaaaaaabull
#define INV4 0x2000000000000000ull
#define INV5 0x199999999999999aull
#define INV6 0x1555555555555555ull
#define INV7 0x1249249249249249ull
#define INV8 0x1000000000000000ull
#define INV9 0x0e38e38e38e38e39ull
#define INV24 0x0555555555555555ull
#define INV120 0x0111111111111111ull
#define INV720 0x002d82d82d82d82eull
#define INV5040 0x0006806806806807ull

/* ----------------------------------------------------------------- Philox */
cld_status cld_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    if (!ctr || !key || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_philox4x32_10: NULL argument");
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]}, k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
        uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = (uint32_t)p1;
        c[2] = n2;
        c[3] = (uint32_t)p0;
    }
    memcpy(out, c, sizeof c);
    return CLD_OK;
}

/* ------------------------------------------------- integer Box-Muller */
static int clz64(uint64_t a) /* a != 0 */
{
    int n = 0;
    for (int s = 32; s > 0; s >>= 1) {
        if ((a >> (64 - s)) == 0) {
            n += s;
            a <<= s;
        }
    }
    return n;
}

/* High 64 bits of the 128-bit product (OpenCL's mul_hi for ulong). */
static uint64_t mul_hi(uint64_t a, uint64_t b)
{
    uint64_t a0 = (uint32_t)a, a1 = a >> 32, b0 = (uint32_t)b, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;
    return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

/* v * 2^-59 to the nearest float (ties to even), |v| < 2^63. */
static float q59_to_float(int64_t v)
{
    if (v == 0) return 0.0f;
    uint32_t sign = v < 0 ? 0x80000000u : 0u;
    uint64_t a = v < 0 ? (uint64_t)(-v) : (uint64_t)v;
    int msb = 63 - clz64(a);
    int ex = msb - 59;
    uint64_t mant;
    if (msb > 23) {
        int sh = msb - 23;
        mant = a >> sh;
        uint64_t rem = a & (((uint64_t)1 << sh) - 1);
        uint64_t tie = (uint64_t)1 << (sh - 1);
        if (rem > tie || (rem == tie && (mant & 1))) mant++;
        if (mant == ((uint64_t)1 << 24)) {
            mant >>= 1;
            ex++;
        }
    } else {
        mant = a << (23 - msb);
    }
    uint32_t bits = sign | ((uint32_t)(ex + 127) << 23) | ((uint32_t)mant & 0x7FFFFFu);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* RSQRT_Q63[i] = 2^63 / sqrt((i + 16.5) / 16), i = 0 .. 47. */
static const uint64_t RSQRT_Q63[48] = {
    0x7e0bb220b03e6a8eull, 0x7a64336b557b488aull, 0x77099efa915522f6ull, 0x73f1f68caa484b83ull,
    0x7114f643c15e8700ull, 0x6e6bb6e9620d1d24ull, 0x6bf067618185a491ull, 0x699e16d06eb3dd51ull,
    0x67708af921115e02ull, 0x65641fae1ead1098ull, 0x6375ad158e802553ull, 0x61a2731f81f9f22bull,
    0x5fe808fc41a34356ull, 0x5e444faef5dca572ull, 0x5cb567117c7f1416ull, 0x5b39a4c756163432ull,
    0x59cf8cbbd8e80d2cull, 0x5875cade5e19c2daull, 0x572b2de00bcd0885ull, 0x55eea2c3b806e416ull,
    0x54bf311a35ad5024ull, 0x539bf7ccf3c0c65aull, 0x52842a5ebdee486bull, 0x51770e8f0d3e8a68ull,
    0x5073fa4ffd466590ull, 0x4f7a5201df6d619aull, 0x4e8986e9b5e8da5full, 0x4da115d9bbb248eaull,
    0x4cc086049f0380a2ull, 0x4be767f54bf54069ull, 0x4b1554a623909e12ull, 0x4a49ecb34c83d546ull,
    0x4984d7a476bd5204ull, 0x48c5c34af98e29e5ull, 0x480c6331aa3d7517ull, 0x4758701c2b9f4b2eull,
    0x46a9a793c9ddfbd7ull, 0x45ffcb803b0fb62cull, 0x455aa1cad7bd863dull, 0x44b9f40b10094c59ull,
    0x441d8f3b0c2c97ffull, 0x438543738ad830adull, 0x42f0e3ae2e904975ull, 0x4260458d85526385ull,
    0x41d3412a2c50debcull, 0x4149b0e484efe639ull, 0x40c3713a80e9c924ull, 0x404060a119fba2c1ull,
};

/* sqrt(X) in Q29 for X = L 2^-58 (L = -ln u in Q59, so X = -2 ln u).
 * X = 4^j g with g in [1, 4); 1/sqrt(g) from a table guess (error < 2^-6)
 * and three Newton steps y (3 - g y^2) / 2 (error < 2^-43), then g y. */
static uint64_t sqrt_q29(uint64_t L)
{
    if (L == 0) return 0;
    int e2 = 63 - clz64(L) - 58;   /* X in [2^e2, 2^(e2+1)) */
    int j = ((e2 + 60) >> 1) - 30; /* floor(e2 / 2) */
    uint64_t g = L << (4 - 2 * j); /* Q62 */
    uint64_t y = RSQRT_Q63[(g >> 58) - 16];
    for (int it = 0; it < 3; it++) {
        uint64_t t = ((uint64_t)3 << 60) - mul_hi(g, mul_hi(y, y)); /* Q60 */
        y = mul_hi(y, t) << 3;
    }
    uint64_t s = mul_hi(g, y); /* sqrt(g), Q61 */
    int rs = 32 - j;
    return (s + ((uint64_t)1 << (rs - 1))) >> rs;
}

static void box_muller(uint32_t w0, uint32_t w1, float out[2])
{
    /* -ln u in Q59, u = (w0 + 1) 2^-32 = f 2^(e-32), f in [1, 2);
     * ln f = -ln(R_k) + ln(f R_k), f R_k = 1 + eps, eps in [0, 2^-6). */
    uint64_t m = (uint64_t)w0 + 1;
    int e = 63 - clz64(m);
    uint64_t f = m << (62 - e);
    int k = (int)((f >> 56) & 63);
    uint64_t u = mul_hi(f, LOG_RECIP_Q63[k]);
    uint64_t eps = (u - ((uint64_t)1 << 61)) << 3;
    uint64_t p = INV9;
    p = INV8 - mul_hi(eps, p);
    p = INV7 - mul_hi(eps, p);
    p = INV6 - mul_hi(eps, p);
    p = INV5 - mul_hi(eps, p);
    p = INV4 - mul_hi(eps, p);
    p = INV3 - mul_hi(eps, p);
    p = INV2 - mul_hi(eps, p);
    p = Q63_ONE - mul_hi(eps, p);
    uint64_t lnf = LOG_LNR_Q63[k] + mul_hi(eps, p);
    uint64_t L = (uint64_t)(32 - e) * LN2_Q59 - (lnf >> 4);
    uint64_t r = sqrt_q29(L); /* sqrt(2 L) in Q29 */
    /* cos, sin: table at k pi/128 plus series for d < pi/128, then the quadrant */
    uint32_t w = w1 & 0x3FFFFFFFu;
    int ka = (int)(w >> 24);
    uint64_t d = ((uint64_t)(w & 0xFFFFFFu) * HALF_PI_Q32) << 2;
    uint64_t d2 = mul_hi(d, d);
    uint64_t ps = INV5040;
    ps = INV120 - mul_hi(d2, ps);
    ps = INV6 - mul_hi(d2, ps);
    ps = Q63_ONE - mul_hi(d2, ps);
    uint64_t sd = mul_hi(d, ps);
    uint64_t pc = INV720;
    pc = INV24 - mul_hi(d2, pc);
    pc = INV2 - mul_hi(d2, pc);
    uint64_t cd = Q63_ONE - mul_hi(d2, pc);
    uint64_t ca = mul_hi(COS_Q63[ka], cd), cb = mul_hi(SIN_Q63[ka], sd);
    uint64_t c62 = ca > cb ? ca - cb : 0;
    uint64_t s62 = mul_hi(SIN_Q63[ka], cd) + mul_hi(COS_Q63[ka], sd);
    int64_t c = (int64_t)((c62 + ((uint64_t)1 << 31)) >> 32);
    int64_t s = (int64_t)((s62 + ((uint64_t)1 << 31)) >> 32);
    uint32_t q = w1 >> 30;
    int64_t cq = q == 0 ? c : (q == 1 ? -s : (q == 2 ? -c : s));
    int64_t sq = q == 0 ? s : (q == 1 ? c : (q == 2 ? -s : -c));
    out[0] = q59_to_float((int64_t)r * cq);
    out[1] = q59_to_float((int64_t)r * sq);
}

cld_status cld_box_muller_fixed(uint32_t w0, uint32_t w1, float out[2])
{
    if (!out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_box_muller_fixed: NULL output");
    box_muller(w0, w1, out);
    return CLD_OK;
}

/* The kernels index with int: n * per_sample + offset must fit. */
static cld_status check_shape(const char *what, int n, size_t per_sample, size_t off)
{
    if (n <= 0 || per_sample == 0)
        return cld__fail(CLD_ERR_INVALID_ARG, "%s: empty shape (n %d, per_sample %zu)", what, n, per_sample);
    if (per_sample > (size_t)INT_MAX / (size_t)n || off > (size_t)INT_MAX - (size_t)n * per_sample)
        return cld__fail(CLD_ERR_INVALID_ARG,
                         "%s: %d x %zu floats at offset %zu exceed the "
                         "kernels' int range",
                         what, n, per_sample, off);
    return CLD_OK;
}

cld_status cld_noise_host(const cld_noise_key *key, int n, size_t per_sample, float *out)
{
    if (!key || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_noise_host: NULL argument");
    if (n <= 0 || per_sample == 0 || per_sample / 4 >= ((size_t)1 << 32))
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_noise_host: bad shape (n %d, per_sample %zu)", n,
                         per_sample);
    const uint32_t k[2] = {(uint32_t)key->seed, (uint32_t)(key->seed >> 32)};
    for (int s = 0; s < n; s++) {
        float *o = out + (size_t)s * per_sample;
        for (size_t j = 0; 4 * j < per_sample; j++) {
            uint32_t ctr[4] = {(uint32_t)j, key->index + (uint32_t)s, key->step, key->stream};
            uint32_t w[4];
            float z[4];
            cld_philox4x32_10(ctr, k, w);
            box_muller(w[0], w[1], z);
            box_muller(w[2], w[3], z + 2);
            for (size_t l = 0; l < 4 && 4 * j + l < per_sample; l++) o[4 * j + l] = z[l];
        }
    }
    return CLD_OK;
}

/* One work-item per block of 4 elements of a sample. */
static cld_status launch_blocks(cld_ctx *ctx, cl_kernel k, const char *what, int n, size_t per_sample)
{
    return cld__launch_items(ctx, k, what, (size_t)n * ((per_sample + 3) / 4), 64);
}

cld_status cld_noise_fill(cld_ctx *ctx, const cld_noise_key *key, int n, size_t per_sample, cl_mem out,
                          size_t out_off)
{
    if (!ctx || !key || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_noise_fill: NULL argument");
    CLD_TRY(check_shape("cld_noise_fill", n, per_sample, out_off));
    cl_kernel k;
    CLD_TRY(cld__kernel(ctx, "diffusion", "noise_fill", &k));
    CLD_TRY(cld__kargs(k, "noise_fill", "biiiuuuuu", out, (int)out_off, n, (int)per_sample,
                       (unsigned)key->seed, (unsigned)(key->seed >> 32), (unsigned)key->stream,
                       (unsigned)key->index, (unsigned)key->step));
    return launch_blocks(ctx, k, "noise_fill", n, per_sample);
}

cld_status cld_lincomb(cld_ctx *ctx, int n, size_t per_sample, const cld_lincomb_term terms[4],
                       double w_noise, const cld_noise_key *key, cl_mem out, size_t out_off)
{
    if (!ctx || !terms || !out) return cld__fail(CLD_ERR_INVALID_ARG, "cld_lincomb: NULL argument");
    if (w_noise != 0.0 && !key)
        return cld__fail(CLD_ERR_INVALID_ARG, "cld_lincomb: noise weight %g but no noise key", w_noise);
    CLD_TRY(check_shape("cld_lincomb", n, per_sample, out_off));
    for (int i = 0; i < 4; i++)
        if (terms[i].w != 0.0) CLD_TRY(check_shape("cld_lincomb", n, per_sample, terms[i].off));
    cl_mem b[4];
    int o[4];
    double w[4];
    for (int i = 0; i < 4; i++) {
        /* A term rounding to weight 0 in float is skipped by the kernel; it
         * still needs a valid buffer argument. */
        w[i] = (float)terms[i].w == 0.0f ? 0.0 : terms[i].w;
        if (w[i] != 0.0 && !terms[i].buf)
            return cld__fail(CLD_ERR_INVALID_ARG, "cld_lincomb: term %d has weight %g but no buffer", i,
                             w[i]);
        b[i] = w[i] != 0.0 ? terms[i].buf : out;
        o[i] = w[i] != 0.0 ? (int)terms[i].off : 0;
    }
    cld_noise_key none = {0, 0, 0, 0};
    if (!key || w_noise == 0.0) key = &none;
    /* the noise generator is compiled into lincomb_noise only */
    const char *name = (float)w_noise != 0.0f ? "lincomb_noise" : "lincomb";
    cl_kernel k;
    CLD_TRY(cld__kernel(ctx, "diffusion", name, &k));
    CLD_TRY(cld__kargs(k, name, "bibifbifbifbiffiiuuuuu", out, (int)out_off, b[0], o[0], w[0], b[1], o[1],
                       w[1], b[2], o[2], w[2], b[3], o[3], w[3], w_noise, n, (int)per_sample,
                       (unsigned)key->seed, (unsigned)(key->seed >> 32), (unsigned)key->stream,
                       (unsigned)key->index, (unsigned)key->step));
    return launch_blocks(ctx, k, name, n, per_sample);
}
