// socksload: the load generator and echo targets of `npm run bench`.
// Build: gcc -O2 -pthread -o socksload socksload.c
//
//   socksload echo-udp port=P [threads=N] [spin=US]   UDP echo on 127.0.0.1:P (SO_REUSEPORT, one socket per thread)
//   socksload echo-tcp port=P [addrs=N] [once=1]  TCP echo on 127.0.0.1:P (epoll), and with addrs on 127.0.1.1 ..
//                                             127.0.1.(N-1):P; once: half-closes after its first answer
//   socksload udp     proxy=P|0 target=T assoc=N size=S window=W seconds=D [threads=K] [spin=US]
//   socksload latency proxies=P1,P2,..|proxy=P target=T rate=R size=S seconds=D [slice=MS]  (0: direct)
//   socksload tcp     proxy=P|0 target=T conns=N seconds=D [chunk=B]
//   socksload rate    proxy=P|0 target=T seconds=D [threads=K] [srcn=M] [dsts=N]  (dsts: spread over N echo addresses)
//   socksload probe   port=P [seconds=D]     waits until 127.0.0.1:P accepts TCP (for servers inside a namespace)
//   socksload connect-server port=P [threads=N]  a minimal SOCKS5 server (see below): a measuring stick, not a server
//   socksload idle    proxy=P target=T count=N hold=D [send=1] [share=K] [srcn=M] [first=F] [uport=B] [threads=K]
//   Every mode that talks to a proxy also takes user=NAME pass=WORD: log in with RFC 1929.
//
// proxy=0 means the direct path (no proxy): the ceiling of this generator and echo on this machine.
// spin=US: the UDP echo and the closed-loop UDP generator poll for up to US microseconds of quiet
// before they sleep (default 0: they sleep at once). Two threads that sleep between datagrams are bound
// by how fast the machine wakes a thread (on virtual machines, slowly), not by CPU; the bench measures
// the direct path with polling to show what generator and echo can do at most, and the servers without,
// so that no polling takes CPU from the server under test.
// Every address is 127.0.0.0/8. Every loop ends by its `seconds`/`hold` deadline or by a bounded count.
// Each measuring mode prints one line `RESULT {json}` on stdout; `idle` prints `READY {json}` first.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 65507
#define WARMUP 0.5

static long g_spin_us = 0;

static double mono(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

// ---- key=value arguments ----
static int g_argc;
static char **g_argv;
static long arg(const char *key, long fallback) {
  size_t k = strlen(key);
  for (int i = 2; i < g_argc; i++)
    if (strncmp(g_argv[i], key, k) == 0 && g_argv[i][k] == '=') return strtol(g_argv[i] + k + 1, NULL, 10);
  return fallback;
}
// A string argument, or NULL when absent.
static const char *sarg(const char *key) {
  size_t k = strlen(key);
  for (int i = 2; i < g_argc; i++)
    if (strncmp(g_argv[i], key, k) == 0 && g_argv[i][k] == '=') return g_argv[i] + k + 1;
  return NULL;
}

static void die(const char *what) {
  fprintf(stderr, "socksload: %s: %s\n", what, strerror(errno));
  exit(1);
}

// Client source address number i: 127.0.0.1 when srcn is 0, else 127.0.0.2 .. 127.0.0.(1+srcn).
static uint32_t g_srcn;
// idle: this holder's first global association number (holders split one count), and with uport=B the client UDP
// sockets of single associations bind port B + n / srcn instead of an ephemeral one, so a server in the same network
// namespace keeps the whole ephemeral range for its own relay sockets.
static uint32_t g_first, g_uport;
static struct sockaddr_in source_addr(uint32_t i) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(g_srcn ? 0x7f000002u + ((g_first + i) % g_srcn) : INADDR_LOOPBACK);
  return a;
}
static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}
// Echo address number i of a TCP echo started with addrs=N: 127.0.0.1, then 127.0.1.1 .. 127.0.1.(N-1).
static struct sockaddr_in echo_addr(int port, uint32_t i) {
  struct sockaddr_in a = loopback(port);
  if (i) a.sin_addr.s_addr = htonl(0x7f000100u + i);
  return a;
}

static void raise_nofile(void) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

static int read_full(int fd, void *buf, int n) {
  int got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, (size_t)(n - got));
    if (r <= 0) return -1;
    got += (int)r;
  }
  return got;
}

// A blocking TCP connection from source address number `src` to dst, with 5 s timeouts.
static int tcp_connect_to(const struct sockaddr_in *dst, uint32_t src) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (g_srcn) {
    // The port is picked at connect() time against the full 4-tuple, so each source address has its own port space.
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in s = source_addr(src);
    if (bind(fd, (struct sockaddr *)&s, sizeof s) < 0) { close(fd); return -1; }
  }
  if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0) { close(fd); return -1; }
  return fd;
}
static int tcp_connect(int port, uint32_t src) {
  struct sockaddr_in a = loopback(port);
  return tcp_connect_to(&a, src);
}

// With user=NAME pass=WORD the greeting offers USERNAME/PASSWORD (RFC 1929) only, and logs in with them.
static const char *g_user, *g_pass;

