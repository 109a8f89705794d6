// Batched UDP I/O for the relay sockets: recvmmsg(2) and sendmmsg(2), with UDP GSO.
//
// Node's dgram makes one system call, one buffer and one JS callback per datagram. Here a readable
// socket is drained up to BATCH datagrams per recvmmsg into one arena shared by the environment's
// sockets, JS is called once per batch (it reads lengths and senders from a metadata array and the
// bytes from views of the arena), and the sends JS makes meanwhile are queued and leave in one
// sendmmsg per socket when JS returns. The pure TypeScript path (dgram) stays the fallback.
//
// Contract with JS (src/native/udp.ts):
//   udpArena() -> { arena: ArrayBuffer, meta: ArrayBuffer, batch, slot }
//     callbacks.udpDispatch(owner, count): datagram i is arena[i*slot, i*slot + len); meta as int32
//       per datagram [len, port, family (4|6), 0, addr words 0..3 (raw network-order bytes)]. The
//       views are valid only during the call: whatever must outlive it is copied.
//     callbacks.udpError(owner, code, count): sends queued during a batch that the kernel refused, or
//       (count 0) a socket error that ended its watching ('EPOLL…': the socket can no longer be read).
//   udpBind(owner, ipv6, receiveBuffer?, sendBuffer?, host?, port?, reusePort?, peerHost?, peerPort?) -> [handle, port]
//     throws an Error with .code on failure; buffer sizes in bytes (0: the kernel's default); host: an
//     IP literal of the family (absent or null: all addresses), port (absent: an ephemeral one);
//     reusePort: SO_REUSEPORT, so each process of a server holds its own socket of one shared port;
//     peerHost/peerPort: connect(2) it to that sender, whose datagrams the kernel then gives to this
//     socket rather than to any unconnected one of the port's SO_REUSEPORT group
//   udpSend(handle, header|null, payload, port, address, offset) -> 0, or a negative errno
//   udpNtop(i) -> the sender address of datagram i as text ("::ffff:127.0.0.1", as dgram writes it)
//   udpClose(handle)                         idempotent
//   udpCounters() -> [gsoMessages, gsoDatagrams]
//   udpBusyPoll(us)   the adaptive busy polling of on_readable() for this environment; 20 µs until set
//   udpInode(handle) -> the socket's inode (its line in /proc/net/udp[6] carries its kernel drops)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "helper.h"

#define BATCH 32
#define SLOT 65536
#define META_WORDS 8
#define SEND_MAX 64
#define SEND_ARENA (1024 * 1024)
#define ROUNDS 4
// UDP GSO groups: at most this many datagrams, each at most GSO_SEGMENT_MAX bytes (so the segment
// fits a 1500-byte MTU with IPv6 and UDP headers), GSO_BYTES_MAX in all.
#define GSO_SEGMENTS_MAX 64
#define GSO_SEGMENT_MAX 1452
#define GSO_BYTES_MAX 60000
#define SPIN_ROUNDS 16

typedef struct udp_state state_t;

typedef struct relay {
  obj_t o;
  uv_poll_t poll;
  state_t *st;
  int fd;
  int ipv6;
  int send_errors;
  int last_errno;
  int error_listed;
  int gso;
} relay_t;

struct udp_state {
  env_t *e;
  uv_loop_t *loop;
  // Adaptive busy polling (see on_readable()) and whether new sockets group for UDP GSO.
  int64_t spin_us;
  int gso_enabled;
  char *arena;
  int32_t *meta;
  struct mmsghdr rmsgs[BATCH];
  struct iovec riov[BATCH];
  struct sockaddr_in6 raddr[BATCH];
  int in_batch;
  uint64_t iteration;
  int ready, last_ready;
  // The send queue: entries [0, nsend) with their bytes in send_arena[0, send_used).
  int nsend;
  size_t send_used;
  char *send_arena;
  relay_t *send_owner[SEND_MAX];
  struct mmsghdr smsgs[SEND_MAX];
  struct iovec siov[SEND_MAX];
  struct sockaddr_in6 saddr[SEND_MAX];
  relay_t *errored[SEND_MAX];
  // What flush() hands sendmmsg: entries grouped for UDP GSO (see group()).
  struct mmsghdr out[SEND_MAX];
  struct iovec out_iov[SEND_MAX];
  int out_count[SEND_MAX];
  uint16_t out_segment[SEND_MAX];
  char out_control[SEND_MAX][CMSG_SPACE(sizeof(uint16_t))];
  uint64_t gso_messages, gso_datagrams;
  int nerrored;
  // The last address text parsed for a send, and what it parsed to.
  char last_text[64];
  int last_ipv6;
  struct sockaddr_in6 last_addr;
};

