/* Diffusion kernels: reproducible noise (Philox-4x32-10 and an integer-only
 * Box-Muller), the forward process q(x_t | x_0), prediction conversion, the
 * model-output-to-x_0 step with classifier-free guidance, and the samplers'
 * fused update. Every buffer argument is followed by its offset in floats.
 *
 * Noise is bit-exact by construction: from the Philox words to the float's
 * bits every result is decided by integer arithmetic (the one floating-point
 * operation, a square-root guess, only saves Newton steps), so neither
 * -cl-mad-enable nor the device's math library can change a bit. The host reference (engine/src/noise.c)
 * runs the same steps on the same integer constants; keep the two in step
 * (test_noise checks them against each other bit for bit).
 *
 * Noise kernels run one work-item per block of 4 consecutive elements of one
 * sample (one Philox call), 1-D, local size 64. */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Tables (computed with mpmath at 300 bits, rounded to nearest unless said):
 * LOG_RECIP_Q63[k] = ceil(2^63 / (1 + k/64)), LOG_LNR_Q63[k] = -ln(LOG_RECIP_Q63[k] 2^-63) 2^63,
 * COS_Q63[k], SIN_Q63[k] = cos, sin(k pi / 128) 2^63, k = 0 .. 63. */
__constant ulong LOG_RECIP_Q63[64] = {
    0x8000000000000000UL, 0x7e07e07e07e07e08UL, 0x7c1f07c1f07c1f08UL, 0x7a44c6afc2dd9ca9UL,
    0x7878787878787879UL, 0x76b981dae6076b99UL, 0x7507507507507508UL, 0x73615a240e6c2b45UL,
    0x71c71c71c71c71c8UL, 0x70381c0e070381c1UL, 0x6eb3e45306eb3e46UL, 0x6d3a06d3a06d3a07UL,
    0x6bca1af286bca1b0UL, 0x6a63bd81a98ef607UL, 0x6906906906906907UL, 0x67b23a5440cf6475UL,
    0x6666666666666667UL, 0x6522c3f35ba78195UL, 0x63e7063e7063e707UL, 0x62b2e43dafcea68eUL,
    0x6186186186186187UL, 0x6060606060606061UL, 0x5f417d05f417d060UL, 0x5e293205e293205fUL,
    0x5d1745d1745d1746UL, 0x5c0b81702e05c0b9UL, 0x5b05b05b05b05b06UL, 0x5a05a05a05a05a06UL,
    0x590b21642c8590b3UL, 0x5816058160581606UL, 0x572620ae4c415c99UL, 0x563b48c20563b48dUL,
    0x5555555555555556UL, 0x54741fab8be05475UL, 0x5397829cbc14e5e1UL, 0x52bf5a814afd6a06UL,
    0x51eb851eb851eb86UL, 0x511be1958b67ebbaUL, 0x5050505050505051UL, 0x4f88b2f392a409f2UL,
    0x4ec4ec4ec4ec4ec5UL, 0x4e04e04e04e04e05UL, 0x4d4873ecade304d5UL, 0x4c8f8d28ac42fd9cUL,
    0x4bda12f684bda130UL, 0x4b27ed3604b27ed4UL, 0x4a7904a7904a7905UL, 0x49cd42e2049cd42fUL,
    0x4924924924924925UL, 0x487ede0487ede049UL, 0x47dc11f7047dc120UL, 0x473c1ab68a0473c2UL,
    0x469ee58469ee5847UL, 0x4604604604604605UL, 0x456c797dd49c3412UL, 0x44d72044d72044d8UL,
    0x4444444444444445UL, 0x43b3d5af9a723f79UL, 0x4325c53ef368eb05UL, 0x429a0429a0429a05UL,
    0x4210842108421085UL, 0x4189374bc6a7ef9eUL, 0x4104104104104105UL, 0x4081020408102041UL,
};
__constant ulong LOG_LNR_Q63[64] = {
    0x0000000000000000UL, 0x01fc0a8b0fc03e3dUL, 0x03f05361cf066009UL, 0x05dd163d8cb73f11UL,
    0x07c28c300458a998UL, 0x09a0ebcb0de8e848UL, 0x0b78694572b5a5cdUL, 0x0d49369d256ab1b2UL,
    0x0f1383b7157972f4UL, 0x10d77e7cd08e5966UL, 0x129552f81ff5234bUL, 0x144d2b6ccb7d1e68UL,
    0x15ff3070a793d3c7UL, 0x17ab890210d9091bUL, 0x19525a9cf456b476UL, 0x1af3c94e80bff2d8UL,
    0x1c8ff7c79a9a21abUL, 0x1e27076e2af2e5e9UL, 0x1fb9186d5e3e2a8cUL, 0x214649c4e721c6bfUL,
    0x22ceb957574c1c06UL, 0x245283f79ef2cb44UL, 0x25d1c575c23a6137UL, 0x274c98aad28bd38dUL,
    0x28c3178438bd84faUL, 0x2a355b0e5bf05a12UL, 0x2ba37b7eb01394a1UL, 0x2d0d903d36295d88UL,
    0x2e73afed77a00d38UL, 0x2fd5f077055f86c9UL, 0x3134670d8284b56bUL, 0x328f2838422df573UL,
    0x33e647d97f3097e4UL, 0x3539d93534109319UL, 0x3689eef7991ec519UL, 0x37d69b3b4e36f7eeUL,
    0x391fef8f35344357UL, 0x3a65fcfc01d7aac2UL, 0x3ba8d4098389417dUL, 0x3ce884c3ad0f0fc6UL,
    0x3e251ebf5e0dd967UL, 0x3f5eb11ef1e63db3UL, 0x40954a969743fb1aUL, 0x41c8f970737d0139UL,
    0x42f9cb9094aa0ad9UL, 0x4427ce78b5325bf6UL, 0x45530f4bd357a6a6UL, 0x467b9ad19f25bb30UL,
    0x47a17d79c10340f7UL, 0x48c4c35efafd0a0bUL, 0x49e5784a26c46badUL, 0x4b03a7b5123a2ee5UL,
    0x4c1f5ccd3c42f87eUL, 0x4d38a27673874c5bUL, 0x4e4f834d58a866a6UL, 0x4f6409a9c55bea8eUL,
    0x50763fa119cab990UL, 0x51862f08717b09f3UL, 0x5293e176c0faec07UL, 0x539f6046dd6ec271UL,
    0x54a8b4996f16abb8UL, 0x55afe756cfce6504UL, 0x56b50130d67cb3ebUL, 0x57b80aa49059d5c2UL,
};
__constant ulong COS_Q63[64] = {
    0x8000000000000000UL, 0x7ff62182133432edUL, 0x7fd8878de5b5f78fUL, 0x7fa736b40620e855UL,
    0x7f62368f44949678UL, 0x7f0991c3867f4d1fUL, 0x7e9d55fc22945a86UL, 0x7e1d93e9c52ea4d6UL,
    0x7d8a5f3fdd72c0abUL, 0x7ce3ceb193962314UL, 0x7c29fbee48c35ca9UL, 0x7b5d039da1258cf4UL,
    0x7a7d055b18b76976UL, 0x798a23b1238447baUL, 0x78848413da1b92ffUL, 0x776c4edb3308f184UL,
    0x7641af3cca3518a3UL, 0x7504d3453724e6b1UL, 0x73b5ebd0f31dcbc3UL, 0x72552c84d047d3daUL,
    0x70e2cbc602f6c349UL, 0x6f5f02b1be54a67eUL, 0x6dca0d1465b8f644UL, 0x6c2429605407fe6eUL,
    0x6a6d98a43a868c0dUL, 0x68a69e81189e0777UL, 0x66cf811fce1d02cfUL, 0x64e88926498fed3dUL,
    0x62f201ac545d02d4UL, 0x60ec382ffe5db748UL, 0x5ed77c89aabebb78UL, 0x5cb420dfbffe590dUL,
    0x5a827999fcef3242UL, 0x5842dd5474b37b6dUL, 0x55f5a4d233b27e8bUL, 0x539b2aef8f97a44fUL,
    0x5133cc9424775860UL, 0x4ebfe8a48142e4f2UL, 0x4c3fdff385c0d384UL, 0x49b41533744b7aa2UL,
    0x471cece6b9a321b2UL, 0x447acd506d2c8a11UL, 0x41ce1e648bffb65aUL, 0x3f1749b7f13573f7UL,
    0x3c56ba700dec763cUL, 0x398cdd326388bc2dUL, 0x36ba2013c2b98057UL, 0x33def28751db145bUL,
    0x30fbc54d5d52c5a3UL, 0x2e110a61f48b3d5eUL, 0x2b1f34eb563fb9fcUL, 0x2826b9282ecc0286UL,
    0x25280c5dab3e0b51UL, 0x2223a4c563eceec1UL, 0x1f19f97b215f1aafUL, 0x1c0b826a7e4f62fdUL,
    0x18f8b83c69a60ab6UL, 0x15e214448b3fc655UL, 0x12c8106e8e613a22UL, 0x0fab272b54b9871aUL,
    0x0c8bd35e14da15f1UL, 0x096a9049670cfae6UL, 0x0647d97c437604faUL, 0x03242abef46ccfbfUL,
};
__constant ulong SIN_Q63[64] = {
    0x0000000000000000UL, 0x03242abef46ccfbfUL, 0x0647d97c437604faUL, 0x096a9049670cfae6UL,
    0x0c8bd35e14da15f1UL, 0x0fab272b54b9871aUL, 0x12c8106e8e613a22UL, 0x15e214448b3fc655UL,
    0x18f8b83c69a60ab6UL, 0x1c0b826a7e4f62fdUL, 0x1f19f97b215f1aafUL, 0x2223a4c563eceec1UL,
    0x25280c5dab3e0b51UL, 0x2826b9282ecc0286UL, 0x2b1f34eb563fb9fcUL, 0x2e110a61f48b3d5eUL,
    0x30fbc54d5d52c5a3UL, 0x33def28751db145bUL, 0x36ba2013c2b98057UL, 0x398cdd326388bc2dUL,
    0x3c56ba700dec763cUL, 0x3f1749b7f13573f7UL, 0x41ce1e648bffb65aUL, 0x447acd506d2c8a11UL,
    0x471cece6b9a321b2UL, 0x49b41533744b7aa2UL, 0x4c3fdff385c0d384UL, 0x4ebfe8a48142e4f2UL,
    0x5133cc9424775860UL, 0x539b2aef8f97a44fUL, 0x55f5a4d233b27e8bUL, 0x5842dd5474b37b6dUL,
    0x5a827999fcef3242UL, 0x5cb420dfbffe590dUL, 0x5ed77c89aabebb78UL, 0x60ec382ffe5db748UL,
    0x62f201ac545d02d4UL, 0x64e88926498fed3dUL, 0x66cf811fce1d02cfUL, 0x68a69e81189e0777UL,
    0x6a6d98a43a868c0dUL, 0x6c2429605407fe6eUL, 0x6dca0d1465b8f644UL, 0x6f5f02b1be54a67eUL,
    0x70e2cbc602f6c349UL, 0x72552c84d047d3daUL, 0x73b5ebd0f31dcbc3UL, 0x7504d3453724e6b1UL,
    0x7641af3cca3518a3UL, 0x776c4edb3308f184UL, 0x78848413da1b92ffUL, 0x798a23b1238447baUL,
    0x7a7d055b18b76976UL, 0x7b5d039da1258cf4UL, 0x7c29fbee48c35ca9UL, 0x7ce3ceb193962314UL,
    0x7d8a5f3fdd72c0abUL, 0x7e1d93e9c52ea4d6UL, 0x7e9d55fc22945a86UL, 0x7f0991c3867f4d1fUL,
    0x7f62368f44949678UL, 0x7fa736b40620e855UL, 0x7fd8878de5b5f78fUL, 0x7ff62182133432edUL,
};