// SOCKS5 greeting (no auth, or a login with user=/pass=) and request `cmd` (1 CONNECT, 3 UDP ASSOCIATE) for dst. Returns the control socket
// and the reply's BND in *bnd (0.0.0.0 replaced by 127.0.0.1), or -1 with *why set.
static int socks_request(int proxy, uint32_t src, int cmd, const struct sockaddr_in *dst, struct sockaddr_in *bnd, const char **why) {
  int fd = tcp_connect(proxy, src);
  if (fd < 0) { *why = "connect"; return -1; }
  unsigned char b[32] = {5, 1, g_user ? 2 : 0};
  if (write(fd, b, 3) != 3 || read_full(fd, b, 2) < 0) { *why = "greeting"; goto fail; }
  if (b[0] != 5 || b[1] != (g_user ? 2 : 0)) { *why = "method"; goto fail; }
  if (g_user) {
    unsigned char login[515];
    size_t ul = strlen(g_user), pl = strlen(g_pass);
    login[0] = 1;
    login[1] = (unsigned char)ul;
    memcpy(login + 2, g_user, ul);
    login[2 + ul] = (unsigned char)pl;
    memcpy(login + 3 + ul, g_pass, pl);
    ssize_t n = (ssize_t)(3 + ul + pl);
    if (write(fd, login, (size_t)n) != n || read_full(fd, b, 2) < 0) { *why = "login"; goto fail; }
    if (b[1] != 0) { *why = "login refused"; errno = 0; goto fail; }
  }
  unsigned char req[10] = {5, (unsigned char)cmd, 0, 1};
  memcpy(req + 4, &dst->sin_addr, 4);
  memcpy(req + 8, &dst->sin_port, 2);
  if (write(fd, req, 10) != 10 || read_full(fd, b, 4) < 0) { *why = "request"; goto fail; }
  if (b[1] != 0) {
    static __thread char reply[16];
    snprintf(reply, sizeof reply, "reply 0x%02x", b[1]);
    *why = reply;
    errno = 0;
    goto fail;
  }
  if (b[3] != 1 || read_full(fd, b + 4, 6) < 0) { *why = "bnd"; goto fail; }
  if (bnd) {
    *bnd = (struct sockaddr_in){.sin_family = AF_INET};
    memcpy(&bnd->sin_addr, b + 4, 4);
    memcpy(&bnd->sin_port, b + 8, 2);
    if (bnd->sin_addr.s_addr == 0) bnd->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  return fd;
fail:
  close(fd);
  return -1;
}

// ---- echo targets ----
static void *udp_echo_thread(void *arg) {
  int fd = (int)(long)arg;
  enum { BATCH = 32 };
  unsigned char *bufs = malloc((size_t)BATCH * 65536);
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_in from[BATCH];
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iov[i] = (struct iovec){bufs + (size_t)i * 65536, 65536};
      msgs[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i], .msg_iov = &iov[i], .msg_iovlen = 1};
    }
    // Polls for up to g_spin_us of quiet, then sleeps until a datagram comes.
    int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0 && g_spin_us > 0) {
      double until = mono() + (double)g_spin_us / 1e6;
      while (n <= 0 && mono() < until) n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    }
    if (n <= 0) n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
    if (n <= 0) continue;
    for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
    sendmmsg(fd, msgs, (unsigned)n, 0);
  }
  return NULL;
}

static int echo_udp(void) {
  int port = (int)arg("port", 0), threads = (int)arg("threads", 2);
  g_spin_us = (long)arg("spin", 0);
  pthread_t t;
  for (int i = 0; i < threads; i++) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0), one = 1, size = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    struct sockaddr_in a = loopback(port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind udp");
    if (port == 0) {
      socklen_t l = sizeof a;
      getsockname(fd, (struct sockaddr *)&a, &l);
      port = ntohs(a.sin_port);
    }
    pthread_create(&t, NULL, udp_echo_thread, (void *)(long)fd);
  }
  printf("READY {\"port\":%d}\n", port);
  fflush(stdout);
  // Ends when its parent closes stdin (or is gone).
  char c;
  while (read(0, &c, 1) > 0) {}
  return 0;
}

static int echo_tcp(void) {
  raise_nofile();
  int port = (int)arg("port", 0), addrs = (int)arg("addrs", 1), once = (int)arg("once", 0), one = 1;
  if (addrs < 1 || addrs > 255) addrs = 1;
  // addrs=N: the same port on N addresses (echo_addr), for clients that spread their connections over them.
  int lfds[256];
  int ep = epoll_create1(0);
  struct epoll_event ev;
  for (int i = 0; i < addrs; i++) {
    lfds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfds[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = echo_addr(port, (uint32_t)i);
    if (bind(lfds[i], (struct sockaddr *)&a, sizeof a) < 0 || listen(lfds[i], 4096) < 0) die("listen tcp");
    if (i == 0) {
      socklen_t l = sizeof a;
      getsockname(lfds[0], (struct sockaddr *)&a, &l);
      port = ntohs(a.sin_port);
    }
    ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = (uint64_t)lfds[i] | (1ull << 32)};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfds[i], &ev);
  }
  ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 0};
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  printf("READY {\"port\":%d,\"addrs\":%d}\n", port, addrs);
  fflush(stdout);
  static unsigned char buf[1 << 16];
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = (int)(evs[i].data.u64 & 0xffffffffu);
      if (fd == 0) {
        if (read(0, buf, sizeof buf) <= 0) return 0;
      } else if (evs[i].data.u64 >> 32) {
        int c;
        while ((c = accept4(fd, NULL, NULL, 0)) >= 0) {
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event ce = {.events = EPOLLIN, .data.u64 = (uint64_t)c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
      } else {
        // Blocking writes back: the client reads while it writes, so this never waits long.
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0 || write(fd, buf, (size_t)r) != r) close(fd);
        // once=1: the echo ends the connection (its FIN first) after its first answer, so the TIME_WAIT
        // of the connection is the echo's, on its own port, and not the client's (a proxy's) on a port
        // of its ephemeral range.
        else if (once) shutdown(fd, SHUT_WR);
      }
    }
  }
}

