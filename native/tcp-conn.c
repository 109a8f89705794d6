// TCP connections the helper holds for the TypeScript server: it accepts them, reads their bytes into
// buffers it hands to JS, writes what JS gives it, connects outbound ones and lingers after a last
// reply. It never looks at the bytes: the SOCKS handshake is src/server's, on every path.
//
//   connArena() -> ArrayBuffer           where connections' bytes are read for JS: a callback's `length`
//       bytes are at its start, valid only during the call (whatever must outlive it is copied); no
//       Buffer (and no garbage) per read
//   listen(owner, fd) -> listener        accepts on a duplicate of listening descriptor fd; for each
//       connection callbacks.accept(owner, conn, host, port, length) returns the object that gets
//       the connection's callbacks (or nothing: the connection is closed); length: bytes that came
//       with it (in the arena)
//   listenClose(listener)                stops accepting at once (the duplicate is closed); idempotent
//   connAdopt(owner, fd, nonBlocking?) -> conn   a duplicate of an accepted socket's descriptor, read from
//                                        now on; nonBlocking: the caller knows it is (libuv's always are)
//   connConnect(owner, host, port, timeoutMs) -> conn | errno code of an immediate failure
//       callbacks.connected(owner, code|null, localHost, localPort) once it is connected or failed
//   connWrite(conn, bytes) -> null | errno code      what the socket does not take at once is queued
//   connRead(conn, on)                   callbacks.data(owner, length, reason|null) while on: bytes in
//                                        the arena, or (reason) the end: 'end' for the peer's FIN, else
//                                        an errno code
//   connEnd(conn, lingerMs)              no more callbacks: sends what is queued and a FIN, discards
//                                        input until the peer's FIN or lingerMs, then closes
//   connTake(conn) -> [fd, queued|null] | null       the descriptor becomes the caller's (a net.Socket)
//   connLocal(conn) -> [host, port]      the connection's own address (getsockname)
//   connKeepAlive(conn, ms)              TCP keepalive probes after ms of quiet (as Node's setKeepAlive)
//   connClose(conn)                      closes now; idempotent
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helper.h"

// One read per readiness event while JS reads: a handshake is a few bytes, and a session that holds
// more than it needs pauses reading.
#define READ_CHUNK 16384
#define LISTEN_BACKOFF_MS 100

typedef struct listener {
  obj_t o;
  rpoll_t poll;
  int poll_open;
  uv_timer_t backoff;
  int backoff_open;
  int fd;
  int nodelay; // NODELAY_*: whether accepted sockets come with TCP_NODELAY set
} listener_t;

enum { NODELAY_UNKNOWN, NODELAY_INHERITED, NODELAY_EACH };

static void conn_update(conn_t *c);

static void format_address(const struct sockaddr_storage *a, char *host, size_t size, int *port) {
  host[0] = 0;
  *port = 0;
  if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a;
    if (inet_ntop(AF_INET6, &a6->sin6_addr, host, (socklen_t)size) == NULL) host[0] = 0;
    *port = ntohs(a6->sin6_port);
  } else if (a->ss_family == AF_INET) {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)a;
    if (inet_ntop(AF_INET, &a4->sin_addr, host, (socklen_t)size) == NULL) host[0] = 0;
    *port = ntohs(a4->sin_port);
  }
}

static void on_conn_poll_closed(void *data) {
  obj_handle_closed(&((conn_t *)data)->o);
}

static void on_conn_timer_closed(uv_handle_t *handle) {
  conn_t *c = (conn_t *)handle->data;
  env_t *e = c->o.env;
  free(handle);
  obj_handle_closed(&c->o);
  env_handle_closed(e);
}

// Out of the epoll set first, then the descriptor (rule 5).
static void conn_shut(obj_t *o) {
  conn_t *c = (conn_t *)o;
  if (c->timer != NULL) {
    uv_close((uv_handle_t *)c->timer, on_conn_timer_closed);
    c->timer = NULL;
  }
  if (c->poll_open) {
    c->poll_open = 0;
    rpoll_close(&c->poll, on_conn_poll_closed, c);
  }
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  c->state = S_GONE;
}

