/* trace_harness.c - drives the trace-export pipeline (buffers.c, writer.c,
 * json.c, pftrace.c, sink.c) without the engine, with synthetic but
 * engine-like record streams, and prints the ground truth as JSON on stdout.
 *
 *   trace_harness MODE PATH [SEED]
 *   MODE: nested      several named threads, nested function/block slices,
 *                     generator resumes, instructions, odd names
 *         drop        the same with a 64 KiB memory limit (one buffer: drops)
 *         kill        endless stream; prints "ready" and waits to be killed
 *         throughput  one thread, block slices (count = SEED, default 5 M)
 *         open        only trace_open; prints errno
 *
 * The "GIL" is a mutex: every trace_* call other than the writer's own is
 * made with it held, as the engine does. Timestamps are synthetic ticks that
 * advance per event, deterministic for a seed. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "trace.h"

#define MAX_CODES 16
#define MAX_NAMES 8192   /* hash table slots; names used stay well below */

static pthread_mutex_t gil = PTHREAD_MUTEX_INITIALIZER;

/* raw name as the engine might hand it over, and how it must come out */
static const struct { const char *raw, *expected, *file; } codes[MAX_CODES] = {
    {"main", "main", "/app/main.py"},
    {"Parser.parse", "Parser.parse", "/app/parser.py"},
    {"Parser.parse.<locals>.helper", "Parser.parse.<locals>.helper", "/app/parser.py"},
    {"gen_items", "gen_items", "/app/gen.py"},
    {"caf\xc3\xa9_\xe2\x82\xac", "caf\xc3\xa9_\xe2\x82\xac", "/app/\xc3\xbcnicode.py"},
    {"emoji_\xf0\x9f\x98\x80", "emoji_\xf0\x9f\x98\x80", "/app/e.py"},
    {"quote\"back\\slash", "quote\"back\\slash", "C:\\path\\win.py"},
    {"ctrl\x01\ttab\nnl", "ctrl\x01\ttab\nnl", "/app/c.py"},
    {"bad\xff\xfeutf8", "bad\xef\xbf\xbd\xef\xbf\xbdutf8", "/app/bad\xc3.py"},
    {"surrogate\xed\xa0\x80x", "surrogate\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdx", "/app/s.py"},
    {"<module>", "<module>", "/app/mod.py"},
    {"<listcomp>", "<listcomp>", "/app/mod.py"},
    {"Worker.run", "Worker.run", "/app/worker.py"},
    {"deep", "deep", "/app/deep.py"},
    {"leaf", "leaf", "/app/leaf.py"},
    {"", "", ""},
};

typedef struct {
    char name[64];
    long count;
} counter;

typedef struct {
    trace_thread *tt;
    uint64_t tid;
    uint64_t tsc;
    uint64_t rng;
    uint64_t records, nulls;
    counter slices[MAX_NAMES];
    int nslices;
    counter insns[MAX_NAMES];
    int ninsns;
    int depth, max_depth;
    const char *name;
    int name_late;
    long target;                 /* records to emit */
} producer;

static uint64_t rnd(producer *p)
{
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return p->rng;
}

static void count(counter *table, int *n, const char *name)
{
    unsigned h = 2166136261u;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    for (unsigned i = h % MAX_NAMES;; i = (i + 1) % MAX_NAMES) {
        if (!table[i].count) {
            if (2 * *n >= MAX_NAMES)
                abort();   /* the generator uses more names than planned */
            snprintf(table[i].name, sizeof table[i].name, "%s", name);
            table[i].count = 1;
            (*n)++;
            return;
        }
        if (strcmp(table[i].name, name) == 0) {
            table[i].count++;
            return;
        }
    }
}

static trace_record *emit(producer *p, uint16_t kind, uint64_t advance)
{
    p->tsc += advance;
    trace_record *r = trace_reserve(p->tt);
    if (!r) {
        p->nulls++;
        return NULL;
    }
    p->records++;
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->tsc = p->tsc;
    return r;
}

