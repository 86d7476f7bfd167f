/* test_prefix_cache.c — core/prefix_cache.c on its own: chain hashes, lookups
 * that compare tokens and chains (not the hash alone), exact counting of shared
 * blocks, superseded entries, LRU eviction, the cap, and refs outliving entries.
 * Sequences are fake: small structs whose frees are counted. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "prefix_cache.h"

#define B 4

struct fake_seq {
    int id;
};

static int n_freed;
static int freed_ids[256];

static void free_seq(void *user, void *seq)
{
    (void)user;
    struct fake_seq *f = seq;
    if (n_freed < 256)
        freed_ids[n_freed] = f->id;
    n_freed++;
    free(f);
}

static struct fake_seq *seq_new(int id)
{
    struct fake_seq *f = malloc(sizeof *f);
    cr_assert_not_null(f);
    f->id = id;
    return f;
}

static bool was_freed(int id)
{
    for (int i = 0; i < n_freed && i < 256; i++)
        if (freed_ids[i] == id)
            return true;
    return false;
}

static struct aarmd_prefix_cache *cache(uint64_t max_blocks)
{
    n_freed = 0;
    struct aarmd_prefix_cache *c = aarmd_prefix_cache_new(B, max_blocks, free_seq, NULL);
    cr_assert_not_null(c);
    return c;
}

/* tokens 0..n-1 offset by `base`, with t[at] changed when at >= 0 */
static void fill(int32_t *t, size_t n, int32_t base, long at)
{
    for (size_t i = 0; i < n; i++)
        t[i] = base + (int32_t)i;
    if (at >= 0)
        t[at] += 1000;
}

Test(prefix_hash, depends_on_prev_and_every_token)
{
    int32_t a[B] = {1, 2, 3, 4}, b[B] = {1, 2, 3, 5};
    uint64_t h = aarmd_prefix_hash_block(0, a, B);
    cr_assert_eq(h, aarmd_prefix_hash_block(0, a, B), "not deterministic");
    cr_assert_neq(h, aarmd_prefix_hash_block(0, b, B));
    cr_assert_neq(h, aarmd_prefix_hash_block(1, a, B));
    cr_assert_neq(h, aarmd_prefix_hash_block(0, a, B - 1));
    /* order matters */
    int32_t c[B] = {2, 1, 3, 4};
    cr_assert_neq(h, aarmd_prefix_hash_block(0, c, B));
}

Test(prefix_cache, bad_sizes_give_null)
{
    cr_assert_null(aarmd_prefix_cache_new(0, 8, free_seq, NULL));
    cr_assert_null(aarmd_prefix_cache_new(B, 0, free_seq, NULL));
    cr_assert_null(aarmd_prefix_cache_new(B, 8, NULL, NULL));
    aarmd_prefix_cache_free(NULL);
    aarmd_prefix_ref_free(NULL, NULL);
    cr_assert_eq(aarmd_prefix_ref_blocks(NULL), 0u);
}

Test(prefix_cache, empty_cache_misses)
{
    struct aarmd_prefix_cache *c = cache(64);
    int32_t t[16];
    fill(t, 16, 0, -1);
    void *src = (void *)1;
    struct aarmd_prefix_ref *r = (void *)1;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, t, 16, 100, &src, &r), 0u);
    cr_assert_null(src);
    cr_assert_null(r);
    aarmd_prefix_cache_free(c);
}

Test(prefix_cache, hit_counts_whole_blocks_up_to_the_first_difference)
{
    struct aarmd_prefix_cache *c = cache(64);
    int32_t t[16];
    fill(t, 16, 0, -1);
    cr_assert_eq(aarmd_prefix_cache_insert(c, t, 4, seq_new(1), NULL), 0);
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 4u);
    cr_assert_eq(aarmd_prefix_cache_entries(c), 1u);

    for (long diff = 0; diff < 16; diff++) {
        int32_t q[20];
        fill(q, 20, 0, diff);
        void *src;
        struct aarmd_prefix_ref *r;
        uint32_t k = aarmd_prefix_cache_lookup(c, q, 20, 100, &src, &r);
        cr_assert_eq(k, (uint32_t)(diff / B), "difference at %ld: %u blocks", diff, k);
        if (k) {
            cr_assert_eq(((struct fake_seq *)src)->id, 1);
            cr_assert_eq(aarmd_prefix_ref_blocks(r), k);
        } else {
            cr_assert_null(r);
        }
        aarmd_prefix_ref_free(c, r);
    }
    /* partial last block of the query and the max_blocks limit */
    void *src;
    struct aarmd_prefix_ref *r;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, t, 11, 100, &src, &r), 2u);
    aarmd_prefix_ref_free(c, r);
    cr_assert_eq(aarmd_prefix_cache_lookup(c, t, 16, 3, &src, &r), 3u);
    aarmd_prefix_ref_free(c, r);
    cr_assert_eq(aarmd_prefix_cache_lookup(c, t, 16, 0, &src, &r), 0u);
    aarmd_prefix_cache_free(c);
    cr_assert_eq(n_freed, 1);
}