#define Q63_ONE 0x8000000000000000UL     /* 1.0 in Q63 */
#define LN2_Q59 0x058b90bfbe8e7bcdUL     /* ln 2 * 2^59 */
#define HALF_PI_Q32 0x00000001921fb544UL /* pi/2 * 2^32 */
/* 1/j * 2^63 (ln(1 + e) series) and 1/j! * 2^63 (sin, cos series) */
#define INV2 0x4000000000000000UL
#define INV3 0x2aaaaaaaaaaaaaabUL
#define INV4 0x2000000000000000UL
#define INV5 0x199999999999999aUL
#define INV6 0x1555555555555555UL
#define INV7 0x1249249249249249UL
#define INV8 0x1000000000000000UL
#define INV9 0x0e38e38e38e38e39UL
#define INV24 0x0555555555555555UL
#define INV120 0x0111111111111111UL
#define INV720 0x002d82d82d82d82eUL
#define INV5040 0x0006806806806807UL

uint4 philox4x32_10(uint4 c, uint2 k)
{
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k.x += PHILOX_W0;
            k.y += PHILOX_W1;
        }
        ulong p0 = (ulong)PHILOX_M0 * (ulong)c.x;
        ulong p1 = (ulong)PHILOX_M1 * (ulong)c.z;
        c = (uint4)((uint)(p1 >> 32) ^ c.y ^ k.x, (uint)p1, (uint)(p0 >> 32) ^ c.w ^ k.y, (uint)p0);
    }
    return c;
}

