/*
 * loadgen: drives the Postfix policy protocol like Postfix does.
 *
 * Each of N persistent connections writes one request, reads exactly one
 * reply ("action=...\n\n"), then writes the next: strict lock-step, never
 * pipelined (docs/protocol.md, Connections). Concurrency comes only
 * from the number of connections, as with Postfix's smtpd processes.
 *
 * It is compiled C with one epoll loop per thread (one thread by default) so
 * that on a 2-core machine it costs far less CPU per request than any server
 * it measures; it reports its own CPU per request to prove it.
 *
 * Corpus: blocks of "name=value" lines separated by one empty line. Lines
 * starting with '#' are comments; "# expect: TEXT" inside a block is the
 * expected reply (the text after "action="). This is the policy-file format
 * of the project's contracts, so the same file can be replayed by postgate.
 * Connection i starts at request i*count/N and walks the corpus round-robin.
 *
 * --once sends every request of the corpus exactly once instead (connection
 * i takes the i-th contiguous slice), to compare a server's answers with the
 * expectations over the whole corpus.
 *
 * The run is bounded: a warm-up, then either a fixed duration or a fixed
 * number of measured requests (with a hard time limit), then a drain of the
 * requests still in flight. Every reply is checked (warm-up and drain
 * included); only replies completed inside the measurement window count
 * for throughput and latency.
 *
 * Output: phase markers on stdout ("# phase measure", "# phase drain") as
 * they happen, so a driver can sample the server's CPU exactly over the
 * window, "# progress REPLIES" every --progress seconds, then one JSON
 * object on the last line. --no-check verifies only the reply's shape (for
 * the ceiling server, which answers DUNNO to everything by design).
 * Exit status: 0 all replies as expected, 3 wrong or malformed replies,
 * 1 fatal error (connect failure, timeout, connection lost).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REPLY_MAX 8192
#define MAX_MISMATCHES 10
#define NS 1000000000ULL

/* ---------- latency histogram: log-linear, 1/128 relative precision ---------- */

#define HIST_SUB 128
#define HIST_EXP 48
#define HIST_BUCKETS (2 * HIST_SUB + HIST_EXP * HIST_SUB)

struct hist {
    uint64_t buckets[HIST_BUCKETS];
    uint64_t count, sum_ns, max_ns;
};

static int hist_index(uint64_t v) {
    if (v < 2 * HIST_SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 7; /* keep 8 significant bits: 128..255 */
    int idx = 2 * HIST_SUB + (msb - 8) * HIST_SUB + (int)((v >> shift) - HIST_SUB);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Midpoint of a bucket, the value reported for a percentile falling in it. */
static double hist_value(int idx) {
    if (idx < 2 * HIST_SUB) return idx;
    int e = (idx - 2 * HIST_SUB) / HIST_SUB;
    int m = (idx - 2 * HIST_SUB) % HIST_SUB;
    double low = (double)((uint64_t)(HIST_SUB + m) << (e + 1));
    return low + (double)(1ULL << (e + 1)) / 2.0;
}

static void hist_add(struct hist *h, uint64_t v) {
    h->buckets[hist_index(v)]++;
    h->count++;
    h->sum_ns += v;
    if (v > h->max_ns) h->max_ns = v;
}

static void hist_merge(struct hist *into, const struct hist *from) {
    for (int i = 0; i < HIST_BUCKETS; i++) into->buckets[i] += from->buckets[i];
    into->count += from->count;
    into->sum_ns += from->sum_ns;
    if (from->max_ns > into->max_ns) into->max_ns = from->max_ns;
}

static double hist_percentile_us(const struct hist *h, double q) {
    if (h->count == 0) return 0.0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count) rank = h->count - 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen > rank) {
            double v = hist_value(i);
            return (v > (double)h->max_ns ? (double)h->max_ns : v) / 1000.0;
        }
    }
    return (double)h->max_ns / 1000.0;
}

/* ---------- corpus ---------- */

struct request {
    const char *data;
    size_t len;
    const char *expect; /* NULL when the block carries no "# expect:" */
    size_t expect_len;
};

