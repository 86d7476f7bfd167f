/* test_request.c — /execute, /cancel, /tokenize, /detokenize body validation
 * (core/request.c): every rule, exact constraint and message strings, table
 * order, defaults, and the error body shape. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

static const struct aarmd_request_limits lim = {.max_tokens_limit = 2048, .vocab_size = 49152};
static struct aarmd_exec_req req;
static struct aarmd_validation val;

static void teardown(void)
{
    aarmd_exec_req_fini(&req);
    aarmd_validation_fini(&val);
}

TestSuite(request, .fini = teardown);

static int parse(const char *body)
{
    aarmd_validation_fini(&val);
    memset(&val, 0, sizeof val);
    return aarmd_exec_req_parse(body, strlen(body), &lim, &req, &val);
}

Test(request, minimal_body_gets_the_defaults)
{
    cr_assert_eq(parse("{\"job_id\":\"j1\",\"prompt\":\"Hello\"}"), AARMD_OK, "%s", val.message);
    cr_assert_str_eq(req.job_id, "j1");
    cr_assert_str_eq(req.prompt, "Hello");
    cr_assert_eq(req.prompt_len, 5);
    cr_assert_eq(req.prompt_chars, 5);
    cr_assert_eq(req.max_tokens, 2048, "default = --max-tokens-limit");
    cr_assert_float_eq(req.sampling.temperature, 1.0f, 1e-6);
    cr_assert_float_eq(req.sampling.top_p, 1.0f, 1e-6);
    cr_assert_eq(req.sampling.top_k, 0);
    cr_assert_float_eq(req.sampling.min_p, 0.0f, 1e-6);
    cr_assert_float_eq(req.sampling.repetition_penalty, 1.0f, 1e-6);
    cr_assert_eq(req.n_stop, 0);
    cr_assert_not(req.seed_given);
    cr_assert_eq(req.sampling.n_logprobs, 0);
}

Test(request, full_body_is_read)
{
    const char *b = "{\"job_id\":\"job-9\",\"prompt\":\"h\\u00e9llo \\u4e16\",\"max_tokens\":7,\"temperature\":0,"
                    "\"top_p\":0.5,\"top_k\":40,\"min_p\":0.05,\"repetition_penalty\":1.1,\"stop\":[\"\\n\\n\",\"END\"],"
                    "\"seed\":18446744073709551615,\"logprobs\":3,\"unknown_field\":{\"x\":1}}";
    cr_assert_eq(parse(b), AARMD_OK, "%s", val.message);
    cr_assert_eq(req.prompt_chars, 7, "code points, not bytes");
    cr_assert_eq(req.prompt_len, 10);
    cr_assert_eq(req.max_tokens, 7);
    cr_assert_float_eq(req.sampling.temperature, 0.0f, 1e-6);
    cr_assert_float_eq(req.sampling.top_p, 0.5f, 1e-6);
    cr_assert_eq(req.sampling.top_k, 40);
    cr_assert_float_eq(req.sampling.min_p, 0.05f, 1e-6);
    cr_assert_float_eq(req.sampling.repetition_penalty, 1.1f, 1e-6);
    cr_assert_eq(req.n_stop, 2);
    cr_assert_str_eq(req.stop[0], "\n\n");
    cr_assert_str_eq(req.stop[1], "END");
    cr_assert(req.seed_given);
    cr_assert_eq(req.sampling.seed, UINT64_MAX);
    cr_assert_eq(req.sampling.n_logprobs, 3);

    struct aarmd_job_request jr;
    aarmd_exec_req_to_job(&req, "corr-1", &jr);
    cr_assert_eq(jr.job_id, req.job_id);
    cr_assert_eq(jr.prompt_len, 10);
    cr_assert_eq(jr.n_stop, 2);
    cr_assert_str_eq(jr.correlation_id, "corr-1");
    cr_assert_eq(jr.sampling.seed, UINT64_MAX);
}

Test(request, null_optional_fields_are_absent)
{
    cr_assert_eq(parse("{\"job_id\":\"a\",\"prompt\":\"p\",\"seed\":null,\"max_tokens\":null,\"stop\":null,"
                       "\"logprobs\":null}"),
                 AARMD_OK, "%s", val.message);
    cr_assert_not(req.seed_given);
    cr_assert_eq(req.max_tokens, 2048);
}

Test(request, boundaries_are_inclusive)
{
    cr_assert_eq(parse("{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":2048,\"temperature\":2,\"top_p\":1,"
                       "\"top_k\":49152,\"min_p\":1.0,\"repetition_penalty\":2.0,\"logprobs\":20,\"seed\":0}"),
                 AARMD_OK, "%s", val.message);
    cr_assert_eq(parse("{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":1,\"temperature\":0.0,\"top_p\":0,"
                       "\"top_k\":0,\"min_p\":0,\"repetition_penalty\":0,\"logprobs\":0}"),
                 AARMD_OK, "%s", val.message);
}

struct rule_case {
    char body[256];
    char field[32];
    char constraint[48];
    char message[192];
    char value[48];     /* expected "value" JSON text, "" = absent */
};