Test(prefix_cache, same_block_at_another_position_is_no_hit)
{
    struct aarmd_prefix_cache *c = cache(64);
    int32_t t[8] = {7, 7, 7, 7, 7, 7, 7, 7};
    cr_assert_eq(aarmd_prefix_cache_insert(c, t, 2, seq_new(1), NULL), 0);
    int32_t q[8] = {1, 1, 1, 1, 7, 7, 7, 7};
    void *src;
    struct aarmd_prefix_ref *r;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, q, 8, 100, &src, &r), 0u, "block 1 matched without block 0");
    aarmd_prefix_cache_free(c);
}

Test(prefix_cache, forked_entries_count_shared_blocks_once)
{
    struct aarmd_prefix_cache *c = cache(64);
    int32_t sys[12], a[12], b[12];
    fill(sys, 12, 0, -1);
    /* job A: prompt registered after its prefill (2 blocks), finished with 3 */
    memcpy(a, sys, sizeof a);
    struct aarmd_prefix_ref *ra = NULL;
    cr_assert_eq(aarmd_prefix_cache_insert(c, a, 2, seq_new(1), &ra), 0);
    cr_assert_eq(aarmd_prefix_ref_blocks(ra), 2u);
    cr_assert_eq(aarmd_prefix_cache_insert(c, a, 3, seq_new(2), &ra), 0);
    /* the registered prompt is a prefix of the finished sequence: superseded */
    cr_assert_eq(aarmd_prefix_cache_entries(c), 1u);
    cr_assert(was_freed(1));
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 3u);
    aarmd_prefix_ref_free(c, ra);

    /* job B forks A's first 2 blocks, then diverges */
    memcpy(b, sys, sizeof b);
    b[8] = 999;
    void *src;
    struct aarmd_prefix_ref *rb;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, b, 12, 2, &src, &rb), 2u);
    cr_assert_eq(((struct fake_seq *)src)->id, 2);
    cr_assert_eq(aarmd_prefix_cache_insert(c, b, 3, seq_new(3), &rb), 0);
    cr_assert_eq(aarmd_prefix_cache_entries(c), 2u);
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 4u, "2 shared + 1 + 1, got %llu",
                 (unsigned long long)aarmd_prefix_cache_blocks(c));

    /* the entry B forked from goes; its shared blocks are still B's */
    cr_assert(aarmd_prefix_cache_evict_lru(c));
    cr_assert(was_freed(2));
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 3u);
    /* B's full chain is still found */
    void *src2;
    struct aarmd_prefix_ref *r2;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, b, 12, 100, &src2, &r2), 3u);
    cr_assert_eq(((struct fake_seq *)src2)->id, 3);
    aarmd_prefix_ref_free(c, r2);
    aarmd_prefix_ref_free(c, rb);
    aarmd_prefix_cache_flush(c);
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 0u);
    cr_assert_eq(aarmd_prefix_cache_entries(c), 0u);
    aarmd_prefix_cache_free(c);
    cr_assert_eq(n_freed, 3);
}

Test(prefix_cache, independent_copies_of_one_prompt_count_twice)
{
    /* two jobs computed the same prompt without sharing: two physical copies */
    struct aarmd_prefix_cache *c = cache(64);
    int32_t t[8];
    fill(t, 8, 5, -1);
    cr_assert_eq(aarmd_prefix_cache_insert(c, t, 2, seq_new(1), NULL), 0);
    cr_assert_eq(aarmd_prefix_cache_insert(c, t, 2, seq_new(2), NULL), 0);
    cr_assert_eq(aarmd_prefix_cache_entries(c), 2u);
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 4u);
    aarmd_prefix_cache_free(c);
    cr_assert_eq(n_freed, 2);
}

Test(prefix_cache, covered_insert_is_freed_at_once)
{
    struct aarmd_prefix_cache *c = cache(64);
    int32_t t[12];
    fill(t, 12, 0, -1);
    struct aarmd_prefix_ref *r = NULL;
    cr_assert_eq(aarmd_prefix_cache_insert(c, t, 3, seq_new(1), &r), 0);
    void *src;
    struct aarmd_prefix_ref *r2;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, t, 12, 2, &src, &r2), 2u);
    /* a job that forked 2 blocks and ended without a new whole block */
    cr_assert_eq(aarmd_prefix_cache_insert(c, t, 2, seq_new(2), &r2), 0);
    cr_assert(was_freed(2));
    cr_assert(!was_freed(1));
    cr_assert_eq(aarmd_prefix_cache_entries(c), 1u);
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 3u);
    cr_assert_eq(aarmd_prefix_ref_blocks(r2), 2u);
    aarmd_prefix_ref_free(c, r);
    aarmd_prefix_ref_free(c, r2);
    aarmd_prefix_cache_free(c);
}

