// Shared between the UDP (udp-relay.c) and TCP (tcp-relay.c) halves of the native helper.
#ifndef SOCKSGATE_RELAY_H
#define SOCKSGATE_RELAY_H
#include <node_api.h>

/** "ECONNRESET", "EPIPE"… for an errno value (EIO for ones it does not name). */
const char *relay_errno_code(int e);
/** Throws an Error with `message`; returns NULL for the N-API function to return. */
napi_value relay_throw_message(napi_env env, const char *message);
/** Passes an exception a JS callback threw on to the process's uncaught-exception handling. */
void relay_report_uncaught(napi_env env);

#include <uv.h>

/** Readiness watching on the helper's own epoll (reactor.c): uv_poll's use, fewer system calls. */
typedef struct rpoll rpoll_t;
typedef void (*rpoll_cb)(rpoll_t *p, int events);
typedef void (*rpoll_close_cb)(rpoll_t *p);
struct rpoll {
  void *data;
  int fd;
  int events;    // UV_READABLE | UV_WRITABLE | UV_DISCONNECT asked for; 0 when stopped
  unsigned armed; // the epoll events registered for it
  int in_epoll;
  // The descriptor is the helper's alone and its owner closes it right after the close callback: the
  // close then takes it out of the epoll set, and rpoll_close() need not.
  int owned;
  int closing;
  rpoll_cb cb;
  rpoll_close_cb close_cb;
  rpoll_t *next_closed;
};
/** Binds the handle to a (non-blocking) descriptor; no system call. 0, or -errno. */
int rpoll_init(uv_loop_t *loop, rpoll_t *p, int fd);
/** Watches for `events` (level-triggered), replacing what it watched for. 0, or -errno. */
int rpoll_start(rpoll_t *p, int events, rpoll_cb cb);
int rpoll_stop(rpoll_t *p);
/** No callbacks after this; `cb` runs from the loop later, when the owner may close and free. */
void rpoll_close(rpoll_t *p, rpoll_close_cb cb);

struct tunnel;
/** A tunnel's storage, for the front door to keep a connection's poll handles in (free() it if unused). */
struct tunnel *tunnel_new(void);
/** Its client (target 0) or target (1) poll handle. */
rpoll_t *tunnel_poll(struct tunnel *t, int target);
/** Offers it to the next tcpStart(…, adopt) for exactly these descriptors. */
void tunnel_offer(struct tunnel *t, int cfd, int tfd);
/** Whether that tcpStart took it (the tunnel then owns handles and descriptors); withdraws the offer. */
int tunnel_taken(struct tunnel *t);

napi_value tcp_setup(napi_env env, napi_callback_info info);
napi_value tcp_start(napi_env env, napi_callback_info info);
napi_value tcp_info(napi_env env, napi_callback_info info);
napi_value tcp_close(napi_env env, napi_callback_info info);
napi_value watch_start(napi_env env, napi_callback_info info);
napi_value watch_close(napi_env env, napi_callback_info info);
napi_value front_setup(napi_env env, napi_callback_info info);
napi_value front_create(napi_env env, napi_callback_info info);
napi_value front_adopt(napi_env env, napi_callback_info info);
napi_value front_listen(napi_env env, napi_callback_info info);
napi_value front_set_open(napi_env env, napi_callback_info info);
napi_value front_close(napi_env env, napi_callback_info info);
napi_value front_connect(napi_env env, napi_callback_info info);
napi_value front_reply(napi_env env, napi_callback_info info);
napi_value front_abort(napi_env env, napi_callback_info info);
napi_value front_take(napi_env env, napi_callback_info info);
#endif
