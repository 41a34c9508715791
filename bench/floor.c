/*
 * The HTTP case's floor: the least any verified writer of the ranges must do on this machine.
 *
 * `curl` writes nothing, so it cannot tell how much of the engine's time is the file's writes (and
 * `curl -o` writes in 8 KiB pieces: no floor either). This program does what the engine's native
 * lane does minus everything that is the engine's own (no digest, no zero detection, no
 * checkpoints, no Python, no allocation ahead): N kept-alive connections take the ranges in turn,
 * receive each body in 256 KiB steps, `pwrite` them, read them back and compare. What the engine
 * takes above this is the engine's; what this takes above `curl` is the machine's.
 *
 * usage: floor PORT PATH OUT SIZE RANGES CONNECTIONS
 *   RANGES: a file of "offset length" lines, the engine's chunks; the server is 127.0.0.1:PORT.
 * A measuring tool for bench.run, built by it with `cc`; no part of Sterna.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define STEP (256 * 1024)
#define MAX_CONNECTIONS 16

static long long *offsets, *lengths;
static int count, port, out;
static atomic_int next_range;
static const char *path;

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* The response's head: status 206 and a Content-Length equal to the range's, else stop. What
 * arrived past the head is copied to `body`; its size returned. */
static long long head(int sock, long long length, char *body) {
    char buf[8192];
    int have = 0;
    char *end = NULL;
    while (end == NULL) {
        int got = recv(sock, buf + have, sizeof buf - 1 - have, 0);
        if (got <= 0) die("recv head");
        have += got;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL && have == sizeof buf - 1) die("head too long");
    }
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    if (strncmp(buf, "HTTP/1.1 206", 12) != 0 || cl == NULL || atoll(cl + 17) != length) {
        fprintf(stderr, "floor: not the range asked for:\n%.*s\n", (int)(end - buf), buf);
        exit(1);
    }
    end += 4;
    memcpy(body, end, buf + have - end);
    return buf + have - end;
}

static void *lane(void *unused) {
    (void)unused;
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
    /* STEP + room for what arrives with the head (at most its 8 KiB buffer) */
    char *step = malloc(STEP + 8192), *back = malloc(STEP);
    if (step == NULL || back == NULL) die("malloc");
    for (int i; (i = atomic_fetch_add(&next_range, 1)) < count;) {
        long long pos = offsets[i], left = lengths[i];
        char req[512];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=%lld-%lld\r\n\r\n",
                         path, pos, pos + left - 1);
        if (send(sock, req, n, 0) != n) die("send");
        long long have = head(sock, left, step);
        while (left > 0) {
            long long want = left < STEP ? left : STEP;
            while (have < want) {
                ssize_t got = recv(sock, step + have, want - have, MSG_WAITALL);
                if (got <= 0) die("recv body");
                have += got;
            }
            if (pwrite(out, step, want, pos) != want) die("pwrite");
            if (pread(out, back, want, pos) != want) die("pread");
            if (memcmp(step, back, want) != 0) {
                fprintf(stderr, "floor: read back differs at %lld\n", pos);
                exit(2);
            }
            have = 0; /* one request at a time: nothing arrives past a body */
            pos += want;
            left -= want;
        }
    }
    close(sock);
    free(step);
    free(back);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: floor PORT PATH OUT SIZE RANGES CONNECTIONS\n");
        return 1;
    }
    port = atoi(argv[1]);
    path = argv[2];
    out = open(argv[3], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || ftruncate(out, atoll(argv[4])) != 0) die(argv[3]);
    int connections = atoi(argv[6]);
    if (connections < 1 || connections > MAX_CONNECTIONS) connections = 1;
    FILE *ranges = fopen(argv[5], "r");
    if (ranges == NULL) die(argv[5]);
    long long offset, length;
    while (fscanf(ranges, "%lld %lld", &offset, &length) == 2) {
        offsets = realloc(offsets, (count + 1) * sizeof *offsets);
        lengths = realloc(lengths, (count + 1) * sizeof *lengths);
        if (offsets == NULL || lengths == NULL) die("realloc");
        offsets[count] = offset;
        lengths[count++] = length;
    }
    fclose(ranges);
    pthread_t threads[MAX_CONNECTIONS];
    for (int i = 0; i < connections; i++) pthread_create(&threads[i], NULL, lane, NULL);
    for (int i = 0; i < connections; i++) pthread_join(threads[i], NULL);
    return close(out) == 0 ? 0 : 1;
}
