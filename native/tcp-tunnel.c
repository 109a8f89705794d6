// TCP tunnels for CONNECT and BIND: plain read(2)/write(2) between two connections, as the C servers
// do, instead of Node's per-chunk buffers, write requests and streams.
//
// Bytes read are written on at once from the environment's scratch buffer; only what the other side
// cannot take yet is copied, and reading from that side waits until it is written. A FIN is passed
// on after the bytes before it (half-close); the tunnel ends when both directions have ended, or at
// the first error.
//
//   tunnelOpen(owner, clientConn, targetConn, toTarget|null, clientEnded, toClient?) -> tunnel
//       the tunnel drives both connections (tcp-conn.c's) from now on and closes them when it closes;
//       bytes the client connection had queued go first, then toClient (a reply), written at once
//   tunnelFromSockets(owner, clientFd, targetFd, toTarget|null, clientEnded) -> tunnel
//       the same on duplicates of two Node sockets' descriptors (Node still owns the originals)
//   callbacks.tunnelEnd(owner, reason, up, down)   'closed', or 'client ECONNRESET', 'target EPIPE'…,
//                                        with the bytes moved client→target and target→client; the
//                                        tunnel closes itself after the call (tunnelClose is a no-op then)
//   tunnelInfo(tunnel) -> [bytes client→target, bytes target→client, ms since the last byte]
//   tunnelClose(tunnel)                  stops it and closes both connections (no tunnelEnd); idempotent
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helper.h"

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
  const struct dir_s *other;
} dir_t;

typedef struct tunnel {
  obj_t o;
  conn_t *client, *target;
  int cevents, tevents;
  dir_t up, down;
  int finished;
  uint64_t last_activity;
} tunnel_t;

static void on_client(rpoll_t *p, int events);
static void on_target(rpoll_t *p, int events);

static const char *side_error(int client_side, int e, char *out, size_t size) {
  snprintf(out, size, "%s %s", client_side ? "client" : "target", errno_code(e));
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
// already passed on, this one ends the tunnel, and its close() sends the FIN: no shutdown() needed.
static int pass_fin(dir_t *d) {
  if (d->eof && d->pending == NULL && !d->shut) {
    d->shut = 1;
    if (!d->other->shut && shutdown(d->dst, SHUT_WR) != 0 && errno != ENOTCONN) return -errno;
  }
  return 0;
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
    return pass_fin(d);
  }
  return 0;
}

