// socksgate's native helper (Linux): batched UDP I/O and TCP byte moving for the TypeScript server.
//
// What it does: accept, read into buffers it hands to JavaScript, write what it is given, connect,
// relay two descriptors, and recvmmsg/sendmmsg for UDP relay sockets. It never interprets SOCKS
// bytes: every decision (method, request, reply, policy) is made by the TypeScript code.
//
// Ownership rules (every file of native/ follows them):
//  1. State is per N-API environment (env_t, the instance data): each main thread or worker thread
//     that loads the addon has its own epoll, buffers, callbacks and objects. No process-wide state.
//  2. Every object JavaScript can hold (relay socket, listener, connection, tunnel) starts with an
//     obj_t and reaches JavaScript as an external tagged with its kind (napi_type_tag_object) and a
//     finalizer. Every entry point checks the tag before it uses the pointer.
//  3. An object's memory is counted by references: one for the JavaScript external (dropped by its
//     finalizer) and one while it is open (dropped when its last handle has closed). It is freed only
//     when both are gone, so a second close, or a call after the peer is gone, finds `closed` set and
//     does nothing: never a read of freed memory.
//  4. Closing is one step (obj_close): no callbacks to JavaScript after it; its handles close and
//     their close callbacks run later, from the loop, never during a dispatch of events.
//  5. A descriptor watched on the helper's epoll is removed from the epoll set (EPOLL_CTL_DEL) before
//     it is closed or handed on, and before the memory of its watch is freed. The epoll events carry
//     a slot index and generation, not a pointer, so even a registration left behind by another copy
//     of the descriptor (a cluster primary's, a forked child's) can never reach freed memory.
//  6. Every N-API status and system call is checked. A socket that cannot be watched ends its
//     connection with a reported reason; nothing fails silently.
//  7. When an environment is torn down (a worker thread exits), an async clean-up hook closes every
//     object and handle of it and completes once their close callbacks have run.
#ifndef SOCKSGATE_HELPER_H
#define SOCKSGATE_HELPER_H
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct env_state env_t;
typedef struct obj obj_t;
typedef struct rpoll rpoll_t;

enum obj_kind { K_RELAY, K_LISTENER, K_CONN, K_TUNNEL, K_KINDS };

struct obj {
  env_t *env;
  int kind;
  int refs;   // the JavaScript external's, and the open object's (see rule 3)
  int closed; // obj_close() ran: no callbacks, calls from JavaScript are no-ops
  int handles; // libuv handles and watches still to close
  int held;    // another object (a tunnel) owns it: its finalizer does not close it
  obj_t *prev, *next; // the environment's open objects
  napi_ref owner;     // what its callbacks go to, while open
  // Starts closing the kind's handles (each one's close callback calls obj_handle_closed()).
  void (*shut)(obj_t *o);
  // Frees what the kind allocated besides the object (optional); the object itself is free()d after.
  void (*release)(obj_t *o);
};

// Readiness on the environment's epoll (reactor.c), uv_poll's semantics: level-triggered; errors
// and hang-ups are reported as every event asked for, so the read or write that follows meets them.
typedef void (*rpoll_cb)(rpoll_t *p, int events);
struct rpoll {
  env_t *env;
  void *data;
  int fd;
  int events;     // UV_READABLE | UV_WRITABLE | UV_DISCONNECT asked for; 0 when stopped
  unsigned armed; // the epoll events registered
  uint32_t slot;  // index in the environment's slot table (0: none)
  int in_epoll;
  rpoll_cb cb;
  // After rpoll_close(): what runs from the loop, and the queue it waits in.
  void (*done)(void *data);
  void *done_data;
  rpoll_t *next_closed;
};

struct env_state {
  napi_env env;
  uv_loop_t *loop;
  napi_async_context context;
  napi_async_cleanup_hook_handle cleanup;
  int tearing_down;
  int stepping;
  int in_closer;
  long live_handles; // libuv handles of this environment not yet closed
  long objects;      // objects allocated and not yet freed
  int state_finalized;
  obj_t *open; // the objects not yet closed
  // JavaScript callbacks (setup()).
  napi_ref cb_udp_dispatch, cb_udp_error, cb_accept, cb_data, cb_connected, cb_tunnel_end;
  // Reactor (reactor.c).
  int epfd;
  uv_poll_t epoll_poll;
  int epoll_poll_open;
  uv_idle_t closer;
  int closer_open;
  rpoll_t *deferred_head, *deferred_tail;
  long started;
  struct slot *slots;
  uint32_t nslots, free_slot;
  // TCP scratch buffer (tcp-tunnel.c), the buffer connections read into for JS (tcp-conn.c), and
  // the UDP half's state (udp-relay.c).
  char *scratch;
  char *conn_arena;
  struct udp_state *udp;
};

