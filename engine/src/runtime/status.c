/* Status codes, the thread-local last-error message, OpenCL error names, and
 * the deterministic host RNG. */
#include "internal.h"

#include <math.h>
#include <string.h>

static _Thread_local char last_error[4096];

cld_status cld__fail(cld_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

cld_status cld__cl_check(cl_int err, const char *what)
{
    if (err == CL_SUCCESS) return CLD_OK;
    return cld__fail(CLD_ERR_OPENCL, "%s: %s (%d)", what ? what : "OpenCL call", cld_cl_error_name(err),
                     (int)err);
}

const char *cld_last_error(void) { return last_error; }

const char *cld_status_name(cld_status s)
{
    switch (s) {
    case CLD_OK: return "CLD_OK";
    case CLD_ERR_INVALID_ARG: return "CLD_ERR_INVALID_ARG";
    case CLD_ERR_NO_PLATFORM: return "CLD_ERR_NO_PLATFORM";
    case CLD_ERR_NO_DEVICE: return "CLD_ERR_NO_DEVICE";
    case CLD_ERR_OPENCL: return "CLD_ERR_OPENCL";
    case CLD_ERR_BUILD: return "CLD_ERR_BUILD";
    case CLD_ERR_COMPILE_FORBIDDEN: return "CLD_ERR_COMPILE_FORBIDDEN";
    case CLD_ERR_IO: return "CLD_ERR_IO";
    case CLD_ERR_FORMAT: return "CLD_ERR_FORMAT";
    case CLD_ERR_SHAPE: return "CLD_ERR_SHAPE";
    case CLD_ERR_NOMEM: return "CLD_ERR_NOMEM";
    case CLD_ERR_STATE: return "CLD_ERR_STATE";
    case CLD_ERR_BLAS: return "CLD_ERR_BLAS";
    }
    return "CLD_ERR_UNKNOWN";
}

const char *cld_cl_error_name(cl_int err)
{
    switch (err) {
        // clang-format off
#define E(name, code) case code: return #name;
    E(CL_SUCCESS, 0)
    E(CL_DEVICE_NOT_FOUND, -1)
    E(CL_DEVICE_NOT_AVAILABLE, -2)
    E(CL_COMPILER_NOT_AVAILABLE, -3)
    E(CL_MEM_OBJECT_ALLOCATION_FAILURE, -4)
    E(CL_OUT_OF_RESOURCES, -5)
    E(CL_OUT_OF_HOST_MEMORY, -6)
    E(CL_PROFILING_INFO_NOT_AVAILABLE, -7)
    E(CL_MEM_COPY_OVERLAP, -8)
    E(CL_IMAGE_FORMAT_MISMATCH, -9)
    E(CL_IMAGE_FORMAT_NOT_SUPPORTED, -10)
    E(CL_BUILD_PROGRAM_FAILURE, -11)
    E(CL_MAP_FAILURE, -12)
    E(CL_MISALIGNED_SUB_BUFFER_OFFSET, -13)
    E(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST, -14)
    E(CL_COMPILE_PROGRAM_FAILURE, -15)
    E(CL_LINKER_NOT_AVAILABLE, -16)
    E(CL_LINK_PROGRAM_FAILURE, -17)
    E(CL_DEVICE_PARTITION_FAILED, -18)
    E(CL_KERNEL_ARG_INFO_NOT_AVAILABLE, -19)
    E(CL_INVALID_VALUE, -30)
    E(CL_INVALID_DEVICE_TYPE, -31)
    E(CL_INVALID_PLATFORM, -32)
    E(CL_INVALID_DEVICE, -33)
    E(CL_INVALID_CONTEXT, -34)
    E(CL_INVALID_QUEUE_PROPERTIES, -35)
    E(CL_INVALID_COMMAND_QUEUE, -36)
    E(CL_INVALID_HOST_PTR, -37)
    E(CL_INVALID_MEM_OBJECT, -38)
    E(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR, -39)
    E(CL_INVALID_IMAGE_SIZE, -40)
    E(CL_INVALID_SAMPLER, -41)
    E(CL_INVALID_BINARY, -42)
    E(CL_INVALID_BUILD_OPTIONS, -43)
    E(CL_INVALID_PROGRAM, -44)
    E(CL_INVALID_PROGRAM_EXECUTABLE, -45)
    E(CL_INVALID_KERNEL_NAME, -46)
    E(CL_INVALID_KERNEL_DEFINITION, -47)
    E(CL_INVALID_KERNEL, -48)
    E(CL_INVALID_ARG_INDEX, -49)
    E(CL_INVALID_ARG_VALUE, -50)
    E(CL_INVALID_ARG_SIZE, -51)
    E(CL_INVALID_KERNEL_ARGS, -52)
    E(CL_INVALID_WORK_DIMENSION, -53)
    E(CL_INVALID_WORK_GROUP_SIZE, -54)
    E(CL_INVALID_WORK_ITEM_SIZE, -55)
    E(CL_INVALID_GLOBAL_OFFSET, -56)
    E(CL_INVALID_EVENT_WAIT_LIST, -57)
    E(CL_INVALID_EVENT, -58)
    E(CL_INVALID_OPERATION, -59)
    E(CL_INVALID_GL_OBJECT, -60)
    E(CL_INVALID_BUFFER_SIZE, -61)
    E(CL_INVALID_MIP_LEVEL, -62)
    E(CL_INVALID_GLOBAL_WORK_SIZE, -63)
    E(CL_INVALID_PROPERTY, -64)
    E(CL_INVALID_IMAGE_DESCRIPTOR, -65)
    E(CL_INVALID_COMPILER_OPTIONS, -66)
    E(CL_INVALID_LINKER_OPTIONS, -67)
    E(CL_INVALID_DEVICE_PARTITION_COUNT, -68)
    /* Extensions an ICD loader or driver may return. */
    E(CL_PLATFORM_NOT_FOUND_KHR, -1001)
#undef E
    }
    // clang-format on
    return "CL_UNKNOWN_ERROR";
}

/* ---------------------------------------------------------------- RNG */
uint64_t cld__splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double cld__rand_uniform(uint64_t *state)
{
    /* Top 53 bits -> [0, 1). */
    return (double)(cld__splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
}

double cld__rand_normal(uint64_t *state)
{
    /* Box-Muller; one value per call keeps the stream stateless beyond `state`. */
    double u1 = 1.0 - cld__rand_uniform(state); /* (0, 1]: log is finite */
    double u2 = cld__rand_uniform(state);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}