// ---- connect-server: the least a SOCKS5 CONNECT session can cost here ----
// No authentication, IPv4 targets, no limits, no logs, no timeouts, level-triggered epoll, one thread per
// CPU each with its own SO_REUSEPORT listener, every reply written whole. Against it, the new-sessions
// figure shows what the kernel's loopback TCP allows on this machine, so that a server's rate can be read
// as a share of it. It trusts its clients (the generator) and must never face others.
typedef struct {
  int client, target, state, ended_client, ended_target, dead;
  void *next_dead;
} cs_conn_t;
enum { CS_GREETING, CS_REQUEST, CS_CONNECTING, CS_RELAY };
static __thread cs_conn_t *cs_dead;
static int cs_port;

static void cs_watch(int ep, int op, int fd, uint32_t events, cs_conn_t *c, int target) {
  struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)target};
  epoll_ctl(ep, op, fd, &ev);
}

// Closes both sockets now; the memory goes after the batch, whose later events may still name it.
static void cs_close(int ep, cs_conn_t *c) {
  if (c->dead) return;
  c->dead = 1;
  if (c->client >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->client, NULL);
    close(c->client);
  }
  if (c->target >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->target, NULL);
    close(c->target);
  }
  c->next_dead = cs_dead;
  cs_dead = c;
}

// A side's end of stream: passed on as a FIN; the session ends when both sides have ended.
static void cs_ended(int ep, cs_conn_t *c, int target) {
  if (target) c->ended_target = 1;
  else c->ended_client = 1;
  shutdown(target ? c->client : c->target, SHUT_WR);
  if (c->ended_client && c->ended_target) return cs_close(ep, c);
  cs_watch(ep, EPOLL_CTL_MOD, target ? c->target : c->client, 0, c, target);
}

static void cs_client(int ep, cs_conn_t *c) {
  unsigned char buf[16384];
  ssize_t n = read(c->client, buf, sizeof buf);
  if (n < 0 && errno == EAGAIN) return;
  if (c->state == CS_RELAY) {
    if (n <= 0) return cs_ended(ep, c, 0);
    if (write(c->target, buf, (size_t)n) != n) cs_close(ep, c);
    return;
  }
  // While connecting only a hang-up or an error is reported: the session ends.
  if (n <= 0 || c->state == CS_CONNECTING) return cs_close(ep, c);
  size_t at = 0;
  if (c->state == CS_GREETING) {
    if (n < 3 || buf[0] != 5 || (size_t)n < 2u + buf[1] || write(c->client, "\x05\x00", 2) != 2) return cs_close(ep, c);
    c->state = CS_REQUEST;
    at = 2u + buf[1];
    if ((size_t)n == at) return;
  }
  if ((size_t)n < at + 10 || buf[at] != 5 || buf[at + 1] != 1 || buf[at + 3] != 1) return cs_close(ep, c);
  struct sockaddr_in to = {.sin_family = AF_INET};
  memcpy(&to.sin_addr, buf + at + 4, 4);
  memcpy(&to.sin_port, buf + at + 8, 2);
  int one = 1;
  c->target = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->target < 0) return cs_close(ep, c);
  setsockopt(c->target, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->target, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS) return cs_close(ep, c);
  c->state = CS_CONNECTING;
  cs_watch(ep, EPOLL_CTL_ADD, c->target, EPOLLOUT, c, 1);
  cs_watch(ep, EPOLL_CTL_MOD, c->client, 0, c, 0);
}

static void cs_target(int ep, cs_conn_t *c) {
  if (c->state == CS_CONNECTING) {
    static const unsigned char reply[10] = {5, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    int error = 0;
    socklen_t len = sizeof error;
    if (getsockopt(c->target, SOL_SOCKET, SO_ERROR, &error, &len) < 0 || error != 0 || write(c->client, reply, 10) != 10) return cs_close(ep, c);
    c->state = CS_RELAY;
    cs_watch(ep, EPOLL_CTL_MOD, c->target, EPOLLIN, c, 1);
    cs_watch(ep, EPOLL_CTL_MOD, c->client, EPOLLIN, c, 0);
    return;
  }
  unsigned char buf[16384];
  ssize_t n = read(c->target, buf, sizeof buf);
  if (n < 0 && errno == EAGAIN) return;
  if (n <= 0) return cs_ended(ep, c, 1);
  if (write(c->client, buf, (size_t)n) != n) cs_close(ep, c);
}

static int cs_listen(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) die("connect-server listen");
  return fd;
}

static void *cs_thread(void *arg) {
  int listener = (int)(long)arg, ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.u64 = 0};
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);
  struct epoll_event evs[256];
  for (;;) {
    int k = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < k; i++) {
      uint64_t d = evs[i].data.u64;
      if (d == 0) {
        for (int j = 0; j < 8; j++) {
          int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          cs_conn_t *c = calloc(1, sizeof *c);
          if (c == NULL) {
            close(fd);
            continue;
          }
          c->client = fd;
          c->target = -1;
          cs_watch(ep, EPOLL_CTL_ADD, fd, EPOLLIN, c, 0);
        }
        continue;
      }
      cs_conn_t *c = (cs_conn_t *)(uintptr_t)(d & ~(uint64_t)1);
      if (c->dead) continue;
      if (d & 1) cs_target(ep, c);
      else cs_client(ep, c);
    }
    while (cs_dead) {
      cs_conn_t *c = cs_dead;
      cs_dead = c->next_dead;
      free(c);
    }
  }
  return NULL;
}