static void call_js(relay_t *r, napi_ref fn, size_t argc, napi_value *argv) {
  env_call(r->o.env, fn, &r->o, argc, argv);
}

// A refusal of entry k of the queue: counted on its socket, reported by report_errors() once JS is no
// longer running.
static void note_refusal(state_t *st, relay_t *r, int code) {
  r->send_errors++;
  r->last_errno = code;
  if (!r->error_listed && st->nerrored < SEND_MAX) {
    r->error_listed = 1;
    st->errored[st->nerrored++] = r;
  }
}

static int same_destination(const struct mmsghdr *x, const struct mmsghdr *y) {
  return x->msg_hdr.msg_namelen == y->msg_hdr.msg_namelen && memcmp(x->msg_hdr.msg_name, y->msg_hdr.msg_name, x->msg_hdr.msg_namelen) == 0;
}

// Groups one socket's queued entries [from, to) into st->out: entries to the same destination with
// the same size (the group's last may be shorter) become one message with UDP_SEGMENT (UDP GSO), so
// the kernel takes them through the IP stack once. Order is kept per destination; UDP has none
// across destinations. Returns the number of messages.
static int group(state_t *st, relay_t *r, int from, int to) {
  int nout = 0, niov = 0;
  char used[SEND_MAX] = { 0 };
  for (int a = from; a < to; a++) {
    if (used[a - from]) continue;
    used[a - from] = 1;
    size_t seg = st->siov[a].iov_len, total = seg;
    int first_iov = niov;
    st->out_iov[niov++] = st->siov[a];
    // An empty datagram is never a segment: the kernel cuts a group by bytes, so it would vanish.
    if (r->gso && seg > 0 && seg <= GSO_SEGMENT_MAX) {
      for (int b = a + 1; b < to && niov - first_iov < GSO_SEGMENTS_MAX; b++) {
        if (used[b - from] || !same_destination(&st->smsgs[a], &st->smsgs[b])) continue;
        size_t len = st->siov[b].iov_len;
        if (len == 0 || len > seg || total + len > GSO_BYTES_MAX) break;
        used[b - from] = 1;
        st->out_iov[niov++] = st->siov[b];
        total += len;
        if (len < seg) break;
      }
    }
    struct mmsghdr *m = &st->out[nout];
    m->msg_hdr = st->smsgs[a].msg_hdr;
    m->msg_hdr.msg_iov = &st->out_iov[first_iov];
    m->msg_hdr.msg_iovlen = (size_t)(niov - first_iov);
    st->out_count[nout] = niov - first_iov;
    st->out_segment[nout] = (uint16_t)seg;
    if (niov - first_iov > 1) {
      struct cmsghdr *c = (struct cmsghdr *)st->out_control[nout];
      m->msg_hdr.msg_control = c;
      m->msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      memcpy(CMSG_DATA(c), &st->out_segment[nout], sizeof(uint16_t));
    } else {
      m->msg_hdr.msg_control = NULL;
      m->msg_hdr.msg_controllen = 0;
    }
    nout++;
  }
  return nout;
}

