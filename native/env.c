// The module's entry point and what every object shares: the per-environment state, tagged externals
// with finalizers, reference counting, callbacks into JavaScript and the teardown of a worker
// thread's environment. The rules are in helper.h.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helper.h"

// One tag per kind of object (random, fixed: a tag says "made by this helper, of this kind").
static const napi_type_tag TAGS[K_KINDS] = {
  { 0x8d3c2a1f5b6e4c70ULL, 0x9a1b2c3d4e5f6071ULL }, // relay socket
  { 0x1f2e3d4c5b6a7980ULL, 0x0a9b8c7d6e5f4031ULL }, // listener
  { 0x5c4d3e2f1a0b9c8dULL, 0x7e6f5a4b3c2d1e0fULL }, // connection
  { 0x2b3c4d5e6f708192ULL, 0xa3b4c5d6e7f80912ULL }, // tunnel
};
static const char *const KIND_NAMES[K_KINDS] = { "relay socket", "listener", "connection", "tunnel" };

const char *errno_code(int e) {
  switch (e) {
    case EAGAIN: return "EAGAIN";
    case ENOBUFS: return "ENOBUFS";
    case EMSGSIZE: return "EMSGSIZE";
    case EINVAL: return "EINVAL";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ECONNABORTED: return "ECONNABORTED";
    case EBADF: return "EBADF";
    case EPIPE: return "EPIPE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOTCONN: return "ENOTCONN";
    case ENETDOWN: return "ENETDOWN";
    case EPROTO: return "EPROTO";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case ENOSPC: return "ENOSPC";
    default: return "EIO";
  }
}

napi_value throw_message(napi_env env, const char *code, const char *message) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && !pending) napi_throw_error(env, code, message);
  return NULL;
}

napi_value throw_errno(napi_env env, int e, const char *what) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(e));
  return throw_message(env, errno_code(e), message);
}

env_t *env_of(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok) return NULL;
  return (env_t *)data;
}

static void env_maybe_free(env_t *e) {
  if (e->state_finalized && e->objects == 0) {
    udp_state_free(e);
    free(e->slots);
    free(e->scratch);
    free(e->conn_arena);
    free(e);
  }
}

void env_handle_opened(env_t *e) {
  e->live_handles++;
}


void env_handle_closed(env_t *e) {
  e->live_handles--;
  if (e->tearing_down) env_teardown_step(e);
}

void obj_init(env_t *e, obj_t *o, int kind, void (*shut)(obj_t *), void (*release)(obj_t *)) {
  o->env = e;
  o->kind = kind;
  o->refs = 1;
  o->shut = shut;
  o->release = release;
  o->prev = NULL;
  o->next = e->open;
  if (e->open) e->open->prev = o;
  e->open = o;
  e->objects++;
}

void obj_unref(obj_t *o) {
  if (--o->refs > 0) return;
  env_t *e = o->env;
  if (o->release) o->release(o);
  free(o);
  e->objects--;
  env_maybe_free(e);
}

void obj_handle_closed(obj_t *o) {
  if (--o->handles > 0) return;
  env_t *e = o->env;
  obj_unref(o);
  if (e->tearing_down) env_teardown_step(e);
}

void obj_close(obj_t *o) {
  if (o->closed) return;
  o->closed = 1;
  env_t *e = o->env;
  if (o->prev) o->prev->next = o->next;
  else e->open = o->next;
  if (o->next) o->next->prev = o->prev;
  o->prev = o->next = NULL;
  if (o->owner) {
    // Fails only when the environment is gone, and then the reference went with it.
    (void)napi_delete_reference(e->env, o->owner);
    o->owner = NULL;
  }
  // Holds the open reference while handles close; one extra count so that a kind with no handles
  // left drops it here.
  o->handles++;
  o->shut(o);
  obj_handle_closed(o);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  obj_t *o = (obj_t *)data;
  // JavaScript lost the object while it was open and nothing else holds it: nobody could close it.
  if (!o->closed && !o->held) obj_close(o);
  obj_unref(o);
}

bool obj_wrap(env_t *e, obj_t *o, napi_value *out) {
  napi_env env = e->env;
  if (napi_create_external(env, o, on_finalize, NULL, out) != napi_ok) return false;
  o->refs++;
  // The external exists with its finalizer now: the tag failing leaves an untagged handle that no
  // entry point accepts, which the finalizer still releases.
  return napi_type_tag_object(env, *out, &TAGS[o->kind]) == napi_ok;
}

obj_t *obj_unwrap(napi_env env, napi_value value, int kind) {
  bool ok = false;
  void *data = NULL;
  char message[64];
  napi_valuetype type = napi_undefined;
  // Not an external at all (a number, null, an object): refused before the tag is looked at.
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external || napi_check_object_type_tag(env, value, &TAGS[kind], &ok) != napi_ok || !ok ||
      napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    snprintf(message, sizeof message, "not a %s handle", KIND_NAMES[kind]);
    napi_throw_type_error(env, NULL, message);
    return NULL;
  }
  return (obj_t *)data;
}

napi_value obj_close_entry(napi_env env, napi_callback_info info, int kind) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return throw_message(env, NULL, "close(handle): 1 argument");
  obj_t *o = obj_unwrap(env, argv[0], kind);
  if (o != NULL) obj_close(o);
  return NULL;
}