static int connect_server(void) {
  raise_nofile();
  int threads = (int)arg("threads", 2);
  if (threads < 1 || threads > 64) threads = 2;
  int first = cs_listen((int)arg("port", 0));
  struct sockaddr_in a;
  socklen_t l = sizeof a;
  getsockname(first, (struct sockaddr *)&a, &l);
  cs_port = ntohs(a.sin_port);
  for (int i = 0; i < threads; i++) {
    pthread_t t;
    pthread_create(&t, NULL, cs_thread, (void *)(long)(i == 0 ? first : cs_listen(cs_port)));
  }
  printf("READY {\"port\":%d}\n", cs_port);
  fflush(stdout);
  // Ends when its parent closes stdin (or is gone).
  char ch;
  while (read(0, &ch, 1) > 0) {}
  return 0;
}

// ---- UDP closed loop ----
typedef struct {
  int fd, control, inflight;
  double last;
} flow_t;

typedef struct {
  flow_t *flows;
  int count, window, size, hdr;
  unsigned char *packet;
  double start, end;
  uint64_t received, lost, bad;
} udp_job_t;

static void refill(udp_job_t *j, flow_t *f, double now) {
  while (f->inflight < j->window) {
    if (send(f->fd, j->packet, (size_t)(j->hdr + j->size), MSG_DONTWAIT) < 0) break;
    f->inflight++;
  }
  f->last = now;
}

static void *udp_job(void *arg) {
  udp_job_t *j = arg;
  int ep = epoll_create1(0);
  for (int i = 0; i < j->count; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, j->flows[i].fd, &ev);
  }
  unsigned char *buf = malloc(MAX_SIZE + 64);
  struct epoll_event evs[256];
  double now = mono(), next_scan = now + 0.05;
  for (int i = 0; i < j->count; i++) refill(j, &j->flows[i], now);
  double quiet_until = 0;
  while ((now = mono()) < j->end) {
    // Polls while quiet for less than g_spin_us, then sleeps (10 ms at most: the deadline and the scan).
    int n = epoll_wait(ep, evs, 256, now < quiet_until ? 0 : 10);
    now = mono();
    if (n > 0) quiet_until = now + (double)g_spin_us / 1e6;
    int counting = now >= j->start;
    for (int e = 0; e < n; e++) {
      flow_t *f = &j->flows[evs[e].data.u32];
      for (int k = 0; k < 64; k++) {
        ssize_t r = recv(f->fd, buf, MAX_SIZE + 64, MSG_DONTWAIT);
        if (r < 0) break;
        if (f->inflight > 0) f->inflight--;
        if (r != j->hdr + j->size) { j->bad++; continue; }
        if (counting) j->received++;
      }
      refill(j, f, now);
    }
    if (now >= next_scan) {
      // A flow with nothing back for 200 ms has lost its window: count it and start the window again.
      next_scan = now + 0.05;
      for (int i = 0; i < j->count; i++) {
        flow_t *f = &j->flows[i];
        if (now - f->last > 0.2) {
          if (counting) j->lost += (uint64_t)f->inflight;
          f->inflight = 0;
          refill(j, f, now);
        }
      }
    }
  }
  free(buf);
  close(ep);
  return NULL;
}

// Opens the UDP socket of flow i, with its association when proxy != 0; fills hdr (the RFC 1928 §7 header).
static int open_flow(int proxy, int target, uint32_t i, flow_t *f, int declare, const char **why) {
  f->fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (f->fd < 0) { *why = "udp socket"; return -1; }
  struct sockaddr_in me = source_addr(i);
  if (g_uport && g_srcn) me.sin_port = htons((uint16_t)(g_uport + (g_first + i) / g_srcn));
  if (bind(f->fd, (struct sockaddr *)&me, sizeof me) < 0) { *why = "udp bind"; close(f->fd); return -1; }
  socklen_t l = sizeof me;
  getsockname(f->fd, (struct sockaddr *)&me, &l);
  struct sockaddr_in peer = loopback(target);
  f->control = -1;
  if (proxy) {
    // RFC 1928 §6: DST of UDP ASSOCIATE is the address and port the client will send from.
    struct sockaddr_in declared = declare ? me : (struct sockaddr_in){.sin_family = AF_INET};
    f->control = socks_request(proxy, i, 3, &declared, &peer, why);
    if (f->control < 0) { close(f->fd); return -1; }
  }
  if (connect(f->fd, (struct sockaddr *)&peer, sizeof peer) < 0) {
    *why = "udp connect";
    close(f->fd);
    if (f->control >= 0) close(f->control);
    return -1;
  }
  return 0;
}

static int udp_header(unsigned char *p, int proxy, int target) {
  if (!proxy) return 0;
  unsigned char h[10] = {0, 0, 0, 1, 127, 0, 0, 1, (unsigned char)(target >> 8), (unsigned char)target};
  memcpy(p, h, 10);
  return 10;
}