/* v * 2^-59 rounded to the nearest float (ties to even), by integer code.
 * |v| < 2^63, so the result is a normal float or zero. */
float q59_to_float(long v)
{
    if (v == 0) return 0.0f;
    uint sign = v < 0 ? 0x80000000u : 0u;
    ulong a = abs(v); /* the builtin: clang makes llvm.abs of "v < 0 ? -v : v", which Oclgrind lacks */
    int msb = 63 - (int)clz(a);
    int ex = msb - 59;
    ulong mant;
    if (msb > 23) {
        int sh = msb - 23;
        mant = a >> sh;
        ulong rem = a & (((ulong)1 << sh) - 1);
        ulong tie = (ulong)1 << (sh - 1);
        if (rem > tie || (rem == tie && (mant & 1))) mant++;
        if (mant == ((ulong)1 << 24)) {
            mant >>= 1;
            ex++;
        }
    } else {
        mant = a << (23 - msb);
    }
    return as_float(sign | ((uint)(ex + 127) << 23) | ((uint)mant & 0x7FFFFFu));
}

/* Table: RSQRT_Q63[i] = 2^63 / sqrt((i + 16.5) / 16), i = 0 .. 47. */
__constant ulong RSQRT_Q63[48] = {
    0x7e0bb220b03e6a8eUL, 0x7a64336b557b488aUL, 0x77099efa915522f6UL, 0x73f1f68caa484b83UL,
    0x7114f643c15e8700UL, 0x6e6bb6e9620d1d24UL, 0x6bf067618185a491UL, 0x699e16d06eb3dd51UL,
    0x67708af921115e02UL, 0x65641fae1ead1098UL, 0x6375ad158e802553UL, 0x61a2731f81f9f22bUL,
    0x5fe808fc41a34356UL, 0x5e444faef5dca572UL, 0x5cb567117c7f1416UL, 0x5b39a4c756163432UL,
    0x59cf8cbbd8e80d2cUL, 0x5875cade5e19c2daUL, 0x572b2de00bcd0885UL, 0x55eea2c3b806e416UL,
    0x54bf311a35ad5024UL, 0x539bf7ccf3c0c65aUL, 0x52842a5ebdee486bUL, 0x51770e8f0d3e8a68UL,
    0x5073fa4ffd466590UL, 0x4f7a5201df6d619aUL, 0x4e8986e9b5e8da5fUL, 0x4da115d9bbb248eaUL,
    0x4cc086049f0380a2UL, 0x4be767f54bf54069UL, 0x4b1554a623909e12UL, 0x4a49ecb34c83d546UL,
    0x4984d7a476bd5204UL, 0x48c5c34af98e29e5UL, 0x480c6331aa3d7517UL, 0x4758701c2b9f4b2eUL,
    0x46a9a793c9ddfbd7UL, 0x45ffcb803b0fb62cUL, 0x455aa1cad7bd863dUL, 0x44b9f40b10094c59UL,
    0x441d8f3b0c2c97ffUL, 0x438543738ad830adUL, 0x42f0e3ae2e904975UL, 0x4260458d85526385UL,
    0x41d3412a2c50debcUL, 0x4149b0e484efe639UL, 0x40c3713a80e9c924UL, 0x404060a119fba2c1UL,
};