static struct rule_case rule_cases[] = {
    {"{\"prompt\":\"p\"}", "job_id", "required", "job_id is required", ""},
    {"{\"job_id\":null,\"prompt\":\"p\"}", "job_id", "required", "job_id is required", ""},
    {"{\"job_id\":\"\",\"prompt\":\"p\"}", "job_id", "non_empty", "job_id must not be empty", "\"\""},
    {"{\"job_id\":5,\"prompt\":\"p\"}", "job_id", "type(string)", "job_id must be a string (got integer)", "5"},
    {"{\"job_id\":\"a\\u0000b\",\"prompt\":\"p\"}", "job_id", "utf8", "job_id must be valid UTF-8 without NUL bytes", ""},
    {"{\"job_id\":\"a\"}", "prompt", "required", "prompt is required", ""},
    {"{\"job_id\":\"a\",\"prompt\":\"\"}", "prompt", "length(1..=32768)", "prompt must be 1 to 32768 characters long (got 0)", "\"\""},
    {"{\"job_id\":\"a\",\"prompt\":[1]}", "prompt", "type(string)", "prompt must be a string (got array)", "[1]"},
    {"{\"job_id\":\"a\",\"prompt\":\"\xed\xa0\x80x\"}", "prompt", "utf8", "prompt must be valid UTF-8", ""},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":0}", "max_tokens", "range(1..=2048)", "max_tokens must be at least 1 (got 0)", "0"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":2049}", "max_tokens", "range(1..=2048)", "max_tokens must be at most 2048 (got 2049)", "2049"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":-5}", "max_tokens", "range(1..=2048)", "max_tokens must be at least 1 (got -5)", "-5"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":\"10\"}", "max_tokens", "type(integer)", "max_tokens must be an integer (got string)", "\"10\""},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":1.5}", "max_tokens", "type(integer)", "max_tokens must be an integer (got number)", "1.5"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"temperature\":2.5}", "temperature", "range(0.0..=2.0)", "temperature must be at most 2.0 (got 2.5)", "2.5"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"temperature\":-0.1}", "temperature", "range(0.0..=2.0)", "temperature must be at least 0.0 (got -0.1)", "-0.1"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"temperature\":\"hot\"}", "temperature", "type(number)", "temperature must be a number (got string)", "\"hot\""},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"temperature\":true}", "temperature", "type(number)", "temperature must be a number (got boolean)", "true"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"top_p\":1.01}", "top_p", "range(0.0..=1.0)", "top_p must be at most 1.0 (got 1.01)", "1.01"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"top_p\":-1}", "top_p", "range(0.0..=1.0)", "top_p must be at least 0.0 (got -1)", "-1"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"top_k\":49153}", "top_k", "range(0..=49152)", "top_k must be at most 49152 (got 49153)", "49153"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"top_k\":-1}", "top_k", "range(0..=49152)", "top_k must be at least 0 (got -1)", "-1"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"top_k\":4.0}", "top_k", "type(integer)", "top_k must be an integer (got number)", "4.0"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"min_p\":2}", "min_p", "range(0.0..=1.0)", "min_p must be at most 1.0 (got 2)", "2"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"repetition_penalty\":3}", "repetition_penalty", "range(0.0..=2.0)", "repetition_penalty must be at most 2.0 (got 3)", "3"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"repetition_penalty\":-1}", "repetition_penalty", "range(0.0..=2.0)", "repetition_penalty must be at least 0.0 (got -1)", "-1"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"stop\":\"END\"}", "stop", "type(array)", "stop must be an array of strings (got string)", "\"END\""},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", "max_count(4)", "stop must have at most 4 entries (got 5)", ""},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"stop\":[\"a\",\"\"]}", "stop[1]", "non_empty", "stop[1] must not be empty", "\"\""},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"stop\":[7]}", "stop[0]", "type(string)", "stop[0] must be a string (got integer)", "7"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"stop\":[\"\\u0000\"]}", "stop[0]", "utf8", "stop[0] must be valid UTF-8 without NUL bytes", ""},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"seed\":-1}", "seed", "range(0..=18446744073709551615)", "seed must be at least 0 (got -1)", "-1"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"seed\":\"42\"}", "seed", "type(uint64)", "seed must be an unsigned integer or null (got string)", "\"42\""},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"seed\":1.5}", "seed", "type(uint64)", "seed must be an unsigned integer or null (got number)", "1.5"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"logprobs\":21}", "logprobs", "range(0..=20)", "logprobs must be at most 20 (got 21)", "21"},
    {"{\"job_id\":\"a\",\"prompt\":\"p\",\"logprobs\":\"x\"}", "logprobs", "type(integer)", "logprobs must be an integer (got string)", "\"x\""},
};