struct corpus {
    struct request *items;
    size_t count;
};

static void fatal(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(1);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    if (!buf) fatal("out of memory");
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) fatal("out of memory");
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

struct block_builder {
    char *data;
    size_t len, cap;
    const char *expect;
    size_t expect_len;
};

static void builder_append(struct block_builder *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data) fatal("out of memory");
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void corpus_push(struct corpus *c, size_t *cap, struct block_builder *b) {
    if (b->len == 0) { /* a block of comments only (file header): not a request */
        b->expect = NULL;
        return;
    }
    builder_append(b, "\n", 1); /* the empty line that ends the request */
    if (c->count == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        c->items = realloc(c->items, *cap * sizeof *c->items);
        if (!c->items) fatal("out of memory");
    }
    struct request *r = &c->items[c->count++];
    r->data = b->data;
    r->len = b->len;
    r->expect = b->expect;
    r->expect_len = b->expect_len;
    memset(b, 0, sizeof *b);
}

static void load_corpus(const char *path, struct corpus *c) {
    size_t n;
    char *text = read_file(path, &n);
    size_t cap = 0;
    struct block_builder b = {0};
    static const char EXPECT[] = "# expect: ";
    size_t pos = 0;
    while (pos < n) {
        char *nl = memchr(text + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - text) : n;
        const char *line = text + pos;
        size_t llen = end - pos;
        if (llen == 0) {
            corpus_push(c, &cap, &b);
        } else if (line[0] == '#') {
            if (llen >= sizeof EXPECT - 1 && !memcmp(line, EXPECT, sizeof EXPECT - 1)) {
                b.expect = line + sizeof EXPECT - 1;
                b.expect_len = llen - (sizeof EXPECT - 1);
            }
        } else {
            builder_append(&b, line, llen);
            builder_append(&b, "\n", 1);
        }
        pos = end + 1;
    }
    corpus_push(c, &cap, &b);
    if (c->count == 0) fatal("corpus has no request");
}

/* ---------- target ---------- */

