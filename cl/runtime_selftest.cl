/* Trivial kernels for the runtime tests (test/test_runtime.c). */

/* x[i] = value for i < n. */
__kernel void fill(__global float *x, const float value, const uint n)
{
    const uint i = get_global_id(0);
    if (i < n) x[i] = value;
}

/* y[i] = a * x[i] + y[i] for i < n. */
__kernel void axpy(__global const float *x, __global float *y, const float a, const uint n)
{
    const uint i = get_global_id(0);
    if (i < n) y[i] = a * x[i] + y[i];
}

/* The prelude's exp (cl/prelude.cl) on n = 8k inputs: y = cld_exp8 of x in
 * float8 chunks, z = the scalar cld_exp. */
__kernel void prelude_exp(__global const float *x, __global float *y, __global float *z, const int n8)
{
    const int i = get_global_id(0);
    if (i >= n8) return;
    vstore8(cld_exp8(vload8(i, x)), i, y);
    for (int l = 0; l < 8; l++) z[8 * i + l] = cld_exp(x[8 * i + l]);
}