ParameterizedTestParameters(request, each_rule)
{
    return cr_make_param_array(struct rule_case, rule_cases, sizeof rule_cases / sizeof rule_cases[0]);
}

ParameterizedTest(struct rule_case *c, request, each_rule)
{
    cr_assert_eq(parse(c->body), AARMD_EINVAL, "accepted %s", c->body);
    cr_assert_eq(val.n, 1, "%s: %u errors, first %s", c->body, val.n, val.n ? val.e[0].message : "");
    cr_assert_str_eq(val.e[0].field, c->field);
    cr_assert_str_eq(val.e[0].constraint, c->constraint);
    cr_assert_str_eq(val.e[0].message, c->message);
    if (c->value[0])
        cr_assert(val.e[0].value && strcmp(val.e[0].value, c->value) == 0, "value %s, want %s",
                  val.e[0].value ? val.e[0].value : "(none)", c->value);
    else
        cr_assert_null(val.e[0].value, "value %s echoed", val.e[0].value);
    cr_assert_str_eq(val.message, c->message);
    cr_assert_null(req.job_id, "no partial result on failure");
}

Test(request, long_strings)
{
    /* job_id: 256 bytes fine, 257 not; prompt: 32768 code points fine (even as 3-byte chars), 32769 not */
    size_t cap = 32769 * 3 + 128;
    char *b = malloc(cap);
    char id[300];
    memset(id, 'i', 257);
    id[256] = '\0';
    snprintf(b, cap, "{\"job_id\":\"%s\",\"prompt\":\"p\"}", id);
    cr_assert_eq(parse(b), AARMD_OK, "%s", val.message);
    aarmd_exec_req_fini(&req);
    id[256] = 'i';
    id[257] = '\0';
    snprintf(b, cap, "{\"job_id\":\"%s\",\"prompt\":\"p\"}", id);
    cr_assert_eq(parse(b), AARMD_EINVAL);
    cr_assert_str_eq(val.e[0].constraint, "max_length(256)");
    cr_assert_str_eq(val.e[0].message, "job_id must be at most 256 bytes (got 257)");

    size_t at = (size_t)snprintf(b, cap, "{\"job_id\":\"a\",\"prompt\":\"");
    for (int i = 0; i < 32768; i++) {
        memcpy(b + at, "\xe4\xb8\x96", 3);
        at += 3;
    }
    strcpy(b + at, "\"}");
    cr_assert_eq(parse(b), AARMD_OK, "%s", val.message);
    cr_assert_eq(req.prompt_chars, 32768);
    aarmd_exec_req_fini(&req);
    strcpy(b + at, "x\"}");
    cr_assert_eq(parse(b), AARMD_EINVAL);
    cr_assert_str_eq(val.e[0].constraint, "length(1..=32768)");
    cr_assert_str_eq(val.e[0].message, "prompt must be 1 to 32768 characters long (got 32769)");
    cr_assert_null(val.e[0].value, "a long prompt is not echoed");

    char stop[128];
    memset(stop, 's', 101);
    stop[101] = '\0';
    snprintf(b, cap, "{\"job_id\":\"a\",\"prompt\":\"p\",\"stop\":[\"%s\"]}", stop);
    cr_assert_eq(parse(b), AARMD_EINVAL);
    cr_assert_str_eq(val.e[0].field, "stop[0]");
    cr_assert_str_eq(val.e[0].constraint, "max_length(100)");
    cr_assert_str_eq(val.e[0].message, "stop[0] must be at most 100 bytes (got 101)");
    stop[100] = '\0';
    snprintf(b, cap, "{\"job_id\":\"a\",\"prompt\":\"p\",\"stop\":[\"%s\"]}", stop);
    cr_assert_eq(parse(b), AARMD_OK, "%s", val.message);
    free(b);
}