// Sends what the batch queued: per socket, one sendmmsg of its entries grouped by group(). A
// group the kernel refuses (no GSO on the route: no checksum offload, a segment over the MTU) is
// sent again datagram by datagram, and that socket groups no more. Other refusals are counted.
static void flush(state_t *st) {
  int i = 0;
  while (i < st->nsend) {
    relay_t *r = st->send_owner[i];
    int end = i + 1;
    while (end < st->nsend && st->send_owner[end] == r) end++;
    int nout = group(st, r, i, end);
    int at = 0;
    while (at < nout) {
      int sent = sendmmsg(r->fd, &st->out[at], (unsigned)(nout - at), MSG_DONTWAIT);
      if (sent > 0) {
        for (int k = at; k < at + sent; k++) {
          if (st->out_count[k] < 2) continue;
          st->gso_messages++;
          st->gso_datagrams += (uint64_t)st->out_count[k];
        }
        at += sent;
        continue;
      }
      if (sent < 0 && errno == EINTR) continue;
      int code = sent < 0 ? errno : EIO;
      struct mmsghdr *m = &st->out[at];
      if (st->out_count[at] > 1 && code != EAGAIN && code != ENOBUFS) {
        // One at a time, each from its own iovec, without the segment option.
        r->gso = 0;
        for (int k = 0; k < st->out_count[at]; k++) {
          struct msghdr one = m->msg_hdr;
          one.msg_iov = &m->msg_hdr.msg_iov[k];
          one.msg_iovlen = 1;
          one.msg_control = NULL;
          one.msg_controllen = 0;
          ssize_t rc;
          do rc = sendmsg(r->fd, &one, MSG_DONTWAIT);
          while (rc < 0 && errno == EINTR);
          if (rc < 0) note_refusal(st, r, errno);
        }
      } else {
        for (int k = 0; k < st->out_count[at]; k++) note_refusal(st, r, code);
      }
      at++;
    }
    i = end;
  }
  st->nsend = 0;
  st->send_used = 0;
}

static void report_errors(state_t *st) {
  int nerrored = st->nerrored;
  st->nerrored = 0;
  for (int k = 0; k < nerrored; k++) {
    relay_t *r = st->errored[k];
    int count = r->send_errors, code = r->last_errno;
    r->send_errors = 0;
    r->error_listed = 0;
    if (r->o.closed) continue;
    napi_value argv[3];
    if (napi_create_string_utf8(st->e->env, errno_code(code), NAPI_AUTO_LENGTH, &argv[1]) != napi_ok || napi_create_int32(st->e->env, count, &argv[2]) != napi_ok) continue;
    call_js(r, st->e->cb_udp_error, 3, argv);
  }
}

// Adaptive busy polling: after a batch, when this was the only relay socket ready in the loop's
// iteration, keep reading it for up to spin_us of quiet before going back to sleep in epoll. At a
// few associations the reply to what was just sent is usually back within that time, and the
// wake-up it saves costs more than the polling. Anything else ready in the loop ends the spin.
static void on_readable(uv_poll_t *handle, int status, int events);