static void conn_release(obj_t *o) {
  free(((conn_t *)o)->out);
}

static void on_conn_ready(rpoll_t *p, int events);

conn_t *conn_new(env_t *e, int fd) {
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->fd = fd;
  if (rpoll_init(e, &c->poll, fd) != 0) {
    free(c);
    return NULL;
  }
  obj_init(e, &c->o, K_CONN, conn_shut, conn_release);
  c->poll.data = c;
  c->poll_open = 1;
  c->o.handles = 1;
  return c;
}

static int conn_timer(conn_t *c) {
  if (c->timer != NULL) return 0;
  uv_timer_t *timer = malloc(sizeof *timer);
  if (timer == NULL) return UV_ENOMEM;
  int rc = uv_timer_init(c->o.env->loop, timer);
  if (rc != 0) {
    free(timer);
    return rc;
  }
  timer->data = c;
  c->timer = timer;
  c->o.handles++;
  env_handle_opened(c->o.env);
  return 0;
}

// The environment's read buffer for JS (see connArena()).
static char *conn_arena(env_t *e) {
  if (e->conn_arena == NULL) e->conn_arena = malloc(READ_CHUNK);
  return e->conn_arena;
}

// Tells JS of n bytes in the arena (reason NULL) or of the end. JS may close or take the connection
// meanwhile.
static void deliver(conn_t *c, size_t n, const char *reason) {
  env_t *e = c->o.env;
  napi_env env = e->env;
  napi_value argv[3];
  napi_status s = napi_create_uint32(env, reason == NULL ? (uint32_t)n : 0, &argv[1]);
  if (s == napi_ok) s = reason == NULL ? napi_get_null(env, &argv[2]) : napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &argv[2]);
  if (s != napi_ok) {
    // JS cannot be told: the connection must not hang unwatched.
    obj_close(&c->o);
    return;
  }
  env_call(e, e->cb_data, &c->o, 3, argv);
}

static void tell_end(conn_t *c, const char *reason) {
  c->ended = 1;
  c->reading = 0;
  deliver(c, 0, reason);
}

// Sends what is queued; 0, or -errno.
static int flush_out(conn_t *c) {
  while (c->out != NULL) {
    ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (w < 0) return -errno;
    c->out_off += (size_t)w;
    if (c->out_off == c->out_len) {
      free(c->out);
      c->out = NULL;
      c->out_len = c->out_off = 0;
      if (c->state == S_LINGER && shutdown(c->fd, SHUT_WR) != 0 && errno != ENOTCONN) return -errno;
    }
  }
  return 0;
}

static void on_linger_over(uv_timer_t *timer) {
  obj_close(&((conn_t *)timer->data)->o);
}

static void on_connect_timeout(uv_timer_t *timer) {
  conn_t *c = (conn_t *)timer->data;
  if (c->o.closed || c->state != S_CONNECTING) return;
  c->state = S_OPEN;
  conn_update(c);
  env_t *e = c->o.env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(e->env, &scope) != napi_ok) return obj_close(&c->o);
  napi_value argv[4];
  if (napi_create_string_utf8(e->env, "ETIMEDOUT", NAPI_AUTO_LENGTH, &argv[1]) == napi_ok && napi_get_null(e->env, &argv[2]) == napi_ok &&
      napi_create_int32(e->env, 0, &argv[3]) == napi_ok)
    env_call(e, e->cb_connected, &c->o, 4, argv);
  else obj_close(&c->o);
  (void)napi_close_handle_scope(e->env, scope);
}