Test(request, invalid_utf8_prompt_bytes)
{
    const char bad[] = "{\"job_id\":\"a\",\"prompt\":\"ab\xff\"}";
    cr_assert_eq(aarmd_exec_req_parse(bad, sizeof bad - 1, &lim, &req, &val), AARMD_EINVAL);
    cr_assert_eq(val.n, 1);
    cr_assert_str_eq(val.e[0].constraint, "utf8");
    const char overlong[] = "{\"job_id\":\"a\",\"prompt\":\"\xc0\xaf\"}";
    aarmd_validation_fini(&val);
    cr_assert_eq(aarmd_exec_req_parse(overlong, sizeof overlong - 1, &lim, &req, &val), AARMD_EINVAL);
    cr_assert_str_eq(val.e[0].constraint, "utf8");
}

Test(request, every_failing_field_in_table_order)
{
    const char *b = "{\"logprobs\":99,\"seed\":-2,\"stop\":[\"a\",\"b\",\"c\",\"d\",\"\"],\"repetition_penalty\":5,"
                    "\"min_p\":-1,\"top_k\":-3,\"top_p\":7,\"temperature\":9,\"max_tokens\":0,\"prompt\":\"\","
                    "\"job_id\":\"\"}";
    cr_assert_eq(parse(b), AARMD_EINVAL);
    const char *want[] = {"job_id", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                          "repetition_penalty", "stop", "stop[4]", "seed", "logprobs"};
    cr_assert_eq(val.n, sizeof want / sizeof want[0], "got %u errors", val.n);
    for (unsigned i = 0; i < val.n; i++)
        cr_assert_str_eq(val.e[i].field, want[i], "error %u", i);
    cr_assert_str_eq(val.message, "job_id must not be empty (and 11 more invalid fields)");
}

Test(request, the_limit_is_the_configured_one)
{
    struct aarmd_request_limits small = {.max_tokens_limit = 100, .vocab_size = 10};
    const char *b = "{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":101,\"top_k\":11}";
    cr_assert_eq(aarmd_exec_req_parse(b, strlen(b), &small, &req, &val), AARMD_EINVAL);
    cr_assert_str_eq(val.e[0].constraint, "range(1..=100)");
    cr_assert_str_eq(val.e[0].message, "max_tokens must be at most 100 (got 101)");
    cr_assert_str_eq(val.e[1].constraint, "range(0..=10)");
}

