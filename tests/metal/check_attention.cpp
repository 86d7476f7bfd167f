/*
 * check_attention.cpp — shaders/metal/attention.metal through the CPU harness
 * against a plain double-precision reference, over a paged F16 KV pool: several
 * sequences of different lengths in one dispatch, block tables of shuffled
 * (non-contiguous) block ids, blocks shared between sequences, unused blocks
 * poisoned with NaN; GQA and MHA, head sizes not multiples of 32, block sizes
 * 1/5/7/16/32, sliding window, softcap.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <algorithm>
#include <vector>

#include "metal_test_util.h"

#include "attention.metal"

struct attn_case {
    uint32_t head_dim, n_head, n_head_kv, block_tokens, window;
    float cap;
    uint32_t n_seqs, seed;
};

/* One sequence of the dispatch: its length, block table and query tokens (its last n_new positions). */
struct seq_desc {
    uint32_t len, n_new;
    std::vector<uint32_t> table;
};

/* softmax(softcap(q·k * scale)) · v over keys [j0, pos] of one sequence, in double. */
static void reference(const attn_case &c, const std::vector<half> &kc, const std::vector<half> &vc,
                      const seq_desc &s, uint32_t pos, uint32_t kvh, const float *q, float scale, float *out)
{
    uint32_t kv_dim = c.n_head_kv * c.head_dim, bt = c.block_tokens;
    uint32_t j0 = c.window && pos + 1 > c.window ? pos + 1 - c.window : 0;
    std::vector<double> sc(pos + 1 - j0);
    double mx = -INFINITY;
    for (uint32_t j = j0; j <= pos; j++) {
        size_t row = ((size_t)s.table[j / bt] * bt + j % bt) * kv_dim + (size_t)kvh * c.head_dim;
        double d = 0;
        for (uint32_t i = 0; i < c.head_dim; i++)
            d += (double)q[i] * (double)(float)kc[row + i];
        d *= scale;
        if (c.cap > 0)
            d = c.cap * tanh(d / c.cap);
        sc[j - j0] = d;
        mx = std::max(mx, d);
    }
    std::vector<double> acc(c.head_dim, 0.0);
    double den = 0;
    for (uint32_t j = j0; j <= pos; j++) {
        size_t row = ((size_t)s.table[j / bt] * bt + j % bt) * kv_dim + (size_t)kvh * c.head_dim;
        double p = exp(sc[j - j0] - mx);
        den += p;
        for (uint32_t i = 0; i < c.head_dim; i++)
            acc[i] += p * (double)(float)vc[row + i];
    }
    for (uint32_t i = 0; i < c.head_dim; i++)
        out[i] = (float)(acc[i] / den);
}