// An error the kernel reported on the socket (libuv then stopped watching it): taken off the socket,
// reported, and the socket watched again; if it cannot be, JS hears 'EPOLL…' and ends the association.
static void socket_error(relay_t *r, int status) {
  int error = 0;
  socklen_t len = sizeof error;
  if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  if (error == 0) error = -status;
  int rc = uv_poll_start(&r->poll, UV_READABLE, on_readable);
  napi_env env = r->o.env->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value argv[3];
  char code[32];
  snprintf(code, sizeof code, "%s%s", rc == 0 ? "" : "EPOLL ", errno_code(rc == 0 ? error : -rc));
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &argv[1]) == napi_ok && napi_create_int32(env, rc == 0 ? 1 : 0, &argv[2]) == napi_ok)
    call_js(r, r->o.env->cb_udp_error, 3, argv);
  (void)napi_close_handle_scope(env, scope);
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  relay_t *r = (relay_t *)handle->data;
  state_t *st = r->st;
  napi_env env = st->e->env;
  (void)events;
  if (r->o.closed) return;
  if (status < 0) return socket_error(r, status);
  int64_t spin_us = st->spin_us;
  uv_metrics_t metrics;
  if (uv_metrics_info(st->loop, &metrics) == 0 && metrics.loop_count != st->iteration) {
    st->iteration = metrics.loop_count;
    st->last_ready = st->ready;
    st->ready = 0;
  }
  st->ready++;
  int may_spin = spin_us > 0 && st->last_ready <= 1 && st->ready <= 1;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  int64_t idle_since = 0;
  int rounds = 0;
  while (!r->o.closed) {
    for (int i = 0; i < BATCH; i++) {
      st->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
      st->rmsgs[i].msg_hdr.msg_flags = 0;
    }
    int n = recvmmsg(r->fd, st->rmsgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) {
      if (!may_spin || rounds == 0) break;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
      if (idle_since == 0) idle_since = now;
      if (now - idle_since >= spin_us) break;
      // Anything else ready in the loop (another socket, a timer's wake-up, IPC) ends the spin.
      int others = 0;
      for (;;) {
        struct epoll_event ev[4];
        int k = epoll_wait(uv_backend_fd(st->loop), ev, 4, 0);
        if (k < 0 && errno == EINTR) continue;
        for (int j = 0; j < k; j++) if (ev[j].data.fd != r->fd) others = 1;
        if (k != 0 || now - idle_since >= spin_us) break;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
      }
      if (others || now - idle_since >= spin_us) break;
      continue;
    }
    idle_since = 0;
    for (int i = 0; i < n; i++) {
      int32_t *m = st->meta + i * META_WORDS;
      const struct sockaddr *from = (const struct sockaddr *)&st->raddr[i];
      m[0] = (int32_t)st->rmsgs[i].msg_len;
      m[3] = 0;
      if (from->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)from;
        m[1] = ntohs(a->sin6_port);
        m[2] = 6;
        memcpy(&m[4], &a->sin6_addr, 16);
      } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)from;
        m[1] = ntohs(a->sin_port);
        m[2] = 4;
        memcpy(&m[4], &a->sin_addr, 4);
        m[5] = m[6] = m[7] = 0;
      }
    }
    napi_value argv[2];
    if (napi_create_int32(env, n, &argv[1]) != napi_ok) break;
    st->in_batch = 1;
    call_js(r, st->e->cb_udp_dispatch, 2, argv);
    st->in_batch = 0;
    flush(st);
    report_errors(st);
    rounds++;
    if (!may_spin ? (n < BATCH || rounds >= ROUNDS) : rounds >= SPIN_ROUNDS) break;
  }
  (void)napi_close_handle_scope(env, scope);
}

static int parse_address(state_t *st, const char *text, int ipv6, struct sockaddr_in6 *out) {
  if (st->last_ipv6 == ipv6 && strcmp(text, st->last_text) == 0) {
    *out = st->last_addr;
    return 0;
  }
  struct sockaddr_in6 addr;
  memset(&addr, 0, sizeof addr);
  if (ipv6) {
    addr.sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, text, &addr.sin6_addr) != 1) return -EINVAL;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&addr;
    a->sin_family = AF_INET;
    if (inet_pton(AF_INET, text, &a->sin_addr) != 1) return -EINVAL;
  }
  snprintf(st->last_text, sizeof st->last_text, "%s", text);
  st->last_ipv6 = ipv6;
  st->last_addr = addr;
  *out = addr;
  return 0;
}