// The connect's outcome: writable alone is success; an error or hang-up (reported as DISCONNECT, which
// the connect watches for) is read from SO_ERROR.
static void connect_done(conn_t *c, int events) {
  env_t *e = c->o.env;
  int error = 0;
  socklen_t len = sizeof error;
  if ((events & UV_DISCONNECT) && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  if (error == EINPROGRESS || error == EALREADY) return;
  if (c->timer != NULL) uv_timer_stop(c->timer);
  c->state = S_OPEN;
  struct sockaddr_storage bound;
  socklen_t bound_len = sizeof bound;
  memset(&bound, 0, sizeof bound);
  if (error == 0 && getsockname(c->fd, (struct sockaddr *)&bound, &bound_len) != 0) error = errno;
  char host[INET6_ADDRSTRLEN];
  int port = 0;
  format_address(&bound, host, sizeof host, &port);
  napi_value argv[4];
  napi_status s = error ? napi_create_string_utf8(e->env, errno_code(error), NAPI_AUTO_LENGTH, &argv[1]) : napi_get_null(e->env, &argv[1]);
  if (s == napi_ok) s = error ? napi_get_null(e->env, &argv[2]) : napi_create_string_latin1(e->env, host, NAPI_AUTO_LENGTH, &argv[2]);
  if (s == napi_ok) s = napi_create_int32(e->env, port, &argv[3]);
  if (s != napi_ok) return obj_close(&c->o);
  env_call(e, e->cb_connected, &c->o, 4, argv);
  // Usually a tunnel took it during the call and watches it as it needs (one epoll_ctl saved);
  // otherwise it stops waiting for writability now.
  if (!c->o.closed && c->state == S_OPEN) conn_update(c);
}

static void on_conn_ready(rpoll_t *p, int events) {
  conn_t *c = (conn_t *)p->data;
  if (c->o.closed) return;
  if (c->state == S_CONNECTING) {
    if (events & (UV_WRITABLE | UV_DISCONNECT)) connect_done(c, events);
    return;
  }
  if ((events & UV_WRITABLE) && c->out != NULL) {
    int rc = flush_out(c);
    if (rc < 0) {
      if (c->state == S_LINGER) return obj_close(&c->o);
      // The write's error ends the connection: JS hears it as the end.
      if (!c->ended) tell_end(c, errno_code(-rc));
      if (!c->o.closed && c->state == S_OPEN) conn_update(c);
      return;
    }
    // Lingering after the peer's FIN: done once the last reply is out.
    if (c->state == S_LINGER && c->out == NULL && c->eof) return obj_close(&c->o);
  }
  if (events & (UV_READABLE | UV_DISCONNECT)) {
    if (c->state == S_LINGER) {
      char *sink = c->o.env->scratch;
      char small[512];
      for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c->fd, sink ? sink : small, sink ? READ_CHUNK : sizeof small, MSG_DONTWAIT);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // An error, or the peer's FIN with nothing left to send: done. With bytes still queued, the FIN
        // waits for them (they are the reply).
        if (n < 0 || c->out == NULL) return obj_close(&c->o);
        c->eof = 1;
        break;
      }
    } else if (c->state == S_OPEN && c->reading && !c->eof) {
      char *buf = conn_arena(c->o.env);
      ssize_t n;
      if (buf == NULL) {
        n = -1;
        errno = ENOMEM;
      } else {
        do n = recv(c->fd, buf, READ_CHUNK, MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
      }
      if (n > 0) deliver(c, (size_t)n, NULL);
      else if (n == 0) {
        c->eof = 1;
        tell_end(c, "end");
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        c->eof = 1;
        tell_end(c, errno_code(errno));
      }
    }
  }
  if (!c->o.closed && (c->state == S_OPEN || c->state == S_LINGER)) conn_update(c);
}

// What the connection watches for now; a watch that fails ends the connection with a reason.
static void conn_update(conn_t *c) {
  if (c->o.closed || !c->poll_open) return;
  int want = 0;
  if (c->state == S_CONNECTING) want = UV_WRITABLE | UV_DISCONNECT;
  else if (c->state == S_OPEN || c->state == S_LINGER) {
    if (c->out != NULL) want |= UV_WRITABLE;
    if ((c->state == S_LINGER || c->reading) && !c->eof) want |= UV_READABLE;
  }
  int rc = want == 0 ? rpoll_stop(&c->poll) : rpoll_start(&c->poll, want, on_conn_ready);
  if (rc == 0) return;
  if (c->state == S_OPEN && !c->ended && c->o.owner != NULL) {
    char reason[48];
    snprintf(reason, sizeof reason, "EPOLL %s", errno_code(-rc));
    tell_end(c, reason);
  }
  obj_close(&c->o);
}