// env.c
env_t *env_of(napi_env env);
/** Adds `o` (zeroed, embedded at the start of its kind's struct) to the environment's open objects. */
void obj_init(env_t *e, obj_t *o, int kind, void (*shut)(obj_t *), void (*release)(obj_t *));
/** The tagged external for `o`, with its finalizer (takes the JavaScript reference). */
bool obj_wrap(env_t *e, obj_t *o, napi_value *out);
/** The object of kind `kind` behind `value`, or NULL with a TypeError thrown. */
obj_t *obj_unwrap(napi_env env, napi_value value, int kind);
/** Closes `o` once: no more callbacks; its handles close (rule 4). */
void obj_close(obj_t *o);
/** An entry point close(handle) for objects of `kind`: idempotent, a wrong handle throws. */
napi_value obj_close_entry(napi_env env, napi_callback_info info, int kind);
/** One of `o`'s handles has closed; the last one drops the open reference. */
void obj_handle_closed(obj_t *o);
void obj_unref(obj_t *o);
/** A libuv handle of the environment was opened / closed (for the teardown's completion). */
void env_handle_opened(env_t *e);
void env_handle_closed(env_t *e);
/** Teardown: closes what is open and completes once everything has closed (from close callbacks). */
void env_teardown_step(env_t *e);
/** Calls callback `fn` with argv[0] = o's owner and argv[1..argc-1]; returns its result or NULL. */
napi_value env_call(env_t *e, napi_ref fn, obj_t *o, size_t argc, napi_value *argv);
/** Throws an Error with `message` (and errno code `code` when non-NULL); returns NULL. */
napi_value throw_message(napi_env env, const char *code, const char *message);
napi_value throw_errno(napi_env env, int e, const char *what);
/** "ECONNRESET", "EPIPE"… for an errno value. */
const char *errno_code(int e);

// An N-API call whose failure ends the entry point with a thrown error.
#define CHECK(call)                                                              \
  do {                                                                           \
    if ((call) != napi_ok) return throw_message(env, NULL, "N-API call failed: " #call); \
  } while (0)

// reactor.c
int reactor_open(env_t *e);
/** Tears the reactor down (environment teardown: nothing is watched any more). */
void reactor_shut(env_t *e);
/** Binds the watch to a non-blocking descriptor; no system call. 0, or -errno. */
int rpoll_init(env_t *e, rpoll_t *p, int fd);
/** Watches for `events`, replacing what it watched for. 0, or -errno. */
int rpoll_start(rpoll_t *p, int events, rpoll_cb cb);
/** 0, or -errno. */
int rpoll_stop(rpoll_t *p);
/** Removes the descriptor from the epoll set now (rule 5); `done(data)` runs later from the loop. */
void rpoll_close(rpoll_t *p, void (*done)(void *data), void *data);

// udp-relay.c, tcp-conn.c, tcp-tunnel.c
napi_status udp_register(napi_env env, napi_value exports);
napi_status tcp_register(napi_env env, napi_value exports);
napi_status tunnel_register(napi_env env, napi_value exports);
void udp_state_free(env_t *e);

// Shared by tcp-conn.c and tcp-tunnel.c.
typedef struct conn conn_t;
struct tunnel;
enum conn_state { S_OPEN, S_CONNECTING, S_LINGER, S_TUNNEL, S_GONE };
struct conn {
  obj_t o;
  rpoll_t poll;
  int poll_open;
  // Made when a connect or a linger needs it (an idle connection has none: memory per association).
  uv_timer_t *timer;
  int fd;
  int state;
  int reading; // JavaScript wants its bytes
  int eof;     // the peer's FIN was read
  int ended;   // JavaScript was told of the end
  char *out;   // bytes JavaScript wrote that the socket did not take yet
  size_t out_len, out_off;
  struct tunnel *tunnel; // S_TUNNEL: the tunnel driving it
};
/** A connection on descriptor `fd` (its own from now on: it closes it). NULL when it cannot. */
conn_t *conn_new(env_t *e, int fd);
/** The tunnel takes the connection over: its watch and pending bytes are the tunnel's from here. */
void conn_enter_tunnel(conn_t *c, struct tunnel *t, rpoll_cb cb);
#endif
