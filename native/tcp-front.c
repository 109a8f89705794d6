// Optional native front door for the SOCKS listener (Linux): accept(2), the no-authentication
// greeting and a CONNECT request to an IP address are handled here, without a net.Socket, a stream
// or a JS callback per step. JS is called once per such session, to decide (policy, limits) and to
// keep the session's books; the outbound connect and the success reply are made here, and the
// tunnel then goes to tcp-relay.c. Everything else (a login, a domain name, BIND, UDP ASSOCIATE,
// optimistic data, malformed or slow input) is handed over to JS with the bytes read so far, and the
// TypeScript session goes on exactly as if it had read them itself.
//
// Node's listener stays (its cluster sharing, address() and close work as ever). The helper watches a
// duplicate of its descriptor and accepts there itself (frontListen), so a connection costs no Node
// handle, no JS call and no dup(); when Node's own watcher wins the race for a connection, JS hands
// the accepted descriptor here before a net.Socket is made (frontAdopt, src/server/native-front.ts)
// and this side works on a duplicate of it. Main thread only: frontSetup() may be called once per
// process.
//
//   frontSetup(onHandoff, onRequest, onConnected, onFailed, onAccepted)
//     onHandoff(owner, fd, bytes, greeted, elapsedMs)   the connection is JS's now (greeted: the
//                                                       no-auth method reply was sent)
//     onRequest(owner, conn, clientHost, clientPort, host, port)   a complete CONNECT to an IP; JS answers
//                                                       with frontConnect, frontReply or frontAbort
//     onConnected(session, clientFd, targetFd, bndHost, bndPort)   the success reply is sent; JS's
//                                                       tcpStart(…, adopt) for them during the call takes the
//                                                       connection over (otherwise it is closed)
//     onFailed(session, code)                           the connect failed ('ECONNREFUSED', 'ETIMEDOUT'…);
//                                                       JS answers with frontReply or frontAbort
//     onAccepted(owner)                                 a connection was accepted by frontListen
//   frontCreate(owner, open, handoffMs) -> front        open: no-authentication allowed (no users)
//   frontListen(front, fd) -> bool   accepts on a duplicate of listening descriptor fd from now on
//   frontAdopt(front, fd)      takes a duplicate of an accepted connection's descriptor
//   frontSetOpen(front, open)
//   frontClose(front)          adopts no more; closes the connections not yet given to JS; idempotent
//   frontConnect(conn, session, host, port, timeoutMs) -> null, or the errno code of an immediate failure
//   frontReply(conn, code)     sends a failure reply, half-closes, and closes after the client's FIN
//                              or a second
//   frontAbort(conn)           closes now
//   frontTake(conn) -> fd      JS takes the connection itself (a session the front cannot finish, such as
//                              a throttled one); -1 when it is not waiting for a decision
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "relay.h"

// A greeting (at most 257 bytes) and an IPv6 request (22) fit.
#define HEAD_MAX 512
#define LINGER_MS 1000

typedef struct front front_t;
typedef struct conn conn_t;

enum { C_GREETING, C_REQUEST, C_JS, C_CONNECTING, C_LINGER };

struct conn {
  front_t *front; // set while the connection is the front's alone (before JS has it)
  conn_t *prev, *next;
  int cfd, tfd;
  int state;
  int handles;
  int closing;
  int tpoll_open;
  int connect_error; // set when the connect could not be watched
  // The poll handles live in a tunnel of tcp-relay.c's from the start (see tunnel_offer()): a CONNECT
  // that succeeds becomes that tunnel without new handles. NULL once the tunnel took them.
  struct tunnel *pair;
  rpoll_t *cpoll, *tpoll;
  uv_timer_t timer;
  napi_ref session;
  uint64_t started;
  // The client's address when the helper accepted it (no getpeername() then).
  struct sockaddr_storage peer;
  int peer_known;
  size_t len;
  unsigned char head[HEAD_MAX];
};

