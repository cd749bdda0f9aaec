#ifndef GATEHOUSE_BENCH_NET_H
#define GATEHOUSE_BENCH_NET_H
#include <stddef.h>
#include <stdint.h>

/* The alerts benchmark's load generator and receiver, in C on epoll as the were: in
   Swift on NIO they took 45-51 us of the two cores per event, which the server then did not
   have. Both run on one thread each and time with CLOCK_MONOTONIC. */

/* Nanoseconds on CLOCK_MONOTONIC. */
uint64_t bench_now_ns(void);

/* One whole HTTP/1.1 request (head and body). */
typedef struct {
    const char *data;
    size_t length;
} bench_request;

/* Sends requests[0..<count] over `connections` keep-alive connections to 127.0.0.1 (connection
   i to ports[i % nports]), one in flight per connection, each answer sending that connection's
   next request. Fills sent_ns[i] (when request i was sent), latency_ns[i] and status[i] (0: no
   answer — the connection closed first; it is opened again for the next). Returns 0, or -1
   with errno when a connection could not be made, a send failed, an answer was malformed, or
   nothing came for 30 s. */
int bench_load_run(const int *ports, int nports, int connections, const bench_request *requests, int count,
                   uint64_t *sent_ns, uint64_t *latency_ns, uint16_t *status);

/* A receiver on 127.0.0.1 answering every request `200 ok` at once, noting when each arrived
   and the number of its first event id ("id":"a<number>" after "events"). Returns the port,
   or -1 with errno. One at a time per process. */
int bench_sink_start(void);
void bench_sink_stop(void);
/* Requests received since the last reset. */
uint64_t bench_sink_count(void);
void bench_sink_reset(void);
/* Copies up to `max` arrivals since the last reset (event number, arrival time); returns how many. */
size_t bench_sink_arrivals(int64_t *numbers, uint64_t *ns, size_t max);

#endif