napi_value env_call(env_t *e, napi_ref fn_ref, obj_t *o, size_t argc, napi_value *argv) {
  napi_env env = e->env;
  napi_value fn, global, result = NULL;
  if (e->tearing_down || fn_ref == NULL || o->owner == NULL) return NULL;
  if (napi_get_reference_value(env, fn_ref, &fn) != napi_ok || napi_get_reference_value(env, o->owner, &argv[0]) != napi_ok ||
      napi_get_global(env, &global) != napi_ok)
    return NULL;
  // make_callback: microtasks and nextTicks run after it, as after any I/O callback.
  if (napi_make_callback(env, e->context, global, fn, argc, argv, &result) != napi_ok) {
    bool pending = false;
    napi_value error;
    // A callback that threw goes to the process's uncaught-exception handling, as in any callback.
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending && napi_get_and_clear_last_exception(env, &error) == napi_ok)
      napi_fatal_exception(env, error);
    return NULL;
  }
  return result;
}

// Teardown of the environment (a worker thread exits, or the process cleans up): close every object,
// then the reactor, and complete once the last libuv handle has closed.
void env_teardown_step(env_t *e) {
  // Closing an object calls back here: the outer call goes on and checks again.
  if (e->cleanup == NULL || e->stepping) return;
  e->stepping = 1;
  while (e->open) obj_close(e->open);
  e->stepping = 0;
  if (e->deferred_head != NULL || e->in_closer) return; // the closer runs them, then calls back here
  reactor_shut(e);
  if (e->live_handles > 0) return;
  napi_async_cleanup_hook_handle h = e->cleanup;
  e->cleanup = NULL;
  (void)napi_remove_async_cleanup_hook(h);
}

static void on_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  env_t *e = (env_t *)arg;
  (void)handle;
  e->tearing_down = 1;
  env_teardown_step(e);
}

static void on_state_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  env_t *e = (env_t *)data;
  if (e->context) (void)napi_async_destroy(env, e->context);
  napi_ref *refs[] = { &e->cb_udp_dispatch, &e->cb_udp_error, &e->cb_accept, &e->cb_data, &e->cb_connected, &e->cb_tunnel_end };
  for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
    if (*refs[i]) (void)napi_delete_reference(env, *refs[i]);
  e->state_finalized = 1;
  env_maybe_free(e);
}

static napi_status set_ref(napi_env env, napi_value from, const char *name, napi_ref *out) {
  napi_value fn;
  napi_valuetype type;
  napi_status s = napi_get_named_property(env, from, name, &fn);
  if (s == napi_ok) s = napi_typeof(env, fn, &type);
  if (s == napi_ok && type != napi_function) s = napi_function_expected;
  if (s == napi_ok) s = napi_create_reference(env, fn, 1, out);
  return s;
}

// setup({ udpDispatch, udpError, accept, data, connected, tunnelEnd }): this environment's callbacks,
// once.
static napi_value js_setup(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  env_t *e = env_of(env);
  if (e == NULL) return throw_message(env, NULL, "the helper's state is missing");
  if (e->cb_accept != NULL) return throw_message(env, NULL, "setup() was already called in this environment");
  if (argc < 1) return throw_message(env, NULL, "setup(callbacks): an object of callbacks");
  static const char *const names[] = { "udpDispatch", "udpError", "accept", "data", "connected", "tunnelEnd" };
  napi_ref *refs[] = { &e->cb_udp_dispatch, &e->cb_udp_error, &e->cb_accept, &e->cb_data, &e->cb_connected, &e->cb_tunnel_end };
  for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
    if (set_ref(env, argv[0], names[i], refs[i]) != napi_ok) {
      char message[96];
      snprintf(message, sizeof message, "setup(): callback %s is missing", names[i]);
      return throw_message(env, NULL, message);
    }
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  env_t *e = calloc(1, sizeof *e);
  if (e == NULL) {
    throw_message(env, "ENOMEM", "socksgate native helper: out of memory");
    return NULL;
  }
  e->env = env;
  e->epfd = -1;
  napi_value name;
  if (napi_get_uv_event_loop(env, &e->loop) != napi_ok || napi_create_string_utf8(env, "socksgate:native", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &e->context) != napi_ok) {
    free(e);
    throw_message(env, NULL, "socksgate native helper: cannot set up its environment");
    return NULL;
  }
  if (napi_set_instance_data(env, e, on_state_finalize, NULL) != napi_ok) {
    (void)napi_async_destroy(env, e->context);
    free(e);
    throw_message(env, NULL, "socksgate native helper: cannot keep its state");
    return NULL;
  }
  // From here the state is the environment's: on_state_finalize frees it.
  if (napi_add_async_cleanup_hook(env, on_teardown, e, &e->cleanup) != napi_ok) {
    throw_message(env, NULL, "socksgate native helper: cannot register its clean-up");
    return NULL;
  }
  napi_property_descriptor props[] = {
    { "setup", NULL, js_setup, NULL, NULL, NULL, napi_default, NULL },
  };
  if (napi_define_properties(env, exports, 1, props) != napi_ok || udp_register(env, exports) != napi_ok || tcp_register(env, exports) != napi_ok ||
      tunnel_register(env, exports) != napi_ok) {
    throw_message(env, NULL, "socksgate native helper: cannot define its functions");
    return NULL;
  }
  return exports;
}