void conn_enter_tunnel(conn_t *c, struct tunnel *t, rpoll_cb cb) {
  if (c->timer != NULL) uv_timer_stop(c->timer);
  c->state = S_TUNNEL;
  c->tunnel = t;
  c->reading = 0;
  c->poll.data = t;
  c->poll.cb = cb;
  if (c->o.owner != NULL) {
    (void)napi_delete_reference(c->o.env->env, c->o.owner);
    c->o.owner = NULL;
  }
}

static conn_t *get_conn(napi_env env, napi_value value) {
  return (conn_t *)obj_unwrap(env, value, K_CONN);
}

static napi_value make_conn(napi_env env, conn_t *c, napi_value owner) {
  napi_value handle;
  if ((owner != NULL && napi_create_reference(env, owner, 1, &c->o.owner) != napi_ok) || !obj_wrap(c->o.env, &c->o, &handle)) {
    obj_close(&c->o);
    return throw_message(env, NULL, "cannot make a connection handle");
  }
  return handle;
}

static void set_nodelay(int fd) {
  int one = 1;
  // As Node's sockets are (noDelay): a failure only costs Nagle's delay on small writes.
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// --- listener ---

static void on_listener_poll_closed(void *data) {
  obj_handle_closed(&((listener_t *)data)->o);
}

static void on_listener_timer_closed(uv_handle_t *handle) {
  listener_t *l = (listener_t *)handle->data;
  env_t *e = l->o.env;
  obj_handle_closed(&l->o);
  env_handle_closed(e);
}

// Stops accepting at once: the duplicate is closed now, as uv_close() closes Node's listener, so the
// socket stops listening as soon as Node's descriptor is closed too.
static void listener_shut(obj_t *o) {
  listener_t *l = (listener_t *)o;
  if (l->backoff_open) {
    l->backoff_open = 0;
    uv_close((uv_handle_t *)&l->backoff, on_listener_timer_closed);
  }
  if (l->poll_open) {
    l->poll_open = 0;
    rpoll_close(&l->poll, on_listener_poll_closed, l);
  }
  if (l->fd >= 0) {
    close(l->fd);
    l->fd = -1;
  }
}

static void on_listen(rpoll_t *p, int events);

static void on_backoff_over(uv_timer_t *timer) {
  listener_t *l = (listener_t *)timer->data;
  if (!l->o.closed && l->poll_open && rpoll_start(&l->poll, UV_READABLE, on_listen) != 0) obj_close(&l->o);
}

// Connections taken per readiness event. Node's own watcher on the listener accepts every waiting one
// in a loop; taking a few here too keeps them off Node's path (a TCP handle made and closed, a dup,
// a getpeername per connection) without one process taking a whole burst from the others.
#define ACCEPTS_PER_EVENT 8

// Accepts one connection and hands it to JS; false when none is left (or the listener is closed).
static bool accept_one(listener_t *l) {
  env_t *e = l->o.env;
  struct sockaddr_storage peer;
  int fd;
  do {
    socklen_t len = sizeof peer;
    fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
  if (fd < 0) {
    // EAGAIN: none left (or Node's watcher took it). Out of descriptors or memory: Node's listener
    // meets the same error and deals with it; this side waits a moment instead of spinning on it.
    if ((errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) && rpoll_stop(&l->poll) == 0 && l->backoff_open)
      uv_timer_start(&l->backoff, on_backoff_over, LISTEN_BACKOFF_MS, 0);
    return false;
  }
  // Linux's accepted sockets inherit TCP_NODELAY from the listener: set there once, checked on the
  // first connection (a kernel that does not inherit it gets it set on each one).
  if (l->nodelay != NODELAY_INHERITED) {
    int on = 0;
    socklen_t on_len = sizeof on;
    if (l->nodelay == NODELAY_UNKNOWN && getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &on_len) == 0 && on) l->nodelay = NODELAY_INHERITED;
    else {
      l->nodelay = NODELAY_EACH;
      set_nodelay(fd);
    }
  }
  conn_t *c = conn_new(e, fd);
  if (c == NULL) {
    close(fd);
    return true;
  }
  // The first bytes (the greeting) are often here already: they come with the connection.
  char *buf = conn_arena(e);
  ssize_t n = -1;
  if (buf != NULL) {
    do n = recv(fd, buf, READ_CHUNK, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
  }
  char host[INET6_ADDRSTRLEN];
  int port;
  format_address(&peer, host, sizeof host, &port);
  napi_value argv[5], handle, result = NULL;
  if (!obj_wrap(e, &c->o, &handle)) {
    obj_close(&c->o);
    return true;
  }
  argv[1] = handle;
  // Read from now on unless JS pauses it during the call (it is watched once the call returns).
  c->reading = 1;
  napi_valuetype type = napi_undefined;
  if (napi_create_string_latin1(e->env, host, NAPI_AUTO_LENGTH, &argv[2]) == napi_ok && napi_create_int32(e->env, port, &argv[3]) == napi_ok &&
      napi_create_uint32(e->env, n > 0 ? (uint32_t)n : 0, &argv[4]) == napi_ok)
    result = env_call(e, e->cb_accept, &l->o, 5, argv);
  // JS took, ended or closed it during the call: it is no longer the listener's concern.
  if (c->o.closed || c->state != S_OPEN) return true;
  // The object that gets its callbacks; none: JS does not want the connection.
  if (result == NULL || napi_typeof(e->env, result, &type) != napi_ok || type != napi_object ||
      napi_create_reference(e->env, result, 1, &c->o.owner) != napi_ok) {
    obj_close(&c->o);
    return true;
  }
  conn_update(c);
  return true;
}

// A few connections per readiness event (level-triggered: more waiting wake it again).
static void on_listen(rpoll_t *p, int events) {
  (void)events;
  listener_t *l = (listener_t *)p->data;
  for (int i = 0; i < ACCEPTS_PER_EVENT && !l->o.closed && l->poll.events != 0; i++) {
    // Each connection's JS values are released before the next one.
    napi_handle_scope scope;
    if (napi_open_handle_scope(l->o.env->env, &scope) != napi_ok) return;
    bool more = accept_one(l);
    (void)napi_close_handle_scope(l->o.env->env, scope);
    if (!more) return;
  }
}

static napi_value js_listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], handle;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  env_t *e = env_of(env);
  int32_t fd;
  if (argc < 2 || napi_get_value_int32(env, argv[1], &fd) != napi_ok) return throw_message(env, NULL, "listen(owner, fd): bad arguments");
  if (e == NULL || e->cb_accept == NULL) return throw_message(env, NULL, "setup() was not called");
  listener_t *l = calloc(1, sizeof *l);
  if (l == NULL) return throw_errno(env, ENOMEM, "listen");
  l->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (l->fd < 0) {
    int error = errno;
    free(l);
    return throw_errno(env, error, "listen: dup");
  }
  int rc = rpoll_init(e, &l->poll, l->fd);
  if (rc != 0) {
    close(l->fd);
    free(l);
    return throw_errno(env, -rc, "listen: watch");
  }
  // For the accepted sockets to inherit (see accept_one()); Node's accepted ones set it anyway.
  set_nodelay(l->fd);
  obj_init(e, &l->o, K_LISTENER, listener_shut, NULL);
  l->poll.data = l;
  l->poll_open = 1;
  l->o.handles = 1;
  if (uv_timer_init(e->loop, &l->backoff) == 0) {
    l->backoff.data = l;
    l->backoff_open = 1;
    l->o.handles++;
    env_handle_opened(e);
  }
  if (napi_create_reference(env, argv[0], 1, &l->o.owner) != napi_ok || (rc = rpoll_start(&l->poll, UV_READABLE, on_listen)) != 0 ||
      !obj_wrap(e, &l->o, &handle)) {
    obj_close(&l->o);
    return rc != 0 ? throw_errno(env, -rc, "listen: watch") : throw_message(env, NULL, "listen: cannot make its handle");
  }
  return handle;
}

