/* Embeddings and dropout. Every buffer argument is followed by its offset in
 * floats. Launched by cld__launch1d over n items (here: elements), any
 * geometry, walked with FOR_ITEMS (cl/prelude.cl). */

#if defined(cl_khr_fp64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#define TS_REAL double
#else
#define TS_REAL float
#endif

/* Sinusoidal timestep embedding, t (N) -> y (N, dim), DDPM style:
 * y[n, j] = sin(t_n f_j) for j < nh, cos(t_n f_{j-nh}) for nh <= j < 2 nh (nh = dim / 2),
 * 0 for the pad column of an odd dim; f_i = exp(-ln(10000) i / (nh - 1)).
 * The argument t f reaches ~1000 rad, where float rounding of f and of the
 * product costs ~1e-4 absolute; devices with fp64 compute it in double. */
__kernel void timestep_embedding(__global const float *t, int to, __global float *y, int yo, int N, int dim)
{
    FOR_ITEMS(i, N * dim)
    {
        int n = i / dim, j = i % dim;
        int nh = dim / 2;
        if (j >= 2 * nh) {
            y[yo + i] = 0.0f;
            continue;
        }
        int k = j < nh ? j : j - nh;
        int den = nh > 1 ? nh - 1 : 1;
        TS_REAL f = exp(-(TS_REAL)9.210340371976184 * (TS_REAL)k / (TS_REAL)den); /* ln(10000) */
        TS_REAL a = (TS_REAL)t[to + n] * f;
        y[yo + i] = (float)(j < nh ? sin(a) : cos(a));
    }
}

/* The same embedding as diffusers' get_timestep_embedding computes it in
 * float32 (torch): e_k = (-ln(10000) k) / (nh - shift) in float, f_k =
 * exp(e_k) rounded to float, a = t f_k in float, then sin and cos of that
 * float (in double where available, so the result is the correctly rounded
 * float torch's sinf gives). flip: [cos, sin] instead of [sin, cos]. */
__kernel void timestep_embedding_torch(__global const float *t, int to, __global float *y, int yo, int N,
                                       int dim, int flip, float shift)
{
    FOR_ITEMS(i, N * dim)
    {
        int n = i / dim, j = i % dim;
        int nh = dim / 2;
        if (j >= 2 * nh) {
            y[yo + i] = 0.0f;
            continue;
        }
        int k = j < nh ? j : j - nh;
        int first = j < nh; /* first half: sin, or cos when flipped */
        float e = (-9.2103404f * (float)k) / ((float)nh - shift);
        float f = (float)exp((TS_REAL)e);
        float a = t[to + n] * f;
        int use_sin = flip ? !first : first;
        y[yo + i] = (float)(use_sin ? sin((TS_REAL)a) : cos((TS_REAL)a));
    }
}

/* Row index of a label stored as float: nearest integer, or -1 if it is
 * outside [0, R) or NaN (such rows read nothing and give zeros). */
inline int label_row(float v, int R)
{
    float r = rint(v);
    return (r >= 0.0f && r < (float)R) ? (int)r : -1;
}

/* y (N, D) = table[labels[n], :] with table (R, D). */
__kernel void embedding_fwd(__global const float *table, int tbo, __global const float *labels, int lo,
                            __global float *y, int yo, int N, int R, int D)
{
    FOR_ITEMS(i, N * D)
    {
        int n = i / D, d = i % D;
        int r = label_row(labels[lo + n], R);
        y[yo + i] = r >= 0 ? table[tbo + r * D + d] : 0.0f;
    }
}

/* dtable (R, D): one work-item per (r, d) sums dy[n, d] over the labels
 * equal to r, in order of n (no atomics, deterministic). */
__kernel void embedding_bwd(__global const float *labels, int lo, __global const float *dy, int dyo,
                            __global float *dt, int dto, int N, int R, int D)
{
    FOR_ITEMS(i, R * D)
    {
        int r = i / D, d = i % D;
        float acc = 0.0f;
        for (int n = 0; n < N; n++)
            if (label_row(labels[lo + n], R) == r) acc += dy[dyo + n * D + d];
        dt[dto + i] = acc;
    }
}

/* Counter-based hash of (seed, node, element) -> uniform [0, 1) with 24 bits
 * (splitmix64 finaliser), for the 4 elements i, i+1, i+2, i+3 at once.
 * Mirrored bit for bit by the C reference in test/test_ops_embed.c: change
 * both together. */
inline float4 dropout_uniform4(ulong seed, uint node, uint i)
{
    ulong4 z = (ulong4)(seed ^ (0xD1B54A32D192ED03UL * ((ulong)node + 1UL)));
    z += 0x9E3779B97F4A7C15UL * ((ulong)i + (ulong4)(1UL, 2UL, 3UL, 4UL));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
    z ^= z >> 31;
    return convert_float4(convert_uint4(z >> 40)) * (1.0f / 16777216.0f);
}

/* Inverted dropout: y = x * scale where u(seed, node, i) >= p, else 0.
 * The backward pass runs the same kernel on dy with the forward node id.
 * Items: chunks of 8 elements (the last may be partial), hashed in vectors:
 * explicit vector code stays fast when y is x (the op runs in place). */
__kernel void dropout(__global const float *x, int xo, __global float *y, int yo, int n, float p, float scale,
                      ulong seed, uint node)
{
    FOR_ITEMS(k, (n + 7) / 8)
    {
        int i = 8 * k, c = min(8, n - i);
        float8 u =
            (float8)(dropout_uniform4(seed, node, (uint)i), dropout_uniform4(seed, node, (uint)i + 4u));
        if (c == 8) {
            float8 v = vload8(0, x + xo + i) * scale;
            vstore8(select((float8)(0.0f), v, u >= p), 0, y + yo + i);
        } else {
            float t[8];
            vstore8(u, 0, t);
            for (int j = 0; j < c; j++) y[yo + i + j] = t[j] >= p ? x[xo + i + j] * scale : 0.0f;
        }
    }
}
