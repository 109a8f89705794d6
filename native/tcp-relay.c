// Optional native TCP relay for CONNECT and BIND tunnels (Linux): plain read(2)/write(2) between the
// two sockets, as the C servers do, instead of Node's per-chunk buffers, write requests and streams.
//
// JS hands over a tunnel whose sockets it has stopped reading (src/server/native-pipe.ts). This side
// works on duplicates of their descriptors, so Node still owns and finally closes the originals.
// Bytes read are written on at once from one scratch buffer; only what the other side cannot take
// yet is copied, and reading from that side waits until it is written. A FIN is passed on after
// the bytes before it (half-close); the tunnel ends when both directions have ended, or at the first
// error. Main thread only: tcpSetup() may be called once per process.
//
//   tcpSetup(onEnd)                       onEnd(owner, reason): 'closed', or 'client ECONNRESET', 'target EPIPE'…
//   tcpStart(owner, clientFd, targetFd, toTarget|null, toClient|null, clientEnded, adopt?) -> handle
//                                         adopt: use (and finally close) the descriptors themselves, not duplicates
//   tcpInfo(handle) -> [bytes client→target, bytes target→client, ms since the last byte]
//   tcpClose(handle)                      stops it (no onEnd); idempotent
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "relay.h"

#define SCRATCH (256 * 1024)
// Reads per readiness event, so one busy tunnel cannot starve the others.
#define READS_PER_EVENT 16

typedef struct dir_s {
  int src, dst;
  char *pending;
  size_t len, off;
  int eof;  // the source sent its FIN
  int shut; // and it was passed on
  double bytes;
  const struct dir_s *other; // the opposite direction
} dir_t;

typedef struct tunnel {
  rpoll_t cpoll, tpoll;
  int cfd, tfd;
  int cevents, tevents;
  dir_t up, down;
  napi_ref owner;
  int finished, closing, open_handles;
  uint64_t last_activity;
} tunnel_t;

static napi_env tcp_env;
static napi_ref on_end_ref;
static napi_async_context tcp_context;
static uv_loop_t *tcp_loop;
static char *scratch;

static void on_client(rpoll_t *handle, int events);
static void on_target(rpoll_t *handle, int events);

static const char *side_error(int client_side, int e, char *out, size_t size) {
  snprintf(out, size, "%s %s", client_side ? "client" : "target", relay_errno_code(e));
  return out;
}

// Writes what it can of data now; returns bytes written or -errno (EAGAIN counts as 0 written).
static ssize_t write_some(int fd, const char *data, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t w = send(fd, data + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) done += (size_t)w;
    else if (w < 0 && errno == EINTR) continue;
    else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    else return -(w < 0 ? errno : EIO);
  }
  return (ssize_t)done;
}

// The source's FIN goes on to the destination once its bytes have. When the destination's own FIN was
// already passed on, this one ends the tunnel: its close() sends the FIN (nothing is left unread on
// that socket: its end was read), so no shutdown() is made (one system call less per session).
static void pass_fin(dir_t *d) {
  if (d->eof && d->pending == NULL && !d->shut) {
    if (!d->other->shut) shutdown(d->dst, SHUT_WR);
    d->shut = 1;
  }
}

// Writes the direction's pending bytes; 0, or -errno on the destination.
static int flush_pending(dir_t *d) {
  if (d->pending == NULL) return 0;
  ssize_t w = write_some(d->dst, d->pending + d->off, d->len - d->off);
  if (w < 0) return (int)w;
  d->off += (size_t)w;
  if (d->off == d->len) {
    free(d->pending);
    d->pending = NULL;
    d->len = d->off = 0;
    pass_fin(d);
  }
  return 0;
}