static int udp_loop(void) {
  raise_nofile();
  int proxy = (int)arg("proxy", 0), target = (int)arg("target", 0), assoc = (int)arg("assoc", 1);
  int size = (int)arg("size", 512), window = (int)arg("window", 8), threads = (int)arg("threads", 1);
  double seconds = (double)arg("seconds", 3);
  g_srcn = (uint32_t)arg("srcn", 0);
  g_spin_us = (long)arg("spin", 0);
  if (threads > assoc) threads = assoc;
  flow_t *flows = calloc((size_t)assoc, sizeof *flows);
  for (int i = 0; i < assoc; i++) {
    const char *why = "";
    if (open_flow(proxy, target, (uint32_t)i, &flows[i], 1, &why) < 0) {
      printf("RESULT {\"mode\":\"udp\",\"error\":\"association %d: %s (%s)\"}\n", i, why, strerror(errno));
      return 1;
    }
  }
  unsigned char *packet = calloc(1, (size_t)size + 16);
  int hdr = udp_header(packet, proxy, target);
  memset(packet + hdr, 'x', (size_t)size);
  udp_job_t *jobs = calloc((size_t)threads, sizeof *jobs);
  pthread_t *tids = calloc((size_t)threads, sizeof *tids);
  double start = mono() + WARMUP, end = start + seconds;
  int per = assoc / threads, rest = assoc % threads, at = 0;
  for (int t = 0; t < threads; t++) {
    int n = per + (t < rest);
    jobs[t] = (udp_job_t){.flows = flows + at, .count = n, .window = window, .size = size, .hdr = hdr, .packet = packet, .start = start, .end = end};
    at += n;
    pthread_create(&tids[t], NULL, udp_job, &jobs[t]);
  }
  uint64_t received = 0, lost = 0, bad = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tids[t], NULL);
    received += jobs[t].received;
    lost += jobs[t].lost;
    bad += jobs[t].bad;
  }
  printf("RESULT {\"mode\":\"udp\",\"assoc\":%d,\"size\":%d,\"window\":%d,\"threads\":%d,\"seconds\":%.3f,"
         "\"received\":%llu,\"lost\":%llu,\"bad\":%llu,\"pps\":%.1f}\n",
         assoc, size, window, threads, seconds, (unsigned long long)received, (unsigned long long)lost,
         (unsigned long long)bad, (double)received / seconds);
  return 0;
}

// ---- fixed-rate latency ----
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

// The peers of one latency run take turns in slices of `slice` ms (the order given, again and again) until each
// has had `seconds` of measuring: a slow spell of the machine (this one is shared and virtual) falls on all of
// them alike instead of on whichever one was being measured. Only one peer has datagrams in flight at a time.
// The first SLICE_SKIP datagrams of a slice, the first after the peer sat idle through the others' turns, do
// not count.
#define MAX_PEERS 8
#define SLICE_SKIP 2
typedef struct {
  int proxy, hdr;
  flow_t f;
  double *rtt;
  size_t n, cap;
  uint64_t sent;
} lat_peer_t;