static napi_value js_listen_close(napi_env env, napi_callback_info info) {
  return obj_close_entry(env, info, K_LISTENER);
}

// --- connections ---

static napi_value js_adopt(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  bool known_nonblocking = false;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  env_t *e = env_of(env);
  int32_t fd;
  if (argc < 2 || napi_get_value_int32(env, argv[1], &fd) != napi_ok || (argc > 2 && napi_get_value_bool(env, argv[2], &known_nonblocking) != napi_ok))
    return throw_message(env, NULL, "connAdopt(owner, fd, nonBlocking?): bad arguments");
  if (e == NULL || e->cb_data == NULL) return throw_message(env, NULL, "setup() was not called");
  int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) return throw_errno(env, errno, "connAdopt: dup");
  // O_NONBLOCK is the file's, shared with the original: checked unless the caller knows it is set.
  int flags = known_nonblocking ? O_NONBLOCK : fcntl(own, F_GETFL);
  if (flags < 0 || ((flags & O_NONBLOCK) == 0 && fcntl(own, F_SETFL, flags | O_NONBLOCK) != 0)) {
    int error = errno;
    close(own);
    return throw_errno(env, error, "connAdopt: non-blocking");
  }
  set_nodelay(own);
  conn_t *c = conn_new(e, own);
  if (c == NULL) {
    close(own);
    return throw_errno(env, ENOMEM, "connAdopt");
  }
  napi_value handle = make_conn(env, c, argv[0]);
  if (handle == NULL) return NULL;
  c->reading = 1;
  conn_update(c);
  return handle;
}