// The helper's own watch on a listening socket (a duplicate of Node's descriptor). Apart from the
// front: its close completes a loop iteration later, maybe after the front is gone.
typedef struct {
  rpoll_t poll;
  front_t *front;
} listener_t;

struct front {
  int open;
  int handoff_ms;
  napi_ref owner;
  conn_t *conns;
  listener_t *listener;
};

static napi_env front_env;
static napi_ref on_handoff_ref, on_request_ref, on_connected_ref, on_failed_ref, on_accepted_ref;
static napi_async_context front_context;
static uv_loop_t *front_loop;

static void on_head(rpoll_t *handle, int events);

// Calls a JS callback; returns whether it returned true.
static bool call(napi_ref fn_ref, int argc, napi_value *argv) {
  napi_value fn, global, result;
  bool yes = false;
  napi_get_reference_value(front_env, fn_ref, &fn);
  napi_get_global(front_env, &global);
  if (napi_make_callback(front_env, front_context, global, fn, (size_t)argc, argv, &result) != napi_ok) relay_report_uncaught(front_env);
  else if (napi_get_value_bool(front_env, result, &yes) != napi_ok) yes = false;
  return yes;
}

static void unlink_conn(conn_t *c) {
  front_t *f = c->front;
  if (f == NULL) return;
  if (c->prev) c->prev->next = c->next;
  else f->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->front = NULL;
}

static void conn_handle_closed(conn_t *c) {
  if (--c->handles > 0) return;
  if (c->cfd >= 0) close(c->cfd);
  if (c->tfd >= 0) close(c->tfd);
  free(c->pair);
  free(c);
}

static void on_conn_closed(uv_handle_t *handle) {
  conn_handle_closed((conn_t *)handle->data);
}

static void on_conn_poll_closed(rpoll_t *handle) {
  conn_handle_closed((conn_t *)handle->data);
}

// Closes the connection's handles, then its descriptors (those still its own), then frees it.
static void release(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  unlink_conn(c);
  if (c->session) {
    napi_delete_reference(front_env, c->session);
    c->session = NULL;
  }
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
  if (c->pair == NULL) return;
  rpoll_close(c->cpoll, on_conn_poll_closed);
  if (c->tpoll_open) rpoll_close(c->tpoll, on_conn_poll_closed);
}

static void format_address(const struct sockaddr_storage *a, char *host, size_t size, int *port) {
  if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a;
    inet_ntop(AF_INET6, &a6->sin6_addr, host, (socklen_t)size);
    *port = ntohs(a6->sin6_port);
  } else {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)a;
    inet_ntop(AF_INET, &a4->sin_addr, host, (socklen_t)size);
    *port = ntohs(a4->sin_port);
  }
}

// The connection goes to JS with what was read so far; JS owns the descriptor from here.
static void handoff(conn_t *c) {
  front_t *f = c->front;
  napi_value argv[5], owner;
  napi_handle_scope scope;
  napi_open_handle_scope(front_env, &scope);
  napi_get_reference_value(front_env, f->owner, &owner);
  argv[0] = owner;
  int fd = c->cfd;
  c->cfd = -1;
  c->cpoll->owned = 0; // JS's from now on: out of the helper's epoll set at release()
  void *data = NULL;
  napi_create_int32(front_env, fd, &argv[1]);
  napi_create_buffer_copy(front_env, c->len, c->head, &data, &argv[2]);
  napi_get_boolean(front_env, c->state == C_REQUEST, &argv[3]);
  napi_create_double(front_env, (double)(uv_now(front_loop) - c->started), &argv[4]);
  release(c);
  call(on_handoff_ref, 5, argv);
  napi_close_handle_scope(front_env, scope);
}