// Moves bytes src → dst until the source has none, the destination is full, or the event's share is
// used. 0, or -errno with *failed_client telling which socket failed.
static int pump(tunnel_t *t, dir_t *d, int src_is_client, int *failed_client) {
  char *scratch = t->o.env->scratch;
  for (int i = 0; i < READS_PER_EVENT && d->pending == NULL && !d->eof; i++) {
    ssize_t n = read(d->src, scratch, SCRATCH);
    if (n > 0) {
      d->bytes += (double)n;
      t->last_activity = uv_now(t->o.env->loop);
      ssize_t w = write_some(d->dst, scratch, (size_t)n);
      if (w < 0) {
        *failed_client = !src_is_client;
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
      *failed_client = src_is_client;
      return -errno;
    }
  }
  int rc = pass_fin(d);
  if (rc < 0) *failed_client = !src_is_client;
  return rc;
}

static int watch(conn_t *c, int *current, int wanted, rpoll_cb cb) {
  if (wanted == *current) return 0;
  int rc = wanted == 0 ? rpoll_stop(&c->poll) : rpoll_start(&c->poll, wanted, cb);
  if (rc == 0) *current = wanted;
  return rc;
}

static void finish(tunnel_t *t, const char *reason);

static void update(tunnel_t *t) {
  int c = 0, g = 0;
  if (!t->finished) {
    if (!t->up.eof && t->up.pending == NULL) c |= UV_READABLE;
    if (t->down.pending != NULL) c |= UV_WRITABLE;
    if (!t->down.eof && t->down.pending == NULL) g |= UV_READABLE;
    if (t->up.pending != NULL) g |= UV_WRITABLE;
  }
  int rc = watch(t->client, &t->cevents, c, on_client);
  if (rc == 0) rc = watch(t->target, &t->tevents, g, on_target);
  if (rc != 0 && !t->finished) {
    // A socket that cannot be watched would leave the tunnel hanging until its idle timeout.
    char reason[48];
    snprintf(reason, sizeof reason, "EPOLL %s", errno_code(-rc));
    finish(t, reason);
  }
}

static void finish(tunnel_t *t, const char *reason) {
  if (t->finished) return;
  t->finished = 1;
  env_t *e = t->o.env;
  napi_handle_scope scope;
  napi_value argv[4];
  if (napi_open_handle_scope(e->env, &scope) == napi_ok) {
    // The counts come with the report: JS needs no second call for them.
    if (napi_create_string_utf8(e->env, reason, NAPI_AUTO_LENGTH, &argv[1]) == napi_ok && napi_create_double(e->env, t->up.bytes, &argv[2]) == napi_ok &&
        napi_create_double(e->env, t->down.bytes, &argv[3]) == napi_ok)
      env_call(e, e->cb_tunnel_end, &t->o, 4, argv);
    (void)napi_close_handle_scope(e->env, scope);
  }
  // An ended tunnel has nothing left to do: it closes both connections now (JS's close is a no-op).
  obj_close(&t->o);
}

static void step(tunnel_t *t, int client_ready, int events) {
  if (t->finished || t->o.closed) return;
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

static void on_client(rpoll_t *p, int events) {
  step((tunnel_t *)p->data, 1, events);
}

static void on_target(rpoll_t *p, int events) {
  step((tunnel_t *)p->data, 0, events);
}

static void tunnel_shut(obj_t *o) {
  tunnel_t *t = (tunnel_t *)o;
  t->finished = 1;
  conn_t *sides[2] = { t->client, t->target };
  t->client = t->target = NULL;
  for (int i = 0; i < 2; i++) {
    if (sides[i] == NULL) continue;
    sides[i]->o.held = 0;
    obj_close(&sides[i]->o);
    obj_unref(&sides[i]->o);
  }
}

static void tunnel_release(obj_t *o) {
  tunnel_t *t = (tunnel_t *)o;
  free(t->up.pending);
  free(t->down.pending);
}

// Takes over bytes JS queued on a connection (the tail of a reply) as a direction's pending bytes,
// before `extra` (early data for the target, or the reply for the client).
static int take_queued(dir_t *d, conn_t *c, const void *extra, size_t extra_len) {
  size_t queued = c->out == NULL ? 0 : c->out_len - c->out_off;
  size_t len = queued + extra_len;
  if (len == 0) return 0;
  d->pending = malloc(len);
  if (d->pending == NULL) return -ENOMEM;
  if (queued) memcpy(d->pending, c->out + c->out_off, queued);
  if (extra_len) memcpy(d->pending + queued, extra, extra_len);
  d->len = len;
  d->off = 0;
  free(c->out);
  c->out = NULL;
  c->out_len = c->out_off = 0;
  return 0;
}

// A tunnel on two open connections. Before the tunnel exists a failure leaves them as they were.
static napi_value open_tunnel(napi_env env, env_t *e, napi_value owner, conn_t *client, conn_t *target, napi_value early, bool ended, napi_value reply) {
  void *extra = NULL, *reply_bytes = NULL;
  size_t extra_len = 0, reply_len = 0;
  napi_valuetype type;
  CHECK(napi_typeof(env, early, &type));
  if (type != napi_null && type != napi_undefined) CHECK(napi_get_buffer_info(env, early, &extra, &extra_len));
  if (reply != NULL) {
    CHECK(napi_typeof(env, reply, &type));
    if (type != napi_null && type != napi_undefined) CHECK(napi_get_buffer_info(env, reply, &reply_bytes, &reply_len));
  }
  if (e->scratch == NULL && (e->scratch = malloc(SCRATCH)) == NULL) return throw_errno(env, ENOMEM, "tunnel");
  tunnel_t *t = calloc(1, sizeof *t);
  if (t == NULL) return throw_errno(env, ENOMEM, "tunnel");
  obj_init(e, &t->o, K_TUNNEL, tunnel_shut, tunnel_release);
  // From here the tunnel holds both connections: closing it closes them.
  t->client = client;
  t->target = target;
  client->o.held = target->o.held = 1;
  client->o.refs++;
  target->o.refs++;
  conn_enter_tunnel(client, t, on_client);
  conn_enter_tunnel(target, t, on_target);
  // Whatever they watched before is replaced at the first update().
  t->cevents = client->poll.events;
  t->tevents = target->poll.events;
  t->up.src = t->down.dst = client->fd;
  t->up.dst = t->down.src = target->fd;
  t->up.other = &t->down;
  t->down.other = &t->up;
  t->up.eof = ended || client->eof;
  t->down.eof = target->eof;
  t->last_activity = uv_now(e->loop);
  napi_value handle;
  if (take_queued(&t->down, client, reply_bytes, reply_len) != 0 || take_queued(&t->up, target, extra, extra_len) != 0) {
    obj_close(&t->o);
    return throw_errno(env, ENOMEM, "tunnel");
  }
  if (napi_create_reference(env, owner, 1, &t->o.owner) != napi_ok || !obj_wrap(e, &t->o, &handle)) {
    obj_close(&t->o);
    return throw_message(env, NULL, "tunnel: cannot make its handle");
  }
  // The reply (and early data) go out now rather than after a readiness event. A failure leaves the
  // bytes pending: the socket's writability reports the error from the loop, not during this call.
  // (A direction whose source already ended is left to the loop: its FIN's errors are reported there.)
  if (t->down.pending != NULL && !t->down.eof) (void)flush_pending(&t->down);
  if (t->up.pending != NULL && !t->up.eof) (void)flush_pending(&t->up);
  int rc = pass_fin(&t->up);
  if (rc < 0) {
    char reason[48];
    finish(t, side_error(0, -rc, reason, sizeof reason));
  } else update(t);
  return handle;
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  bool ended;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  env_t *e = env_of(env);
  if (argc < 5) return throw_message(env, NULL, "tunnelOpen: 5 arguments");
  if (e == NULL || e->cb_tunnel_end == NULL) return throw_message(env, NULL, "setup() was not called");
  conn_t *client = (conn_t *)obj_unwrap(env, argv[1], K_CONN);
  if (client == NULL) return NULL;
  conn_t *target = (conn_t *)obj_unwrap(env, argv[2], K_CONN);
  if (target == NULL) return NULL;
  CHECK(napi_get_value_bool(env, argv[4], &ended));
  if (client == target || client->o.closed || target->o.closed || client->state != S_OPEN || target->state != S_OPEN)
    return throw_message(env, "EBADF", "tunnelOpen: both connections must be open and not in a tunnel");
  return open_tunnel(env, e, argv[0], client, target, argv[3], ended, argc > 5 ? argv[5] : NULL);
}

static conn_t *dup_conn(env_t *e, int fd, int *error) {
  int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) {
    *error = errno;
    return NULL;
  }
  conn_t *c = conn_new(e, own);
  if (c == NULL) {
    close(own);
    *error = ENOMEM;
  }
  return c;
}

static napi_value js_from_sockets(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t cfd, tfd;
  bool ended;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  env_t *e = env_of(env);
  if (argc < 5 || napi_get_value_int32(env, argv[1], &cfd) != napi_ok || napi_get_value_int32(env, argv[2], &tfd) != napi_ok ||
      napi_get_value_bool(env, argv[4], &ended) != napi_ok)
    return throw_message(env, NULL, "tunnelFromSockets(owner, clientFd, targetFd, toTarget, clientEnded): bad arguments");
  if (e == NULL || e->cb_tunnel_end == NULL) return throw_message(env, NULL, "setup() was not called");
  int error = 0;
  conn_t *client = dup_conn(e, cfd, &error);
  conn_t *target = client == NULL ? NULL : dup_conn(e, tfd, &error);
  if (target == NULL) {
    if (client != NULL) obj_close(&client->o);
    return throw_errno(env, error, "tunnelFromSockets");
  }
  // Kept alive across the call: if no tunnel took them, they are closed here.
  client->o.refs++;
  target->o.refs++;
  napi_value handle = open_tunnel(env, e, argv[0], client, target, argv[3], ended, NULL);
  conn_t *sides[2] = { client, target };
  for (int i = 0; i < 2; i++) {
    if (!sides[i]->o.held) obj_close(&sides[i]->o);
    obj_unref(&sides[i]->o);
  }
  return handle;
}

static napi_value js_info(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result, up, down, quiet;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  tunnel_t *t = argc < 1 ? NULL : (tunnel_t *)obj_unwrap(env, argv[0], K_TUNNEL);
  if (t == NULL) return NULL;
  CHECK(napi_create_double(env, t->up.bytes, &up));
  CHECK(napi_create_double(env, t->down.bytes, &down));
  CHECK(napi_create_double(env, (double)(uv_now(t->o.env->loop) - t->last_activity), &quiet));
  CHECK(napi_create_array_with_length(env, 3, &result));
  CHECK(napi_set_element(env, result, 0, up));
  CHECK(napi_set_element(env, result, 1, down));
  CHECK(napi_set_element(env, result, 2, quiet));
  return result;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  return obj_close_entry(env, info, K_TUNNEL);
}

napi_status tunnel_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "tunnelOpen", NULL, js_open, NULL, NULL, NULL, napi_default, NULL },
    { "tunnelFromSockets", NULL, js_from_sockets, NULL, NULL, NULL, napi_default, NULL },
    { "tunnelInfo", NULL, js_info, NULL, NULL, NULL, napi_default, NULL },
    { "tunnelClose", NULL, js_close, NULL, NULL, NULL, napi_default, NULL },
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
