/* test_tokenizer.c — unit tests of core/tokenizer.c (placeholder while written). */
#include <criterion/criterion.h>

#include "tokenizer.h"

Test(tokenizer, placeholder) { cr_assert_null(aarmd_tokenizer_token_text == NULL ? (void *)1 : NULL); }