/* sqrt(X) in Q29 for X = L 2^-58 (L = -ln u in Q59, so X = -2 ln u).
 * X = 4^j g with g in [1, 4); 1/sqrt(g) from a table guess (error < 2^-6)
 * and three Newton steps y (3 - g y^2) / 2 (error < 2^-43), then g y. */
ulong sqrt_q29(ulong L)
{
    if (L == 0) return 0;
    int e2 = 63 - (int)clz(L) - 58; /* X in [2^e2, 2^(e2+1)) */
    int j = ((e2 + 60) >> 1) - 30;  /* floor(e2 / 2) */
    ulong g = L << (4 - 2 * j);     /* Q62 */
    ulong y = RSQRT_Q63[(g >> 58) - 16];
    for (int it = 0; it < 3; it++) {
        ulong t = ((ulong)3 << 60) - mul_hi(g, mul_hi(y, y)); /* Q60 */
        y = mul_hi(y, t) << 3;
    }
    ulong s = mul_hi(g, y); /* sqrt(g), Q61 */
    int rs = 32 - j;
    return (s + ((ulong)1 << (rs - 1))) >> rs;
}

/* (r cos th, r sin th), r = sqrt(-2 ln((w0 + 1) 2^-32)), th = 2 pi w1 2^-32. */
float2 box_muller_fixed(uint w0, uint w1)
{
    /* -ln u in Q59: u = m 2^-32 = f 2^(e-32) with f in [1, 2);
     * ln f = -ln(R_k) + ln(f R_k), f R_k = 1 + eps, eps in [0, 2^-6). */
    ulong m = (ulong)w0 + 1;
    int e = 63 - (int)clz(m);
    ulong f = m << (62 - e); /* Q62 */
    int k = (int)((f >> 56) & 63);
    ulong u = mul_hi(f, LOG_RECIP_Q63[k]);   /* Q61 */
    ulong eps = (u - ((ulong)1 << 61)) << 3; /* Q64 */
    ulong p = INV9;
    p = INV8 - mul_hi(eps, p);
    p = INV7 - mul_hi(eps, p);
    p = INV6 - mul_hi(eps, p);
    p = INV5 - mul_hi(eps, p);
    p = INV4 - mul_hi(eps, p);
    p = INV3 - mul_hi(eps, p);
    p = INV2 - mul_hi(eps, p);
    p = Q63_ONE - mul_hi(eps, p);
    ulong lnf = LOG_LNR_Q63[k] + mul_hi(eps, p); /* Q63 */
    ulong L = (ulong)(32 - e) * LN2_Q59 - (lnf >> 4);
    ulong r = sqrt_q29(L); /* sqrt(2 L) in Q29 */
    /* cos, sin of the angle within the quadrant: table at k pi/128 and
     * series for the rest d < pi/128, then rotated by the quadrant. */
    uint w = w1 & 0x3FFFFFFFu;
    int ka = (int)(w >> 24);
    ulong d = ((ulong)(w & 0xFFFFFFu) * HALF_PI_Q32) << 2; /* Q64 */
    ulong d2 = mul_hi(d, d);
    ulong ps = INV5040;
    ps = INV120 - mul_hi(d2, ps);
    ps = INV6 - mul_hi(d2, ps);
    ps = Q63_ONE - mul_hi(d2, ps);
    ulong sd = mul_hi(d, ps); /* sin d, Q63 */
    ulong pc = INV720;
    pc = INV24 - mul_hi(d2, pc);
    pc = INV2 - mul_hi(d2, pc);
    ulong cd = Q63_ONE - mul_hi(d2, pc); /* cos d, Q63 */
    ulong ca = mul_hi(COS_Q63[ka], cd), cb = mul_hi(SIN_Q63[ka], sd);
    /* sub_sat, not "ca > cb ? ca - cb : 0": clang turns that into the
     * llvm.usub.sat intrinsic, which Oclgrind cannot run */
    ulong c62 = sub_sat(ca, cb);
    ulong s62 = mul_hi(SIN_Q63[ka], cd) + mul_hi(COS_Q63[ka], sd);
    long c = (long)((c62 + ((ulong)1 << 31)) >> 32), s = (long)((s62 + ((ulong)1 << 31)) >> 32);
    uint q = w1 >> 30;
    long cq = q == 0 ? c : (q == 1 ? -s : (q == 2 ? -c : s));
    long sq = q == 0 ? s : (q == 1 ? c : (q == 2 ? -s : -c));
    return (float2)(q59_to_float((long)r * cq), q59_to_float((long)r * sq));
}