// The environment's UDP state, made on first use (the arena is 2 MiB: a client never needs it).
static state_t *udp_state(napi_env env) {
  env_t *e = env_of(env);
  if (e == NULL) return NULL;
  if (e->udp != NULL) return e->udp;
  state_t *st = calloc(1, sizeof *st);
  if (st == NULL) return NULL;
  st->arena = malloc((size_t)BATCH * SLOT);
  st->meta = calloc(BATCH * META_WORDS, sizeof(int32_t));
  st->send_arena = malloc(SEND_ARENA);
  if (!st->arena || !st->meta || !st->send_arena) {
    free(st->arena);
    free(st->meta);
    free(st->send_arena);
    free(st);
    return NULL;
  }
  for (int i = 0; i < BATCH; i++) {
    st->riov[i].iov_base = st->arena + (size_t)i * SLOT;
    st->riov[i].iov_len = SLOT;
    st->rmsgs[i].msg_hdr.msg_iov = &st->riov[i];
    st->rmsgs[i].msg_hdr.msg_iovlen = 1;
    st->rmsgs[i].msg_hdr.msg_name = &st->raddr[i];
  }
  const char *gso = getenv("SOCKSGATE_GSO");
  st->gso_enabled = !(gso != NULL && strcmp(gso, "0") == 0);
  st->spin_us = 20;
  st->last_ipv6 = -1;
  st->e = e;
  st->loop = e->loop;
  e->udp = st;
  return st;
}

void udp_state_free(env_t *e) {
  state_t *st = e->udp;
  if (st == NULL) return;
  free(st->arena);
  free(st->meta);
  free(st->send_arena);
  free(st);
  e->udp = NULL;
}

static void on_closed(uv_handle_t *handle) {
  relay_t *r = (relay_t *)handle->data;
  env_t *e = r->o.env;
  close(r->fd);
  obj_handle_closed(&r->o);
  env_handle_closed(e);
}

// Sends this socket queued in the running batch still go: the descriptor closes after the batch.
static void relay_shut(obj_t *o) {
  relay_t *r = (relay_t *)o;
  uv_poll_stop(&r->poll);
  uv_close((uv_handle_t *)&r->poll, on_closed);
}

static relay_t *get_relay(napi_env env, napi_value value) {
  return (relay_t *)obj_unwrap(env, value, K_RELAY);
}

// send(handle, header|null, payload, port, address, offset) -> 0 | -errno: header + payload from byte
// offset on.
static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) return throw_message(env, NULL, "udpSend: 5 arguments");
  relay_t *r = get_relay(env, argv[0]);
  if (r == NULL) return NULL;
  state_t *st = r->st;
  void *head = NULL, *body = NULL;
  size_t head_len = 0, body_len = 0;
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[1], &type));
  if (type != napi_null && type != napi_undefined) CHECK(napi_get_buffer_info(env, argv[1], &head, &head_len));
  CHECK(napi_get_buffer_info(env, argv[2], &body, &body_len));
  uint32_t offset = 0;
  if (argc >= 6) CHECK(napi_get_value_uint32(env, argv[5], &offset));
  int32_t port;
  CHECK(napi_get_value_int32(env, argv[3], &port));
  char text[64];
  size_t text_len;
  CHECK(napi_get_value_string_latin1(env, argv[4], text, sizeof text, &text_len));
  int rc = 0;
  struct sockaddr_in6 addr;
  if (r->o.closed) rc = -EBADF;
  else if (port <= 0 || port > 65535 || offset > body_len) rc = -EINVAL;
  else rc = parse_address(st, text, r->ipv6, &addr);
  if (rc == 0) {
    body = (char *)body + offset;
    body_len -= offset;
    if (r->ipv6) addr.sin6_port = htons((uint16_t)port);
    else ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)port);
    socklen_t addr_len = r->ipv6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    size_t total = head_len + body_len;
    if (st->in_batch && total <= SEND_ARENA) {
      if (st->nsend == SEND_MAX || st->send_used + total > SEND_ARENA) flush(st);
      int k = st->nsend++;
      char *bytes = st->send_arena + st->send_used;
      if (head_len) memcpy(bytes, head, head_len);
      memcpy(bytes + head_len, body, body_len);
      st->send_used += total;
      st->send_owner[k] = r;
      st->saddr[k] = addr;
      st->siov[k].iov_base = bytes;
      st->siov[k].iov_len = total;
      struct msghdr *h = &st->smsgs[k].msg_hdr;
      memset(h, 0, sizeof *h);
      h->msg_name = &st->saddr[k];
      h->msg_namelen = addr_len;
      h->msg_iov = &st->siov[k];
      h->msg_iovlen = 1;
    } else {
      // Outside a batch (a DNS answer, a timer, an upstream's reply): at once, from the caller's buffers.
      struct iovec iov[2];
      int n = 0;
      if (head_len) iov[n++] = (struct iovec){ head, head_len };
      iov[n++] = (struct iovec){ body, body_len };
      struct msghdr h;
      memset(&h, 0, sizeof h);
      h.msg_name = &addr;
      h.msg_namelen = addr_len;
      h.msg_iov = iov;
      h.msg_iovlen = (size_t)n;
      ssize_t sent;
      do sent = sendmsg(r->fd, &h, MSG_DONTWAIT);
      while (sent < 0 && errno == EINTR);
      if (sent < 0) rc = -errno;
    }
  }
  CHECK(napi_create_int32(env, rc, &result));
  return result;
}