// A complete CONNECT to an IP address: JS decides.
static void to_js(conn_t *c, int family) {
  front_t *f = c->front;
  struct sockaddr_storage peer = c->peer;
  socklen_t peer_len = sizeof peer;
  if (!c->peer_known && getpeername(c->cfd, (struct sockaddr *)&peer, &peer_len) != 0) {
    handoff(c);
    return;
  }
  rpoll_stop(c->cpoll);
  uv_timer_stop(&c->timer);
  c->state = C_JS;
  char client[INET6_ADDRSTRLEN], target[INET6_ADDRSTRLEN];
  int client_port, target_port;
  format_address(&peer, client, sizeof client, &client_port);
  inet_ntop(family, c->head + 4, target, sizeof target);
  size_t at = family == AF_INET ? 8 : 20;
  target_port = (c->head[at] << 8) | c->head[at + 1];
  napi_handle_scope scope;
  napi_open_handle_scope(front_env, &scope);
  napi_value argv[6];
  napi_get_reference_value(front_env, f->owner, &argv[0]);
  unlink_conn(c);
  napi_create_external(front_env, c, NULL, NULL, &argv[1]);
  napi_create_string_latin1(front_env, client, NAPI_AUTO_LENGTH, &argv[2]);
  napi_create_int32(front_env, client_port, &argv[3]);
  napi_create_string_latin1(front_env, target, NAPI_AUTO_LENGTH, &argv[4]);
  napi_create_int32(front_env, target_port, &argv[5]);
  call(on_request_ref, 6, argv);
  napi_close_handle_scope(front_env, scope);
}

// What the bytes so far allow: wait, answer the greeting, hand over, or give JS the request.
static void advance(conn_t *c) {
  if (c->state == C_GREETING) {
    if (c->len < 2) return;
    if (c->head[0] != 5) return handoff(c);
    size_t need = 2 + (size_t)c->head[1];
    if (c->len < need) return;
    int no_auth = 0;
    for (size_t i = 2; i < need; i++) no_auth |= c->head[i] == 0;
    if (!no_auth || !c->front->open) return handoff(c);
    memmove(c->head, c->head + need, c->len - need);
    c->len -= need;
    if (send(c->cfd, "\5\0", 2, MSG_NOSIGNAL | MSG_DONTWAIT) != 2) {
      // JS meets the same error on its first read or write; it never sees the reply's fate otherwise.
      c->state = C_REQUEST;
      return handoff(c);
    }
    c->state = C_REQUEST;
  }
  if (c->state == C_REQUEST) {
    if (c->len < 4) return;
    if (c->head[0] != 5 || c->head[1] != 1 || c->head[2] != 0) return handoff(c);
    size_t need = c->head[3] == 1 ? 10 : c->head[3] == 4 ? 22 : 0;
    if (need == 0) return handoff(c);
    if (c->len < need) return;
    // Bytes after the request (optimistic data) stay with the TypeScript session, which keeps them.
    if (c->len > need) return handoff(c);
    to_js(c, c->head[3] == 1 ? AF_INET : AF_INET6);
  }
}

static void on_head(rpoll_t *handle, int events) {
  conn_t *c = (conn_t *)handle->data;
  (void)events;
  if (c->closing) return;
  for (;;) {
    ssize_t n = recv(c->cfd, c->head + c->len, HEAD_MAX - c->len, MSG_DONTWAIT);
    if (n > 0) {
      c->len += (size_t)n;
      break;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // An end or an error before the request: the TypeScript session reads it again and says so.
    return handoff(c);
  }
  advance(c);
  if (!c->closing && c->state <= C_REQUEST && c->len == HEAD_MAX) handoff(c);
}

// Slow input goes to the TypeScript session, which has the full handshake timeout and its logging.
static void on_head_timer(uv_timer_t *timer) {
  conn_t *c = (conn_t *)timer->data;
  if (!c->closing && c->state <= C_REQUEST) handoff(c);
}

static void *external(napi_env env, napi_value value, const char *what) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, what);
    return NULL;
  }
  return data;
}

