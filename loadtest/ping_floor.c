// The heartbeat floor on this machine: what it costs the kernel, in the sender,
// to ping idle WebSocket connections over loopback TCP and read their pongs,
// with nothing else running in the sender: the least CPU an idle server with
// heartbeats can spend. Same shape as Herald's idle load: N connections, each
// sent a 2-byte ping frame every INTERVAL_MS (spread over one-second ticks, the
// pings of a tick sent in one burst), each answered by a 6-byte masked pong
// that the sender reads through epoll.
// build: cc -O2 -o /tmp/ping_floor ping_floor.c
// usage: /tmp/ping_floor PORT CONNECTIONS INTERVAL_MS SECS
//   e.g. /tmp/ping_floor 9401 19000 25000 60
//   -> one JSON line: pings, pongs, sender CPU, and ms of sender CPU per second per 1,000 connections.
// A receiver process (forked) answers every ping, like a load generator's clients would.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu(void) {
  struct rusage r; getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: %s PORT CONNECTIONS INTERVAL_MS SECS\n", argv[0]); return 2; }
  int port = atoi(argv[1]), n = atoi(argv[2]), interval_ms = atoi(argv[3]), secs = atoi(argv[4]);
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(ls, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(0x7f000001);
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4096)) { perror("listen"); return 1; }
  pid_t child = fork();
  if (child == 0) { // the clients: answer every ping with a pong
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
      int s = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(s, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      struct epoll_event e = {.events = EPOLLIN, .data.fd = s};
      epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
    }
    const char pong[6] = {(char)0x8a, (char)0x80, 1, 2, 3, 4};
    char buf[4096]; struct epoll_event ev[1024];
    for (;;) {
      int k = epoll_wait(ep, ev, 1024, 1000);
      for (int i = 0; i < k; i++) {
        ssize_t r = read(ev[i].data.fd, buf, sizeof buf);
        if (r == 0) exit(0);
        for (ssize_t j = 0; j + 1 < r; j += 2) send(ev[i].data.fd, pong, sizeof pong, MSG_DONTWAIT);
      }
    }
  }
  int *fd = malloc(sizeof(int) * n);
  int ep = epoll_create1(0);
  for (int i = 0; i < n; i++) {
    fd[i] = accept4(ls, 0, 0, SOCK_NONBLOCK);
    if (fd[i] < 0) { perror("accept"); return 1; }
    setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.fd = fd[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &e);
  }
  sleep(1);
  const char ping[2] = {(char)0x89, 0};
  int ticks_per_round = interval_ms / 1000 > 0 ? interval_ms / 1000 : 1;
  long pings = 0, pongs = 0;
  char buf[4096]; struct epoll_event ev[1024];
  double t0 = now(), c0 = cpu();
  for (int tick = 0; tick < secs; tick++) {
    // This tick's share of the connections gets its ping, in one burst.
    for (int i = tick % ticks_per_round; i < n; i += ticks_per_round)
      if (send(fd[i], ping, sizeof ping, MSG_DONTWAIT | MSG_NOSIGNAL) == sizeof ping) pings++;
    double until = t0 + tick + 1;
    for (;;) {
      int wait = (int)((until - now()) * 1000);
      if (wait <= 0) break;
      int k = epoll_wait(ep, ev, 1024, wait);
      for (int i = 0; i < k; i++) {
        ssize_t r;
        while ((r = read(ev[i].data.fd, buf, sizeof buf)) > 0) pongs += r / 6;
      }
    }
  }
  double c = cpu() - c0, t = now() - t0;
  printf("{\"connections\":%d,\"interval_ms\":%d,\"pings\":%ld,\"pongs\":%ld,\"secs\":%.2f,\"sender_cpu_s\":%.3f,"
         "\"cpu_ms_per_sec_per_1k_conns\":%.3f,\"cpu_us_per_ping\":%.2f}\n",
         n, interval_ms, pings, pongs, t, c, c * 1000 / t / (n / 1000.0), pings ? c * 1e6 / pings : 0);
  fflush(stdout);
  for (int i = 0; i < n; i++) close(fd[i]);
  waitpid(child, 0, 0);
  return 0;
}