static int latency(void) {
  int target = (int)arg("target", 0), rate = (int)arg("rate", 2000), size = (int)arg("size", 64);
  double seconds = (double)arg("seconds", 3), slice = (double)arg("slice", 100) / 1000;
  if (size < 16) size = 16;
  if (rate < 1) rate = 1;
  if (slice <= 0) slice = 0.1;
  // proxies=P1,P2,... (0: the direct path); proxy=P for one.
  lat_peer_t peers[MAX_PEERS];
  int np = 0;
  const char *list = NULL;
  for (int i = 2; i < g_argc; i++) {
    if (!strncmp(g_argv[i], "proxies=", 8)) list = g_argv[i] + 8;
    else if (!strncmp(g_argv[i], "proxy=", 6) && !list) list = g_argv[i] + 6;
  }
  for (const char *c = list ? list : "0"; *c && np < MAX_PEERS; c++) {
    char *after;
    long v = strtol(c, &after, 10);
    if (after == c) break;
    peers[np++] = (lat_peer_t){.proxy = (int)v};
    c = after;
    if (*c != ',') break;
  }
  size_t cap = (size_t)(rate * (seconds + 1)) + 16;
  for (int i = 0; i < np; i++) {
    lat_peer_t *p = &peers[i];
    const char *why = "";
    if (open_flow(p->proxy, target, (uint32_t)i, &p->f, 1, &why) < 0) {
      printf("RESULT {\"mode\":\"latency\",\"error\":\"peer %d: %s (%s)\"}\n", p->proxy, why, strerror(errno));
      return 1;
    }
    p->hdr = p->proxy ? 10 : 0;
    p->rtt = malloc(cap * sizeof *p->rtt);
    p->cap = cap;
  }
  unsigned char packet[MAX_SIZE + 16], buf[MAX_SIZE + 64];
  memset(packet, 'x', sizeof packet);
  struct pollfd pf[MAX_PEERS];
  for (int i = 0; i < np; i++) pf[i] = (struct pollfd){.fd = peers[i].f.fd, .events = POLLIN};
  // Warm-up: every peer in turn, a datagram each. Then the slices.
  double t0 = mono(), start = t0 + WARMUP, end = start + seconds * np, interval = 1.0 / rate, next = t0;
  long slice_at = -1, in_slice = 0;
  uint64_t k = 0;
  for (;;) {
    double now = mono();
    if (now >= end + 0.2) break;
    if (now >= next && now < end) {
      int who, counted = 0;
      if (now < start) {
        who = (int)(k++ % (uint64_t)np);
      } else {
        long s = (long)((now - start) / slice);
        if (s != slice_at) { slice_at = s; in_slice = 0; }
        who = (int)(s % np);
        counted = in_slice++ >= SLICE_SKIP;
      }
      lat_peer_t *p = &peers[who];
      // [RFC 1928 header through a proxy] send time, whether it counts, filler.
      udp_header(packet, p->proxy, target);
      memcpy(packet + p->hdr, &now, sizeof now);
      packet[p->hdr + sizeof now] = (unsigned char)counted;
      if (send(p->f.fd, packet, (size_t)(p->hdr + size), 0) > 0 && counted) p->sent++;
      next += interval;
      continue;
    }
    double wait = (now < end ? next : end + 0.2) - now;
    // ppoll sleeps with nanosecond precision: no busy waiting that would take a CPU from the servers.
    struct timespec ts_wait = {.tv_sec = (time_t)wait, .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
    if (wait < 0) ts_wait = (struct timespec){0, 0};
    if (ppoll(pf, (nfds_t)np, &ts_wait, NULL) <= 0) continue;
    for (int i = 0; i < np; i++) {
      if (!(pf[i].revents & POLLIN)) continue;
      lat_peer_t *p = &peers[i];
      ssize_t r;
      while ((r = recv(p->f.fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
        double at = mono(), ts;
        if (r != p->hdr + size) continue;
        memcpy(&ts, buf + p->hdr, sizeof ts);
        if (buf[p->hdr + sizeof ts] == 1 && p->n < p->cap) p->rtt[p->n++] = (at - ts) * 1e6;
      }
    }
  }
  printf("RESULT {\"mode\":\"latency\",\"rate\":%d,\"size\":%d,\"slice\":%.3f,\"peers\":[", rate, size, slice);
  for (int i = 0; i < np; i++) {
    lat_peer_t *p = &peers[i];
    qsort(p->rtt, p->n, sizeof *p->rtt, cmp_double);
    size_t n = p->n;
    double p50 = n ? p->rtt[n / 2] : -1, p99 = n ? p->rtt[(size_t)((double)(n - 1) * 0.99)] : -1, max = n ? p->rtt[n - 1] : -1;
    printf("%s{\"proxy\":%d,\"sent\":%llu,\"received\":%zu,\"p50us\":%.1f,\"p99us\":%.1f,\"maxus\":%.1f}", i ? "," : "", p->proxy,
           (unsigned long long)p->sent, n, p50, p99, max);
    free(p->rtt);
    close(p->f.fd);
    if (p->f.control >= 0) close(p->f.control);
  }
  printf("]}\n");
  return 0;
}

// ---- TCP bulk echo ----
typedef struct {
  int fd, chunk;
  double start, end;
  uint64_t bytes;
  int failed;
} tunnel_t;

static void *tunnel_job(void *arg) {
  tunnel_t *t = arg;
  unsigned char *out = malloc((size_t)t->chunk), *in = malloc(1 << 16);
  memset(out, 'y', (size_t)t->chunk);
  int64_t outstanding = 0;
  const int64_t most = 1 << 20; // bytes written and not yet echoed back
  struct pollfd p = {.fd = t->fd};
  double now;
  while ((now = mono()) < t->end) {
    p.events = POLLIN | (outstanding < most ? POLLOUT : 0);
    if (poll(&p, 1, 10) <= 0) continue;
    if (p.revents & (POLLERR | POLLHUP)) { t->failed = 1; break; }
    if (p.revents & POLLOUT) {
      ssize_t w = send(t->fd, out, (size_t)t->chunk, MSG_DONTWAIT);
      if (w > 0) outstanding += w;
      else if (w < 0 && errno != EAGAIN) { t->failed = 1; break; }
    }
    if (p.revents & POLLIN) {
      ssize_t r = recv(t->fd, in, 1 << 16, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN)) { t->failed = 1; break; }
      if (r > 0) {
        outstanding -= r;
        if (now >= t->start) t->bytes += (uint64_t)r;
      }
    }
  }
  free(out);
  free(in);
  return NULL;
}

static int tcp_bulk(void) {
  int proxy = (int)arg("proxy", 0), target = (int)arg("target", 0), conns = (int)arg("conns", 1);
  int chunk = (int)arg("chunk", 16384);
  double seconds = (double)arg("seconds", 3);
  tunnel_t *ts = calloc((size_t)conns, sizeof *ts);
  pthread_t *tids = calloc((size_t)conns, sizeof *tids);
  struct sockaddr_in dst = loopback(target);
  for (int i = 0; i < conns; i++) {
    const char *why = "";
    ts[i].fd = proxy ? socks_request(proxy, 0, 1, &dst, NULL, &why) : tcp_connect(target, 0);
    if (ts[i].fd < 0) {
      printf("RESULT {\"mode\":\"tcp\",\"error\":\"tunnel %d: %s (%s)\"}\n", i, proxy ? why : "connect", strerror(errno));
      return 1;
    }
  }
  double start = mono() + WARMUP, end = start + seconds;
  for (int i = 0; i < conns; i++) {
    ts[i].chunk = chunk;
    ts[i].start = start;
    ts[i].end = end;
    pthread_create(&tids[i], NULL, tunnel_job, &ts[i]);
  }
  uint64_t bytes = 0;
  int failed = 0;
  for (int i = 0; i < conns; i++) {
    pthread_join(tids[i], NULL);
    bytes += ts[i].bytes;
    failed += ts[i].failed;
    close(ts[i].fd);
  }
  printf("RESULT {\"mode\":\"tcp\",\"conns\":%d,\"chunk\":%d,\"seconds\":%.3f,\"bytes\":%llu,\"failed\":%d,\"mbps\":%.2f}\n",
         conns, chunk, seconds, (unsigned long long)bytes, failed, (double)bytes * 8 / seconds / 1e6);
  return 0;
}

// ---- new sessions per second ----
typedef struct {
  int proxy, target, index, threads, dsts;
  double start, end;
  uint64_t done, errors;
  const char *why;
} rate_t;

static void *rate_job(void *arg) {
  rate_t *r = arg;
  unsigned char msg[32], back[32];
  memset(msg, 'z', sizeof msg);
  uint32_t src = (uint32_t)r->index, n = (uint32_t)r->index;
  while (mono() < r->end) {
    const char *why = "connect";
    src += (uint32_t)r->threads;
    struct sockaddr_in dst = echo_addr(r->target, n++ % (uint32_t)r->dsts);
    int fd = r->proxy ? socks_request(r->proxy, src, 1, &dst, NULL, &why) : tcp_connect_to(&dst, src);
    int ok = fd >= 0;
    if (ok && (write(fd, msg, sizeof msg) != sizeof msg || read_full(fd, back, sizeof back) < 0 || memcmp(msg, back, sizeof msg) != 0)) {
      ok = 0;
      why = "echo";
    }
    if (fd >= 0) close(fd);
    if (mono() < r->start) continue;
    if (ok) r->done++;
    else {
      r->errors++;
      r->why = why;
      usleep(1000);
    }
  }
  return NULL;
}

static int session_rate(void) {
  raise_nofile();
  int proxy = (int)arg("proxy", 0), target = (int)arg("target", 0), threads = (int)arg("threads", 8);
  int dsts = (int)arg("dsts", 1);
  double seconds = (double)arg("seconds", 3);
  g_srcn = (uint32_t)arg("srcn", 16);
  if (dsts < 1) dsts = 1;
  rate_t *rs = calloc((size_t)threads, sizeof *rs);
  pthread_t *tids = calloc((size_t)threads, sizeof *tids);
  double start = mono() + WARMUP, end = start + seconds;
  for (int i = 0; i < threads; i++) {
    rs[i] = (rate_t){.proxy = proxy, .target = target, .index = i, .threads = threads, .dsts = dsts, .start = start, .end = end, .why = ""};
    pthread_create(&tids[i], NULL, rate_job, &rs[i]);
  }
  uint64_t done = 0, errors = 0;
  const char *why = "";
  for (int i = 0; i < threads; i++) {
    pthread_join(tids[i], NULL);
    done += rs[i].done;
    errors += rs[i].errors;
    if (rs[i].errors) why = rs[i].why;
  }
  printf("RESULT {\"mode\":\"rate\",\"threads\":%d,\"seconds\":%.3f,\"sessions\":%llu,\"errors\":%llu,\"lastError\":\"%s\",\"perSecond\":%.1f}\n",
         threads, seconds, (unsigned long long)done, (unsigned long long)errors, why, (double)done / seconds);
  return 0;
}

// ---- idle associations holder ----
typedef struct {
  int proxy, target, share, send_one;
  uint32_t from, to;
  flow_t *flows;
  uint64_t errors, echoed;
  const char *why;
  int err;
} idle_t;

// Opens associations [from, to). With share=K, K consecutive associations send from one client UDP socket (each
// association then has its own relay on the server, so one source port serves several of them).
static void *idle_job(void *arg) {
  idle_t *j = arg;
  unsigned char packet[64] = {0}, buf[256];
  int hdr = udp_header(packet, 1, j->target);
  memset(packet + hdr, 'i', 16);
  uint64_t errors_before = 0, streak = 0;
  for (uint32_t i = j->from; i < j->to; i++) {
    flow_t *f = &j->flows[i];
    const char *why = "";
    f->fd = -1;
    f->control = -1;
    // Bounded when the server is down or out of descriptors: after 100 failures in a row, the rest count as failed.
    streak = j->errors > errors_before ? streak + 1 : 0;
    errors_before = j->errors;
    if (streak >= 100) {
      j->errors += j->to - i;
      for (; i < j->to; i++) j->flows[i].fd = j->flows[i].control = -1;
      break;
    }
    if (j->share > 1 && i % (uint32_t)j->share != 0) {
      // Reuse the socket of the group's first association: associate with the same declared port.
      flow_t *lead = &j->flows[i - i % (uint32_t)j->share];
      if (lead->fd < 0) { j->errors++; continue; }
      struct sockaddr_in me, relay;
      socklen_t l = sizeof me;
      getsockname(lead->fd, (struct sockaddr *)&me, &l);
      f->control = socks_request(j->proxy, i / (uint32_t)j->share, 3, &me, &relay, &why);
      if (f->control < 0) { j->errors++; j->why = why; j->err = errno; continue; }
      if (j->send_one) {
        sendto(lead->fd, packet, (size_t)hdr + 16, 0, (struct sockaddr *)&relay, sizeof relay);
        struct pollfd p = {.fd = lead->fd, .events = POLLIN};
        if (poll(&p, 1, 2000) > 0 && recv(lead->fd, buf, sizeof buf, MSG_DONTWAIT) == hdr + 16) j->echoed++;
      }
      continue;
    }
    if (j->share > 1) {
      // The group's socket stays unconnected: its associations each have their own relay.
      f->fd = socket(AF_INET, SOCK_DGRAM, 0);
      // Groups, not associations, take turns over the source addresses, so every address gets its share.
      struct sockaddr_in me = source_addr(i / (uint32_t)j->share), relay;
      socklen_t l = sizeof me;
      if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&me, sizeof me) < 0) { j->errors++; j->why = "udp bind"; j->err = errno; if (f->fd >= 0) close(f->fd); f->fd = -1; continue; }
      getsockname(f->fd, (struct sockaddr *)&me, &l);
      f->control = socks_request(j->proxy, i / (uint32_t)j->share, 3, &me, &relay, &why);
      if (f->control < 0) { j->errors++; j->why = why; j->err = errno; close(f->fd); f->fd = -1; continue; }
      if (j->send_one) {
        sendto(f->fd, packet, (size_t)hdr + 16, 0, (struct sockaddr *)&relay, sizeof relay);
        struct pollfd p = {.fd = f->fd, .events = POLLIN};
        if (poll(&p, 1, 2000) > 0 && recv(f->fd, buf, sizeof buf, MSG_DONTWAIT) == hdr + 16) j->echoed++;
      }
      continue;
    }
    if (open_flow(j->proxy, j->target, i, f, 1, &why) < 0) { j->errors++; j->why = why; j->err = errno; f->fd = -1; continue; }
    if (j->send_one) {
      send(f->fd, packet, (size_t)hdr + 16, 0);
      struct pollfd p = {.fd = f->fd, .events = POLLIN};
      if (poll(&p, 1, 2000) > 0 && recv(f->fd, buf, sizeof buf, MSG_DONTWAIT) == hdr + 16) j->echoed++;
    }
  }
  return NULL;
}

