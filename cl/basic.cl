/* Element-wise kernels. Every buffer argument is followed by its offset in
 * floats. Launched 1-D with local size 64; bounds are checked. */

__kernel void fill(__global float *y, int yo, int n, float v)
{
    int i = get_global_id(0);
    if (i < n) y[yo + i] = v;
}

/* y += alpha * x */
__kernel void axpy(__global float *y, int yo, __global const float *x, int xo, int n, float alpha)
{
    int i = get_global_id(0);
    if (i < n) y[yo + i] += alpha * x[xo + i];
}

/* Index of b for element i of a: mode 0 same shape, 1 per (n,c) row of
 * `inner` elements, 2 per channel c of C (over batch and space). */
inline int bidx(int i, int mode, int inner, int C)
{
    return mode == 0 ? i : (mode == 1 ? i / inner : (i / inner) % C);
}

__kernel void add(__global const float *a, int ao, __global const float *b, int bo,
                  __global float *y, int yo, int n, int mode, int inner, int C)
{
    int i = get_global_id(0);
    if (i < n) y[yo + i] = a[ao + i] + b[bo + bidx(i, mode, inner, C)];
}

__kernel void mul(__global const float *a, int ao, __global const float *b, int bo,
                  __global float *y, int yo, int n, int mode, int inner, int C)
{
    int i = get_global_id(0);
    if (i < n) y[yo + i] = a[ao + i] * b[bo + bidx(i, mode, inner, C)];
}

__kernel void scale(__global const float *x, int xo, __global float *y, int yo, int n, float alpha)
{
    int i = get_global_id(0);
    if (i < n) y[yo + i] = alpha * x[xo + i];
}

/* y = x * sigmoid(x) */
__kernel void silu_fwd(__global const float *x, int xo, __global float *y, int yo, int n)
{
    int i = get_global_id(0);
    if (i < n) {
        float v = x[xo + i];
        y[yo + i] = v / (1.0f + exp(-v));
    }
}

/* dx = dy * s * (1 + x (1 - s)), s = sigmoid(x) */
__kernel void silu_bwd(__global const float *x, int xo, __global const float *dy, int dyo,
                       __global float *dx, int dxo, int n)
{
    int i = get_global_id(0);
    if (i < n) {
        float v = x[xo + i];
        float s = 1.0f / (1.0f + exp(-v));
        dx[dxo + i] = dy[dyo + i] * s * (1.0f + v * (1.0f - s));
    }
}

/* Sum of x (N, C, inner) (optionally times w, same shape) to mode 1: (N, C)
 * or mode 2: (C). One work-group of 64 per output. */
__kernel void reduce_rows(__global const float *x, int xo, __global const float *w, int wo, int use_w,
                          __global float *y, int yo, int N, int C, int inner, int mode)
{
    __local float part[64];
    int o = get_group_id(0);
    int l = get_local_id(0);
    float acc = 0.0f;
    int nrows = mode == 1 ? 1 : N;
    for (int r = 0; r < nrows; r++) {
        int row = mode == 1 ? o : r * C + o;
        int base = row * inner;
        for (int j = l; j < inner; j += 64) {
            float v = x[xo + base + j];
            if (use_w) v *= w[wo + base + j];
            acc += v;
        }
    }
    part[l] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = 32; s > 0; s >>= 1) {
        if (l < s) part[l] += part[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) y[yo + o] = part[0];
}
