/*
 * test_metal_kv.c — plugins/metal/metal_kv.c, the Metal backend's KV block
 * pool: accounting of free blocks through grow/shrink/share, reference
 * counts, copy on write of shared blocks, refusals of bad pool sizes, and a
 * random walk checked against an independent recount. Host bookkeeping only.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"
#include "metal_kv.h"

/* Recounts refs from the tables and checks the pool's invariants. */
static void check_pool(const struct mtl_kv_pool *p, struct mtl_kv_table *const *tabs, int n_tabs)
{
    uint32_t *refs = calloc(p->n_blocks, sizeof *refs);
    for (int i = 0; i < n_tabs; i++)
        for (uint32_t b = 0; b < tabs[i]->n; b++) {
            cr_assert_lt(tabs[i]->ids[b], p->n_blocks);
            for (uint32_t c = 0; c < b; c++)
                cr_assert_neq(tabs[i]->ids[c], tabs[i]->ids[b], "table %d holds block %u twice", i, tabs[i]->ids[b]);
            refs[tabs[i]->ids[b]]++;
        }
    uint32_t held = 0;
    for (uint32_t b = 0; b < p->n_blocks; b++) {
        cr_assert_eq(p->refs[b], refs[b], "block %u: refs %u, held by %u tables", b, p->refs[b], refs[b]);
        held += refs[b] > 0;
    }
    cr_assert_eq(p->n_free + held, p->n_blocks, "%u free + %u held != %u", p->n_free, held, p->n_blocks);
    for (uint32_t i = 0; i < p->n_free; i++)
        cr_assert_eq(refs[p->free_ids[i]], 0, "free block %u is held", p->free_ids[i]);
    free(refs);
}

struct copies {
    uint32_t n, src[64], dst[64];
};

static void record_copy(void *user, uint32_t src, uint32_t dst)
{
    struct copies *c = user;
    cr_assert_lt(c->n, 64u);
    c->src[c->n] = src;
    c->dst[c->n] = dst;
    c->n++;
}

Test(metal_kv, bad_pools_refused)
{
    struct mtl_kv_pool p;
    char err[256];
    cr_assert_eq(mtl_kv_pool_init(&p, 10, 0, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "0 tokens"), "%s", err);
    cr_assert_eq(mtl_kv_pool_init(&p, 10, MTL_KV_MAX_BLOCK_TOKENS + 1, err, sizeof err), AARMD_EINVAL);
    cr_assert_eq(mtl_kv_pool_init(&p, 0, 16, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "0 blocks"), "%s", err);
    cr_assert_eq(mtl_kv_pool_init(&p, UINT32_MAX, 16, err, sizeof err), AARMD_EINVAL);
    mtl_kv_pool_fini(&p);   /* zeroed: accepted */
    struct mtl_kv_table t;
    memset(&t, 0, sizeof t);
    mtl_kv_table_fini(&p, &t);
}

Test(metal_kv, grow_shrink_accounting)
{
    struct mtl_kv_pool p;
    char err[256];
    cr_assert_eq(mtl_kv_pool_init(&p, 8, 16, err, sizeof err), AARMD_OK, "%s", err);
    struct mtl_kv_table a, b;
    cr_assert_eq(mtl_kv_table_init(&p, &a, 1000), AARMD_OK);
    cr_assert_eq(a.cap, 8u, "cap is bounded by the pool");
    cr_assert_eq(mtl_kv_table_init(&p, &b, 20), AARMD_OK);
    cr_assert_eq(b.cap, 2u);
    cr_assert_eq(p.n_free, 8u, "a new table takes no blocks");
    cr_assert_eq(mtl_kv_blocks_for(&p, 0), 0u);
    cr_assert_eq(mtl_kv_blocks_for(&p, 16), 1u);
    cr_assert_eq(mtl_kv_blocks_for(&p, 17), 2u);
    cr_assert_eq(mtl_kv_grow_need(&p, &a, 0, 17), 2u);
    mtl_kv_grow(&p, &a, 0, 17, NULL, NULL);
    cr_assert_eq(p.n_free, 6u);
    cr_assert_eq(mtl_kv_grow_need(&p, &a, 17, 32), 0u, "the partial block has room");
    cr_assert_eq(mtl_kv_grow_need(&p, &a, 17, 33), 1u);
    mtl_kv_grow(&p, &b, 0, 20, NULL, NULL);
    struct mtl_kv_table *tabs[] = {&a, &b};
    check_pool(&p, tabs, 2);
    cr_assert_eq(p.n_free, 4u);
    mtl_kv_shrink(&p, &a, 16);
    cr_assert_eq(a.n, 1u);
    cr_assert_eq(p.n_free, 5u, "shrink gives blocks back at once");
    mtl_kv_shrink(&p, &a, 0);
    cr_assert_eq(p.n_free, 6u);
    check_pool(&p, tabs, 2);
    mtl_kv_table_fini(&p, &b);
    cr_assert_eq(p.n_free, 8u);
    mtl_kv_table_fini(&p, &a);
    mtl_kv_pool_fini(&p);
}