napi_value front_setup(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (front_loop != NULL) return relay_throw_message(env, "frontSetup() was already called in this process");
  if (argc < 5) return relay_throw_message(env, "frontSetup: 5 callbacks");
  if (napi_get_uv_event_loop(env, &front_loop) != napi_ok) return relay_throw_message(env, "frontSetup: no event loop");
  front_env = env;
  napi_create_reference(env, argv[0], 1, &on_handoff_ref);
  napi_create_reference(env, argv[1], 1, &on_request_ref);
  napi_create_reference(env, argv[2], 1, &on_connected_ref);
  napi_create_reference(env, argv[3], 1, &on_failed_ref);
  napi_create_reference(env, argv[4], 1, &on_accepted_ref);
  napi_create_string_utf8(env, "socksgate:tcp-front", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &front_context);
  return NULL;
}

napi_value front_create(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], handle;
  int32_t handoff_ms;
  bool open;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) return relay_throw_message(env, "frontCreate: 3 arguments");
  if (front_loop == NULL) return relay_throw_message(env, "frontSetup() was not called");
  if (napi_get_value_bool(env, argv[1], &open) != napi_ok || napi_get_value_int32(env, argv[2], &handoff_ms) != napi_ok)
    return relay_throw_message(env, "frontCreate: bad arguments");
  front_t *f = calloc(1, sizeof *f);
  if (f == NULL) return relay_throw_message(env, "frontCreate: out of memory");
  f->open = open;
  f->handoff_ms = handoff_ms > 0 ? handoff_ms : 1;
  napi_create_reference(env, argv[0], 1, &f->owner);
  napi_create_external(env, f, NULL, NULL, &handle);
  return handle;
}

// Takes connection `own` (a descriptor the helper alone holds: a duplicate, or its own accept) with the
// client's address if known. False when it could not (`own` is then closed).
static bool adopt(front_t *f, int own, const struct sockaddr_storage *peer) {
  conn_t *c = calloc(1, sizeof *c);
  struct tunnel *pair = c == NULL ? NULL : tunnel_new();
  if (pair == NULL || rpoll_init(front_loop, tunnel_poll(pair, 0), own) != 0) {
    close(own);
    free(pair);
    free(c);
    return false;
  }
  if (peer != NULL) {
    c->peer = *peer;
    c->peer_known = 1;
  }
  // As Node's listener does for its sockets (noDelay): small writes through the tunnel go at once.
  int one = 1;
  setsockopt(own, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->pair = pair;
  c->cpoll = tunnel_poll(pair, 0);
  c->tpoll = tunnel_poll(pair, 1);
  // The helper's alone (a duplicate: once Node closes its handle, right after frontAdopt).
  c->cpoll->owned = 1;
  c->cfd = own;
  c->tfd = -1;
  c->state = C_GREETING;
  c->started = uv_now(front_loop);
  c->front = f;
  c->next = f->conns;
  if (f->conns) f->conns->prev = c;
  f->conns = c;
  uv_timer_init(front_loop, &c->timer);
  c->cpoll->data = c->timer.data = c;
  c->handles = 2;
  uv_timer_start(&c->timer, on_head_timer, (uint64_t)f->handoff_ms, 0);
  if (rpoll_start(c->cpoll, UV_READABLE, on_head) != 0) {
    // Not watched: JS serves it.
    handoff(c);
    return true;
  }
  // The greeting is often here already (the client sent it right after connecting): read it now
  // instead of one loop iteration later. What it leads to (a hand-over, a request) may call JS from
  // within this call, which is fine: it runs from a connection callback (Node's or on_listen()).
  on_head(c->cpoll, UV_READABLE);
  return true;
}

// The (front, fd) arguments of frontAdopt and frontListen; false with a JS exception pending.
static bool front_and_fd(napi_env env, napi_callback_info info, const char *bad_fd, front_t **f, int32_t *fd) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  *f = external(env, argv[0], "not a front handle");
  if (*f == NULL) return false;
  if (argc < 2 || napi_get_value_int32(env, argv[1], fd) != napi_ok) {
    relay_throw_message(env, bad_fd);
    return false;
  }
  return true;
}

