/* sink.c - where the encoded bytes go: the trace file, written raw or through
 * a gzip stream (fast level), and the first error, after which everything
 * else is discarded (the file keeps a valid prefix). Writer thread only, then
 * trace_close once the writer is joined. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "writer_internal.h"

#define ZBUF_CAP (1u << 18)

static struct {
    int fd, gz, created;
    z_stream zs;
    unsigned char *zbuf;
    uint64_t bytes_written;
    int err;
    char errmsg[256];
} sink = {.fd = -1};

static void sink_fail(int errnum, const char *what)
{
    if (!sink.err) {
        sink.err = errnum ? errnum : EIO;
        snprintf(sink.errmsg, sizeof sink.errmsg, "%s: %s", what, strerror(sink.err));
    }
}

static int write_all(const void *data, size_t len)
{
    const char *p = data;
    while (len && !sink.err) {
        ssize_t n = write(sink.fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sink_fail(n < 0 ? errno : EIO, "writing the trace");
            return -1;
        }
        p += n;
        len -= (size_t)n;
        sink.bytes_written += (uint64_t)n;
    }
    return sink.err ? -1 : 0;
}

static int deflate_some(const void *data, size_t len, int flush)
{
    sink.zs.next_in = (Bytef *)data;
    sink.zs.avail_in = (uInt)len;
    do {
        sink.zs.next_out = sink.zbuf;
        sink.zs.avail_out = ZBUF_CAP;
        int rc = deflate(&sink.zs, flush);
        if (rc == Z_STREAM_ERROR) {
            sink_fail(EIO, "compressing the trace");
            return -1;
        }
        if (write_all(sink.zbuf, ZBUF_CAP - sink.zs.avail_out) < 0)
            return -1;
    } while (sink.zs.avail_out == 0 || sink.zs.avail_in > 0);
    return 0;
}

int sink_open(const char *path, int gz)
{
    memset(&sink, 0, sizeof sink);
    sink.fd = -1;
    if (gz) {
        sink.zbuf = malloc(ZBUF_CAP);
        /* 15 + 16: a gzip wrapper rather than zlib's, so the file is a .gz */
        if (!sink.zbuf || deflateInit2(&sink.zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            free(sink.zbuf);
            sink.zbuf = NULL;
            errno = ENOMEM;
            return -1;
        }
        sink.gz = 1;
    }
    /* Try to create the file exclusively first so that a failure later on
     * removes only a file this call created. */
    sink.created = 1;
    sink.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (sink.fd < 0 && errno == EEXIST) {
        sink.created = 0;
        sink.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    }
    if (sink.fd < 0) {
        int saved = errno;
        sink_release();
        errno = saved;
        return -1;
    }
    return 0;
}

/* After a failure the bytes are discarded: the file keeps what was written,
 * which both formats accept as a truncated trace. */
void sink_write(const char *data, size_t len)
{
    if (!len || sink.err)
        return;
    if (sink.gz)
        deflate_some(data, len, Z_NO_FLUSH);
    else
        write_all(data, len);
}

void sink_finish(void)
{
    if (sink.gz && !sink.err)
        deflate_some(NULL, 0, Z_FINISH);
    if (close(sink.fd) < 0 && !sink.err)
        sink_fail(errno, "closing the trace");
    sink.fd = -1;
}

void sink_remove(const char *path)
{
    close(sink.fd);
    sink.fd = -1;
    if (sink.created)
        unlink(path);
}

void sink_release(void)
{
    free(sink.zbuf);
    sink.zbuf = NULL;
    if (sink.gz)
        deflateEnd(&sink.zs);
    sink.gz = 0;
}

void sink_abandon(void)
{
    if (sink.fd >= 0)
        close(sink.fd); /* the child's copy of the descriptor only */
    memset(&sink, 0, sizeof sink);
    sink.fd = -1;
}

int sink_error(void) { return sink.err; }
const char *sink_message(void) { return sink.errmsg; }
uint64_t sink_bytes(void) { return sink.bytes_written; }