ParameterizedTestParameters(metal_attention, paged_vs_reference)
{
    static struct attn_case cases[] = {
        {64, 6, 2, 16, 0, 0.0f, 3, 1},   {80, 4, 4, 5, 0, 0.0f, 4, 2},    {48, 2, 1, 1, 3, 30.0f, 2, 3},
        {256, 4, 1, 7, 0, 50.0f, 2, 4},  {128, 3, 3, 16, 40, 0.0f, 5, 5}, {64, 9, 3, 32, 7, 0.0f, 3, 6},
        {32, 2, 2, 16, 0, 0.0f, 6, 7},
    };
    return cr_make_param_array(struct attn_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct attn_case *c, metal_attention, paged_vs_reference)
{
    mt_rng r(c->seed * 7919 + c->head_dim);
    const uint32_t bt = c->block_tokens, kv_dim = c->n_head_kv * c->head_dim;
    /* sequences: lengths 1..150 (one single-token decode), new tokens 1..9 */
    std::vector<seq_desc> seqs(c->n_seqs);
    uint32_t blocks_used = 0;
    for (uint32_t s = 0; s < c->n_seqs; s++) {
        seqs[s].len = 1 + (uint32_t)(r.next() % 150);
        seqs[s].n_new = s == 0 ? 1 : 1 + (uint32_t)(r.next() % std::min<uint32_t>(seqs[s].len, 9));
        blocks_used += (seqs[s].len + bt - 1) / bt;
    }
    /* a pool with spare blocks, ids handed out in shuffled order */
    const uint32_t n_blocks = blocks_used + 7;
    std::vector<uint32_t> ids(n_blocks);
    for (uint32_t i = 0; i < n_blocks; i++)
        ids[i] = i;
    for (uint32_t i = n_blocks - 1; i > 0; i--)
        std::swap(ids[i], ids[r.next() % (i + 1)]);
    uint32_t next_id = 0;
    for (uint32_t s = 0; s < c->n_seqs; s++) {
        uint32_t nb = (seqs[s].len + bt - 1) / bt, shared = 0;
        if (s > 0) {   /* share the full blocks of sequence 0 that both cover (a fork) */
            uint32_t full0 = seqs[0].len / bt;
            shared = std::min(full0, nb) / (s % 2 ? 1 : 2);
        }
        for (uint32_t b = 0; b < nb; b++)
            seqs[s].table.push_back(b < shared ? seqs[0].table[b] : ids[next_id++]);
    }
    bool any_shared = false;
    for (uint32_t s = 1; s < c->n_seqs; s++)
        any_shared |= seqs[s].table.size() > 0 && seqs[0].table.size() > 0 && seqs[s].table[0] == seqs[0].table[0];
    /* the pool: random K/V everywhere, NaN in blocks no table holds */
    size_t pool_elems = (size_t)n_blocks * bt * kv_dim;
    std::vector<half> kc(pool_elems), vc(pool_elems);
    for (size_t i = 0; i < pool_elems; i++) {
        kc[i] = (half)r.uniform(-1, 1);
        vc[i] = (half)r.uniform(-1, 1);
    }
    for (uint32_t i = next_id; i < n_blocks; i++)
        for (size_t e = 0; e < (size_t)bt * kv_dim; e++) {
            kc[(size_t)ids[i] * bt * kv_dim + e] = (half)NAN;
            vc[(size_t)ids[i] * bt * kv_dim + e] = (half)NAN;
        }
    /* and in the rows past a sequence's length in a block only it holds */
    std::vector<uint32_t> holders(n_blocks, 0);
    for (auto &sq : seqs)
        for (uint32_t b : sq.table)
            holders[b]++;
    for (auto &sq : seqs)
        for (uint32_t p = sq.len; p < (uint32_t)sq.table.size() * bt; p++)
            if (holders[sq.table[p / bt]] == 1)
                for (uint32_t e = 0; e < kv_dim; e++) {
                    kc[((size_t)sq.table[p / bt] * bt + p % bt) * kv_dim + e] = (half)NAN;
                    vc[((size_t)sq.table[p / bt] * bt + p % bt) * kv_dim + e] = (half)NAN;
                }
    /* the dispatch's tokens, sequences interleaved; one flat block table */
    std::vector<uint32_t> table;
    std::vector<uint32_t> off(c->n_seqs);
    for (uint32_t s = 0; s < c->n_seqs; s++) {
        off[s] = (uint32_t)table.size();
        table.insert(table.end(), seqs[s].table.begin(), seqs[s].table.end());
    }
    std::vector<aarmd_mtl_kv_tok> tok;
    std::vector<uint32_t> tok_seq;
    for (uint32_t k = 0;; k++) {
        bool any = false;
        for (uint32_t s = 0; s < c->n_seqs; s++)
            if (k < seqs[s].n_new) {
                tok.push_back({seqs[s].len - seqs[s].n_new + k, off[s]});
                tok_seq.push_back(s);
                any = true;
            }
        if (!any)
            break;
    }
    uint32_t n_tok = (uint32_t)tok.size();
    uint32_t q_stride = c->n_head * c->head_dim + 8, out_stride = c->n_head * c->head_dim + 4;
    std::vector<float> q = mt_random_floats(r, (size_t)q_stride * n_tok, -1, 1);
    std::vector<float> out((size_t)out_stride * n_tok, -7.0f), want = out;
    float scale = 1.0f / sqrtf((float)c->head_dim) * 2.5f;
    uint32_t group = c->n_head / c->n_head_kv;
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint32_t h = 0; h < c->n_head; h++)
            reference(*c, kc, vc, seqs[tok_seq[t]], tok[t].pos, h / group, &q[(size_t)t * q_stride + h * c->head_dim],
                      scale, &want[(size_t)t * out_stride + h * c->head_dim]);
    aarmd_mtl_attn_args a = {c->head_dim, c->n_head, c->n_head_kv, n_tok, q_stride, out_stride, c->window, bt, scale,
                             c->cap};
    int rc = metal_sim::dispatch({c->n_head, n_tok, 1}, {AARMD_MTL_ROW_THREADS, 1, 1}, [&] {
        aarmd_attention(a, q.data(), kc.data(), vc.data(), out.data(), tok.data(), table.data());
    });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    long bad = mt_first_mismatch(out.data(), want.data(), out.size(), 2e-6f, 2e-5f);
    cr_assert(bad < 0, "hd=%u heads=%u/%u bt=%u: out[%ld] (token %ld) = %.8g, want %.8g", c->head_dim, c->n_head,
              c->n_head_kv, bt, bad, bad / (long)out_stride, bad < 0 ? 0.0 : (double)out[bad],
              bad < 0 ? 0.0 : (double)want[bad]);
    if (c->n_seqs > 1 && seqs[0].len >= 2 * bt)
        cr_assert(any_shared, "the case was meant to share blocks");
}