static napi_value js_connect(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], result;
  char host[INET6_ADDRSTRLEN + 1];
  size_t host_len;
  int32_t port, timeout_ms;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  env_t *e = env_of(env);
  if (argc < 4 || napi_get_value_string_latin1(env, argv[1], host, sizeof host, &host_len) != napi_ok || napi_get_value_int32(env, argv[2], &port) != napi_ok ||
      napi_get_value_int32(env, argv[3], &timeout_ms) != napi_ok || port < 0 || port > 65535)
    return throw_message(env, NULL, "connConnect(owner, host, port, timeoutMs): bad arguments");
  if (e == NULL || e->cb_connected == NULL) return throw_message(env, NULL, "setup() was not called");
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
    return throw_message(env, "EINVAL", "connConnect: not an IP address");
  }
  int error = 0;
  int fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) error = errno;
  else {
    set_nodelay(fd);
    int rc;
    do rc = connect(fd, (struct sockaddr *)&to, to_len);
    while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
      error = errno;
      close(fd);
    }
  }
  if (error != 0) {
    CHECK(napi_create_string_utf8(env, errno_code(error), NAPI_AUTO_LENGTH, &result));
    return result;
  }
  conn_t *c = conn_new(e, fd);
  if (c == NULL) {
    close(fd);
    CHECK(napi_create_string_utf8(env, "ENOMEM", NAPI_AUTO_LENGTH, &result));
    return result;
  }
  c->state = S_CONNECTING;
  napi_value handle = make_conn(env, c, argv[0]);
  if (handle == NULL) return NULL;
  int rc = conn_timer(c);
  if (rc == 0) rc = uv_timer_start(c->timer, on_connect_timeout, (uint64_t)(timeout_ms > 0 ? timeout_ms : 1), 0);
  if (rc == 0) rc = rpoll_start(&c->poll, UV_WRITABLE | UV_DISCONNECT, on_conn_ready);
  if (rc != 0) {
    obj_close(&c->o);
    CHECK(napi_create_string_utf8(env, errno_code(rc < 0 ? -rc : rc), NAPI_AUTO_LENGTH, &result));
    return result;
  }
  return handle;
}