// Returns false when it could not take the connection (JS then serves it itself).
napi_value front_adopt(napi_env env, napi_callback_info info) {
  front_t *f;
  int32_t fd;
  if (!front_and_fd(env, info, "frontAdopt: bad descriptor", &f, &fd)) return NULL;
  int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  napi_value result;
  napi_get_boolean(env, own >= 0 && adopt(f, own, NULL), &result);
  return result;
}

// One connection per readiness event (level-triggered: the next one wakes it again). With workers each
// process watches the listener, and one that accepted all that waited (32 at a time) left the others
// idle: new sessions/s fell about 5%, against 3% more at one.
static void on_listen(rpoll_t *handle, int events) {
  (void)events;
  listener_t *l = (listener_t *)handle->data;
  if (l->front == NULL) return;
  struct sockaddr_storage peer;
  int fd;
  do {
    socklen_t len = sizeof peer;
    fd = accept4(handle->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
  // EAGAIN: none left (or Node's watcher took it). EMFILE and the like: Node's listener meets the same
  // error on its own accept and deals with it as ever.
  if (fd < 0) return;
  napi_handle_scope scope;
  napi_open_handle_scope(front_env, &scope);
  napi_value owner;
  napi_get_reference_value(front_env, l->front->owner, &owner);
  call(on_accepted_ref, 1, &owner);
  napi_close_handle_scope(front_env, scope);
  // JS may have closed the front from that callback.
  if (l->front == NULL) close(fd);
  else adopt(l->front, fd, &peer);
}

static void on_listener_closed(rpoll_t *handle) {
  free(handle->data);
}

// Stops accepting at once: the duplicate is closed now, as uv_close() closes Node's listener, so the
// socket stops listening as soon as Node's descriptor is closed too (a server that says it no longer
// accepts must refuse the next connection). The handle is freed from the loop later.
static void listener_close(listener_t *l) {
  l->front = NULL;
  rpoll_close(&l->poll, on_listener_closed); // out of the epoll set first (Node shares the file)
  close(l->poll.fd);
}

napi_value front_listen(napi_env env, napi_callback_info info) {
  front_t *f;
  int32_t fd;
  if (!front_and_fd(env, info, "frontListen: bad descriptor", &f, &fd)) return NULL;
  napi_value result;
  bool ok = false;
  listener_t *l = f->listener == NULL ? calloc(1, sizeof *l) : NULL;
  int own = l == NULL ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own >= 0 && rpoll_init(front_loop, &l->poll, own) == 0) {
    // Node's descriptor shares the file: out of the epoll set at close (owned stays 0).
    l->poll.data = l;
    l->front = f;
    f->listener = l;
    ok = rpoll_start(&l->poll, UV_READABLE, on_listen) == 0;
    if (!ok) {
      f->listener = NULL;
      listener_close(l);
    }
  } else {
    if (own >= 0) close(own);
    free(l);
  }
  napi_get_boolean(env, ok, &result);
  return result;
}

napi_value front_set_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  bool open;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  front_t *f = external(env, argv[0], "not a front handle");
  if (f == NULL || napi_get_value_bool(env, argv[1], &open) != napi_ok) return NULL;
  f->open = open;
  return NULL;
}

napi_value front_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  front_t *f = external(env, argv[0], "not a front handle");
  if (f == NULL) return NULL;
  if (f->listener != NULL) {
    listener_close(f->listener);
    f->listener = NULL;
  }
  while (f->conns) release(f->conns);
  napi_delete_reference(env, f->owner);
  // JS drops its handle with this call (src/server/native-front.ts never uses it again).
  free(f);
  return NULL;
}

static void connect_failed(conn_t *c, int code) {
  if (c->tpoll_open) rpoll_stop(c->tpoll);
  uv_timer_stop(&c->timer);
  c->state = C_JS;
  napi_handle_scope scope;
  napi_open_handle_scope(front_env, &scope);
  napi_value argv[2];
  napi_get_reference_value(front_env, c->session, &argv[0]);
  napi_create_string_utf8(front_env, relay_errno_code(code), NAPI_AUTO_LENGTH, &argv[1]);
  call(on_failed_ref, 2, argv);
  napi_close_handle_scope(front_env, scope);
}