static int idle(void) {
  raise_nofile();
  int proxy = (int)arg("proxy", 0), target = (int)arg("target", 0), count = (int)arg("count", 1000);
  int threads = (int)arg("threads", 4), share = (int)arg("share", 1), send_one = (int)arg("send", 1);
  double hold = (double)arg("hold", 30);
  g_srcn = (uint32_t)arg("srcn", 0);
  g_first = (uint32_t)arg("first", 0);
  g_uport = (uint32_t)arg("uport", 0);
  flow_t *flows = calloc((size_t)count, sizeof *flows);
  idle_t *js = calloc((size_t)threads, sizeof *js);
  pthread_t *tids = calloc((size_t)threads, sizeof *tids);
  // Slices are multiples of `share`, so a sharing group never spans two threads.
  uint32_t unit = (uint32_t)(share > 1 ? share : 1), groups = ((uint32_t)count + unit - 1) / unit;
  double t0 = mono();
  for (int t = 0; t < threads; t++) {
    uint32_t from = groups * (uint32_t)t / (uint32_t)threads * unit, to = groups * (uint32_t)(t + 1) / (uint32_t)threads * unit;
    if (to > (uint32_t)count) to = (uint32_t)count;
    js[t] = (idle_t){.proxy = proxy, .target = target, .share = share, .send_one = send_one, .from = from, .to = to, .flows = flows, .why = ""};
    pthread_create(&tids[t], NULL, idle_job, &js[t]);
  }
  uint64_t errors = 0, echoed = 0;
  const char *why = "";
  int err = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tids[t], NULL);
    errors += js[t].errors;
    echoed += js[t].echoed;
    if (js[t].errors) { why = js[t].why; err = js[t].err; }
  }
  double setup = mono() - t0;
  char line[512];
  snprintf(line, sizeof line, "{\"mode\":\"idle\",\"count\":%d,\"share\":%d,\"open\":%llu,\"errors\":%llu,\"echoed\":%llu,\"setupSeconds\":%.2f,\"lastError\":\"%s%s%s\"}",
           count, share, (unsigned long long)((uint64_t)count - errors), (unsigned long long)errors, (unsigned long long)echoed,
           setup, why, err ? ": " : "", err ? strerror(err) : "");
  printf("READY %s\n", line);
  fflush(stdout);
  // Hold until the parent closes stdin or `hold` seconds pass; then count control connections the server closed.
  double end = mono() + hold;
  struct pollfd p = {.fd = 0, .events = POLLIN};
  char c;
  while (mono() < end) {
    if (poll(&p, 1, 100) > 0 && read(0, &c, 1) <= 0) break;
  }
  uint64_t dropped = 0;
  for (int i = 0; i < count; i++) {
    if (flows[i].control < 0) continue;
    struct pollfd q = {.fd = flows[i].control, .events = POLLIN};
    if (poll(&q, 1, 0) > 0) dropped++;
  }
  line[strlen(line) - 1] = 0;
  printf("RESULT %s,\"closedByServer\":%llu}\n", line, (unsigned long long)dropped);
  return 0;
}