/* The reference is not vacuous: a table pointing one block off changes the result. */
Test(metal_attention, wrong_table_is_detected)
{
    attn_case c = {64, 2, 1, 4, 0, 0.0f, 1, 9};
    mt_rng r(11);
    const uint32_t kv_dim = 64, n_blocks = 6, len = 20;
    std::vector<half> kc((size_t)n_blocks * 4 * kv_dim), vc(kc.size());
    for (size_t i = 0; i < kc.size(); i++) {
        kc[i] = (half)r.uniform(-1, 1);
        vc[i] = (half)r.uniform(-1, 1);
    }
    seq_desc s = {len, 1, {5, 0, 3, 1, 2}};
    std::vector<uint32_t> wrong = {5, 0, 3, 1, 4};
    std::vector<aarmd_mtl_kv_tok> tok = {{len - 1, 0}};
    std::vector<float> q = mt_random_floats(r, 128, -1, 1), out(128), want(128);
    for (uint32_t h = 0; h < 2; h++)
        reference(c, kc, vc, s, len - 1, 0, &q[h * 64], 0.125f, &want[h * 64]);
    aarmd_mtl_attn_args a = {64, 2, 1, 1, 128, 128, 0, 4, 0.125f, 0.0f};
    int rc = metal_sim::dispatch({2, 1, 1}, {AARMD_MTL_ROW_THREADS, 1, 1}, [&] {
        aarmd_attention(a, q.data(), kc.data(), vc.data(), out.data(), tok.data(), wrong.data());
    });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    cr_assert(mt_first_mismatch(out.data(), want.data(), out.size(), 2e-6f, 2e-5f) >= 0,
              "a different last block should change the output");
    rc = metal_sim::dispatch({2, 1, 1}, {AARMD_MTL_ROW_THREADS, 1, 1}, [&] {
        aarmd_attention(a, q.data(), kc.data(), vc.data(), out.data(), tok.data(), s.table.data());
    });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    cr_assert(mt_first_mismatch(out.data(), want.data(), out.size(), 2e-6f, 2e-5f) < 0);
}