/* The 4 normals of block j of sample index `idx`. */
float4 normal4(uint j, uint idx, uint step, uint stream, uint key0, uint key1)
{
    uint4 o = philox4x32_10((uint4)(j, idx, step, stream), (uint2)(key0, key1));
    float2 a = box_muller_fixed(o.x, o.y);
    float2 b = box_muller_fixed(o.z, o.w);
    return (float4)(a.x, a.y, b.x, b.y);
}

inline float lane(float4 v, int l) { return l == 0 ? v.x : (l == 1 ? v.y : (l == 2 ? v.z : v.w)); }

/* out (n, per) = noise. Items n * ceil(per / 4) (cld__launch_items). */
__kernel void noise_fill(__global float *out, int oo, int n, int per, uint key0, uint key1, uint stream,
                         uint index, uint step)
{
    int nblk = (per + 3) / 4;
    int g = CLD_ITEM;
    if (g >= n * nblk) return;
    int smp = g / nblk, j = g - smp * nblk;
    float4 z = normal4((uint)j, index + (uint)smp, step, stream, key0, key1);
    int base = oo + smp * per + 4 * j;
    for (int l = 0; l < 4 && 4 * j + l < per; l++) out[base + l] = lane(z, l);
}

/* out = w0 v0 + w1 v1 + w2 v2 + w3 v3 + wn z; terms with weight 0 are not
 * read. out may alias any v. Items n * ceil(per / 4) (cld__launch_items). Two kernels:
 * lincomb without the noise term (wn must be 0: the deterministic
 * samplers, whose first run then does not compile the noise generator into
 * it, ~0.2 s on PoCL) and lincomb_noise. */