// The host text of udpBind (a string argument, else all addresses): 1 when given, 0 when absent, -1
// when not a string, with a TypeError thrown.
static int host_argument(napi_env env, napi_value value, char *text, size_t size) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return -1;
  if (type == napi_undefined || type == napi_null) return 0;
  size_t length = 0;
  if (type != napi_string || napi_get_value_string_latin1(env, value, text, size, &length) != napi_ok || length + 1 >= size) {
    napi_throw_type_error(env, NULL, "udpBind: host must be an IP literal");
    return -1;
  }
  return 1;
}

// bind(owner, ipv6, receiveBuffer?, sendBuffer?, host?, port?, reusePort?, peerHost?, peerPort?) -> [handle, port]
static napi_value js_bind(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return throw_message(env, NULL, "udpBind(owner, ipv6, receiveBuffer?, sendBuffer?, host?, port?, reusePort?): 2 arguments at least");
  int32_t sizes[2] = { 0, 0 };
  for (size_t i = 2; i < argc && i < 4; i++) CHECK(napi_get_value_int32(env, argv[i], &sizes[i - 2]));
  char host[INET6_ADDRSTRLEN + 1];
  int has_host = argc > 4 ? host_argument(env, argv[4], host, sizeof host) : 0;
  if (has_host < 0) return NULL;
  int32_t want_port = 0;
  if (argc > 5) CHECK(napi_get_value_int32(env, argv[5], &want_port));
  if (want_port < 0 || want_port > 65535) {
    napi_throw_range_error(env, NULL, "udpBind: port out of range");
    return NULL;
  }
  bool reuse_port = false;
  if (argc > 6) CHECK(napi_get_value_bool(env, argv[6], &reuse_port));
  char peer_host[INET6_ADDRSTRLEN + 1];
  int has_peer = argc > 8 ? host_argument(env, argv[7], peer_host, sizeof peer_host) : 0;
  if (has_peer < 0) return NULL;
  int32_t peer_port = 0;
  if (has_peer) CHECK(napi_get_value_int32(env, argv[8], &peer_port));
  if (has_peer && (peer_port <= 0 || peer_port > 65535)) {
    napi_throw_range_error(env, NULL, "udpBind: peer port out of range");
    return NULL;
  }
  state_t *st = udp_state(env);
  if (st == NULL) return throw_errno(env, ENOMEM, "udpBind");
  if (st->e->tearing_down) return throw_errno(env, ESHUTDOWN, "udpBind");
  bool ipv6;
  CHECK(napi_get_value_bool(env, argv[1], &ipv6));
  int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  if (reuse_port) {
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
      int e = errno;
      close(fd);
      return throw_errno(env, e, "setsockopt SO_REUSEPORT");
    }
  }
  struct sockaddr_in6 addr;
  memset(&addr, 0, sizeof addr);
  socklen_t len;
  if (ipv6) {
    int off = 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0) {
      int e = errno;
      close(fd);
      return throw_errno(env, e, "setsockopt IPV6_V6ONLY");
    }
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_any;
    addr.sin6_port = htons((uint16_t)want_port);
    len = sizeof(struct sockaddr_in6);
    if (has_host && inet_pton(AF_INET6, host, &addr.sin6_addr) != 1) {
      close(fd);
      return throw_errno(env, EINVAL, "udpBind: not an IPv6 literal");
    }
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&addr;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_ANY);
    a->sin_port = htons((uint16_t)want_port);
    len = sizeof(struct sockaddr_in);
    if (has_host && inet_pton(AF_INET, host, &a->sin_addr) != 1) {
      close(fd);
      return throw_errno(env, EINVAL, "udpBind: not an IPv4 literal");
    }
  }
  if (bind(fd, (struct sockaddr *)&addr, len) < 0 || getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "bind");
  }
  if (has_peer) {
    struct sockaddr_in6 peer;
    memset(&peer, 0, sizeof peer);
    int parsed;
    if (ipv6) {
      peer.sin6_family = AF_INET6;
      peer.sin6_port = htons((uint16_t)peer_port);
      parsed = inet_pton(AF_INET6, peer_host, &peer.sin6_addr);
    } else {
      struct sockaddr_in *a = (struct sockaddr_in *)&peer;
      a->sin_family = AF_INET;
      a->sin_port = htons((uint16_t)peer_port);
      parsed = inet_pton(AF_INET, peer_host, &a->sin_addr);
    }
    if (parsed != 1) {
      close(fd);
      return throw_errno(env, EINVAL, "udpBind: peer not an IP literal of the socket's family");
    }
    if (connect(fd, (struct sockaddr *)&peer, ipv6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) < 0) {
      int e = errno;
      close(fd);
      return throw_errno(env, e, "connect");
    }
  }
  int port = ntohs(ipv6 ? addr.sin6_port : ((struct sockaddr_in *)&addr)->sin_port);
  // Buffer sizes asked for: the kernel caps them at net.core.rmem_max / wmem_max, and one it refuses
  // leaves its default (the relay works either way). Its drops are read from /proc/net/udp6 by JS
  // (src/udp/kernel-drops.ts): SO_RXQ_OVFL would only tell of them with a later datagram.
  if (sizes[0] > 0) (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sizes[0], sizeof sizes[0]);
  if (sizes[1] > 0) (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sizes[1], sizeof sizes[1]);
  relay_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    close(fd);
    return throw_errno(env, ENOMEM, "bind");
  }
  r->st = st;
  r->fd = fd;
  r->ipv6 = ipv6;
  r->gso = st->gso_enabled;
  int rc = uv_poll_init(st->loop, &r->poll, fd);
  if (rc != 0) {
    free(r);
    close(fd);
    return throw_errno(env, -rc, "uv_poll_init");
  }
  // From here the relay is an object: closing it closes the poll handle, then the descriptor.
  obj_init(st->e, &r->o, K_RELAY, relay_shut, NULL);
  r->poll.data = r;
  r->o.handles = 1;
  env_handle_opened(st->e);
  napi_value handle, port_value, result;
  if (napi_create_reference(env, argv[0], 1, &r->o.owner) != napi_ok || (rc = uv_poll_start(&r->poll, UV_READABLE, on_readable)) != 0 ||
      !obj_wrap(st->e, &r->o, &handle)) {
    obj_close(&r->o);
    return rc != 0 ? throw_errno(env, -rc, "uv_poll_start") : throw_message(env, NULL, "udpBind: cannot make its handle");
  }
  CHECK(napi_create_int32(env, port, &port_value));
  CHECK(napi_create_array_with_length(env, 2, &result));
  CHECK(napi_set_element(env, result, 0, handle));
  CHECK(napi_set_element(env, result, 1, port_value));
  return result;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  return obj_close_entry(env, info, K_RELAY);
}