static napi_value js_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  conn_t *c = argc < 2 ? NULL : get_conn(env, argv[0]);
  if (c == NULL) return argc < 2 ? throw_message(env, NULL, "connWrite(conn, bytes): 2 arguments") : NULL;
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  int error = 0;
  if (c->o.closed || c->state != S_OPEN) error = EBADF;
  else if (c->out == NULL) {
    size_t done = 0;
    while (done < len) {
      ssize_t w = send(c->fd, (char *)data + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) done += (size_t)w;
      else if (w < 0 && errno == EINTR) continue;
      else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      else {
        error = w < 0 ? errno : EIO;
        break;
      }
    }
    if (error == 0 && done < len) {
      c->out = malloc(len - done);
      if (c->out == NULL) error = ENOMEM;
      else {
        memcpy(c->out, (char *)data + done, len - done);
        c->out_len = len - done;
        c->out_off = 0;
        conn_update(c);
      }
    }
  } else {
    char *grown = realloc(c->out, c->out_len + len);
    if (grown == NULL) error = ENOMEM;
    else {
      memcpy(grown + c->out_len, data, len);
      c->out = grown;
      c->out_len += len;
    }
  }
  if (error == 0) CHECK(napi_get_null(env, &result));
  else CHECK(napi_create_string_utf8(env, errno_code(error), NAPI_AUTO_LENGTH, &result));
  return result;
}

static napi_value js_read(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  bool on;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  conn_t *c = argc < 2 ? NULL : get_conn(env, argv[0]);
  if (c == NULL) return argc < 2 ? throw_message(env, NULL, "connRead(conn, on): 2 arguments") : NULL;
  CHECK(napi_get_value_bool(env, argv[1], &on));
  if (c->o.closed || c->state != S_OPEN || c->reading == (int)on) return NULL;
  c->reading = on;
  conn_update(c);
  return NULL;
}

static napi_value js_end(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t linger_ms;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  conn_t *c = argc < 2 ? NULL : get_conn(env, argv[0]);
  if (c == NULL) return argc < 2 ? throw_message(env, NULL, "connEnd(conn, lingerMs): 2 arguments") : NULL;
  CHECK(napi_get_value_int32(env, argv[1], &linger_ms));
  if (c->o.closed || c->state != S_OPEN) return NULL;
  if (c->o.owner != NULL) {
    (void)napi_delete_reference(env, c->o.owner);
    c->o.owner = NULL;
  }
  c->state = S_LINGER;
  c->reading = 0;
  // Its own from here: JS may drop its handle, and the finalizer must not cut the linger short.
  c->o.held = 1;
  // Half-close and drain: closing with unread input would send an RST, which can destroy the reply.
  int rc = c->out == NULL && shutdown(c->fd, SHUT_WR) != 0 && errno != ENOTCONN ? -errno : 0;
  if (rc == 0) rc = conn_timer(c);
  if (rc == 0) rc = uv_timer_start(c->timer, on_linger_over, (uint64_t)(linger_ms > 0 ? linger_ms : 1), 0);
  if (rc != 0 || (c->eof && c->out == NULL)) obj_close(&c->o);
  else conn_update(c);
  return NULL;
}

static napi_value js_take(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result, fd_value, queued;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  conn_t *c = argc < 1 ? NULL : get_conn(env, argv[0]);
  if (c == NULL) return argc < 1 ? throw_message(env, NULL, "connTake(conn): 1 argument") : NULL;
  if (c->o.closed || c->state != S_OPEN) {
    CHECK(napi_get_null(env, &result));
    return result;
  }
  if (c->out != NULL) {
    void *copy;
    CHECK(napi_create_buffer_copy(env, c->out_len - c->out_off, c->out + c->out_off, &copy, &queued));
  } else CHECK(napi_get_null(env, &queued));
  CHECK(napi_create_array_with_length(env, 2, &result));
  // Out of the epoll set before the descriptor is handed on (rule 5); then it is the caller's.
  int fd = c->fd;
  if (c->poll_open) {
    c->poll_open = 0;
    rpoll_close(&c->poll, on_conn_poll_closed, c);
  }
  c->fd = -1;
  obj_close(&c->o);
  CHECK(napi_create_int32(env, fd, &fd_value));
  CHECK(napi_set_element(env, result, 0, fd_value));
  CHECK(napi_set_element(env, result, 1, queued));
  return result;
}

