/*
 * quant_write.h — float -> ggml block quantizers (reference-style, round to
 * nearest; no importance matrix, no search) plus f16/bf16 conversions. Used by
 * the GGUF synthesizer; backends dequantize with their own code and test
 * against these encoders.
 *
 * Block layouts (little-endian; "f16" is IEEE binary16; x[i] the i-th of a
 * block's elements; dequantized value y[i]). QK_K = 256.
 *
 *   Q8_0  (32 elems, 34 B):  f16 d; int8 qs[32].            y[i] = d * qs[i]
 *   Q4_0  (32 elems, 18 B):  f16 d; u8 qs[16].
 *         q[i] = qs[i] & 0xF and q[i+16] = qs[i] >> 4 (i < 16).  y = d * (q - 8)
 *   Q4_1  (32 elems, 20 B):  f16 d; f16 m; u8 qs[16]; nibbles as Q4_0.  y = d * q + m
 *   Q5_0  (32 elems, 22 B):  f16 d; u8 qh[4] (one u32 LE); u8 qs[16].
 *         low 4 bits as Q4_0; bit 4 of q[i] is bit i of qh (i < 32).     y = d * (q - 16)
 *   Q5_1  (32 elems, 24 B):  f16 d; f16 m; u8 qh[4]; u8 qs[16]; as Q5_0.  y = d * q + m
 *
 *   Q4_K  (256 elems, 144 B): f16 d; f16 dmin; u8 scales[12]; u8 qs[128].
 *         8 sub-blocks j of 32 elements, 6-bit scale sc[j] and min mn[j]:
 *           j < 4:  sc = scales[j] & 63;           mn = scales[j+4] & 63
 *           j >= 4: sc = (scales[j+4] & 0xF) | ((scales[j-4] >> 6) << 4)
 *                   mn = (scales[j+4] >> 4)  | ((scales[j]   >> 6) << 4)
 *         Elements 64*p + l (p < 4, l < 32): q = qs[32*p + l] & 0xF (sub-block 2p),
 *         elements 64*p + 32 + l: q = qs[32*p + l] >> 4 (sub-block 2p+1).
 *         y = d * sc[j] * q - dmin * mn[j]
 *   Q5_K  (256 elems, 176 B): f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128].
 *         scales and low nibbles as Q4_K; bit 4 of element 64*p + l is bit 2p of
 *         qh[l], of element 64*p + 32 + l bit 2p+1 of qh[l].  q in 0..31.
 *         y = d * sc[j] * q - dmin * mn[j]
 *   Q6_K  (256 elems, 210 B): u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d.
 *         Halves h < 2 of 128 elements, l < 32, with ql' = ql + 64h, qh' = qh + 32h:
 *           e = 128h + l      : q = (ql'[l]    & 0xF) | (((qh'[l] >> 0) & 3) << 4)
 *           e = 128h + l + 32 : q = (ql'[l+32] & 0xF) | (((qh'[l] >> 2) & 3) << 4)
 *           e = 128h + l + 64 : q = (ql'[l]    >> 4)  | (((qh'[l] >> 4) & 3) << 4)
 *           e = 128h + l + 96 : q = (ql'[l+32] >> 4)  | (((qh'[l] >> 6) & 3) << 4)
 *         y = d * scales[e / 16] * (q - 32)
 *
 *   F16 / BF16: one u16 per element; F32: one float.
 */
#ifndef AARMD_QUANT_WRITE_H
#define AARMD_QUANT_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* IEEE binary16 <-> float, round to nearest even; inf/NaN preserved. */
uint16_t aarmd_fp32_to_fp16(float f);
float aarmd_fp16_to_fp32(uint16_t h);
/* bfloat16 <-> float, round to nearest even; NaN stays NaN. */
uint16_t aarmd_fp32_to_bf16(float f);
float aarmd_bf16_to_fp32(uint16_t h);

/* True for the types aarmd_quantize_row can write: F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. */
bool aarmd_quant_can_write(uint32_t type);

/*
 * Encodes n floats of `src` as `type` into dst (which must hold
 * n / block_elems * block_bytes bytes). AARMD_EINVAL when the type is not
 * writable or n is not a multiple of the block size. Non-finite input is
 * the caller's problem (the output is then unspecified but in bounds).
 */
int aarmd_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

#endif
