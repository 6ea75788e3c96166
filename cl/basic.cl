/* Element-wise kernels. Every buffer argument is followed by its offset in
 * floats.
 *
 * Launched by cld__launch1d over n items, any geometry, walked with FOR_ITEMS
 * (cl/prelude.cl). Here an item is a chunk of 8 floats (float8 math; the last chunk of an
 * array may be partial): n floats are ceil(n / 8) items. */

/* for each chunk of 8 floats of [0, n): i its first index, c = min(8, n - i) */
#define FOR_CHUNKS(i, c, n)      \
    FOR_ITEMS(k_, ((n) + 7) / 8) \
    for (int i = 8 * k_, c = min(8, (n)-i), once_ = 1; once_; once_ = 0)

/* c <= 8 floats at p as a float8 (zeros past c), and back */
inline float8 ld8(__global const float *p, int c)
{
    if (c == 8) return vload8(0, p);
    float t[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int j = 0; j < c; j++) t[j] = p[j];
    return vload8(0, t);
}

inline void st8(float8 v, __global float *p, int c)
{
    if (c == 8) {
        vstore8(v, 0, p);
        return;
    }
    float t[8];
    vstore8(v, 0, t);
    for (int j = 0; j < c; j++) p[j] = t[j];
}

__kernel void fill(__global float *y, int yo, int n, float v)
{
    FOR_CHUNKS(i, c, n) st8((float8)(v), y + yo + i, c);
}

/* y += alpha * x */
__kernel void axpy(__global float *y, int yo, __global const float *x, int xo, int n, float alpha)
{
    FOR_CHUNKS(i, c, n) st8(ld8(y + yo + i, c) + alpha * ld8(x + xo + i, c), y + yo + i, c);
}

/* The 8 (or c) values of b for elements i.. of a: mode 0 same shape, 1 per
 * (n,c) row of `inner` elements, 2 per channel c of C (over batch and space). */
inline float8 bcast8(__global const float *b, int i, int c, int mode, int inner, int C)
{
    if (mode == 0) return ld8(b, c);
    int r0 = i / inner, r1 = (i + c - 1) / inner;
    if (r0 == r1) return (float8)(b[mode == 1 ? r0 : r0 % C]);
    float t[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (int j = 0; j < c; j++) {
        int r = (i + j) / inner;
        t[j] = b[mode == 1 ? r : r % C];
    }
    return vload8(0, t);
}

__kernel void add(__global const float *a, int ao, __global const float *b, int bo, __global float *y, int yo,
                  int n, int mode, int inner, int C)
{
    FOR_CHUNKS(i, c, n)
    st8(ld8(a + ao + i, c) + bcast8(b + bo + (mode == 0 ? i : 0), i, c, mode, inner, C), y + yo + i, c);
}

__kernel void mul(__global const float *a, int ao, __global const float *b, int bo, __global float *y, int yo,
                  int n, int mode, int inner, int C)
{
    FOR_CHUNKS(i, c, n)
    st8(ld8(a + ao + i, c) * bcast8(b + bo + (mode == 0 ? i : 0), i, c, mode, inner, C), y + yo + i, c);
}

__kernel void scale(__global const float *x, int xo, __global float *y, int yo, int n, float alpha)
{
    FOR_CHUNKS(i, c, n) st8(alpha * ld8(x + xo + i, c), y + yo + i, c);
}

/* y = x * sigmoid(x) */
__kernel void silu_fwd(__global const float *x, int xo, __global float *y, int yo, int n)
{
    FOR_CHUNKS(i, c, n)
    {
        float8 v = ld8(x + xo + i, c);
        st8(v / (1.0f + exp(-v)), y + yo + i, c);
    }
}

/* dx = dy * s * (1 + x (1 - s)), s = sigmoid(x) */
__kernel void silu_bwd(__global const float *x, int xo, __global const float *dy, int dyo, __global float *dx,
                       int dxo, int n)
{
    FOR_CHUNKS(i, c, n)
    {
        float8 v = ld8(x + xo + i, c);
        float8 s = 1.0f / (1.0f + exp(-v));
        st8(ld8(dy + dyo + i, c) * s * (1.0f + v * (1.0f - s)), dx + dxo + i, c);
    }
}

/* Sum of x (N, C, inner) (optionally times w, same shape) to mode 1: (N, C)
 * or mode 2: (C). One work-group per output, of any power-of-two size
 * (the host picks 1 on CPUs, 64 elsewhere); `part` holds one float per
 * work-item. Each work-item walks its rows in float8 chunks. */
__kernel void reduce_rows(__global const float *x, int xo, __global const float *w, int wo, int use_w,
                          __global float *y, int yo, int N, int C, int inner, int mode, __local float *part)
{
    int o = get_group_id(0), l = get_local_id(0), ls = get_local_size(0);
    int nrows = mode == 1 ? 1 : N, i8 = inner & ~7;
    float8 acc8 = (float8)(0.0f);
    float acc = 0.0f;
    for (int r = 0; r < nrows; r++) {
        int base = (mode == 1 ? o : r * C + o) * inner;
        __global const float *px = x + xo + base, *pw = w + wo + base;
        for (int j = 8 * l; j < i8; j += 8 * ls) {
            float8 v = vload8(0, px + j);
            acc8 += use_w ? v * vload8(0, pw + j) : v;
        }
        for (int j = i8 + l; j < inner; j += ls) acc += use_w ? px[j] * pw[j] : px[j];
    }
    float4 a4 = acc8.lo + acc8.hi;
    float2 a2 = a4.lo + a4.hi;
    part[l] = acc + (a2.x + a2.y);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ls / 2; s > 0; s >>= 1) {
        if (l < s) part[l] += part[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) y[yo + o] = part[0];
}