Test(prefix_cache, lru_order_and_lookup_refreshes)
{
    struct aarmd_prefix_cache *c = cache(64);
    int32_t t1[4], t2[4], t3[4];
    fill(t1, 4, 100, -1);
    fill(t2, 4, 200, -1);
    fill(t3, 4, 300, -1);
    aarmd_prefix_cache_insert(c, t1, 1, seq_new(1), NULL);
    aarmd_prefix_cache_insert(c, t2, 1, seq_new(2), NULL);
    aarmd_prefix_cache_insert(c, t3, 1, seq_new(3), NULL);
    int32_t q[5];
    memcpy(q, t1, sizeof t1);
    q[4] = 0;
    void *src;
    struct aarmd_prefix_ref *r;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, q, 5, 1, &src, &r), 1u);
    aarmd_prefix_ref_free(c, r);
    cr_assert(aarmd_prefix_cache_evict_lru(c));
    cr_assert_eq(freed_ids[0], 2, "evicted %d, not the least recently used", freed_ids[0]);
    cr_assert(aarmd_prefix_cache_evict_lru(c));
    cr_assert_eq(freed_ids[1], 3);
    cr_assert(aarmd_prefix_cache_evict_lru(c));
    cr_assert_eq(freed_ids[2], 1);
    cr_assert_not(aarmd_prefix_cache_evict_lru(c));
    aarmd_prefix_cache_free(c);
}

Test(prefix_cache, cap_evicts_least_recently_used)
{
    struct aarmd_prefix_cache *c = cache(5);
    cr_assert_eq(aarmd_prefix_cache_max_blocks(c), 5u);
    int32_t t[5][8];
    for (int i = 0; i < 5; i++) {
        fill(t[i], 8, 100 * (i + 1), -1);
        cr_assert_eq(aarmd_prefix_cache_insert(c, t[i], 2, seq_new(i + 1), NULL), 0);
        cr_assert_leq(aarmd_prefix_cache_blocks(c), 5u);
    }
    /* 2 entries of 2 blocks fit; the oldest went first */
    cr_assert_eq(aarmd_prefix_cache_entries(c), 2u);
    cr_assert_eq(n_freed, 3);
    cr_assert_eq(freed_ids[0], 1);
    cr_assert_eq(freed_ids[1], 2);
    cr_assert_eq(freed_ids[2], 3);
    /* an entry larger than the cap is not kept */
    int32_t big[24];
    fill(big, 24, 7, -1);
    cr_assert_eq(aarmd_prefix_cache_insert(c, big, 6, seq_new(9), NULL), 0);
    cr_assert(was_freed(9));
    cr_assert_leq(aarmd_prefix_cache_blocks(c), 5u);
    aarmd_prefix_cache_free(c);
}

Test(prefix_cache, refs_outlive_flushed_entries)
{
    struct aarmd_prefix_cache *c = cache(64);
    int32_t t[16];
    fill(t, 16, 0, -1);
    aarmd_prefix_cache_insert(c, t, 2, seq_new(1), NULL);
    void *src;
    struct aarmd_prefix_ref *r;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, t, 16, 100, &src, &r), 2u);
    aarmd_prefix_cache_flush(c);
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 0u);
    /* the job that forked goes on and finishes with 4 blocks */
    cr_assert_eq(aarmd_prefix_cache_insert(c, t, 4, seq_new(2), &r), 0);
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 4u);
    cr_assert_eq(aarmd_prefix_ref_blocks(r), 4u);
    aarmd_prefix_ref_free(c, r);
    void *src2;
    struct aarmd_prefix_ref *r2;
    cr_assert_eq(aarmd_prefix_cache_lookup(c, t, 16, 100, &src2, &r2), 4u);
    aarmd_prefix_ref_free(c, r2);
    aarmd_prefix_cache_free(c);
    cr_assert_eq(n_freed, 2);
}

Test(prefix_cache, zero_blocks_insert_frees_the_sequence)
{
    struct aarmd_prefix_cache *c = cache(8);
    int32_t t[4] = {1, 2, 3, 4};
    cr_assert_eq(aarmd_prefix_cache_insert(c, t, 0, seq_new(5), NULL), 0);
    cr_assert_eq(n_freed, 1);
    cr_assert_eq(aarmd_prefix_cache_entries(c), 0u);
    aarmd_prefix_cache_free(c);
}

Test(prefix_cache, many_entries_grow_the_index)
{
    struct aarmd_prefix_cache *c = cache(100000);
    enum { N = 300 };
    static int32_t t[N][8];
    for (int i = 0; i < N; i++) {
        fill(t[i], 8, 10 * i, -1);
        t[i][0] = -i - 1;   /* distinct first blocks */
        cr_assert_eq(aarmd_prefix_cache_insert(c, t[i], 2, seq_new(i), NULL), 0);
    }
    cr_assert_eq(aarmd_prefix_cache_blocks(c), 2u * N);
    for (int i = 0; i < N; i++) {
        void *src;
        struct aarmd_prefix_ref *r;
        cr_assert_eq(aarmd_prefix_cache_lookup(c, t[i], 8, 100, &src, &r), 2u, "entry %d", i);
        cr_assert_eq(((struct fake_seq *)src)->id, i);
        aarmd_prefix_ref_free(c, r);
    }
    aarmd_prefix_cache_free(c);
    cr_assert_eq(n_freed, N);
}