inline void lincomb_body(__global float *out, int oo, __global const float *v0, int o0, float w0,
                         __global const float *v1, int o1, float w1, __global const float *v2, int o2,
                         float w2, __global const float *v3, int o3, float w3, float wn, int n, int per,
                         uint key0, uint key1, uint stream, uint index, uint step, int noise)
{
    int nblk = (per + 3) / 4;
    int g = CLD_ITEM;
    if (g >= n * nblk) return;
    int smp = g / nblk, j = g - smp * nblk;
    float4 z = (float4)(0.0f);
    if (noise && wn != 0.0f) z = normal4((uint)j, index + (uint)smp, step, stream, key0, key1);
    int base = smp * per + 4 * j;
    for (int l = 0; l < 4 && 4 * j + l < per; l++) {
        int i = base + l;
        float acc = 0.0f;
        if (w0 != 0.0f) acc += w0 * v0[o0 + i];
        if (w1 != 0.0f) acc += w1 * v1[o1 + i];
        if (w2 != 0.0f) acc += w2 * v2[o2 + i];
        if (w3 != 0.0f) acc += w3 * v3[o3 + i];
        if (noise && wn != 0.0f) acc += wn * lane(z, l);
        out[oo + i] = acc;
    }
}

#define LINCOMB_KERNEL(name, noise)                                                                    \
    __kernel void name(__global float *out, int oo, __global const float *v0, int o0, float w0,        \
                       __global const float *v1, int o1, float w1, __global const float *v2, int o2,   \
                       float w2, __global const float *v3, int o3, float w3, float wn, int n, int per, \
                       uint key0, uint key1, uint stream, uint index, uint step)                       \
    {                                                                                                  \
        lincomb_body(out, oo, v0, o0, w0, v1, o1, w1, v2, o2, w2, v3, o3, w3, wn, n, per, key0, key1,  \
                     stream, index, step, noise);                                                      \
    }