static void block_name(char *dst, int line, int offset)
{
    if (line >= 0)
        sprintf(dst, "L%d @%d", line, offset);
    else
        sprintf(dst, "@%d", offset);
}

static void func(producer *p, uint32_t code, int depth, int with_insn);

static void block(producer *p, uint32_t code, int depth, int with_insn)
{
    int offset = (int)(rnd(p) % 40) * 2, line = (rnd(p) % 11 == 0) ? -1 : 1 + (int)(rnd(p) % 40);
    trace_record *r = emit(p, TRACE_BLOCK_BEGIN, 5 + rnd(p) % 60);
    if (r) {
        r->code_id = code;
        r->offset = offset;
        r->line = line;
        char name[64];
        block_name(name, line, offset);
        count(p->slices, &p->nslices, name);
    }
    p->depth++;
    if (p->depth > p->max_depth)
        p->max_depth = p->depth;
    if (with_insn) {
        int n = 1 + (int)(rnd(p) % 4);
        for (int i = 0; i < n; i++) {
            uint64_t start = p->tsc + 1 + rnd(p) % 20, len = rnd(p) % 50;
            trace_record *ir = emit(p, TRACE_INSN, start - p->tsc);
            if (ir) {
                ir->end_tsc = start + len;
                ir->code_id = code;
                ir->offset = offset + 2 * i;
                ir->line = line;
                ir->cycles = (int64_t)len - 3;
                char name[64];
                block_name(name, line, offset + 2 * i);
                count(p->insns, &p->ninsns, name);
            }
            p->tsc = start + len;
        }
    }
    if (depth < 12 && rnd(p) % 4 == 0)
        func(p, (uint32_t)(rnd(p) % MAX_CODES), depth + 1, with_insn);
    r = emit(p, TRACE_BLOCK_END, 20 + rnd(p) % 400);
    if (r) {
        r->cycles = (int64_t)(rnd(p) % 3000) - 5;   /* tiny blocks may go negative */
        r->offset = offset + 2 * (int)(rnd(p) % 8);
        r->code_id = code;
    }
    p->depth--;
}

static void func(producer *p, uint32_t code, int depth, int with_insn)
{
    trace_record *r = emit(p, TRACE_FUNC_BEGIN, 10 + rnd(p) % 100);
    if (r) {
        r->code_id = code;
        count(p->slices, &p->nslices, codes[code].expected);
    }
    p->depth++;
    int blocks = 1 + (int)(rnd(p) % 5);
    for (int i = 0; i < blocks; i++)
        block(p, code, depth, with_insn);
    emit(p, TRACE_FUNC_END, 5 + rnd(p) % 50);
    p->depth--;
}

/* A generator: resumed several times, each resume a FUNC slice of its own,
 * interleaved with the caller's blocks. */
static void generator_loop(producer *p, int with_insn)
{
    for (int i = 0; i < 4; i++) {
        block(p, 0, 10, 0);
        trace_record *r = emit(p, TRACE_FUNC_BEGIN, 30);
        if (r) {
            r->code_id = 3;
            count(p->slices, &p->nslices, codes[3].expected);
        }
        block(p, 3, 10, with_insn);
        emit(p, TRACE_FUNC_END, 10);
    }
}

static void *producer_main(void *arg)
{
    producer *p = arg;
    pthread_mutex_lock(&gil);
    p->tt = trace_thread_new(p->tid);
    if (p->name && !p->name_late)
        trace_thread_set_name(p->tid, p->name);
    pthread_mutex_unlock(&gil);
    while ((long)(p->records + p->nulls) < p->target) {
        pthread_mutex_lock(&gil);   /* a "GIL" switch interval's worth of work */
        for (int i = 0; i < 20 && (long)(p->records + p->nulls) < p->target; i++) {
            func(p, (uint32_t)(rnd(p) % MAX_CODES), 0, rnd(p) % 3 == 0);
            if (rnd(p) % 8 == 0)
                generator_loop(p, 1);
        }
        pthread_mutex_unlock(&gil);
    }
    return NULL;
}

