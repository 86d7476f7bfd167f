/*
 * pretokenize.c — tokenizer.ggml.pre names -> split regexes (the table of
 * llama.cpp's llama-vocab.cpp, facts only) and the PCRE2 splitting loop.
 * It does not byte-encode or merge: that is tokenizer_bpe.c.
 */
#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"
#include "log.h"
#include "pretokenize.h"

#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

/* GPT-2's own regex; llama.cpp runs it through a hand-written matcher that
 * behaves like this regex followed by |\s+ (which the gap rule gives us anyway). */
#define R_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define R_LLAMA3 CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define R_QWEN2 CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define R_QWEN35 CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define R_PORO " ?[^(\\s|.,!?…。，、।۔،)]+"
#define R_UPPER_LOWER_1 "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
#define R_UPPER_LOWER_2 "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
#define R_TEKKEN R_UPPER_LOWER_1 "|" R_UPPER_LOWER_2 "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define R_GPT4O R_UPPER_LOWER_1 CONTRACTIONS "?|" R_UPPER_LOWER_2 CONTRACTIONS "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define R_DEEPSEEK3 "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* llama.cpp's Kimi-K2 matcher is hand-written; this is the regex it implements
 * (its Han test is a fixed list of CJK blocks, not the Unicode Han script). */
#define HAN "\\x{4E00}-\\x{9FFF}\\x{3400}-\\x{4DBF}\\x{20000}-\\x{2A6DF}\\x{2A700}-\\x{2B73F}\\x{2B740}-\\x{2B81F}" \
            "\\x{2B820}-\\x{2CEAF}\\x{2CEB0}-\\x{2EBEF}\\x{F900}-\\x{FAFF}\\x{2F800}-\\x{2FA1F}"
#define R_KIMI "[" HAN "]+|[^\\r\\n\\p{L}\\p{N}]?(?:(?![" HAN "])\\p{L})+" CONTRACTIONS "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

#define MAX_REGEX 6

struct pretok_family {
    const char *names;   /* space-separated names */
    bool ignore_merges, add_bos, no_bos;
    const char *regex[MAX_REGEX];
};