struct target {
    int family;
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

static int is_loopback(const struct sockaddr_storage *sa) {
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

/* "tcp:HOST:PORT" (HOST must be a loopback address) or "unix:PATH". */
static void parse_target(const char *spec, struct target *t) {
    memset(t, 0, sizeof *t);
    if (!strncmp(spec, "unix:", 5)) {
        struct sockaddr_un *un = (struct sockaddr_un *)&t->addr;
        if (strlen(spec + 5) >= sizeof un->sun_path) fatal("unix socket path too long");
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, spec + 5);
        t->family = AF_UNIX;
        t->addrlen = sizeof *un;
        return;
    }
    if (strncmp(spec, "tcp:", 4)) fatal("target must be tcp:HOST:PORT or unix:PATH");
    char host[256];
    const char *colon = strrchr(spec + 4, ':');
    if (!colon || (size_t)(colon - (spec + 4)) >= sizeof host) fatal("target must be tcp:HOST:PORT");
    memcpy(host, spec + 4, (size_t)(colon - (spec + 4)));
    host[colon - (spec + 4)] = '\0';
    if (host[0] == '[') { /* [::1] */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *res;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) fatal("target host must be a numeric address");
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = res->ai_addrlen;
    t->family = res->ai_family;
    freeaddrinfo(res);
    if (!is_loopback(&t->addr)) fatal("only loopback targets are allowed (127.0.0.0/8, ::1) or unix sockets");
}

static int connect_target(const struct target *t) {
    int fd = socket(t->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addrlen) < 0) {
        close(fd);
        return -1;
    }
    if (t->family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* ---------- run state ---------- */

struct settings {
    const char *target_spec;
    const char *corpus_path;
    int connections;
    int threads;
    double warmup_s;
    double duration_s;  /* 0 when counting requests */
    uint64_t requests;  /* measured requests to complete, 0 for duration mode */
    double timeout_s;   /* per request */
    double max_s;       /* hard bound of the whole run in count mode */
    double progress_s;  /* print a progress line this often, 0 never */
    int no_check;       /* only check the reply's shape (servers that answer DUNNO to all) */
    int once;           /* send every corpus request exactly once, then stop */
};

struct mismatch {
    size_t index;
    char expected[160];
    char got[160];
};

struct conn {
    int fd;
    size_t next;      /* corpus index of the next request to send */
    size_t current;   /* corpus index in flight */
    uint64_t sent_ns;
    int in_flight;
    int measured;     /* count mode: this request holds a ticket */
    int out_armed;    /* EPOLLOUT requested after a short write */
    size_t remaining; /* --once: requests of this connection's slice not yet sent */
    size_t wpos;
    size_t have;
    char buf[REPLY_MAX];
};

struct worker {
    pthread_t thread;
    int ep;
    struct conn *conns;
    int nconns;
    int in_flight;
    struct hist hist;
    uint64_t replies, checked, wrong, malformed, unchecked;
    uint64_t last_measured_ns;
    struct mismatch mismatches[MAX_MISMATCHES];
    int nmismatch;
    const char *error;
};

static struct settings S;
static struct corpus C;
static struct target T;
static uint64_t t_start, t_warm_end, t_end, t_hard_end;
static atomic_uint_fast64_t tickets;        /* count mode: measured requests handed out */
static atomic_uint_fast64_t measured_done;  /* count mode: measured requests completed */
static atomic_uint_fast64_t replies_done;   /* every reply, for progress lines */
static atomic_int abort_run;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static int count_mode(void) { return S.requests > 0; }

/* Whether a connection may start another request now. */
static int may_send(struct conn *c, uint64_t now) {
    if (atomic_load(&abort_run)) return 0;
    if (S.once) {
        if (c->remaining == 0) return 0;
        c->remaining--;
    }
    if (!count_mode()) return now < t_end;
    if (now >= t_hard_end) return 0;
    c->measured = 0;
    if (now < t_warm_end) return 1;
    if (atomic_fetch_add(&tickets, 1) >= S.requests) return 0;
    c->measured = 1;
    return 1;
}

static void arm(struct worker *w, struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) w->error = "epoll_ctl failed";
}

static void flush_request(struct worker *w, struct conn *c) {
    const struct request *r = &C.items[c->current];
    while (c->wpos < r->len) {
        ssize_t n = write(c->fd, r->data + c->wpos, r->len - c->wpos);
        if (n > 0) {
            c->wpos += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            if (!c->out_armed) arm(w, c, EPOLLIN | EPOLLOUT);
            c->out_armed = 1;
            return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            w->error = "write failed: connection lost";
            return;
        }
    }
    if (c->out_armed) arm(w, c, EPOLLIN);
    c->out_armed = 0;
}

static void send_next(struct worker *w, struct conn *c, uint64_t now) {
    if (!may_send(c, now)) return;
    c->current = c->next;
    c->next = (c->next + 1) % C.count;
    c->wpos = 0;
    c->have = 0;
    c->in_flight = 1;
    w->in_flight++;
    c->sent_ns = now_ns();
    flush_request(w, c);
}

static void copy_clip(char *dst, size_t cap, const char *src, size_t n) {
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void record_mismatch(struct worker *w, size_t index, const struct request *r, const char *got, size_t got_len) {
    if (w->nmismatch >= MAX_MISMATCHES) return;
    struct mismatch *m = &w->mismatches[w->nmismatch++];
    m->index = index;
    copy_clip(m->expected, sizeof m->expected, r->expect ? r->expect : "", r->expect ? r->expect_len : 0);
    copy_clip(m->got, sizeof m->got, got, got_len);
}

/* A reply must be exactly "action=TEXT\n\n"; TEXT is compared byte for byte. */
static void check_reply(struct worker *w, struct conn *c, size_t reply_len) {
    const struct request *r = &C.items[c->current];
    w->replies++;
    const char *first_nl = memchr(c->buf, '\n', reply_len);
    size_t line_len = (size_t)(first_nl - c->buf);
    int well_formed = line_len + 2 == reply_len && line_len >= 7 && !memcmp(c->buf, "action=", 7);
    if (!well_formed) {
        w->malformed++;
        record_mismatch(w, c->current, r, c->buf, reply_len - 1);
        return;
    }
    if (!r->expect || S.no_check) {
        w->unchecked++;
        return;
    }
    w->checked++;
    if (line_len - 7 != r->expect_len || memcmp(c->buf + 7, r->expect, r->expect_len)) {
        w->wrong++;
        record_mismatch(w, c->current, r, c->buf + 7, line_len - 7);
    }
}

static void complete(struct worker *w, struct conn *c, size_t reply_len) {
    uint64_t done = now_ns();
    check_reply(w, c, reply_len);
    atomic_fetch_add_explicit(&replies_done, 1, memory_order_relaxed);
    c->in_flight = 0;
    w->in_flight--;
    int in_window = count_mode() ? c->measured : (done >= t_warm_end && done < t_end);
    if (in_window) {
        hist_add(&w->hist, done - c->sent_ns);
        if (done > w->last_measured_ns) w->last_measured_ns = done;
        if (count_mode()) atomic_fetch_add(&measured_done, 1);
    }
    if (reply_len != c->have) {
        w->malformed++; /* bytes after the reply: a second reply or garbage */
        w->error = "server sent bytes after the reply";
        return;
    }
    send_next(w, c, done);
}

static void on_readable(struct worker *w, struct conn *c) {
    for (;;) {
        if (c->have == sizeof c->buf) {
            w->error = "reply longer than 8 KiB";
            return;
        }
        ssize_t n = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            w->error = "connection closed by server";
            return;
        }
        if (n < 0) return;
        size_t scan_from = c->have > 0 ? c->have - 1 : 0;
        c->have += (size_t)n;
        char *end = memmem(c->buf + scan_from, c->have - scan_from, "\n\n", 2);
        if (end && c->in_flight) {
            complete(w, c, (size_t)(end - c->buf) + 2);
            return;
        }
        if (!c->in_flight) {
            w->error = "server sent bytes while no request was in flight";
            return;
        }
    }
}

static void check_timeouts(struct worker *w, uint64_t now) {
    uint64_t limit = (uint64_t)(S.timeout_s * (double)NS);
    for (int i = 0; i < w->nconns; i++) {
        if (w->conns[i].in_flight && now - w->conns[i].sent_ns > limit) {
            w->error = "request timed out";
            return;
        }
    }
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    for (int i = 0; i < w->nconns; i++) send_next(w, &w->conns[i], now_ns());
    struct epoll_event events[256];
    uint64_t last_timeout_check = now_ns();
    while (!w->error && !atomic_load(&abort_run)) {
        int n = epoll_wait(w->ep, events, 256, 50);
        for (int i = 0; i < n && !w->error; i++) {
            struct conn *c = events[i].data.ptr;
            if (events[i].events & EPOLLOUT) flush_request(w, c);
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(w, c);
        }
        uint64_t now = now_ns();
        if (now - last_timeout_check > NS / 10) {
            check_timeouts(w, now);
            last_timeout_check = now;
        }
        if (w->in_flight == 0) break; /* nothing left to send or wait for */
    }
    if (w->error) atomic_store(&abort_run, 1);
    return NULL;
}

/* ---------- main: set-up, markers, report ---------- */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --target tcp:127.0.0.1:PORT|unix:PATH --corpus FILE\n"
            "               [--connections N] [--threads T] [--warmup S]\n"
            "               [--duration S | --requests N [--max-seconds S]] [--timeout S]\n"
            "               [--progress S] [--no-check] [--once]\n");
    exit(2);
}