struct malformed_case { char body[64]; char needle[64]; };
static struct malformed_case malformed_cases[] = {
    {"", "request body is empty"},
    {"{", "malformed JSON"},
    {"{\"job_id\":}", "malformed JSON"},
    {"{} trailing", "malformed JSON: trailing data at byte 3"},
    {"[1,2]", "request body must be a JSON object (got array)"},
    {"\"str\"", "request body must be a JSON object (got string)"},
    {"nul", "malformed JSON"},
};

ParameterizedTestParameters(request, malformed_body)
{
    return cr_make_param_array(struct malformed_case, malformed_cases, sizeof malformed_cases / sizeof malformed_cases[0]);
}

ParameterizedTest(struct malformed_case *c, request, malformed_body)
{
    cr_assert_eq(parse(c->body), AARMD_EINVAL, "accepted '%s'", c->body);
    cr_assert_eq(val.n, 0);
    cr_assert(strstr(val.message, c->needle), "'%s' lacks '%s'", val.message, c->needle);
}

Test(request, error_body_has_both_shapes)
{
    cr_assert_eq(parse("{\"job_id\":\"a\",\"prompt\":\"p\",\"max_tokens\":2049,\"temperature\":\"x\"}"), AARMD_EINVAL);
    char *body = aarmd_error_body("INVALID_REQUEST", val.message, false, &val);
    cr_assert_not_null(body);
    struct json_object *o = json_tokener_parse(body), *e, *x;
    cr_assert_not_null(o, "not JSON: %s", body);
    cr_assert(json_object_object_get_ex(o, "error", &e));
    cr_assert(json_object_object_get_ex(e, "code", &x));
    cr_assert_str_eq(json_object_get_string(x), "INVALID_REQUEST");
    cr_assert(json_object_object_get_ex(e, "message", &x));
    cr_assert_str_eq(json_object_get_string(x), "max_tokens must be at most 2048 (got 2049) (and 1 more invalid fields)");
    cr_assert(json_object_object_get_ex(e, "retriable", &x));
    cr_assert(json_object_is_type(x, json_type_boolean) && !json_object_get_boolean(x));
    cr_assert(json_object_object_get_ex(o, "errors", &e));
    cr_assert_eq(json_object_array_length(e), 2);
    struct json_object *f0 = json_object_array_get_idx(e, 0);
    cr_assert(json_object_object_get_ex(f0, "field", &x));
    cr_assert_str_eq(json_object_get_string(x), "max_tokens");
    cr_assert(json_object_object_get_ex(f0, "constraint", &x));
    cr_assert_str_eq(json_object_get_string(x), "range(1..=2048)");
    cr_assert(json_object_object_get_ex(f0, "message", &x));
    cr_assert_str_eq(json_object_get_string(x), "max_tokens must be at most 2048 (got 2049)");
    cr_assert(json_object_object_get_ex(f0, "value", &x));
    cr_assert_eq(json_object_get_int(x), 2049);
    struct json_object *f1 = json_object_array_get_idx(e, 1);
    cr_assert(json_object_object_get_ex(f1, "value", &x));
    cr_assert_str_eq(json_object_get_string(x), "x");
    json_object_put(o);
    free(body);

    body = aarmd_error_body("BUSY", "queue is full", true, NULL);
    cr_assert_str_eq(body, "{\"error\":{\"code\":\"BUSY\",\"message\":\"queue is full\",\"retriable\":true}}");
    free(body);
}

Test(request, cancel_body)
{
    char id[AARMD_JOB_ID_MAX + 1];
    const char *ok = "{\"job_id\":\"job-7\",\"extra\":1}";
    cr_assert_eq(aarmd_cancel_req_parse(ok, strlen(ok), id, &val), AARMD_OK, "%s", val.message);
    cr_assert_str_eq(id, "job-7");
    const char *bad[] = {"{}", "{\"job_id\":3}", "{\"job_id\":\"\"}", "nope"};
    const char *needle[] = {"job_id is required", "job_id must be a string (got integer)", "job_id must not be empty",
                            "malformed JSON"};
    for (int i = 0; i < 4; i++) {
        aarmd_validation_fini(&val);
        cr_assert_eq(aarmd_cancel_req_parse(bad[i], strlen(bad[i]), id, &val), AARMD_EINVAL, "%s", bad[i]);
        cr_assert(strstr(val.message, needle[i]), "%s: %s", bad[i], val.message);
    }
}