static napi_value js_local(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result, host_value, port_value;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  conn_t *c = argc < 1 ? NULL : get_conn(env, argv[0]);
  if (c == NULL) return argc < 1 ? throw_message(env, NULL, "connLocal(conn): 1 argument") : NULL;
  if (c->o.closed || c->fd < 0) return throw_errno(env, EBADF, "connLocal");
  struct sockaddr_storage local;
  socklen_t len = sizeof local;
  memset(&local, 0, sizeof local);
  if (getsockname(c->fd, (struct sockaddr *)&local, &len) != 0) return throw_errno(env, errno, "connLocal: getsockname");
  char host[INET6_ADDRSTRLEN];
  int port;
  format_address(&local, host, sizeof host, &port);
  CHECK(napi_create_string_latin1(env, host, NAPI_AUTO_LENGTH, &host_value));
  CHECK(napi_create_int32(env, port, &port_value));
  CHECK(napi_create_array_with_length(env, 2, &result));
  CHECK(napi_set_element(env, result, 0, host_value));
  CHECK(napi_set_element(env, result, 1, port_value));
  return result;
}

static napi_value js_keepalive(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t ms;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  conn_t *c = argc < 2 ? NULL : get_conn(env, argv[0]);
  if (c == NULL) return argc < 2 ? throw_message(env, NULL, "connKeepAlive(conn, ms): 2 arguments") : NULL;
  CHECK(napi_get_value_int32(env, argv[1], &ms));
  if (c->o.closed || c->fd < 0) return throw_errno(env, EBADF, "connKeepAlive");
  // As libuv's uv_tcp_keepalive: the first probe after the delay, then every second, 10 at most.
  int on = ms > 0, idle = ms > 0 ? (ms + 999) / 1000 : 1, interval = 1, count = 10;
  if (setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0) return throw_errno(env, errno, "connKeepAlive: SO_KEEPALIVE");
  if (on && (setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0 || setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) != 0 ||
             setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count) != 0))
    return throw_errno(env, errno, "connKeepAlive");
  return NULL;
}

static napi_value js_arena(napi_env env, napi_callback_info info) {
  (void)info;
  env_t *e = env_of(env);
  char *arena = e == NULL ? NULL : conn_arena(e);
  if (arena == NULL) return throw_errno(env, ENOMEM, "connArena");
  napi_value result;
  // It lives as long as the environment; JS only ever views it.
  CHECK(napi_create_external_arraybuffer(env, arena, READ_CHUNK, NULL, NULL, &result));
  return result;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  conn_t *c = argc < 1 ? NULL : get_conn(env, argv[0]);
  // A connection a tunnel drives is the tunnel's to close.
  if (c != NULL && c->state != S_TUNNEL) obj_close(&c->o);
  return NULL;
}

napi_status tcp_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "connArena", NULL, js_arena, NULL, NULL, NULL, napi_default, NULL },
    { "listen", NULL, js_listen, NULL, NULL, NULL, napi_default, NULL },
    { "listenClose", NULL, js_listen_close, NULL, NULL, NULL, napi_default, NULL },
    { "connAdopt", NULL, js_adopt, NULL, NULL, NULL, napi_default, NULL },
    { "connConnect", NULL, js_connect, NULL, NULL, NULL, napi_default, NULL },
    { "connWrite", NULL, js_write, NULL, NULL, NULL, napi_default, NULL },
    { "connRead", NULL, js_read, NULL, NULL, NULL, napi_default, NULL },
    { "connEnd", NULL, js_end, NULL, NULL, NULL, napi_default, NULL },
    { "connTake", NULL, js_take, NULL, NULL, NULL, napi_default, NULL },
    { "connClose", NULL, js_close, NULL, NULL, NULL, napi_default, NULL },
    { "connLocal", NULL, js_local, NULL, NULL, NULL, napi_default, NULL },
    { "connKeepAlive", NULL, js_keepalive, NULL, NULL, NULL, napi_default, NULL },
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
