#define _GNU_SOURCE
#include "BenchNet.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* A growable byte buffer. */
typedef struct {
    char *data;
    size_t length, capacity;
} buffer;

static int buffer_reserve(buffer *b, size_t more) {
    if (b->length + more <= b->capacity) return 0;
    size_t capacity = b->capacity ? b->capacity : 16384;
    while (capacity < b->length + more) capacity *= 2;
    char *data = realloc(b->data, capacity);
    if (!data) return -1;
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static void buffer_consume(buffer *b, size_t n) {
    memmove(b->data, b->data + n, b->length - n);
    b->length -= n;
}

/* Reads what the socket has; 1 when the peer closed, -1 on error, 0 otherwise. */
static int buffer_read(buffer *b, int fd) {
    for (;;) {
        if (buffer_reserve(b, 16384) < 0) return -1;
        ssize_t n = recv(fd, b->data + b->length, b->capacity - b->length, 0);
        if (n > 0) {
            b->length += (size_t)n;
            continue;
        }
        if (n == 0) return 1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == EINTR) continue;
        return -1;
    }
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* The value of header `name` (with its colon, lower case) in head[0..<length], or NULL. */
static const char *header(const char *head, size_t length, const char *name, size_t *value_length) {
    size_t name_length = strlen(name);
    const char *line = memchr(head, '\n', length);
    while (line && (size_t)(line - head) + 1 < length) {
        line += 1;
        const char *end = memmem(line, length - (size_t)(line - head), "\r\n", 2);
        if (!end) return NULL;
        size_t n = (size_t)(end - line);
        if (n >= name_length && strncasecmp(line, name, name_length) == 0) {
            const char *value = line + name_length;
            while (value < end && (*value == ' ' || *value == '\t')) value++;
            *value_length = (size_t)(end - value);
            return value;
        }
        line = end + 1;
    }
    return NULL;
}

/* The length of the whole message at the start of b (head and body: Content-Length or
   chunked), 0 while incomplete, -1 when malformed. `head_length` gets the head's. */
static long message_length(const char *data, size_t length, size_t *head_length) {
    const char *end = memmem(data, length, "\r\n\r\n", 4);
    if (!end) return length > 65536 ? -1 : 0;
    size_t head = (size_t)(end - data) + 4;
    *head_length = head;
    size_t n;
    const char *te = header(data, head, "transfer-encoding:", &n);
    if (te && memmem(te, n, "chunked", 7)) {
        size_t p = head;
        for (;;) {
            const char *eol = memmem(data + p, length - p, "\r\n", 2);
            if (!eol) return 0;
            long size = strtol(data + p, NULL, 16);
            if (size < 0) return -1;
            p = (size_t)(eol - data) + 2;
            if (size == 0) {
                const char *last = memmem(data + p - 2, length - (p - 2), "\r\n\r\n", 4);
                return last ? (long)(last - data) + 4 : 0;
            }
            if (length - p < (size_t)size + 2) return 0;
            p += (size_t)size + 2;
        }
    }
    const char *cl = header(data, head, "content-length:", &n);
    long body = cl ? strtol(cl, NULL, 10) : 0;
    if (body < 0) return -1;
    return length - head < (size_t)body ? 0 : (long)(head + (size_t)body);
}

/* ---- The load generator ---- */

typedef struct {
    int fd;
    int port;
    int current; /* the request in flight, or -1 */
    size_t written;
    buffer in;
} load_connection;

static int connect_local(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    set_nonblocking(fd);
    return fd;
}

static int watch(int epoll, int fd, uint32_t events, uint32_t index, int op) {
    struct epoll_event event = {.events = events, .data.u32 = index};
    return epoll_ctl(epoll, op, fd, &event);
}

/* Writes what is left of the connection's request; -1 on error. */
static int load_flush(int epoll, load_connection *c, uint32_t index, const bench_request *requests) {
    const bench_request *r = &requests[c->current];
    while (c->written < r->length) {
        ssize_t n = send(c->fd, r->data + c->written, r->length - c->written, MSG_NOSIGNAL);
        if (n > 0) {
            c->written += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return watch(epoll, c->fd, EPOLLIN | EPOLLOUT, index, EPOLL_CTL_MOD);
        if (n < 0 && errno == EINTR) continue;
        return -1;
    }
    return watch(epoll, c->fd, EPOLLIN, index, EPOLL_CTL_MOD);
}

/* Starts request `index` on the connection: notes when it was sent and writes it. */
static int load_start(int epoll, load_connection *c, uint32_t slot, int index, const bench_request *requests, uint64_t *sent_ns) {
    c->current = index;
    c->written = 0;
    sent_ns[index] = bench_now_ns();
    return load_flush(epoll, c, slot, requests);
}

int bench_load_run(const int *ports, int nports, int connections, const bench_request *requests, int count,
                   uint64_t *sent_ns, uint64_t *latency_ns, uint16_t *status) {
    if (connections <= 0 || nports <= 0) {
        errno = EINVAL;
        return -1;
    }
    int epoll = epoll_create1(0);
    if (epoll < 0) return -1;
    load_connection *c = calloc((size_t)connections, sizeof *c);
    if (!c) {
        close(epoll);
        errno = ENOMEM;
        return -1;
    }
    int result = 0, next = 0, done = 0, open = 0;
    for (int i = 0; i < connections; i++) {
        c[i].fd = -1;
        c[i].current = -1;
        c[i].port = ports[i % nports];
    }
    for (int i = 0; i < connections && next < count; i++) {
        c[i].fd = connect_local(c[i].port);
        if (c[i].fd < 0 || watch(epoll, c[i].fd, EPOLLIN, (uint32_t)i, EPOLL_CTL_ADD) < 0) {
            result = -1;
            goto out;
        }
        open++;
        if (load_start(epoll, &c[i], (uint32_t)i, next++, requests, sent_ns) < 0) {
            result = -1;
            goto out;
        }
    }
    struct epoll_event events[64];
    while (done < count && open > 0) {
        int n = epoll_wait(epoll, events, 64, 30000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = ETIMEDOUT;
            result = -1;
            goto out;
        }
        for (int e = 0; e < n; e++) {
            uint32_t i = events[e].data.u32;
            load_connection *k = &c[i];
            if (k->fd < 0) continue;
            if ((events[e].events & EPOLLOUT) && k->current >= 0 && load_flush(epoll, k, i, requests) < 0) {
                result = -1;
                goto out;
            }
            if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            int state = buffer_read(&k->in, k->fd);
            for (;;) {
                size_t head = 0;
                long length = k->current >= 0 ? message_length(k->in.data, k->in.length, &head) : 0;
                if (length < 0) {
                    errno = EPROTO;
                    result = -1;
                    goto out;
                }
                if (length == 0) break;
                uint64_t now = bench_now_ns();
                latency_ns[k->current] = now - sent_ns[k->current];
                status[k->current] = k->in.length >= 12 ? (uint16_t)atoi(k->in.data + 9) : 0;
                size_t value_length = 0;
                const char *connection = header(k->in.data, head, "connection:", &value_length);
                int closing = connection && memmem(connection, value_length, "close", 5);
                buffer_consume(&k->in, (size_t)length);
                done++;
                k->current = -1;
                if (closing) {
                    state = 1;
                    break;
                }
                /* Not on a connection the server has closed: the reconnect below sends it. */
                if (next < count && state == 0) {
                    if (load_start(epoll, k, i, next++, requests, sent_ns) < 0) {
                        result = -1;
                        goto out;
                    }
                }
            }
            if (state != 0 || (k->current < 0 && next >= count)) {
                /* Closed (by either side), or out of work: a request still in flight got no
                   answer; a connection that has more to send opens again. */
                if (state != 0 && k->current >= 0) {
                    status[k->current] = 0;
                    latency_ns[k->current] = bench_now_ns() - sent_ns[k->current];
                    done++;
                    k->current = -1;
                }
                close(k->fd);
                k->fd = -1;
                k->in.length = 0;
                open--;
                if (next < count) {
                    k->fd = connect_local(k->port);
                    if (k->fd < 0 || watch(epoll, k->fd, EPOLLIN, i, EPOLL_CTL_ADD) < 0) {
                        result = -1;
                        goto out;
                    }
                    open++;
                    if (load_start(epoll, k, i, next++, requests, sent_ns) < 0) {
                        result = -1;
                        goto out;
                    }
                }
            }
        }
    }
out:;
    int saved = errno;
    for (int i = 0; i < connections; i++) {
        if (c[i].fd >= 0) close(c[i].fd);
        free(c[i].in.data);
    }
    free(c);
    close(epoll);
    errno = saved;
    return result;
}

/* ---- The sink ---- */

static const char sink_answer[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

static struct {
    int listener;
    int wake[2];
    pthread_t thread;
    pthread_mutex_t lock;
    int64_t *numbers;
    uint64_t *times;
    size_t length, capacity;
    uint64_t count;
} sink = {.listener = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

typedef struct {
    int fd;
    buffer in;
    size_t slot; /* its index in the sink thread's list */
} sink_connection;

/* The number in the body's first event id after "events": ("id":"a<number>"), or -1. */
static int64_t event_number(const char *body, size_t length) {
    const char *events = memmem(body, length, "\"events\":", 9);
    if (!events) return -1;
    size_t rest = length - (size_t)(events - body);
    const char *id = memmem(events, rest, "\"id\":\"a", 7);
    if (!id) return -1;
    const char *p = id + 7, *end = body + length;
    if (p >= end || *p < '0' || *p > '9') return -1;
    int64_t n = 0;
    while (p < end && *p >= '0' && *p <= '9') n = n * 10 + (*p++ - '0');
    return n;
}

static void sink_record(int64_t number, uint64_t at) {
    pthread_mutex_lock(&sink.lock);
    if (number >= 0) {
        if (sink.length == sink.capacity) {
            size_t capacity = sink.capacity ? sink.capacity * 2 : 65536;
            int64_t *numbers = realloc(sink.numbers, capacity * sizeof *numbers);
            if (numbers) sink.numbers = numbers;
            uint64_t *times = realloc(sink.times, capacity * sizeof *times);
            if (times) sink.times = times;
            if (numbers && times) sink.capacity = capacity;
        }
        if (sink.length < sink.capacity) {
            sink.numbers[sink.length] = number;
            sink.times[sink.length] = at;
            sink.length++;
        }
    }
    __atomic_add_fetch(&sink.count, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&sink.lock);
}

/* Answers every whole request the connection has; -1 when it must close. */
static int sink_serve(sink_connection *c) {
    for (;;) {
        size_t head = 0;
        long length = message_length(c->in.data, c->in.length, &head);
        if (length < 0) return -1;
        if (length == 0) return 0;
        sink_record(event_number(c->in.data + head, (size_t)length - head), bench_now_ns());
        size_t sent = 0;
        while (sent < sizeof sink_answer - 1) {
            ssize_t n = send(c->fd, sink_answer + sent, sizeof sink_answer - 1 - sent, MSG_NOSIGNAL);
            if (n > 0) {
                sent += (size_t)n;
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && errno == EAGAIN) {
                /* The client is not reading its answers: wait until it does (or give up). */
                struct pollfd writable = {.fd = c->fd, .events = POLLOUT};
                if (poll(&writable, 1, 5000) <= 0) return -1;
            } else {
                return -1;
            }
        }
        buffer_consume(&c->in, (size_t)length);
    }
}

/* The sink thread's open connections (closed when it stops). */
static sink_connection **sink_open;
static size_t sink_open_count, sink_open_capacity;

static void sink_close(int epoll, sink_connection *c) {
    epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.data);
    sink_open[c->slot] = sink_open[--sink_open_count];
    sink_open[c->slot]->slot = c->slot;
    free(c);
}

static void *sink_run(void *unused) {
    (void)unused;
    int epoll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epoll, EPOLL_CTL_ADD, sink.listener, &event);
    sink_connection wake = {.fd = sink.wake[0]};
    event.data.ptr = &wake;
    epoll_ctl(epoll, EPOLL_CTL_ADD, sink.wake[0], &event);
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(epoll, events, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        for (int e = 0; e < n; e++) {
            sink_connection *c = events[e].data.ptr;
            if (c == &wake) {
                while (sink_open_count > 0) sink_close(epoll, sink_open[sink_open_count - 1]);
                free(sink_open);
                sink_open = NULL;
                sink_open_capacity = 0;
                close(epoll);
                return NULL;
            }
            if (!c) {
                int fd;
                while ((fd = accept4(sink.listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (sink_open_count == sink_open_capacity) {
                        size_t capacity = sink_open_capacity ? sink_open_capacity * 2 : 64;
                        sink_connection **list = realloc(sink_open, capacity * sizeof *list);
                        if (!list) {
                            close(fd);
                            continue;
                        }
                        sink_open = list;
                        sink_open_capacity = capacity;
                    }
                    sink_connection *k = calloc(1, sizeof *k);
                    if (!k) {
                        close(fd);
                        continue;
                    }
                    k->fd = fd;
                    k->slot = sink_open_count;
                    sink_open[sink_open_count++] = k;
                    struct epoll_event add = {.events = EPOLLIN, .data.ptr = k};
                    epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &add);
                }
                continue;
            }
            int state = buffer_read(&c->in, c->fd);
            if (sink_serve(c) < 0 || state != 0) sink_close(epoll, c);
        }
    }
    close(epoll);
    return NULL;
}

int bench_sink_start(void) {
    if (sink.listener >= 0) {
        errno = EBUSY;
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(fd, 256) < 0 ||
        getsockname(fd, (struct sockaddr *)&address, &size) < 0 || pipe(sink.wake) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    sink.listener = fd;
    bench_sink_reset();
    if (pthread_create(&sink.thread, NULL, sink_run, NULL) != 0) {
        close(fd);
        close(sink.wake[0]);
        close(sink.wake[1]);
        sink.listener = -1;
        return -1;
    }
    return ntohs(address.sin_port);
}

void bench_sink_stop(void) {
    if (sink.listener < 0) return;
    (void)!write(sink.wake[1], "x", 1);
    pthread_join(sink.thread, NULL);
    close(sink.listener);
    close(sink.wake[0]);
    close(sink.wake[1]);
    sink.listener = -1;
}

uint64_t bench_sink_count(void) { return __atomic_load_n(&sink.count, __ATOMIC_RELAXED); }

void bench_sink_reset(void) {
    pthread_mutex_lock(&sink.lock);
    sink.length = 0;
    __atomic_store_n(&sink.count, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&sink.lock);
}

size_t bench_sink_arrivals(int64_t *numbers, uint64_t *ns, size_t max) {
    pthread_mutex_lock(&sink.lock);
    size_t n = sink.length < max ? sink.length : max;
    memcpy(numbers, sink.numbers, n * sizeof *numbers);
    memcpy(ns, sink.times, n * sizeof *ns);
    pthread_mutex_unlock(&sink.lock);
    return n;
}
