/*
 * stop.h — the stop-string matcher of one job. Fed the detokenized text piece
 * by piece, it says what may be streamed now, holds back a tail that could
 * still begin a stop string, and reports the first stop string the text
 * contains. It does not detokenize (see struct aarmd_detok in tokenizer.h).
 *
 * Semantics (docs/SAMPLING.md, "Stop strings"):
 *  - The job stops as soon as the generated text contains a stop string. When
 *    several occur, the one that ENDS first in the text wins (ties: the one
 *    that starts first, i.e. the longest; then the lowest index). This is what
 *    a byte-by-byte reader would see, so the result never depends on how the
 *    text was split into pieces.
 *  - Output is truncated right before the winning stop string; neither it nor
 *    anything after it is ever returned.
 *  - Without a match, the held-back tail is the longest suffix of the text that
 *    is a proper prefix of some stop string (< AARMD_STOP_MAX_LEN bytes). With
 *    no stop strings nothing is held: each piece passes through at once.
 *  - Stop strings must be valid UTF-8, so a held tail always starts at a
 *    character boundary when the pieces are whole UTF-8 characters.
 *
 * The struct is embedded by value (no allocation, nothing to free); its
 * fields are private. Not thread-safe: one matcher per job.
 */
#ifndef AARMD_STOP_H
#define AARMD_STOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AARMD_STOP_MAX 4        /* contract: at most 4 stop strings */
#define AARMD_STOP_MAX_LEN 100  /* contract: each 1..100 bytes */

struct aarmd_stop {
    char str[AARMD_STOP_MAX][AARMD_STOP_MAX_LEN + 1];   /* NUL-terminated */
    size_t len[AARMD_STOP_MAX];
    uint32_t n;
    char held[AARMD_STOP_MAX_LEN]; /* < AARMD_STOP_MAX_LEN bytes are ever held */
    size_t n_held;
    int matched;                   /* index of the stop that matched, else -1 */
};

/*
 * Sets m up for stops[0..n) (copied; the caller keeps its strings). n may be
 * 0. Returns AARMD_OK, or AARMD_EINVAL with a message in err when n > 4, a
 * string is NULL, empty, longer than 100 bytes or not valid UTF-8.
 */
int aarmd_stop_init(struct aarmd_stop *m, const char *const *stops, uint32_t n, char *err, size_t errlen);

/* Output capacity that always suffices for aarmd_stop_push of a piece of piece_len bytes. */
#define AARMD_STOP_OUT_CAP(piece_len) ((size_t)(AARMD_STOP_MAX_LEN - 1) + (size_t)(piece_len))

/*
 * Feeds piece[0..len) (len may be 0). Writes the text that is safe to stream
 * now to out (not NUL-terminated) and returns its length (>= 0). *matched
 * (may be NULL) gets the index of the stop string that matched in this call,
 * else -1; after a match the returned text ends right before the stop string
 * and the matcher is finished: later pushes return 0 and flush returns 0.
 * Returns AARMD_EINVAL (nothing consumed) when cap < aarmd_stop_held(m) + len;
 * AARMD_STOP_OUT_CAP(len) is always enough.
 */
int aarmd_stop_push(struct aarmd_stop *m, const char *piece, size_t len, char *out, size_t cap, int *matched);

/*
 * End of job without a match: writes the held-back text to out and returns its
 * length (< AARMD_STOP_MAX_LEN; cap >= AARMD_STOP_MAX_LEN always suffices;
 * AARMD_EINVAL when cap is too small). Returns 0 after a match.
 */
int aarmd_stop_flush(struct aarmd_stop *m, char *out, size_t cap);

/* Bytes currently held back (0 after a match or flush). */
size_t aarmd_stop_held(const struct aarmd_stop *m);

/* Index of the stop string that matched, or -1; its text: aarmd_stop_string. */
int aarmd_stop_matched(const struct aarmd_stop *m);
/* NUL-terminated copy of stop string i (NULL when i is out of range). */
const char *aarmd_stop_string(const struct aarmd_stop *m, int i);

#endif
