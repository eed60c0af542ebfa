/* buffers.c - the producers' side of the trace pipeline: 64 KiB buffers of
 * trace_records, the lock-free queue that hands full ones to the writer
 * thread, and the free list they come back on.
 *
 * Memory ordering never relies on the GIL: the engine may run free-threaded.
 *  - full-buffer queue: Treiber push (release CAS) by any producer; the single
 *    consumer takes everything with an acquire exchange, so there is no ABA.
 *  - free list: many poppers, so the head is an (ABA tag, index) pair in one
 *    64-bit word and buffers are named by index; buffers are never freed before
 *    trace_close, so a stale read of free_next is harmless (the CAS fails).
 * Memory bound: at most cap_buffers are ever allocated. The first producer to
 * find none sets `dropping`: from then on every thread drops all of its
 * records at its next slow path, for the rest of the run (resuming would leave
 * unmatched BEGIN/END). The writer closes that thread's open slices where its
 * records stop and, at close, writes an instant with the thread's drop count. */
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "writer_internal.h"

#define MAX_BUFFERS ((size_t)1 << 22)

static struct {
    size_t cap_buffers;
    trace_buf **table;               /* index -> buffer, filled as allocated */
    _Atomic size_t allocated;
    _Atomic uint64_t free_head;      /* tag << 32 | (index + 1) */
    _Atomic(trace_buf *) queue;
    _Atomic int dropping;            /* the memory bound was reached */
    _Atomic int refusing;            /* closing, or the file failed */
} pool;

int buffers_init(size_t max_bytes)
{
    memset(&pool, 0, sizeof pool);
    pool.cap_buffers = max_bytes / TRACE_BUF_BYTES;
    if (pool.cap_buffers < 1)
        pool.cap_buffers = 1;
    if (pool.cap_buffers > MAX_BUFFERS)
        pool.cap_buffers = MAX_BUFFERS;
    pool.table = calloc(pool.cap_buffers, sizeof *pool.table);
    return pool.table ? 0 : -1;
}

void buffers_release(void)
{
    if (pool.table) {
        size_t n = atomic_load(&pool.allocated);
        for (size_t i = 0; i < n && i < pool.cap_buffers; i++)
            free(pool.table[i]);
    }
    free(pool.table);
    memset(&pool, 0, sizeof pool);
}

void buffers_abandon(void)
{
    /* A forked child's copy: left to its exit (see trace_abandon). */
    memset(&pool, 0, sizeof pool);
}

void buffers_refuse(void)
{
    atomic_store(&pool.refusing, 1);
}

static trace_buf *buf_pop_free(void)
{
    uint64_t head = atomic_load_explicit(&pool.free_head, memory_order_acquire);
    for (;;) {
        uint32_t slot = (uint32_t)head;
        if (!slot)
            return NULL;
        trace_buf *buf = pool.table[slot - 1];
        uint32_t next = atomic_load_explicit(&buf->free_next, memory_order_relaxed);
        uint64_t desired = ((head >> 32) + 1) << 32 | next;
        if (atomic_compare_exchange_weak_explicit(&pool.free_head, &head, desired,
                                                  memory_order_acquire, memory_order_acquire))
            return buf;
    }
}

static void buf_push_free(trace_buf *buf)
{
    uint64_t head = atomic_load_explicit(&pool.free_head, memory_order_relaxed);
    uint64_t desired;
    do {
        atomic_store_explicit(&buf->free_next, (uint32_t)head, memory_order_relaxed);
        desired = ((head >> 32) + 1) << 32 | (buf->index + 1);
    } while (!atomic_compare_exchange_weak_explicit(&pool.free_head, &head, desired,
                                                    memory_order_release, memory_order_relaxed));
}

static trace_buf *buf_get(void)
{
    trace_buf *buf = buf_pop_free();
    if (buf)
        return buf;
    size_t index = atomic_fetch_add(&pool.allocated, 1);
    if (index >= pool.cap_buffers) {
        atomic_fetch_sub(&pool.allocated, 1);
        return NULL;
    }
    buf = malloc(TRACE_BUF_BYTES);
    if (!buf) {
        /* The slot stays reserved but empty; trace_close skips it. */
        return NULL;
    }
    buf->index = (uint32_t)index;
    atomic_init(&buf->free_next, 0);
    pool.table[index] = buf;
    return buf;
}

/* Evict a transcribed buffer's records from every cache before it returns to
 * the free list. The free list hands out the buffer transcribed last, so
 * without this the producer soon writes lines that the writer's core still
 * holds: each store must first take the line back from that core, and the
 * traced program stalls on it (a tight loop traced at threshold 0 ran 1.23x
 * slower with perfetto=True; 1.06x with the eviction, ./dev bench). Lines that
 * are in no cache are streamed in by the producer's prefetchers instead.
 * A hint only: caches stay coherent either way. */