static napi_value js_ntop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  state_t *st = env_of(env) == NULL ? NULL : env_of(env)->udp;
  int32_t i;
  if (argc < 1) return throw_message(env, NULL, "udpNtop: 1 argument");
  CHECK(napi_get_value_int32(env, argv[0], &i));
  if (st == NULL || i < 0 || i >= BATCH) {
    napi_throw_range_error(env, NULL, "no such datagram");
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  const int32_t *m = st->meta + i * META_WORDS;
  if (inet_ntop(m[2] == 6 ? AF_INET6 : AF_INET, &m[4], text, sizeof text) == NULL) text[0] = 0;
  CHECK(napi_create_string_latin1(env, text, NAPI_AUTO_LENGTH, &result));
  return result;
}

// inode(handle) -> the socket's inode number, -1 once closed
static napi_value js_inode(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return throw_message(env, NULL, "udpInode: 1 argument");
  relay_t *r = get_relay(env, argv[0]);
  if (r == NULL) return NULL;
  struct stat sb;
  double inode = -1;
  if (!r->o.closed && fstat(r->fd, &sb) == 0) inode = (double)sb.st_ino;
  CHECK(napi_create_double(env, inode, &result));
  return result;
}

// busyPoll(us): the quiet time a lone busy socket is polled for before the loop sleeps; 0 turns it off.
static napi_value js_busy_poll(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t us = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return throw_message(env, NULL, "udpBusyPoll: 1 argument");
  CHECK(napi_get_value_int32(env, argv[0], &us));
  state_t *st = udp_state(env);
  if (st == NULL) return throw_errno(env, ENOMEM, "udpBusyPoll");
  st->spin_us = us < 0 ? 0 : us;
  return NULL;
}