// Moves bytes src → dst until the source has none, the destination is full, or the event's share is used.
// Returns 0, or -errno with *client_side telling which socket failed.
static int pump(tunnel_t *t, dir_t *d, int src_is_client, int *failed_client_side) {
  for (int i = 0; i < READS_PER_EVENT && d->pending == NULL && !d->eof; i++) {
    ssize_t n = read(d->src, scratch, SCRATCH);
    if (n > 0) {
      d->bytes += (double)n;
      t->last_activity = uv_now(tcp_loop);
      ssize_t w = write_some(d->dst, scratch, (size_t)n);
      if (w < 0) {
        *failed_client_side = !src_is_client;
        return (int)w;
      }
      if (w < n) {
        d->len = (size_t)(n - w);
        d->off = 0;
        d->pending = malloc(d->len);
        if (d->pending == NULL) return -ENOMEM;
        memcpy(d->pending, scratch + w, d->len);
      }
      if (n < SCRATCH) break;
    } else if (n == 0) {
      d->eof = 1;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else {
      *failed_client_side = src_is_client;
      return -errno;
    }
  }
  pass_fin(d);
  return 0;
}

static void watch(rpoll_t *poll, int *current, int wanted, rpoll_cb cb) {
  if (wanted == *current) return;
  *current = wanted;
  if (wanted == 0) rpoll_stop(poll);
  else rpoll_start(poll, wanted, cb);
}

static void update(tunnel_t *t) {
  int c = 0, g = 0;
  if (!t->finished) {
    if (!t->up.eof && t->up.pending == NULL) c |= UV_READABLE;
    if (t->down.pending != NULL) c |= UV_WRITABLE;
    if (!t->down.eof && t->down.pending == NULL) g |= UV_READABLE;
    if (t->up.pending != NULL) g |= UV_WRITABLE;
  }
  watch(&t->cpoll, &t->cevents, c, on_client);
  watch(&t->tpoll, &t->tevents, g, on_target);
}

// Tells JS that what `owner` stands for ended: onEnd(owner, reason).
static void report_end(napi_ref owner, const char *reason) {
  napi_env env = tcp_env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value argv[2], fn, global, result;
  napi_get_reference_value(env, owner, &argv[0]);
  napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &argv[1]);
  napi_get_reference_value(env, on_end_ref, &fn);
  napi_get_global(env, &global);
  if (napi_make_callback(env, tcp_context, global, fn, 2, argv, &result) != napi_ok) relay_report_uncaught(env);
  napi_close_handle_scope(env, scope);
}

static void finish(tunnel_t *t, const char *reason) {
  t->finished = 1;
  // JS closes the tunnel from the report (tcpClose: rpoll_close takes the descriptors out of epoll), so
  // they are not stopped first (two epoll_ctl calls per tunnel saved); if it did not close it, they stop now.
  report_end(t->owner, reason);
  if (!t->closing) update(t);
}

static void step(tunnel_t *t, int client_ready, int events) {
  if (t->finished || t->closing) return;
  int rc = 0, failed_client = 0;
  char reason[64];
  // Writable: the pending bytes towards this socket. Readable: bytes from it.
  dir_t *towards = client_ready ? &t->down : &t->up;
  dir_t *from = client_ready ? &t->up : &t->down;
  if (events & UV_WRITABLE) {
    rc = flush_pending(towards);
    if (rc < 0) failed_client = client_ready;
    // Room again: read on from the side that waited for it.
    else if (towards->pending == NULL) rc = pump(t, towards, !client_ready, &failed_client);
  }
  if (rc == 0 && (events & (UV_READABLE | UV_DISCONNECT))) rc = pump(t, from, client_ready, &failed_client);
  if (rc < 0) finish(t, side_error(failed_client, -rc, reason, sizeof reason));
  else if (t->up.shut && t->down.shut) finish(t, "closed");
  else update(t);
}

// A socket error (an RST, say) comes as readiness: the read or write in step() meets it.
static void on_client(rpoll_t *handle, int events) {
  step((tunnel_t *)handle->data, 1, events);
}

static void on_target(rpoll_t *handle, int events) {
  step((tunnel_t *)handle->data, 0, events);
}

static void on_closed(rpoll_t *handle) {
  tunnel_t *t = (tunnel_t *)handle->data;
  if (--t->open_handles > 0) return;
  close(t->cfd);
  close(t->tfd);
  free(t->up.pending);
  free(t->down.pending);
  free(t);
}

// The front door (tcp-front.c) keeps a connection's poll handles in a tunnel it allocates here, so
// that a CONNECT it completes becomes a tunnel with its descriptors already in the epoll set. It
// offers the tunnel (tunnel_offer) while JS's tcpStart(…, adopt) for those descriptors runs, which
// then takes it.
static struct tunnel *tcp_prepared;

struct tunnel *tunnel_new(void) {
  return calloc(1, sizeof(tunnel_t));
}

rpoll_t *tunnel_poll(struct tunnel *t, int target) {
  return target ? &t->tpoll : &t->cpoll;
}

void tunnel_offer(struct tunnel *t, int cfd, int tfd) {
  t->cfd = cfd;
  t->tfd = tfd;
  tcp_prepared = t;
}