static void parse_args(int argc, char **argv) {
    S = (struct settings){.connections = 1, .threads = 1, .warmup_s = 2, .duration_s = 10,
                          .timeout_s = 30, .max_s = 3600};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--no-check")) {
            S.no_check = 1;
            continue;
        }
        if (!strcmp(a, "--once")) {
            S.once = 1;
            continue;
        }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--target")) S.target_spec = v;
        else if (!strcmp(a, "--corpus")) S.corpus_path = v;
        else if (!strcmp(a, "--connections")) S.connections = atoi(v);
        else if (!strcmp(a, "--threads")) S.threads = atoi(v);
        else if (!strcmp(a, "--warmup")) S.warmup_s = atof(v);
        else if (!strcmp(a, "--duration")) S.duration_s = atof(v);
        else if (!strcmp(a, "--requests")) S.requests = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--timeout")) S.timeout_s = atof(v);
        else if (!strcmp(a, "--max-seconds")) S.max_s = atof(v);
        else if (!strcmp(a, "--progress")) S.progress_s = atof(v);
        else usage();
    }
    if (!S.target_spec || !S.corpus_path || S.connections < 1 || S.threads < 1) usage();
    if (S.threads > S.connections) S.threads = S.connections;
    if (S.requests) S.duration_s = 0;
}