static void on_connect_timeout(uv_timer_t *timer) {
  conn_t *c = (conn_t *)timer->data;
  if (!c->closing && c->state == C_CONNECTING) connect_failed(c, c->connect_error ? c->connect_error : ETIMEDOUT);
}

static void on_target_writable(rpoll_t *handle, int events) {
  conn_t *c = (conn_t *)handle->data;
  (void)events;
  if (c->closing || c->state != C_CONNECTING) return;
  int error = 0;
  socklen_t len = sizeof error;
  if (getsockopt(c->tfd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  if (error != 0) return connect_failed(c, error);
  uv_timer_stop(&c->timer);
  struct sockaddr_storage bound;
  socklen_t bound_len = sizeof bound;
  memset(&bound, 0, sizeof bound);
  getsockname(c->tfd, (struct sockaddr *)&bound, &bound_len);
  // BND.ADDR: the outbound socket's own address (RFC 1928 §6), IPv4-mapped ones as IPv4.
  unsigned char reply[22] = { 5, 0, 0 };
  size_t reply_len;
  char host[INET6_ADDRSTRLEN];
  int port;
  format_address(&bound, host, sizeof host, &port);
  if (bound.ss_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&bound)->sin6_addr)) {
    reply[3] = 4;
    memcpy(reply + 4, &((struct sockaddr_in6 *)&bound)->sin6_addr, 16);
    reply_len = 22;
  } else {
    reply[3] = 1;
    if (bound.ss_family == AF_INET6) memcpy(reply + 4, ((unsigned char *)&((struct sockaddr_in6 *)&bound)->sin6_addr) + 12, 4);
    else memcpy(reply + 4, &((struct sockaddr_in *)&bound)->sin_addr, 4);
    reply_len = 10;
  }
  reply[reply_len - 2] = (unsigned char)(port >> 8);
  reply[reply_len - 1] = (unsigned char)port;
  // A refused write is met again by the tunnel, which then ends with the client's error.
  (void)!send(c->cfd, reply, reply_len, MSG_NOSIGNAL | MSG_DONTWAIT);
  napi_handle_scope scope;
  napi_open_handle_scope(front_env, &scope);
  napi_value argv[5];
  napi_get_reference_value(front_env, c->session, &argv[0]);
  napi_create_int32(front_env, c->cfd, &argv[1]);
  napi_create_int32(front_env, c->tfd, &argv[2]);
  napi_create_string_latin1(front_env, host, NAPI_AUTO_LENGTH, &argv[3]);
  napi_create_int32(front_env, port, &argv[4]);
  // JS's tcpStart(…, adopt) takes the prepared tunnel: handles and descriptors are then its own.
  tunnel_offer(c->pair, c->cfd, c->tfd);
  call(on_connected_ref, 5, argv);
  if (tunnel_taken(c->pair)) {
    c->pair = NULL;
    c->cfd = c->tfd = -1;
    c->tpoll_open = 0;
    c->handles = 1; // the timer's alone
  }
  release(c);
  napi_close_handle_scope(front_env, scope);
}

