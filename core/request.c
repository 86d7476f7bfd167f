/* request.c — JSON request bodies → validated C structs, and JSON error bodies.
 * It enforces the contract's field rules; it does not tokenize or schedule. */
#include "config.h"
#include "request.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "aarmd_backend.h"

long aarmd_utf8_count(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    long count = 0;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            count++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return -1;
        }
        if (len - i <= n)   /* truncated sequence */
            return -1;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return -1;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        i += n + 1;
        count++;
    }
    return count;
}

void aarmd_validation_fini(struct aarmd_validation *v)
{
    if (!v)
        return;
    for (unsigned i = 0; i < v->n; i++) {
        free(v->e[i].value);
        v->e[i].value = NULL;
    }
    v->n = 0;
}

void aarmd_exec_req_fini(struct aarmd_exec_req *r)
{
    if (!r)
        return;
    free(r->job_id);
    free(r->prompt);
    for (uint32_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

/* Adds one field error; `value` (may be NULL) is echoed when its JSON text is short. */
static void field_error(struct aarmd_validation *v, const char *field, struct json_object *value,
                        const char *constraint, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void field_error(struct aarmd_validation *v, const char *field, struct json_object *value,
                        const char *constraint, const char *fmt, ...)
{
    if (v->n >= AARMD_MAX_FIELD_ERRORS)
        return;
    struct aarmd_field_error *e = &v->e[v->n++];
    snprintf(e->field, sizeof e->field, "%s", field);
    snprintf(e->constraint, sizeof e->constraint, "%s", constraint);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->value = NULL;
    if (value) {
        const char *t = json_object_to_json_string_ext(value, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (t && strlen(t) <= 256)
            e->value = strdup(t);
    }
}

static const char *type_name(struct json_object *o)
{
    switch (json_object_get_type(o)) {
    case json_type_null: return "null";
    case json_type_boolean: return "boolean";
    case json_type_double: return "number";
    case json_type_int: return "integer";
    case json_type_object: return "object";
    case json_type_array: return "array";
    case json_type_string: return "string";
    }
    return "unknown";
}

/* The number as the client wrote it (json-c keeps the original text of doubles). */
static const char *num_text(struct json_object *o)
{
    return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
}

static struct json_object *parse_object(const char *body, size_t len, struct aarmd_validation *v)
{
    if (len == 0) {
        snprintf(v->message, sizeof v->message, "request body is empty (expected a JSON object)");
        return NULL;
    }
    struct json_tokener *tok = json_tokener_new_ex(32);
    if (!tok) {
        snprintf(v->message, sizeof v->message, "out of memory");
        return NULL;
    }
    struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!o || jerr != json_tokener_success) {
        if (jerr == json_tokener_continue)
            snprintf(v->message, sizeof v->message, "malformed JSON: unexpected end of input");
        else
            snprintf(v->message, sizeof v->message, "malformed JSON: %s at byte %zu",
                     json_tokener_error_desc(jerr), used);
        json_object_put(o);
        return NULL;
    }
    for (size_t i = used; i < len; i++)
        if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n') {
            snprintf(v->message, sizeof v->message, "malformed JSON: trailing data at byte %zu", i);
            json_object_put(o);
            return NULL;
        }
    if (!json_object_is_type(o, json_type_object)) {
        snprintf(v->message, sizeof v->message, "request body must be a JSON object (got %s)", type_name(o));
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* Present and not null. */
static struct json_object *get(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

static bool is_number(struct json_object *o)
{
    return json_object_is_type(o, json_type_int) || json_object_is_type(o, json_type_double);
}

/* Validates a job_id-like string field; copies it into *out when valid. */
static void check_id(struct aarmd_validation *v, struct json_object *root, const char *field, char **out)
{
    struct json_object *j = get(root, field);
    if (!j) {
        field_error(v, field, NULL, "required", "%s is required", field);
        return;
    }
    if (!json_object_is_type(j, json_type_string)) {
        field_error(v, field, j, "type(string)", "%s must be a string (got %s)", field, type_name(j));
        return;
    }
    const char *s = json_object_get_string(j);
    size_t len = (size_t)json_object_get_string_len(j);
    if (len == 0) {
        field_error(v, field, j, "non_empty", "%s must not be empty", field);
        return;
    }
    if (len > AARMD_JOB_ID_MAX) {
        field_error(v, field, NULL, "max_length(256)", "%s must be at most 256 bytes (got %zu)", field, len);
        return;
    }
    if (memchr(s, '\0', len) || aarmd_utf8_count(s, len) < 0) {
        field_error(v, field, NULL, "utf8", "%s must be valid UTF-8 without NUL bytes", field);
        return;
    }
    if (out)
        *out = strdup(s);
}

static bool check_int(struct aarmd_validation *v, struct json_object *root, const char *field, int64_t min,
                      int64_t max, int64_t *out)
{
    struct json_object *j = get(root, field);
    if (!j)
        return false;
    if (!json_object_is_type(j, json_type_int)) {
        field_error(v, field, j, "type(integer)", "%s must be an integer (got %s)", field, type_name(j));
        return false;
    }
    int64_t x = json_object_get_int64(j);
    char c[64];
    snprintf(c, sizeof c, "range(%" PRId64 "..=%" PRId64 ")", min, max);
    if (x < min) {
        field_error(v, field, j, c, "%s must be at least %" PRId64 " (got %s)", field, min, num_text(j));
        return false;
    }
    if (x > max) {
        field_error(v, field, j, c, "%s must be at most %" PRId64 " (got %s)", field, max, num_text(j));
        return false;
    }
    *out = x;
    return true;
}

static bool check_num(struct aarmd_validation *v, struct json_object *root, const char *field, double min,
                      double max, float *out)
{
    struct json_object *j = get(root, field);
    if (!j)
        return false;
    if (!is_number(j)) {
        field_error(v, field, j, "type(number)", "%s must be a number (got %s)", field, type_name(j));
        return false;
    }
    double x = json_object_get_double(j);
    char c[64];
    snprintf(c, sizeof c, "range(%.1f..=%.1f)", min, max);
    if (!(x >= min)) {
        field_error(v, field, j, c, "%s must be at least %.1f (got %s)", field, min, num_text(j));
        return false;
    }
    if (!(x <= max)) {
        field_error(v, field, j, c, "%s must be at most %.1f (got %s)", field, max, num_text(j));
        return false;
    }
    *out = (float)x;
    return true;
}

static void summarise(struct aarmd_validation *v)
{
    if (v->n == 1)
        snprintf(v->message, sizeof v->message, "%s", v->e[0].message);
    else if (v->n > 1)
        snprintf(v->message, sizeof v->message, "%s (and %u more invalid fields)", v->e[0].message, v->n - 1);
}

int aarmd_exec_req_parse(const char *body, size_t len, const struct aarmd_request_limits *lim,
                         struct aarmd_exec_req *out, struct aarmd_validation *v)
{
    memset(out, 0, sizeof *out);
    v->n = 0;
    v->message[0] = '\0';
    struct json_object *root = parse_object(body, len, v);
    if (!root)
        return AARMD_EINVAL;

    /* defaults */
    out->max_tokens = lim->max_tokens_limit;
    out->sampling = (struct aarmd_sampler_params){
        .temperature = 1.0f, .top_p = 1.0f, .top_k = 0, .min_p = 0.0f, .repetition_penalty = 1.0f,
        .seed = 0, .n_logprobs = 0};

    check_id(v, root, "job_id", &out->job_id);

    struct json_object *p = get(root, "prompt");
    if (!p) {
        field_error(v, "prompt", NULL, "required", "prompt is required");
    } else if (!json_object_is_type(p, json_type_string)) {
        field_error(v, "prompt", p, "type(string)", "prompt must be a string (got %s)", type_name(p));
    } else {
        const char *s = json_object_get_string(p);
        size_t bytes = (size_t)json_object_get_string_len(p);
        long chars = aarmd_utf8_count(s, bytes);
        if (chars < 0) {
            field_error(v, "prompt", NULL, "utf8", "prompt must be valid UTF-8");
        } else if (chars < 1 || chars > AARMD_PROMPT_MAX_CHARS) {
            field_error(v, "prompt", chars == 0 ? p : NULL, "length(1..=32768)",
                        "prompt must be 1 to 32768 characters long (got %ld)", chars);
        } else {
            out->prompt = malloc(bytes + 1);
            if (out->prompt) {
                memcpy(out->prompt, s, bytes + 1);
                out->prompt_len = bytes;
                out->prompt_chars = (uint32_t)chars;
            }
        }
    }

    int64_t x;
    if (check_int(v, root, "max_tokens", 1, lim->max_tokens_limit, &x))
        out->max_tokens = (uint32_t)x;
    check_num(v, root, "temperature", 0.0, 2.0, &out->sampling.temperature);
    check_num(v, root, "top_p", 0.0, 1.0, &out->sampling.top_p);
    if (check_int(v, root, "top_k", 0, lim->vocab_size, &x))
        out->sampling.top_k = (int32_t)x;
    check_num(v, root, "min_p", 0.0, 1.0, &out->sampling.min_p);
    check_num(v, root, "repetition_penalty", 0.0, 2.0, &out->sampling.repetition_penalty);

    struct json_object *st = get(root, "stop");
    if (st && !json_object_is_type(st, json_type_array)) {
        field_error(v, "stop", st, "type(array)", "stop must be an array of strings (got %s)", type_name(st));
    } else if (st) {
        size_t n = json_object_array_length(st);
        if (n > AARMD_MAX_STOPS)
            field_error(v, "stop", NULL, "max_count(4)", "stop must have at most 4 entries (got %zu)", n);
        for (size_t i = 0; i < n; i++) {
            struct json_object *e = json_object_array_get_idx(st, i);
            char f[32];
            snprintf(f, sizeof f, "stop[%zu]", i);
            if (!e || !json_object_is_type(e, json_type_string)) {
                field_error(v, f, e, "type(string)", "%s must be a string (got %s)", f, e ? type_name(e) : "null");
                continue;
            }
            const char *s = json_object_get_string(e);
            size_t sl = (size_t)json_object_get_string_len(e);
            if (sl == 0)
                field_error(v, f, e, "non_empty", "%s must not be empty", f);
            else if (sl > AARMD_STOP_MAX_BYTES)
                field_error(v, f, NULL, "max_length(100)", "%s must be at most 100 bytes (got %zu)", f, sl);
            else if (memchr(s, '\0', sl) || aarmd_utf8_count(s, sl) < 0)
                field_error(v, f, NULL, "utf8", "%s must be valid UTF-8 without NUL bytes", f);
            else if (i < AARMD_MAX_STOPS && out->n_stop == i) {
                out->stop[i] = strdup(s);
                if (out->stop[i])
                    out->n_stop++;
            }
        }
    }

    struct json_object *sd = get(root, "seed");
    if (sd) {
        if (!json_object_is_type(sd, json_type_int)) {
            field_error(v, "seed", sd, "type(uint64)", "seed must be an unsigned integer or null (got %s)",
                        type_name(sd));
        } else if (json_object_get_int64(sd) < 0) {
            field_error(v, "seed", sd, "range(0..=18446744073709551615)", "seed must be at least 0 (got %s)",
                        num_text(sd));
        } else {
            out->sampling.seed = json_object_get_uint64(sd);
            out->seed_given = true;
        }
    }
    if (check_int(v, root, "logprobs", 0, 20, &x))
        out->sampling.n_logprobs = (uint32_t)x;

    json_object_put(root);
    if (v->n > 0) {
        summarise(v);
        aarmd_exec_req_fini(out);
        return AARMD_EINVAL;
    }
    if (!out->job_id || !out->prompt) {
        aarmd_exec_req_fini(out);
        snprintf(v->message, sizeof v->message, "out of memory");
        return AARMD_ENOMEM;
    }
    return AARMD_OK;
}

void aarmd_exec_req_to_job(const struct aarmd_exec_req *r, const char *correlation_id,
                           struct aarmd_job_request *job)
{
    memset(job, 0, sizeof *job);
    job->job_id = r->job_id;
    job->prompt = r->prompt;
    job->prompt_len = r->prompt_len;
    job->max_tokens = r->max_tokens;
    job->sampling = r->sampling;
    for (uint32_t i = 0; i < r->n_stop; i++)
        job->stop[i] = r->stop[i];
    job->n_stop = r->n_stop;
    job->correlation_id = correlation_id;
}

int aarmd_cancel_req_parse(const char *body, size_t len, char *id_out, struct aarmd_validation *v)
{
    v->n = 0;
    v->message[0] = '\0';
    struct json_object *root = parse_object(body, len, v);
    if (!root)
        return AARMD_EINVAL;
    char *id = NULL;
    check_id(v, root, "job_id", &id);
    json_object_put(root);
    if (v->n > 0) {
        summarise(v);
        free(id);
        return AARMD_EINVAL;
    }
    if (!id) {
        snprintf(v->message, sizeof v->message, "out of memory");
        return AARMD_ENOMEM;
    }
    snprintf(id_out, AARMD_JOB_ID_MAX + 1, "%s", id);
    free(id);
    return AARMD_OK;
}

static bool check_bool(struct aarmd_validation *v, struct json_object *root, const char *field, bool *out)
{
    struct json_object *j = get(root, field);
    if (!j)
        return false;
    if (!json_object_is_type(j, json_type_boolean)) {
        field_error(v, field, j, "type(boolean)", "%s must be a boolean (got %s)", field, type_name(j));
        return false;
    }
    *out = json_object_get_boolean(j);
    return true;
}

int aarmd_tokenize_req_parse(const char *body, size_t len, char **content, size_t *content_len,
                             bool *add_special, bool *parse_special, struct aarmd_validation *v)
{
    v->n = 0;
    v->message[0] = '\0';
    *content = NULL;
    *content_len = 0;
    *add_special = false;
    *parse_special = false;
    struct json_object *root = parse_object(body, len, v);
    if (!root)
        return AARMD_EINVAL;
    struct json_object *c = get(root, "content");
    if (!c) {
        field_error(v, "content", NULL, "required", "content is required");
    } else if (!json_object_is_type(c, json_type_string)) {
        field_error(v, "content", c, "type(string)", "content must be a string (got %s)", type_name(c));
    } else {
        size_t bytes = (size_t)json_object_get_string_len(c);
        if (aarmd_utf8_count(json_object_get_string(c), bytes) < 0) {
            field_error(v, "content", NULL, "utf8", "content must be valid UTF-8");
        } else {
            *content = malloc(bytes + 1);
            if (*content) {
                memcpy(*content, json_object_get_string(c), bytes + 1);
                *content_len = bytes;
            }
        }
    }
    check_bool(v, root, "add_special", add_special);
    check_bool(v, root, "parse_special", parse_special);
    json_object_put(root);
    if (v->n > 0) {
        summarise(v);
        free(*content);
        *content = NULL;
        return AARMD_EINVAL;
    }
    if (!*content) {
        snprintf(v->message, sizeof v->message, "out of memory");
        return AARMD_ENOMEM;
    }
    return AARMD_OK;
}

int aarmd_detokenize_req_parse(const char *body, size_t len, uint32_t n_vocab, int32_t **ids, size_t *n,
                               struct aarmd_validation *v)
{
    v->n = 0;
    v->message[0] = '\0';
    *ids = NULL;
    *n = 0;
    struct json_object *root = parse_object(body, len, v);
    if (!root)
        return AARMD_EINVAL;
    int rc = AARMD_OK;
    struct json_object *t = get(root, "tokens");
    if (!t) {
        field_error(v, "tokens", NULL, "required", "tokens is required");
    } else if (!json_object_is_type(t, json_type_array)) {
        field_error(v, "tokens", t, "type(array)", "tokens must be an array of integers (got %s)", type_name(t));
    } else {
        size_t count = json_object_array_length(t);
        if (count > 0) {
            *ids = malloc(count * sizeof **ids);
            if (!*ids) {
                rc = AARMD_ENOMEM;
                snprintf(v->message, sizeof v->message, "out of memory");
                goto done;
            }
        }
        char c[64];
        snprintf(c, sizeof c, "range(0..=%" PRIu32 ")", n_vocab ? n_vocab - 1 : 0);
        for (size_t i = 0; i < count; i++) {
            struct json_object *e = json_object_array_get_idx(t, i);
            char f[32];
            snprintf(f, sizeof f, "tokens[%zu]", i);
            if (!e || !json_object_is_type(e, json_type_int)) {
                field_error(v, f, e, "type(integer)", "%s must be an integer (got %s)", f, e ? type_name(e) : "null");
                continue;
            }
            int64_t x = json_object_get_int64(e);
            if (x < 0 || n_vocab == 0 || x >= (int64_t)n_vocab) {
                field_error(v, f, e, c, "%s must be a token id in 0..=%" PRIu32 " (got %s)", f,
                            n_vocab ? n_vocab - 1 : 0, num_text(e));
                continue;
            }
            (*ids)[i] = (int32_t)x;
        }
        *n = count;
    }
done:
    json_object_put(root);
    if (rc == AARMD_OK && v->n > 0) {
        summarise(v);
        rc = AARMD_EINVAL;
    }
    if (rc != AARMD_OK) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

char *aarmd_error_body(const char *code, const char *message, bool retriable, const struct aarmd_validation *v)
{
    struct json_object *root = json_object_new_object();
    struct json_object *err = json_object_new_object();
    if (!root || !err) {
        json_object_put(root);
        json_object_put(err);
        return NULL;
    }
    json_object_object_add(err, "code", json_object_new_string(code));
    json_object_object_add(err, "message", json_object_new_string(message ? message : ""));
    json_object_object_add(err, "retriable", json_object_new_boolean(retriable));
    json_object_object_add(root, "error", err);
    if (v && v->n > 0) {
        struct json_object *arr = json_object_new_array();
        for (unsigned i = 0; i < v->n; i++) {
            const struct aarmd_field_error *e = &v->e[i];
            struct json_object *fe = json_object_new_object();
            json_object_object_add(fe, "field", json_object_new_string(e->field));
            json_object_object_add(fe, "constraint", json_object_new_string(e->constraint));
            json_object_object_add(fe, "message", json_object_new_string(e->message));
            if (e->value) {
                struct json_object *val = json_tokener_parse(e->value);
                if (val || strcmp(e->value, "null") == 0)
                    json_object_object_add(fe, "value", val);
            }
            json_object_array_add(arr, fe);
        }
        json_object_object_add(root, "errors", arr);
    }
    const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *out = s ? strdup(s) : NULL;
    json_object_put(root);
    return out;
}