static void marker(const char *phase) {
    printf("# phase %s\n", phase);
    fflush(stdout);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Waits until the deadline (or, with until_count, until the measured requests
 * are done), printing "# progress REPLIES" every --progress seconds so that a
 * driver can sample the server while a long run goes on. */
static void wait_phase(uint64_t deadline, int until_count) {
    uint64_t progress_step = (uint64_t)(S.progress_s * (double)NS);
    uint64_t next_progress = now_ns() + progress_step;
    while (!atomic_load(&abort_run)) {
        uint64_t now = now_ns();
        if (now >= deadline) return;
        if (until_count && atomic_load(&measured_done) >= S.requests) return;
        if (progress_step && now >= next_progress) {
            printf("# progress %llu\n", (unsigned long long)atomic_load(&replies_done));
            fflush(stdout);
            next_progress += progress_step;
        }
        /* Wake rarely: at 5 requests/s (postfwd) polling would be most of our CPU. */
        uint64_t left = deadline - now;
        uint64_t cap = until_count ? NS / 20 : NS / 5;
        if (progress_step && next_progress > now && next_progress - now < cap) cap = next_progress - now;
        if (left > cap) left = cap;
        struct timespec ts = {.tv_sec = (time_t)(left / NS), .tv_nsec = (long)(left % NS)};
        nanosleep(&ts, NULL);
    }
}

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

struct totals {
    struct hist hist;
    uint64_t replies, checked, wrong, malformed, unchecked, last_measured_ns;
    const char *error;
};

static void merge_workers(struct worker *ws, struct totals *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < S.threads; i++) {
        hist_merge(&t->hist, &ws[i].hist);
        t->replies += ws[i].replies;
        t->checked += ws[i].checked;
        t->wrong += ws[i].wrong;
        t->malformed += ws[i].malformed;
        t->unchecked += ws[i].unchecked;
        if (ws[i].last_measured_ns > t->last_measured_ns) t->last_measured_ns = ws[i].last_measured_ns;
        if (ws[i].error && !t->error) t->error = ws[i].error;
    }
    if (!t->error && count_mode() && t->hist.count < S.requests)
        t->error = "--max-seconds reached before --requests were measured";
}

static void print_mismatches(struct worker *ws) {
    printf("\"mismatches\":[");
    int first = 1;
    for (int i = 0; i < S.threads; i++) {
        for (int k = 0; k < ws[i].nmismatch; k++) {
            const struct mismatch *m = &ws[i].mismatches[k];
            printf("%s{\"index\":%zu,\"expected\":", first ? "" : ",", m->index);
            json_string(m->expected);
            printf(",\"got\":");
            json_string(m->got);
            printf("}");
            first = 0;
        }
    }
    printf("]");
}