napi_value front_connect(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], result;
  char host[INET6_ADDRSTRLEN + 1];
  size_t host_len;
  int32_t port, timeout_ms;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  conn_t *c = external(env, argv[0], "not a front connection");
  if (c == NULL) return NULL;
  if (argc < 5 || napi_get_value_string_latin1(env, argv[2], host, sizeof host, &host_len) != napi_ok ||
      napi_get_value_int32(env, argv[3], &port) != napi_ok || napi_get_value_int32(env, argv[4], &timeout_ms) != napi_ok)
    return relay_throw_message(env, "frontConnect: bad arguments");
  if (c->closing || c->state != C_JS || c->tfd >= 0) return relay_throw_message(env, "frontConnect: the connection is not waiting for a decision");
  struct sockaddr_storage to;
  socklen_t to_len;
  memset(&to, 0, sizeof to);
  struct sockaddr_in *a4 = (struct sockaddr_in *)&to;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&to;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    to_len = sizeof *a4;
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    to_len = sizeof *a6;
  } else {
    return relay_throw_message(env, "frontConnect: not an IP address");
  }
  int error = 0;
  int fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) error = errno;
  else {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc;
    do rc = connect(fd, (struct sockaddr *)&to, to_len);
    while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
      error = errno;
      close(fd);
    }
  }
  if (error != 0) {
    napi_create_string_utf8(env, relay_errno_code(error), NAPI_AUTO_LENGTH, &result);
    return result;
  }
  c->tfd = fd;
  c->state = C_CONNECTING;
  napi_create_reference(env, argv[1], 1, &c->session);
  // Cannot fail: the helper's epoll was made for the client's handle.
  rpoll_init(front_loop, c->tpoll, fd);
  c->tpoll->owned = 1;
  c->tpoll->data = c;
  c->tpoll_open = 1;
  c->handles++;
  int watching = rpoll_start(c->tpoll, UV_WRITABLE, on_target_writable);
  // Not watched (the kernel refused, out of memory): the connect fails with that error once this call
  // has returned, as a connect does.
  c->connect_error = watching < 0 ? -watching : 0;
  uv_timer_start(&c->timer, on_connect_timeout, watching < 0 ? 0 : (uint64_t)(timeout_ms > 0 ? timeout_ms : 1), 0);
  napi_get_null(env, &result);
  return result;
}

static void on_linger(rpoll_t *handle, int events) {
  conn_t *c = (conn_t *)handle->data;
  unsigned char sink[4096];
  (void)events;
  if (c->closing) return;
  for (int i = 0; i < 16; i++) {
    ssize_t n = recv(c->cfd, sink, sizeof sink, MSG_DONTWAIT);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    break;
  }
  release(c);
}

static void on_linger_over(uv_timer_t *timer) {
  release((conn_t *)timer->data);
}

napi_value front_reply(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t code;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  conn_t *c = external(env, argv[0], "not a front connection");
  if (c == NULL || c->closing) return NULL;
  if (argc < 2 || napi_get_value_int32(env, argv[1], &code) != napi_ok) return relay_throw_message(env, "frontReply: bad arguments");
  // The target side (a failed connect) goes now: its handle first (rpoll_close takes it out of epoll).
  if (c->tpoll_open) {
    rpoll_close(c->tpoll, on_conn_poll_closed);
    c->tpoll_open = 0;
  }
  if (c->tfd >= 0) {
    close(c->tfd);
    c->tfd = -1;
  }
  if (c->session) {
    napi_delete_reference(env, c->session);
    c->session = NULL;
  }
  unsigned char reply[10] = { 5, (unsigned char)code, 0, 1 };
  (void)!send(c->cfd, reply, sizeof reply, MSG_NOSIGNAL | MSG_DONTWAIT);
  // Half-close and drain: closing with unread input would send RST, which can destroy the reply.
  shutdown(c->cfd, SHUT_WR);
  c->state = C_LINGER;
  uv_timer_start(&c->timer, on_linger_over, LINGER_MS, 0);
  if (rpoll_start(c->cpoll, UV_READABLE, on_linger) != 0) release(c);
  return NULL;
}

napi_value front_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  conn_t *c = external(env, argv[0], "not a front connection");
  if (c != NULL) release(c);
  return NULL;
}

napi_value front_take(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  conn_t *c = external(env, argv[0], "not a front connection");
  if (c == NULL) return NULL;
  int fd = -1;
  if (!c->closing && c->state == C_JS && c->tfd < 0) {
    fd = c->cfd;
    c->cfd = -1;
    c->cpoll->owned = 0; // JS's from now on
    release(c);
  }
  napi_create_int32(env, fd, &result);
  return result;
}