static void print_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_counters(const counter *table, int n)
{
    (void)n;
    putchar('{');
    for (int i = 0, first = 1; i < MAX_NAMES; i++) {
        if (!table[i].count)
            continue;
        if (!first)
            putchar(',');
        first = 0;
        print_string(table[i].name);
        printf(":%ld", table[i].count);
    }
    putchar('}');
}

static void print_stats(int rc, int err, const trace_stats *st)
{
    printf("\"close_rc\":%d,\"close_errno\":%d,\"stats\":{\"events_written\":%llu,"
           "\"events_dropped\":%llu,\"bytes_written\":%llu,\"error_errno\":%d,\"error_message\":",
           rc, err, (unsigned long long)st->events_written, (unsigned long long)st->events_dropped,
           (unsigned long long)st->bytes_written, st->error_errno);
    print_string(st->error_message);
    putchar('}');
}

static clock_converter make_conv(void)
{
    /* Fixed, so runs are reproducible: ticks at 2.5 GHz (0.4 ns per tick), a
     * rate whose ns values are not whole, as with a real TSC. */
    clock_anchor origin = {1000000, 5000000000ull};
    return clock_converter_make(origin, 2.5e9);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run_threads(const char *path, size_t limit, long per_thread, uint64_t seed)
{
    static const char *names[] = {"MainThread", "worker-1 \xe2\x9c\x93", "late \"named\"", NULL};
    enum { N = 4 };
    if (trace_open(path, limit, make_conv(), 0, TRACE_DETAIL_BLOCKS) < 0) {
        printf("{\"open_errno\":%d}\n", errno);
        return 1;
    }
    pthread_mutex_lock(&gil);
    for (uint32_t i = 0; i < MAX_CODES; i++)
        trace_define_code(i, codes[i].raw, codes[i].file, (int)(10 * i + 1));
    pthread_mutex_unlock(&gil);
    static producer ps[N];
    pthread_t threads[N];
    for (int i = 0; i < N; i++) {
        memset(&ps[i], 0, sizeof ps[i]);
        ps[i].tid = 4000 + (uint64_t)i * 7;
        ps[i].tsc = 2000000 + (uint64_t)i * 333;
        ps[i].rng = seed * 2654435761u + (uint64_t)i * 97 + 1;
        ps[i].name = names[i];
        ps[i].name_late = i == 2;
        ps[i].target = per_thread;
        pthread_create(&threads[i], NULL, producer_main, &ps[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_lock(&gil);
    trace_thread_set_name(ps[2].tid, names[2]);   /* names that arrive at stop */
    pthread_mutex_unlock(&gil);
    trace_stats st;
    int rc = trace_close(&st);
    int err = rc ? errno : 0;
    printf("{\"pid\":%d,", (int)getpid());
    print_stats(rc, err, &st);
    printf(",\"threads\":[");
    for (int i = 0; i < N; i++) {
        printf("%s{\"tid\":%llu,\"name\":", i ? "," : "", (unsigned long long)ps[i].tid);
        if (ps[i].name)
            print_string(ps[i].name);
        else
            printf("null");
        printf(",\"records\":%llu,\"nulls\":%llu,\"max_depth\":%d,\"slices\":",
               (unsigned long long)ps[i].records, (unsigned long long)ps[i].nulls, ps[i].max_depth);
        print_counters(ps[i].slices, ps[i].nslices);
        printf(",\"insns\":");
        print_counters(ps[i].insns, ps[i].ninsns);
        putchar('}');
    }
    printf("]}\n");
    return 0;
}

static int run_kill(const char *path)
{
    if (trace_open(path, 0, make_conv(), 0, TRACE_DETAIL_BLOCKS) < 0)
        return 1;
    trace_define_code(0, "spin", "/app/spin.py", 1);
    producer *p = calloc(1, sizeof *p);
    p->tid = 4242;
    p->rng = 12345;
    p->tsc = 2000000;
    p->tt = trace_thread_new(p->tid);
    trace_thread_set_name(p->tid, "MainThread");
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        for (int i = 0; i < 2000; i++) {
            func(p, 0, 0, i % 7 == 0);
            memset(p->slices, 0, sizeof p->slices);   /* counts are not checked here */
            memset(p->insns, 0, sizeof p->insns);
            p->nslices = p->ninsns = 0;
        }
        usleep(1000);
    }
}

static int run_throughput(const char *path, long slices)
{
    /* Block slices with 500 distinct names inside functions of 20 blocks. */
    if (trace_open(path, (size_t)4 << 30, make_conv(), 0, TRACE_DETAIL_BLOCKS) < 0) {
        printf("{\"open_errno\":%d}\n", errno);
        return 1;
    }
    trace_define_code(0, "hot_loop", "/app/hot.py", 1);
    trace_thread *tt = trace_thread_new(1234);
    trace_thread_set_name(1234, "MainThread");
    double start = now_s();
    uint64_t tsc = 2000000, rng = 88172645463325252ull;
    long blocks = 0, records = 0;
    while (blocks < slices) {
        trace_record *r = trace_reserve(tt);
        tsc += 40;
        *r = (trace_record){.tsc = tsc, .kind = TRACE_FUNC_BEGIN, .code_id = 0};
        records++;
        for (int i = 0; i < 20 && blocks < slices; i++, blocks++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            int name = (int)(rng % 500);
            tsc += 20 + rng % 64;
            r = trace_reserve(tt);
            *r = (trace_record){.tsc = tsc, .kind = TRACE_BLOCK_BEGIN, .offset = name * 2,
                                .line = 10 + name / 3};
            tsc += 100 + (rng >> 20) % 400;   /* a block of ~100-500 ns at 0.4 ns/tick */
            r = trace_reserve(tt);
            *r = (trace_record){.tsc = tsc, .kind = TRACE_BLOCK_END, .cycles = 250 + (int64_t)(rng >> 40) % 1000,
                                .offset = name * 2 + 6};
            records += 2;
        }
        r = trace_reserve(tt);
        tsc += 30;
        *r = (trace_record){.tsc = tsc, .kind = TRACE_FUNC_END};
        records++;
    }
    double produced = now_s();
    trace_stats st;
    int rc = trace_close(&st);
    double end = now_s();
    printf("{\"records\":%ld,\"block_slices\":%ld,\"produce_s\":%.6f,\"total_s\":%.6f,", records, blocks,
           produced - start, end - start);
    print_stats(rc, rc ? errno : 0, &st);
    printf("}\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s nested|drop|kill|throughput|open PATH [N]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    long n = argc > 3 ? atol(argv[3]) : 0;
    if (strcmp(mode, "nested") == 0)
        return run_threads(path, 0, 25000, n ? (uint64_t)n : 1);
    if (strcmp(mode, "drop") == 0)
        /* One buffer for four producers: all but the first thread to fill a
         * buffer must drop, however fast the writer is. */
        return run_threads(path, 64 * 1024, 40000, n ? (uint64_t)n : 1);
    if (strcmp(mode, "kill") == 0)
        return run_kill(path);
    if (strcmp(mode, "throughput") == 0)
        return run_throughput(path, n ? n : 5000000);
    if (strcmp(mode, "open") == 0) {
        int rc = trace_open(path, 0, make_conv(), 0, TRACE_DETAIL_BLOCKS);
        int err = rc < 0 ? errno : 0;
        trace_stats st;
        if (rc == 0)
            trace_close(&st);
        printf("{\"rc\":%d,\"errno\":%d}\n", rc, err);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
