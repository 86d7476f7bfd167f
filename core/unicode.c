/*
 * unicode.c — UTF-8 coding and GPT-2's byte alphabet for the tokenizers.
 * Character classes (letters, numbers, spaces) are PCRE2's business, not this file's.
 */
#include "config.h"

#include <string.h>

#include "unicode.h"

size_t aarmd_utf8_len(unsigned char lead)
{
    static const unsigned char lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[lead >> 4];
}

size_t aarmd_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (n == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2; v = c & 0x1F; min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3; v = c & 0x0F; min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4; v = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

size_t aarmd_utf8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int aarmd_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = aarmd_utf8_decode(u + i, n - i, &cp);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

size_t aarmd_utf8_repair(const char *s, size_t n, char *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            out[o++] = (char)u[i++];
            continue;
        }
        uint32_t cp;
        size_t k = aarmd_utf8_decode(u + i, n - i, &cp);
        if (k == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, u + i, k);
            o += k;
            i += k;
        }
    }
    return o;
}

/* Bytes GPT-2 keeps as themselves: '!'..'~', 0xA1..0xAC, 0xAE..0xFF. */
static int gpt2_is_direct(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

static uint32_t gpt2_cp_of_byte(unsigned char b)
{
    if (gpt2_is_direct(b))
        return b;
    /* The others get 256, 257, ... in byte order. */
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++)
        if (!gpt2_is_direct(i))
            n++;
    return 256 + n;
}

size_t aarmd_gpt2_byte_to_utf8(unsigned char b, char *out)
{
    return aarmd_utf8_encode(gpt2_cp_of_byte(b), out);
}

int aarmd_gpt2_cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return gpt2_is_direct(cp) ? (int)cp : -1;
    if (cp >= 256 + 68)
        return -1;
    uint32_t n = 0;
    for (unsigned i = 0; i < 256; i++) {
        if (!gpt2_is_direct(i)) {
            if (256 + n == cp)
                return (int)i;
            n++;
        }
    }
    return -1;
}