Test(request, tokenize_body)
{
    char *content;
    size_t len;
    bool add, parse_sp;
    const char *ok = "{\"content\":\"a\\u00e9\",\"add_special\":true}";
    cr_assert_eq(aarmd_tokenize_req_parse(ok, strlen(ok), &content, &len, &add, &parse_sp, &val), AARMD_OK);
    cr_assert_str_eq(content, "a\xc3\xa9");
    cr_assert_eq(len, 3);
    cr_assert(add);
    cr_assert_not(parse_sp);
    free(content);
    const char *empty = "{\"content\":\"\"}";
    cr_assert_eq(aarmd_tokenize_req_parse(empty, strlen(empty), &content, &len, &add, &parse_sp, &val), AARMD_OK);
    cr_assert_eq(len, 0);
    cr_assert_not(add, "add_special defaults to false");
    free(content);
    const char *bad = "{\"content\":1,\"add_special\":\"yes\"}";
    cr_assert_eq(aarmd_tokenize_req_parse(bad, strlen(bad), &content, &len, &add, &parse_sp, &val), AARMD_EINVAL);
    cr_assert_eq(val.n, 2);
    cr_assert_str_eq(val.e[0].constraint, "type(string)");
    cr_assert_str_eq(val.e[1].field, "add_special");
    cr_assert_str_eq(val.e[1].constraint, "type(boolean)");
    cr_assert_null(content);
}

Test(request, detokenize_body)
{
    int32_t *ids;
    size_t n;
    const char *ok = "{\"tokens\":[0,5,99]}";
    cr_assert_eq(aarmd_detokenize_req_parse(ok, strlen(ok), 100, &ids, &n, &val), AARMD_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(ids[0], 0);
    cr_assert_eq(ids[2], 99);
    free(ids);
    const char *bad = "{\"tokens\":[1,100,-1,\"x\"]}";
    cr_assert_eq(aarmd_detokenize_req_parse(bad, strlen(bad), 100, &ids, &n, &val), AARMD_EINVAL);
    cr_assert_eq(val.n, 3);
    cr_assert_str_eq(val.e[0].field, "tokens[1]");
    cr_assert_str_eq(val.e[0].constraint, "range(0..=99)");
    cr_assert_str_eq(val.e[0].message, "tokens[1] must be a token id in 0..=99 (got 100)");
    cr_assert_str_eq(val.e[1].field, "tokens[2]");
    cr_assert_str_eq(val.e[2].constraint, "type(integer)");
    cr_assert_null(ids);
    aarmd_validation_fini(&val);
    const char *missing = "{\"ids\":[1]}";
    cr_assert_eq(aarmd_detokenize_req_parse(missing, strlen(missing), 100, &ids, &n, &val), AARMD_EINVAL);
    cr_assert_str_eq(val.e[0].message, "tokens is required");
}

Test(request, utf8_count)
{
    cr_assert_eq(aarmd_utf8_count("", 0), 0);
    cr_assert_eq(aarmd_utf8_count("abc", 3), 3);
    cr_assert_eq(aarmd_utf8_count("\xc3\xa9\xe4\xb8\x96\xf0\x9f\x98\x80", 9), 3);
    cr_assert_eq(aarmd_utf8_count("\xe4\xb8", 2), -1, "truncated");
    cr_assert_eq(aarmd_utf8_count("\xed\xa0\x80", 3), -1, "surrogate");
    cr_assert_eq(aarmd_utf8_count("\xf4\x90\x80\x80", 4), -1, "above U+10FFFF");
    cr_assert_eq(aarmd_utf8_count("\xe0\x80\xaf", 3), -1, "overlong");
    cr_assert_eq(aarmd_utf8_count("\x80", 1), -1, "lone continuation");
}