#if defined(__x86_64__)
static void buf_evict(const trace_buf *buf)
{
    static int has_clflushopt = -1;  /* writer thread only */
    if (has_clflushopt < 0) {
        unsigned eax, ebx = 0, ecx, edx;
        has_clflushopt = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ebx >> 23 & 1);
    }
    uintptr_t line = (uintptr_t)buf->recs & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)(buf->recs + buf->count);
    if (has_clflushopt)
        for (; line < end; line += 64)
            __asm__ volatile("clflushopt (%0)" : : "r"(line) : "memory");
    else
        for (; line < end; line += 64)   /* clflush: every x86-64 has it */
            __asm__ volatile("clflush (%0)" : : "r"(line) : "memory");
}
#else
static void buf_evict(const trace_buf *buf) { (void)buf; }
#endif

static void queue_push(trace_buf *buf)
{
    trace_buf *head = atomic_load_explicit(&pool.queue, memory_order_relaxed);
    do
        buf->next = head;
    while (!atomic_compare_exchange_weak_explicit(&pool.queue, &head, buf, memory_order_release,
                                                  memory_order_relaxed));
    /* No wake-up: a futex call per buffer would cost the traced program a
     * system call every ~1600 records. The idle writer polls every
     * millisecond instead (writer.c); the memory bound holds hundreds of ms of
     * records. */
}

/* Dropping begins where the thread's records stop: at its last record (the
 * dropped one was stamped just after it), or now if it never had a buffer. */
static void start_dropping(trace_tt *t, trace_buf *full)
{
    if (full) {
        full->drop = 1;
        full->drop_tsc = full->count ? full->recs[full->count - 1].tsc : clock_tsc();
        queue_push(full);
    } else {
        atomic_store_explicit(&t->drop_tsc, clock_tsc(), memory_order_relaxed);
    }
    t->buf = NULL;
    t->dropping = 1;
    t->pub.cur = t->pub.end = t->pub.start = NULL;
    atomic_store_explicit(&pool.dropping, 1, memory_order_relaxed);
}

/* The scratch producer: calibration kernels write their records here, so
 * that they cost what real records cost, and nothing of them reaches a file. */
#define SCRATCH_RECORDS 256
static trace_record scratch_records[SCRATCH_RECORDS];
static trace_thread scratch_thread = {
    .cur = scratch_records,
    .end = scratch_records + SCRATCH_RECORDS,
    .start = scratch_records,
    .opaque = NULL,
};

trace_thread *trace_scratch(void)
{
    return &scratch_thread;
}

trace_record *trace_reserve_slow(trace_thread *thread)
{
    trace_tt *t = thread->opaque;
    if (!t) { /* the scratch producer starts over */
        thread->cur = thread->start + 1;
        return thread->start;
    }
    if (!t->dropping) {
        trace_buf *full = t->buf;
        if (full)
            full->count = (uint32_t)(thread->cur - full->recs);
        trace_buf *fresh = NULL;
        if (!atomic_load_explicit(&pool.dropping, memory_order_relaxed) &&
            !atomic_load_explicit(&pool.refusing, memory_order_relaxed))
            fresh = buf_get();
        if (fresh) {
            if (full)
                queue_push(full);
            fresh->owner = t;
            fresh->drop = 0;
            t->buf = fresh;
            thread->start = fresh->recs;
            thread->cur = fresh->recs + 1;
            thread->end = fresh->recs + TRACE_BUF_RECORDS;
            return fresh->recs;
        }
        start_dropping(t, full);
    }
    atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
    return NULL;
}

/* Hand over a thread's partial buffer (trace_close, after buffers_refuse). */
void buffers_hand_over(trace_tt *t)
{
    trace_buf *buf = t->buf;
    if (buf) {
        buf->count = (uint32_t)(t->pub.cur - buf->recs);
        t->buf = NULL;
        queue_push(buf);
    }
    t->pub.cur = t->pub.end = t->pub.start = NULL;
}

int buffers_pending(void)
{
    return atomic_load(&pool.queue) != NULL;
}

trace_buf *buffers_take_all(void)
{
    trace_buf *list = atomic_exchange_explicit(&pool.queue, NULL, memory_order_acquire);
    trace_buf *fifo = NULL;
    while (list) {
        trace_buf *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    return fifo;
}

void buffers_recycle(trace_buf *buf)
{
    buf_evict(buf);
    buf_push_free(buf);
}
