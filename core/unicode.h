/*
 * unicode.h — the few UTF-8 facts the tokenizers need: decoding one code
 * point, encoding one, repairing invalid input, and GPT-2's byte <-> code
 * point map. No tables of Unicode properties: those come from PCRE2.
 */
#ifndef AARMD_UNICODE_H
#define AARMD_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Length of the UTF-8 sequence a lead byte announces, from its high nibble
 * (1 for ASCII and for stray continuation bytes, 2, 3 or 4); never checks
 * what follows. This is how llama.cpp cuts text into symbols. */
size_t aarmd_utf8_len(unsigned char lead);

/* Decodes one well-formed code point at s[0..n). Returns its length (1..4)
 * and stores the code point, or 0 when the bytes there are not valid UTF-8
 * (bad lead, bad or missing continuation, overlong, surrogate, > U+10FFFF). */
size_t aarmd_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* Writes the UTF-8 of cp (<= U+10FFFF) to out (4 bytes of room); returns 1..4. */
size_t aarmd_utf8_encode(uint32_t cp, char *out);

/* True when s[0..n) is entirely valid UTF-8. */
int aarmd_utf8_valid(const char *s, size_t n);

/* Copies s[0..n) to out with every byte that does not start a valid sequence
 * replaced by U+FFFD (3 bytes), like llama.cpp's unicode_cpts_from_utf8.
 * out must have room for 3*n bytes; returns the bytes written. */
size_t aarmd_utf8_repair(const char *s, size_t n, char *out);

/* GPT-2's byte-level alphabet: byte b -> the UTF-8 of its stand-in code point
 * (printable bytes map to themselves, the rest to U+0100..U+0143). Writes 1 or
 * 2 bytes to out and returns the count. */
size_t aarmd_gpt2_byte_to_utf8(unsigned char b, char *out);
/* The inverse for one code point: the byte, or -1 when cp is not in the alphabet. */
int aarmd_gpt2_cp_to_byte(uint32_t cp);

#endif