int tunnel_taken(struct tunnel *t) {
  int taken = tcp_prepared != t;
  tcp_prepared = NULL;
  return taken;
}

napi_value relay_throw_message(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static tunnel_t *get_tunnel(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "not a tunnel handle");
    return NULL;
  }
  return (tunnel_t *)data;
}

static int copy_initial(napi_env env, napi_value value, dir_t *d) {
  napi_valuetype type;
  napi_typeof(env, value, &type);
  if (type == napi_null || type == napi_undefined) return 0;
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, value, &data, &len) != napi_ok) return -EINVAL;
  if (len == 0) return 0;
  d->pending = malloc(len);
  if (d->pending == NULL) return -ENOMEM;
  memcpy(d->pending, data, len);
  d->len = len;
  d->off = 0;
  return 0;
}

napi_value tcp_start(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6) return relay_throw_message(env, "tcpStart: 6 arguments");
  if (scratch == NULL) return relay_throw_message(env, "tcpSetup() was not called");
  int32_t cfd, tfd;
  bool ended, adopt = false;
  if (napi_get_value_int32(env, argv[1], &cfd) != napi_ok || napi_get_value_int32(env, argv[2], &tfd) != napi_ok ||
      napi_get_value_bool(env, argv[5], &ended) != napi_ok || (argc > 6 && napi_get_value_bool(env, argv[6], &adopt) != napi_ok))
    return relay_throw_message(env, "tcpStart: bad arguments");
  // The front door's tunnel for exactly these descriptors, its poll handles already watching them.
  tunnel_t *t = NULL;
  int prepared = 0;
  if (adopt && tcp_prepared != NULL && tcp_prepared->cfd == cfd && tcp_prepared->tfd == tfd) {
    t = tcp_prepared;
    tcp_prepared = NULL;
    prepared = 1;
  } else {
    t = calloc(1, sizeof *t);
  }
  if (t == NULL) return relay_throw_message(env, "tcpStart: out of memory");
  // adopt: descriptors nothing else owns (the front door's), used as they are; otherwise duplicates.
  t->cfd = adopt ? cfd : fcntl(cfd, F_DUPFD_CLOEXEC, 0);
  t->tfd = t->cfd < 0 ? -1 : adopt ? tfd : fcntl(tfd, F_DUPFD_CLOEXEC, 0);
  if (t->cfd < 0 || t->tfd < 0 || copy_initial(env, argv[3], &t->up) < 0 || copy_initial(env, argv[4], &t->down) < 0) {
    if (adopt) t->cfd = t->tfd = -1; // still the caller's
    if (t->cfd >= 0) close(t->cfd);
    if (t->tfd >= 0) close(t->tfd);
    free(t->up.pending);
    free(t->down.pending);
    t->up.pending = t->down.pending = NULL;
    if (prepared) {
      // Still the front door's, to close with its handles.
      t->cfd = cfd;
      t->tfd = tfd;
      tcp_prepared = t;
    } else free(t);
    return relay_throw_message(env, "tcpStart: cannot take the sockets over");
  }
  t->up.src = t->cfd;
  t->up.dst = t->tfd;
  t->down.src = t->tfd;
  t->down.dst = t->cfd;
  t->up.other = &t->down;
  t->down.other = &t->up;
  t->up.eof = ended;
  t->last_activity = uv_now(tcp_loop);
  if (!prepared && (rpoll_init(tcp_loop, &t->cpoll, t->cfd) < 0 || rpoll_init(tcp_loop, &t->tpoll, t->tfd) < 0)) {
    if (!adopt) {
      close(t->cfd);
      close(t->tfd);
    }
    free(t->up.pending);
    free(t->down.pending);
    free(t);
    return relay_throw_message(env, "tcpStart: cannot watch the sockets");
  }
  t->cpoll.data = t->tpoll.data = t;
  // Adopted descriptors are the tunnel's alone (on_closed closes them); duplicates share Node's sockets.
  t->cpoll.owned = t->tpoll.owned = adopt;
  t->open_handles = 2;
  napi_create_reference(env, argv[0], 1, &t->owner);
  pass_fin(&t->up);
  update(t);
  napi_value handle;
  napi_create_external(env, t, NULL, NULL, &handle);
  return handle;
}