static void report(struct worker *ws, double window_s, double loadgen_cpu_s) {
    struct totals t;
    merge_workers(ws, &t);
    double n = (double)t.hist.count;
    printf("{\"target\":");
    json_string(S.target_spec);
    printf(",\"connections\":%d,\"threads\":%d,\"corpus_size\":%zu,\"warmup_s\":%.3f,"
           "\"window_s\":%.6f,\"requests\":%llu,\"rps\":%.1f,",
           S.connections, S.threads, C.count, S.warmup_s, window_s,
           (unsigned long long)t.hist.count, window_s > 0 ? n / window_s : 0.0);
    printf("\"latency_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},",
           n > 0 ? (double)t.hist.sum_ns / n / 1000.0 : 0.0, hist_percentile_us(&t.hist, 0.50),
           hist_percentile_us(&t.hist, 0.90), hist_percentile_us(&t.hist, 0.99),
           hist_percentile_us(&t.hist, 0.999), (double)t.hist.max_ns / 1000.0);
    printf("\"loadgen_cpu_us_per_request\":%.2f,", n > 0 ? loadgen_cpu_s * 1e6 / n : 0.0);
    printf("\"replies\":%llu,\"checked\":%llu,\"wrong\":%llu,\"malformed\":%llu,\"unchecked\":%llu,",
           (unsigned long long)t.replies, (unsigned long long)t.checked, (unsigned long long)t.wrong,
           (unsigned long long)t.malformed, (unsigned long long)t.unchecked);
    print_mismatches(ws);
    printf(",\"error\":");
    if (t.error) json_string(t.error);
    else printf("null");
    printf("}\n");
    fflush(stdout);
    exit(t.error ? 1 : (t.wrong || t.malformed) ? 3 : 0);
}

static struct worker *make_workers(void) {
    struct worker *ws = calloc((size_t)S.threads, sizeof *ws);
    if (!ws) fatal("out of memory");
    for (int i = 0; i < S.threads; i++) {
        ws[i].ep = epoll_create1(EPOLL_CLOEXEC);
        ws[i].conns = calloc((size_t)S.connections, sizeof(struct conn));
        if (ws[i].ep < 0 || !ws[i].conns) fatal("cannot set up worker");
    }
    for (int i = 0; i < S.connections; i++) {
        struct worker *w = &ws[i % S.threads];
        struct conn *c = &w->conns[w->nconns++];
        c->fd = connect_target(&T);
        if (c->fd < 0) {
            perror("loadgen: connect");
            exit(1);
        }
        size_t first = (size_t)i * C.count / (size_t)S.connections;
        size_t after = (size_t)(i + 1) * C.count / (size_t)S.connections;
        c->next = first % C.count;
        c->remaining = after - first;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) fatal("epoll_ctl failed");
    }
    return ws;
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    load_corpus(S.corpus_path, &C);
    parse_target(S.target_spec, &T);
    if (S.once) {
        S.requests = C.count;
        S.warmup_s = 0;
        S.duration_s = 0;
    }
    struct worker *ws = make_workers();

    t_start = now_ns();
    t_warm_end = t_start + (uint64_t)(S.warmup_s * (double)NS);
    t_end = count_mode() ? UINT64_MAX : t_warm_end + (uint64_t)(S.duration_s * (double)NS);
    t_hard_end = t_start + (uint64_t)(S.max_s * (double)NS);
    for (int i = 0; i < S.threads; i++) pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);

    wait_phase(t_warm_end, 0);
    marker("measure");
    double cpu0 = cpu_seconds();
    uint64_t window_end;
    if (count_mode()) {
        wait_phase(t_hard_end, 1);
        window_end = now_ns();
    } else {
        wait_phase(t_end, 0);
        window_end = t_end;
    }
    double cpu1 = cpu_seconds();
    marker("drain");
    for (int i = 0; i < S.threads; i++) pthread_join(ws[i].thread, NULL);
    if (count_mode()) {
        struct totals t;
        merge_workers(ws, &t);
        if (t.last_measured_ns > t_warm_end) window_end = t.last_measured_ns;
    }
    double window_s = window_end > t_warm_end ? (double)(window_end - t_warm_end) / 1e9 : 0.0;
    report(ws, window_s, cpu1 - cpu0);
    return 0;
}