// counters() -> [GSO messages sent, datagrams they carried]
static napi_value js_counters(napi_env env, napi_callback_info info) {
  (void)info;
  env_t *e = env_of(env);
  state_t *st = e == NULL ? NULL : e->udp;
  napi_value result, value;
  CHECK(napi_create_array_with_length(env, 2, &result));
  CHECK(napi_create_double(env, st ? (double)st->gso_messages : 0, &value));
  CHECK(napi_set_element(env, result, 0, value));
  CHECK(napi_create_double(env, st ? (double)st->gso_datagrams : 0, &value));
  CHECK(napi_set_element(env, result, 1, value));
  return result;
}

// udpArena() -> { arena, meta, batch, slot }: the environment's receive arena and metadata, which
// live as long as the environment; JS only ever views them.
static napi_value js_arena(napi_env env, napi_callback_info info) {
  (void)info;
  state_t *st = udp_state(env);
  if (st == NULL) return throw_errno(env, ENOMEM, "udpArena");
  napi_value result, arena, meta, batch, slot;
  CHECK(napi_create_external_arraybuffer(env, st->arena, (size_t)BATCH * SLOT, NULL, NULL, &arena));
  CHECK(napi_create_external_arraybuffer(env, st->meta, BATCH * META_WORDS * sizeof(int32_t), NULL, NULL, &meta));
  CHECK(napi_create_int32(env, BATCH, &batch));
  CHECK(napi_create_int32(env, SLOT, &slot));
  CHECK(napi_create_object(env, &result));
  CHECK(napi_set_named_property(env, result, "arena", arena));
  CHECK(napi_set_named_property(env, result, "meta", meta));
  CHECK(napi_set_named_property(env, result, "batch", batch));
  CHECK(napi_set_named_property(env, result, "slot", slot));
  return result;
}

napi_status udp_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "udpArena", NULL, js_arena, NULL, NULL, NULL, napi_default, NULL },
    { "udpBind", NULL, js_bind, NULL, NULL, NULL, napi_default, NULL },
    { "udpSend", NULL, js_send, NULL, NULL, NULL, napi_default, NULL },
    { "udpClose", NULL, js_close, NULL, NULL, NULL, napi_default, NULL },
    { "udpCounters", NULL, js_counters, NULL, NULL, NULL, napi_default, NULL },
    { "udpBusyPoll", NULL, js_busy_poll, NULL, NULL, NULL, napi_default, NULL },
    { "udpNtop", NULL, js_ntop, NULL, NULL, NULL, napi_default, NULL },
    { "udpInode", NULL, js_inode, NULL, NULL, NULL, napi_default, NULL },
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