static int probe(void) {
  int port = (int)arg("port", 0);
  double end = mono() + (double)arg("seconds", 10);
  int up = 0;
  while (!up && mono() < end) {
    int fd = tcp_connect(port, 0);
    if (fd >= 0) {
      up = 1;
      close(fd);
    } else {
      usleep(50000);
    }
  }
  printf("RESULT {\"mode\":\"probe\",\"port\":%d,\"up\":%d}\n", port, up);
  return up ? 0 : 1;
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  const char *mode = argc > 1 ? argv[1] : "";
  g_user = sarg("user");
  g_pass = sarg("pass");
  if (g_user && (!g_pass || strlen(g_user) < 1 || strlen(g_user) > 255 || strlen(g_pass) < 1 || strlen(g_pass) > 255)) {
    fprintf(stderr, "socksload: user= and pass= go together, each 1 to 255 bytes\n");
    return 2;
  }
  if (!strcmp(mode, "echo-udp")) return echo_udp();
  if (!strcmp(mode, "echo-tcp")) return echo_tcp();
  if (!strcmp(mode, "udp")) return udp_loop();
  if (!strcmp(mode, "latency")) return latency();
  if (!strcmp(mode, "tcp")) return tcp_bulk();
  if (!strcmp(mode, "rate")) return session_rate();
  if (!strcmp(mode, "idle")) return idle();
  if (!strcmp(mode, "probe")) return probe();
  if (!strcmp(mode, "connect-server")) return connect_server();
  fprintf(stderr, "usage: socksload echo-udp|echo-tcp|udp|latency|tcp|rate|idle|probe|connect-server key=value...\n");
  return 2;
}
