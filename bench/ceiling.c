/*
 * ceiling: the protocol's ceiling on this machine.
 *
 * A single-threaded epoll server that answers "action=DUNNO\n\n" to every
 * complete policy request (a request ends with an empty line, see
 * docs/protocol.md, Framing). It does no parsing beyond
 * finding the empty line, so whatever throughput and latency it reaches is
 * the upper bound any policy daemon can reach through the same kernel,
 * loopback and load generator. It is single-threaded on purpose: postgate
 * runs one reactor thread, so this is the like-for-like floor of CPU cost.
 *
 * Usage: ceiling --listen tcp:PORT | unix:PATH [--lifetime SECONDS]
 * Listens on 127.0.0.1 only. Exits on SIGTERM/SIGINT or after --lifetime
 * seconds (default 3600) so that a forgotten server never stays behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define READ_CHUNK 65536

static const char REPLY[] = "action=DUNNO\n\n";
#define REPLY_LEN (sizeof(REPLY) - 1)

/* Per connection: only whether the last byte seen was a newline that ended
 * a non-empty line, which is all that is needed to find "\n\n" across reads. */
struct conn {
    int fd;
    int after_newline;  /* last byte was '\n' and the line before it was not empty */
    int line_started;   /* bytes seen on the current line */
};

static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int listen_tcp(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(fd, 1024) < 0) die("listen");
    return fd;
}

static int listen_unix(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "ceiling: socket path too long\n");
        exit(2);
    }
    strcpy(sa.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(fd, 1024) < 0) die("listen");
    return fd;
}

static void accept_all(int lfd, int ep, int is_tcp) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  /* EAGAIN or a transient error: wait for the next event */
        if (is_tcp) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct conn *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }
}

/* Counts complete requests in buf, carrying line state across reads. */
static int count_requests(struct conn *c, const char *buf, ssize_t n) {
    int complete = 0;
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] != '\n') {
            c->line_started = 1;
            c->after_newline = 0;
        } else if (c->line_started) {
            c->line_started = 0;
            c->after_newline = 1;
        } else if (c->after_newline) {
            complete++;
            c->after_newline = 0;
        }
    }
    return complete;
}

static void close_conn(struct conn *c) {
    close(c->fd);
    free(c);
}

/* Lock-step clients never have more than one reply outstanding, so a reply
 * always fits the socket buffer; a short write means a broken client. */
static int send_replies(int fd, int count) {
    static char out[REPLY_LEN * 64];
    while (count > 0) {
        int batch = count > 64 ? 64 : count;
        for (int k = 0; k < batch; k++) memcpy(out + k * REPLY_LEN, REPLY, REPLY_LEN);
        ssize_t want = (ssize_t)(batch * REPLY_LEN);
        if (write(fd, out, (size_t)want) != want) return -1;
        count -= batch;
    }
    return 0;
}

static void serve(struct conn *c) {
    static char buf[READ_CHUNK];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n > 0) {
            if (send_replies(c->fd, count_requests(c, buf, n)) < 0) {
                close_conn(c);
                return;
            }
            if (n < (ssize_t)sizeof buf) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        close_conn(c);  /* EOF or error; closing the fd removes it from epoll */
        return;
    }
}

static void parse_args(int argc, char **argv, const char **listen_spec, int *lifetime) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            *listen_spec = argv[++i];
        } else if (!strcmp(argv[i], "--lifetime") && i + 1 < argc) {
            *lifetime = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: ceiling --listen tcp:PORT|unix:PATH [--lifetime SECONDS]\n");
            exit(2);
        }
    }
    if (!*listen_spec) {
        fprintf(stderr, "ceiling: --listen is required\n");
        exit(2);
    }
}

int main(int argc, char **argv) {
    const char *spec = NULL;
    int lifetime = 3600;
    parse_args(argc, argv, &spec, &lifetime);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int is_tcp = strncmp(spec, "tcp:", 4) == 0;
    int lfd;
    if (is_tcp) {
        lfd = listen_tcp(atoi(spec + 4));
    } else if (strncmp(spec, "unix:", 5) == 0) {
        lfd = listen_unix(spec + 5);
    } else {
        fprintf(stderr, "ceiling: --listen must be tcp:PORT or unix:PATH\n");
        return 2;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");

    time_t deadline = time(NULL) + lifetime;
    struct epoll_event events[MAX_EVENTS];
    while (!stopping && time(NULL) < deadline) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 1000);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                accept_all(lfd, ep, is_tcp);
            } else {
                serve(events[i].data.ptr);
            }
        }
    }
    if (!is_tcp) unlink(spec + 5);
    return 0;
}