LINCOMB_KERNEL(lincomb, 0)
LINCOMB_KERNEL(lincomb_noise, 1)

/* The forward process: x_t = a x0 + b eps, target = tx x0 + te eps with
 * coef (n, 4) = (a, b, tx, te) per sample. Global size n * ceil(per / 4). */
__kernel void q_sample(__global const float *x0, int x0o, __global const float *coef, __global float *xt,
                       int xto, __global float *tgt, int tgto, int has_tgt, int n, int per, uint key0,
                       uint key1, uint stream, uint index, uint step)
{
    int nblk = (per + 3) / 4;
    int g = get_global_id(0);
    if (g >= n * nblk) return;
    int smp = g / nblk, j = g - smp * nblk;
    float4 z = normal4((uint)j, index + (uint)smp, step, stream, key0, key1);
    float a = coef[4 * smp], b = coef[4 * smp + 1], tx = coef[4 * smp + 2], te = coef[4 * smp + 3];
    int base = smp * per + 4 * j;
    for (int l = 0; l < 4 && 4 * j + l < per; l++) {
        int i = base + l;
        float x = x0[x0o + i], e = lane(z, l);
        xt[xto + i] = a * x + b * e;
        if (has_tgt) tgt[tgto + i] = tx * x + te * e;
    }
}

/* x_t of q_sample as an image file holds it: y = x_t / a (the image in [-1, 1]
 * plus noise of std b / a) clipped to [-1, 1] and rounded to one of
 * 2 h + 1 levels (h = 127.5 for 8 bits), x_t = a y; the target recomputed
 * from the effective noise e = (x_t - a x_0) / b. coef (n, 4) = (a, b, tx,
 * te) as for q_sample; a > 0 and b > 0 (the host checks). 1-D over n * per. */
__kernel void q_quantize(__global const float *x0, int x0o, __global const float *coef, __global float *xt,
                         int xto, __global float *tgt, int tgto, int has_tgt, int n, int per, float h)
{
    int i = get_global_id(0);
    if (i >= n * per) return;
    int smp = i / per;
    float a = coef[4 * smp], b = coef[4 * smp + 1], tx = coef[4 * smp + 2], te = coef[4 * smp + 3];
    float x = x0[x0o + i];
    float u = clamp(floor((xt[xto + i] / a + 1.0f) * h + 0.5f), 0.0f, 2.0f * h);
    float q = a * ((u - h) / h); /* u - h is exact: no cancellation near the middle level */
    xt[xto + i] = q;
    if (has_tgt) tgt[tgto + i] = tx * x + te * ((q - a * x) / b);
}

/* out = kx x + kp p with coef (n, 2) = (kx, kp) per sample. 1-D over n * per. */
__kernel void pred_convert(__global const float *x, int xo, __global const float *p, int po,
                           __global const float *coef, __global float *out, int oo, int n, int per)
{
    int i = get_global_id(0);
    if (i >= n * per) return;
    int smp = i / per;
    out[oo + i] = coef[2 * smp] * x[xo + i] + coef[2 * smp + 1] * p[po + i];
}

/* out = clamp(in, -c, c): the clipped x_0 estimate (diffusers' clip_sample). */
__kernel void clip_copy(__global const float *in, int io, __global float *out, int oo, int n, float c)
{
    int i = get_global_id(0);
    if (i < n) out[oo + i] = clamp(in[io + i], -c, c);
}
