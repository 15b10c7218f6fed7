/* The project's one scalar conversion between float32 and float16 /
 * bfloat16 (round to nearest even; a NaN stays a quiet NaN with its high
 * payload bits), header-only so the core (its reference and the host's
 * convert) and plugins whose kernels convert one scale at a time (ggml's
 * block scales, GGUF's Q8_0/Q4_0 reader) use the same code. The host's
 * fast converter (core/parallel.c) is held bit-exact to these. */
#ifndef HVQ_COMMON_F16_H
#define HVQ_COMMON_F16_H

#include <stdint.h>
#include <string.h>

static inline uint32_t hvq_f32_bits_(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float hvq_bits_f32_(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t hvq_f32_to_f16(float f)
{
    uint32_t x = hvq_f32_bits_(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xffu) /* Inf or NaN (keep a quiet NaN bit) */
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) { /* subnormal or zero in f16 */
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t h = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* may carry into the exponent, up to Inf: correct */
    return (uint16_t)(sign | h);
}

static inline float hvq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        if (man == 0)
            return hvq_bits_f32_(sign);
        /* subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return hvq_bits_f32_(sign | 0x7f800000u | (man << 13));
    return hvq_bits_f32_(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

static inline uint16_t hvq_f32_to_bf16(float f)
{
    uint32_t x = hvq_f32_bits_(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
        return (uint16_t)((x >> 16) | 0x40u);
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (uint16_t)(x >> 16);
}

static inline float hvq_bf16_to_f32(uint16_t h) { return hvq_bits_f32_((uint32_t)h << 16); }

#endif