napi_value tcp_info(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result, up, down, quiet;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  tunnel_t *t = get_tunnel(env, argv[0]);
  if (t == NULL) return NULL;
  napi_create_double(env, t->up.bytes, &up);
  napi_create_double(env, t->down.bytes, &down);
  napi_create_double(env, (double)(uv_now(tcp_loop) - t->last_activity), &quiet);
  napi_create_array_with_length(env, 3, &result);
  napi_set_element(env, result, 0, up);
  napi_set_element(env, result, 1, down);
  napi_set_element(env, result, 2, quiet);
  return result;
}

napi_value tcp_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  tunnel_t *t = get_tunnel(env, argv[0]);
  if (t == NULL || t->closing) return NULL;
  t->closing = 1;
  t->finished = 1;
  napi_delete_reference(env, t->owner);
  t->owner = NULL;
  rpoll_close(&t->cpoll, on_closed);
  rpoll_close(&t->tpoll, on_closed);
  return NULL;
}

napi_value tcp_setup(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (scratch != NULL) return relay_throw_message(env, "tcpSetup() was already called in this process");
  if (napi_get_uv_event_loop(env, &tcp_loop) != napi_ok) return relay_throw_message(env, "tcpSetup: no event loop");
  scratch = malloc(SCRATCH);
  if (scratch == NULL) return relay_throw_message(env, "tcpSetup: out of memory");
  tcp_env = env;
  napi_create_reference(env, argv[0], 1, &on_end_ref);
  napi_create_string_utf8(env, "socksgate:tcp-relay", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &tcp_context);
  return NULL;
}

// The control connection of a UDP ASSOCIATE (RFC 1928 §7) only keeps its association alive: once its
// reply is sent, this side watches a duplicate of its descriptor, discards whatever the client sends,
// and reports its end, so JS can let go of the net.Socket and its handle (about 1.4 KB per association).
//
//   watchStart(owner, fd) -> handle         owner.ended(reason) through onEnd: 'ok' (FIN) or 'client ECONNRESET'…
//   watchClose(handle)                      stops watching and closes the duplicate (the connection closes); idempotent

typedef struct control {
  uv_poll_t poll;
  int fd;
  int closing;
  napi_ref owner;
} control_t;

static void control_end(control_t *c, const char *reason) {
  uv_poll_stop(&c->poll);
  report_end(c->owner, reason);
}

static void on_control(uv_poll_t *handle, int status, int events) {
  control_t *c = (control_t *)handle->data;
  char reason[64];
  (void)events;
  if (c->closing) return;
  // On an error status the reads below tell which error it was (libuv does not say).
  for (int i = 0; i < READS_PER_EVENT; i++) {
    ssize_t n = read(c->fd, scratch, SCRATCH);
    if (n > 0) continue;
    if (n == 0) {
      control_end(c, "ok");
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) control_end(c, side_error(1, errno, reason, sizeof reason));
    else if (status < 0) control_end(c, side_error(1, -status, reason, sizeof reason));
    return;
  }
}

static void on_control_closed(uv_handle_t *handle) {
  control_t *c = (control_t *)handle->data;
  close(c->fd);
  free(c);
}

napi_value watch_start(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], handle;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return relay_throw_message(env, "watchStart: 2 arguments");
  if (scratch == NULL) return relay_throw_message(env, "tcpSetup() was not called");
  int32_t fd;
  if (napi_get_value_int32(env, argv[1], &fd) != napi_ok) return relay_throw_message(env, "watchStart: bad descriptor");
  control_t *c = calloc(1, sizeof *c);
  if (c == NULL) return relay_throw_message(env, "watchStart: out of memory");
  c->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (c->fd < 0 || uv_poll_init_socket(tcp_loop, &c->poll, c->fd) != 0) {
    if (c->fd >= 0) close(c->fd);
    free(c);
    return relay_throw_message(env, "watchStart: cannot take the socket over");
  }
  c->poll.data = c;
  napi_create_reference(env, argv[0], 1, &c->owner);
  uv_poll_start(&c->poll, UV_READABLE, on_control);
  napi_create_external(env, c, NULL, NULL, &handle);
  return handle;
}

napi_value watch_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "not a watch handle");
    return NULL;
  }
  control_t *c = (control_t *)data;
  if (c->closing) return NULL;
  c->closing = 1;
  napi_delete_reference(env, c->owner);
  c->owner = NULL;
  uv_close((uv_handle_t *)&c->poll, on_control_closed);
  return NULL;
}
