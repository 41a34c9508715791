/* The native lane (diskio.native): a chunk's bytes received from a socket, hashed, written to a raw
 * file and read back, in one loop that runs without the GIL.
 *
 * Why C: in Python the same loop makes five or six calls per 256 KiB step, each giving up and taking
 * back the GIL, and four lanes on two cores spend more on those hand-offs and on waking each other than
 * on the bytes (README, Performance). Here the lane takes the GIL once per slice of steps.
 *
 * Built by hatch_build.py when a C compiler and xxhash.h are there; linked with Debian's libxxhash so
 * that the digest is the same XXH3-128 as the xxhash wheel's (tests/diskio/test_native.py compares them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <xxhash.h>
#if defined(__x86_64__)
/* Debian builds libxxhash with its x86 dispatcher: AVX2 or AVX-512 where the CPU has them, as the xxhash
 * wheel picks at run time. The plain entry point is SSE2 only: 6.4 % of an HTTP copy's samples, against
 * 0.1 % (perf, Zen 4 EPYC, 2026-12-07), and 0.79 CPU-s against 0.87 for the copy. */
#include <xxh_x86dispatch.h>
#define hash_update XXH3_128bits_update_dispatch
#else
#define hash_update XXH3_128bits_update
#endif

/* How a call ended; diskio/native.py names them. */
enum {
    LANE_DONE = 0,      /* every step of [start, end) moved */
    LANE_MISMATCH = 1,  /* the step at pos read back different; it is in buf, hashed and written */
    LANE_EOF = 2,       /* the peer closed before the slice's bytes came */
    LANE_TIMEOUT = 3,   /* no byte for timeout_ms */
    LANE_RECV = 4,      /* recv failed: err */
    LANE_WRITE = 5,     /* pwrite failed: err (no space, for one) */
    LANE_READ = 6,      /* the read-back failed: err */
};

struct lane_result {
    int64_t pos;       /* where the next step starts (offset in the file) */
    int64_t written;   /* bytes written */
    int64_t zero;      /* bytes of all-zero steps, not written (the file reads zeros there already) */
    int64_t verified;  /* bytes read back and found equal */
    int64_t reach;     /* the end of the furthest step the file surely holds (read back, or written when not
                        * verifying): the file is at least that long. 0: none */
    int32_t status;
    int32_t err;
};

XXH3_state_t *sterna_lane_state_new(void) {
    XXH3_state_t *state = XXH3_createState();
    if (state) XXH3_128bits_reset(state);
    return state;
}

void sterna_lane_state_reset(XXH3_state_t *state) { XXH3_128bits_reset(state); }

void sterna_lane_state_free(XXH3_state_t *state) { XXH3_freeState(state); }

void sterna_lane_state_copy(XXH3_state_t *dst, const XXH3_state_t *src) { XXH3_copyState(dst, src); }

/* bytes the Python steps move, hashed into the same state (a chunk the lane handed back mid-way) */
void sterna_lane_update(XXH3_state_t *state, const void *data, size_t n) { hash_update(state, data, n); }

void sterna_lane_digest(const XXH3_state_t *state, unsigned char *out16) {
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state));
    memcpy(out16, canonical.digest, 16);
}

/* Fill buf[have, n) from the socket; a socket with a timeout is non-blocking, so wait in poll. */
static int receive(int sock, unsigned char *buf, size_t have, size_t n, int timeout_ms, int *err) {
    while (have < n) {
        ssize_t r = recv(sock, buf + have, n - have, MSG_WAITALL);
        if (r > 0) {
            have += (size_t)r;
            continue;
        }
        if (r == 0) return LANE_EOF;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            *err = errno;
            return LANE_RECV;
        }
        struct pollfd p = {.fd = sock, .events = POLLIN};
        int ready = poll(&p, 1, timeout_ms);
        if (ready == 0) return LANE_TIMEOUT;
        if (ready < 0 && errno != EINTR) {
            *err = errno;
            return LANE_RECV;
        }
    }
    return LANE_DONE;
}

static int all_zero(const unsigned char *buf, size_t n) {
    /* the first byte zero and every byte equal to the next: memcmp's speed, no zero buffer */
    return n == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, n - 1) == 0);
}

/* Move the file's bytes [start, end) in steps of `step`: received into buf (its first `have` bytes are
 * there already), hashed into state, written at their offset unless all zero, and read back into check
 * and compared when `verify`; `*steps` counts every step begun, shared by the lanes. `res` counts what
 * was moved and says where and why the call stopped. */
void sterna_lane_move(int sock, int fd, int64_t start, int64_t end, unsigned char *buf, int64_t have,
                      unsigned char *check, int64_t step, int verify, int timeout_ms, XXH3_state_t *state,
                      int64_t *steps, struct lane_result *res) {
    int64_t pos = start;
    int err = 0, status = LANE_DONE;
    while (pos < end) {
        size_t n = (size_t)(end - pos < step ? end - pos : step);
        __atomic_fetch_add(steps, 1, __ATOMIC_RELAXED);  /* liveness, read by the copier's progress tick */
        status = receive(sock, buf, (size_t)have, n, timeout_ms, &err);
        if (status != LANE_DONE) break;
        have = 0;
        hash_update(state, buf, n);
        if (all_zero(buf, n)) {
            res->zero += (int64_t)n;
            pos += (int64_t)n;
            continue;
        }
        /* the step's blocks allocated before the copy into them, as diskio.local.BlockWriter does and for its reason
         * (here: 0.85 CPU-s against 1.00, 1.04x curl against 1.11x, 9 alternating rounds); a refusal is ignored:
         * a file system that cannot is just written to, and no space
         * is the pwrite's to report */
        (void)fallocate(fd, FALLOC_FL_KEEP_SIZE, pos, (off_t)n);
        for (size_t done = 0; done < n;) {
            ssize_t w = pwrite(fd, buf + done, n - done, pos + (int64_t)done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                err = w < 0 ? errno : EIO;
                status = LANE_WRITE;
                break;
            }
            done += (size_t)w;
        }
        if (status != LANE_DONE) break;
        res->written += (int64_t)n;
        if (!verify) res->reach = pos + (int64_t)n;
        if (verify) {
            size_t got = 0;
            while (got < n) {
                ssize_t r = pread(fd, check + got, n - got, pos + (int64_t)got);
                if (r < 0 && errno == EINTR) continue;
                if (r < 0) {
                    err = errno;
                    status = LANE_READ;
                }
                if (r <= 0) break;  /* 0: the file ends before the step, a mismatch below */
                got += (size_t)r;
            }
            if (status != LANE_DONE) break;
            if (got != n || memcmp(check, buf, n) != 0) {
                status = LANE_MISMATCH;
                break;
            }
            res->verified += (int64_t)n;
            res->reach = pos + (int64_t)n;
        }
        pos += (int64_t)n;
    }
    res->pos = pos;
    res->status = status;
    res->err = err;
}