static const struct pretok_family families[] = {
    {"default", false, false, false,
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", R_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert exaone4 "
     "jina-v1-en jina-v2-code roberta-bpe mpt olmo jais trillion granite-docling",
     false, false, false, {R_GPT2}},
    {"llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano", true, true, false, {R_LLAMA3}},
    {"dbrx smaug-bpe", false, false, false, {R_LLAMA3}},
    {"glm4 chatglm-bpe", false, false, true, {R_LLAMA3}},
    {"deepseek-llm", false, false, false,
     {"[\r\n]",
      "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\\x{1F7D}ᾀ-ᾴᾶ-ᾼ\\x{1FBE}ῂ-ῄῆ-ῌῐ-\\x{1FD3}ῖ-\\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\\x{2126}ℨ\\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
      "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
      "\\s+$",
      "[一-龥ࠀ-一가-퟿]+",
      "\\p{N}+"}},
    {"deepseek-coder", false, false, false,
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}},
    {"deepseek-v3 hunyuan-dense joyai-llm hy_v4", false, false, false,
     {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", R_DEEPSEEK3}},
    {"falcon", false, false, false,
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+", R_GPT2, "[0-9][0-9][0-9]"}},
    {"starcoder refact command-r smollm codeshell exaone minerva-7b mellum2", false, false, false,
     {"\\p{N}", R_GPT2}},
    {"qwen2 deepseek-r1-qwen kormo f2llmv2 megrez stablelm2 hunyuan solar-open grok-2", false, false, false,
     {R_QWEN2}},
    {"qwen35", false, false, false, {R_QWEN35}},
    {"poro-chat bloom gpt3-finnish", false, false, false, {R_PORO}},
    {"viking", false, false, false, {R_PORO, "\\p{N}"}},
    {"tekken", true, true, false, {R_TEKKEN}},
    {"chameleon", false, true, false,
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", R_GPT2}},
    {"gpt-4o llama4 kanana2 talkie minimax-m2", false, false, false, {R_GPT4O}},
    {"kimi-k2", false, false, false, {R_KIMI}},
    {"superbpe", false, false, false, {"\\p{N}+", "(?=(\\d{3})+(?!\\d))"}},
    {"bailingmoe bailingmoe2 llada-moe", false, false, false,
     {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}},
    {"seed-coder", false, false, false,
     {CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
    {"minicpm5", true, false, false,
     {"\\p{N}{1,3}",
      CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
};

struct aarmd_pretok {
    size_t n;
    pcre2_code *code[MAX_REGEX];
};

static bool name_in(const char *names, const char *name)
{
    size_t len = strlen(name);
    const char *p = names;
    while (*p) {
        const char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == len && !memcmp(p, name, len))
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

int aarmd_pretok_new_regexes(const char *const *regexes, size_t n, struct aarmd_pretok **out,
                             char *err, size_t errlen)
{
    *out = NULL;
    if (n > MAX_REGEX) {
        snprintf(err, errlen, "pre-tokenizer: %zu regexes, at most %d supported", n, MAX_REGEX);
        return AARMD_EUNSUPPORTED;
    }
    struct aarmd_pretok *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "pre-tokenizer: out of memory");
        return AARMD_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        int ec;
        PCRE2_SIZE eoff;
        /* DOLLAR_ENDONLY: "$" means the end of the piece, as in std::regex. */
        p->code[i] = pcre2_compile((PCRE2_SPTR)regexes[i], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_NO_UTF_CHECK,
                                   &ec, &eoff, NULL);
        if (!p->code[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            snprintf(err, errlen, "pre-tokenizer regex '%s': offset %zu: %s", regexes[i], (size_t)eoff,
                     (const char *)msg);
            p->n = i;
            aarmd_pretok_free(p);
            return AARMD_EINVAL;
        }
        /* JIT is an optimisation only; the interpreter gives the same matches. */
        (void)pcre2_jit_compile(p->code[i], PCRE2_JIT_COMPLETE);
    }
    p->n = n;
    *out = p;
    return AARMD_OK;
}

int aarmd_pretok_new(const char *name, struct aarmd_pretok **out, struct aarmd_pretok_info *info,
                     char *err, size_t errlen)
{
    if (!name || !*name)
        name = "default";
    const struct pretok_family *fam = NULL;
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        if (name_in(families[i].names, name)) {
            fam = &families[i];
            break;
        }
    }
    bool known = fam != NULL;
    if (!fam) {
        aarmd_log(AARMD_LOG_WARN, "tokenizer_pre_unknown",
                  "unknown tokenizer.ggml.pre '%s': using the gpt-2 pre-tokenizer", name);
        fam = &families[1];
    }
    size_t n = 0;
    while (n < MAX_REGEX && fam->regex[n])
        n++;
    int rc = aarmd_pretok_new_regexes(fam->regex, n, out, err, errlen);
    if (rc == AARMD_OK && info) {
        info->known = known;
        info->ignore_merges = fam->ignore_merges;
        info->add_bos = fam->add_bos;
        info->no_bos = fam->no_bos;
    }
    return rc;
}

void aarmd_pretok_free(struct aarmd_pretok *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        pcre2_code_free(p->code[i]);
    free(p);
}

size_t aarmd_pretok_n_regexes(const struct aarmd_pretok *p)
{
    return p->n;
}

void aarmd_pretok_scratch_fini(struct aarmd_pretok_scratch *s)
{
    if (!s)
        return;
    free(s->a);
    free(s->b);
    pcre2_match_data_free(s->match_data);
    memset(s, 0, sizeof *s);
}

static int push_span(struct aarmd_span **v, size_t *n, size_t *cap, size_t off, size_t len)
{
    if (len == 0)
        return 0;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        struct aarmd_span *nv = realloc(*v, nc * sizeof *nv);
        if (!nv)
            return -1;
        *v = nv;
        *cap = nc;
    }
    (*v)[*n].off = off;
    (*v)[(*n)++].len = len;
    return 0;
}

/* Length of the UTF-8 character at s (valid input assumed). */
static size_t char_len(const unsigned char *s, size_t avail)
{
    size_t l = (*s < 0x80) ? 1 : (*s < 0xE0) ? 2 : (*s < 0xF0) ? 3 : 4;
    return l > avail ? avail : l;
}

/* Splits one piece with one regex, appending matches and the gaps between them.
 * Empty matches only cut the piece, as std::regex_iterator's do in llama.cpp. */
static int split_piece(const pcre2_code *code, pcre2_match_data *md, const char *text, size_t off, size_t len,
                       struct aarmd_span **v, size_t *n, size_t *cap)
{
    const unsigned char *subj = (const unsigned char *)text + off;
    size_t pos = 0, last = 0;
    uint32_t opts = 0;
    while (pos <= len) {
        int rc = pcre2_match(code, subj, len, pos, opts | PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) {
            if (opts == 0 || pos >= len)
                break;
            /* no non-empty match right here after an empty one: step one character */
            pos += char_len(subj + pos, len - pos);
            opts = 0;
            continue;
        }
        if (rc < 0)
            return rc;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms > last && push_span(v, n, cap, off + last, ms - last))
            return PCRE2_ERROR_NOMEMORY;
        if (push_span(v, n, cap, off + ms, me - ms))
            return PCRE2_ERROR_NOMEMORY;
        last = me;
        if (me == ms) {
            if (me >= len)
                break;
            opts = PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
        } else {
            opts = 0;
        }
        pos = me;
    }
    if (last < len && push_span(v, n, cap, off + last, len - last))
        return PCRE2_ERROR_NOMEMORY;
    return 0;
}

int aarmd_pretok_split(const struct aarmd_pretok *p, const char *text, size_t len,
                       struct aarmd_pretok_scratch *s, const struct aarmd_span **spans, size_t *n,
                       char *err, size_t errlen)
{
    size_t na = 0;
    if (push_span(&s->a, &na, &s->cap_a, 0, len)) {
        snprintf(err, errlen, "pre-tokenizer: out of memory");
        return AARMD_ENOMEM;
    }
    if (p->n && !s->match_data) {
        s->match_data = pcre2_match_data_create(1, NULL);
        if (!s->match_data) {
            snprintf(err, errlen, "pre-tokenizer: out of memory");
            return AARMD_ENOMEM;
        }
    }
    for (size_t r = 0; r < p->n; r++) {
        size_t nb = 0;
        for (size_t i = 0; i < na; i++) {
            int rc = split_piece(p->code[r], s->match_data, text, s->a[i].off, s->a[i].len, &s->b, &nb, &s->cap_b);
            if (rc == PCRE2_ERROR_NOMEMORY) {
                snprintf(err, errlen, "pre-tokenizer: out of memory");
                return AARMD_ENOMEM;
            }
            if (rc < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(rc, msg, sizeof msg);
                snprintf(err, errlen, "pre-tokenizer: regex %zu failed: %s", r, (const char *)msg);
                return AARMD_EINVAL;
            }
        }
        struct aarmd_span *t = s->a;
        s->a = s->b;
        s->b = t;
        size_t tc = s->cap_a;
        s->cap_a = s->cap_b;
        s->cap_b = tc;
        na = nb;
    }
    *spans = s->a;
    *n = na;
    return AARMD_OK;
}
