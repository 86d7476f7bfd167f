/*
 * prefix_cache.h — which KV blocks of finished (and running) sequences can be
 * shared by a new sequence whose prompt starts with the same tokens.
 *
 * The cache knows blocks, not memory: it keeps backend sequences (opaque
 * `void *`, freed through a callback) whose lengths are whole blocks of
 * block_tokens tokens, and an index of their blocks by chain hash
 * (hash(previous block's hash, this block's tokens)). A lookup compares the
 * tokens and the chain (parent block) too, never the hash alone.
 *
 * Physical blocks: a block the cache knows is one physical KV block. Two
 * entries share a block only when one sequence was forked from the other (the
 * caller says so through an aarmd_prefix_ref), so aarmd_prefix_cache_blocks
 * counts every block the cache's sequences hold exactly once.
 *
 * Refs: a job that forked blocks from the cache (lookup) or whose blocks the
 * cache holds (insert) keeps an aarmd_prefix_ref on them, so that a later
 * insert of the same sequence's longer history is known to share them even if
 * the entry they came from was evicted meanwhile. Every ref must be freed
 * before the cache.
 *
 * Eviction: least recently used entry first (insert and lookup hits count as
 * use); an insert evicts until the cache holds at most max_blocks blocks, and
 * an entry whose blocks are all a prefix of a newer entry's is dropped at once.
 * Not thread-safe: one thread (the scheduler's) uses a cache.
 */
#ifndef AARMD_PREFIX_CACHE_H
#define AARMD_PREFIX_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aarmd_prefix_cache;
struct aarmd_prefix_ref;

/* Frees one sequence the cache held (the caller's backend seq_free). */
typedef void (*aarmd_prefix_seq_free_fn)(void *user, void *seq);

/* The 64-bit chain hash of one block: FNV-1a over prev and the tokens, then mixed. */
uint64_t aarmd_prefix_hash_block(uint64_t prev, const int32_t *tokens, uint32_t n_tokens);

/* block_tokens >= 1, max_blocks >= 1. NULL when out of memory or given bad sizes. */
struct aarmd_prefix_cache *aarmd_prefix_cache_new(uint32_t block_tokens, uint64_t max_blocks,
                                                  aarmd_prefix_seq_free_fn free_seq, void *user);
/* Frees every held sequence, then the cache; accepts NULL. Refs must be freed first. */
void aarmd_prefix_cache_free(struct aarmd_prefix_cache *c);

/*
 * The longest run of whole blocks of tokens[0..n_tokens), at most max_blocks,
 * that a cached sequence holds. Returns that number k; when k > 0, *seq_out is
 * a cached sequence whose first k blocks hold them (fork it now: it may be
 * evicted by the next call) and *ref_out a new ref on those k blocks (free it
 * with aarmd_prefix_ref_free). k == 0: both NULL. A lookup that runs out of
 * memory for the ref returns 0.
 */
uint32_t aarmd_prefix_cache_lookup(struct aarmd_prefix_cache *c, const int32_t *tokens, size_t n_tokens,
                                   uint32_t max_blocks, void **seq_out, struct aarmd_prefix_ref **ref_out);

/*
 * Takes `seq`, a sequence of exactly n_blocks * block_tokens tokens whose
 * tokens are tokens[0..n_blocks*block_tokens). *ref_io (may be NULL) is the
 * ref of the sequence seq was forked from: its blocks are seq's first blocks,
 * physically. On return *ref_io is a ref on all n_blocks blocks (the old one
 * was released). The cache may free seq at once (nothing new in it, or the cap
 * evicts it). n_blocks == 0 frees seq. Returns 0, or -1 when out of memory
 * (seq freed, *ref_io unchanged).
 */
int aarmd_prefix_cache_insert(struct aarmd_prefix_cache *c, const int32_t *tokens, uint32_t n_blocks, void *seq,
                              struct aarmd_prefix_ref **ref_io);

/* Frees the least recently used entry's sequence; false when the cache is empty. */
bool aarmd_prefix_cache_evict_lru(struct aarmd_prefix_cache *c);
/* Frees every entry's sequence. */
void aarmd_prefix_cache_flush(struct aarmd_prefix_cache *c);

uint64_t aarmd_prefix_cache_blocks(const struct aarmd_prefix_cache *c);    /* distinct blocks held */
uint32_t aarmd_prefix_cache_entries(const struct aarmd_prefix_cache *c);   /* sequences held */
uint64_t aarmd_prefix_cache_max_blocks(const struct aarmd_prefix_cache *c);

/* Blocks a ref covers; 0 for NULL. */
uint32_t aarmd_prefix_ref_blocks(const struct aarmd_prefix_ref *r);
/* Releases a ref; accepts NULL. */
void aarmd_prefix_ref_free(struct aarmd_prefix_cache *c, struct aarmd_prefix_ref *r);

#endif