/* A fork shares full blocks; writing into a shared partial block copies it. */
Test(metal_kv, share_and_copy_on_write)
{
    struct mtl_kv_pool p;
    char err[256];
    cr_assert_eq(mtl_kv_pool_init(&p, 10, 4, err, sizeof err), AARMD_OK, "%s", err);
    struct mtl_kv_table src, kid;
    cr_assert_eq(mtl_kv_table_init(&p, &src, 40), AARMD_OK);
    cr_assert_eq(mtl_kv_table_init(&p, &kid, 40), AARMD_OK);
    mtl_kv_grow(&p, &src, 0, 10, NULL, NULL);   /* 3 blocks, the last partial */
    cr_assert_eq(p.n_free, 7u);
    mtl_kv_share(&p, &kid, &src, 2);            /* fork of 8 tokens */
    cr_assert_eq(p.n_free, 7u, "sharing takes no block");
    cr_assert_eq(p.refs[src.ids[0]], 2u);
    cr_assert_eq(p.refs[src.ids[2]], 1u);
    struct mtl_kv_table *tabs[] = {&src, &kid};
    check_pool(&p, tabs, 2);
    /* the child appends from position 8: a new block, no copy */
    struct copies cp = {0};
    cr_assert_eq(mtl_kv_grow_need(&p, &kid, 8, 9), 1u);
    mtl_kv_grow(&p, &kid, 8, 9, record_copy, &cp);
    cr_assert_eq(cp.n, 0u);
    /* the source truncated into a shared block, then appended: copy on write */
    mtl_kv_shrink(&p, &src, 6);
    cr_assert_eq(src.n, 2u);
    uint32_t shared = src.ids[1];
    cr_assert_eq(p.refs[shared], 2u);
    cr_assert_eq(mtl_kv_grow_need(&p, &src, 6, 7), 1u, "one private copy");
    cr_assert_eq(mtl_kv_grow_need(&p, &src, 6, 9), 2u, "a copy and a new block");
    uint32_t before = p.n_free;
    mtl_kv_grow(&p, &src, 6, 9, record_copy, &cp);
    cr_assert_eq(p.n_free, before - 2);
    cr_assert_eq(cp.n, 1u);
    cr_assert_eq(cp.src[0], shared);
    cr_assert_eq(cp.dst[0], src.ids[1]);
    cr_assert_neq(src.ids[1], shared);
    cr_assert_eq(kid.ids[1], shared, "the child keeps the original");
    cr_assert_eq(p.refs[shared], 1u);
    cr_assert_eq(p.refs[src.ids[0]], 2u, "block 0 stays shared: it is not written");
    check_pool(&p, tabs, 2);
    /* freeing the source first leaves the child's blocks intact */
    mtl_kv_table_fini(&p, &src);
    cr_assert_eq(p.refs[kid.ids[0]], 1u);
    check_pool(&p, (struct mtl_kv_table *const[]){&kid}, 1);
    mtl_kv_table_fini(&p, &kid);
    cr_assert_eq(p.n_free, 10u);
    mtl_kv_pool_fini(&p);
}

/* Random grows, shrinks, forks and frees: invariants hold after every one,
 * grow_need never under-counts, and everything comes back at the end. */
Test(metal_kv, random_walk)
{
    struct mtl_kv_pool p;
    char err[256];
    const uint32_t bt = 3;
    cr_assert_eq(mtl_kv_pool_init(&p, 40, bt, err, sizeof err), AARMD_OK, "%s", err);
    struct mtl_kv_table t[6];
    uint32_t len[6];
    int live[6] = {0};
    uint64_t s = 12345;
    for (int it = 0; it < 3000; it++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t x = (uint32_t)(s >> 33);
        int i = (int)(x % 6);
        uint32_t op = (x >> 3) % 5;
        if (!live[i]) {
            cr_assert_eq(mtl_kv_table_init(&p, &t[i], 60), AARMD_OK);
            len[i] = 0;
            live[i] = 1;
            int j = (int)((x >> 7) % 6);
            if (j != i && live[j] && (op & 1)) {   /* a fork of j's full blocks */
                uint32_t n = len[j] / bt;
                mtl_kv_share(&p, &t[i], &t[j], n);
                len[i] = n * bt;
            }
        } else if (op <= 1) {
            uint32_t nl = len[i] + 1 + (x >> 9) % 7;
            if (nl > 60)
                nl = 60;
            uint32_t need = mtl_kv_grow_need(&p, &t[i], len[i], nl);
            if (need <= p.n_free) {
                uint32_t before = p.n_free;
                mtl_kv_grow(&p, &t[i], len[i], nl, NULL, NULL);
                cr_assert_eq(before - p.n_free, need, "grow took %u blocks, need said %u", before - p.n_free, need);
                cr_assert_eq(t[i].n, mtl_kv_blocks_for(&p, nl));
                for (uint32_t b = len[i] / bt; b < t[i].n; b++)
                    cr_assert_eq(p.refs[t[i].ids[b]], 1u, "a block about to be written is shared");
                len[i] = nl;
            }
        } else if (op <= 3) {
            len[i] = len[i] ? (x >> 9) % (len[i] + 1) : 0;
            mtl_kv_shrink(&p, &t[i], len[i]);
        } else {
            mtl_kv_table_fini(&p, &t[i]);
            live[i] = 0;
        }
        struct mtl_kv_table *tabs[6];
        int n = 0;
        for (int k = 0; k < 6; k++)
            if (live[k])
                tabs[n++] = &t[k];
        check_pool(&p, tabs, n);
    }
    for (int k = 0; k < 6; k++)
        if (live[k])
            mtl_kv_table_fini(&p, &t[k]);
    cr_assert_eq(p.n_free, 40u);
    mtl_kv_pool_fini(&p);
}
