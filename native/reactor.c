// Readiness watching for the TCP side (tcp-conn.c, tcp-tunnel.c): one epoll instance per
// environment, itself watched by one libuv poll handle, instead of a libuv poll handle per socket.
// uv_poll takes a descriptor out of its epoll at every stop and adds it again at the next start and
// sets it non-blocking with an ioctl; here a change of interest is one EPOLL_CTL_MOD and a stop
// disarms the descriptor (EPOLLONESHOT with no events).
//
// Each watch has a slot in the environment's table, and its epoll events carry the slot's index and
// generation, never a pointer: a watch is removed from the set (EPOLL_CTL_DEL) when it closes, and
// should a registration outlive it (another copy of the descriptor keeps the file open), its events
// meet a newer generation and are dropped. Close callbacks run from the loop (an idle handle), never
// while a batch of events is dispatched. Main thread of the environment only.
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "helper.h"

#define EVENTS_PER_WAKE 64

struct slot {
  rpoll_t *p;
  uint32_t gen;
  uint32_t next_free;
};

static uint64_t slot_key(env_t *e, uint32_t index) {
  return ((uint64_t)e->slots[index].gen << 32) | index;
}

static int slot_take(env_t *e, rpoll_t *p) {
  if (e->free_slot == 0) {
    uint32_t n = e->nslots == 0 ? 64 : e->nslots * 2;
    struct slot *grown = realloc(e->slots, (size_t)n * sizeof *grown);
    if (grown == NULL) return -ENOMEM;
    // Slot 0 stays unused: 0 means "no slot".
    uint32_t from = e->nslots == 0 ? 1 : e->nslots;
    if (e->nslots == 0) grown[0] = (struct slot){ NULL, 0, 0 };
    for (uint32_t i = from; i < n; i++) grown[i] = (struct slot){ NULL, 1, i + 1 < n ? i + 1 : 0 };
    e->slots = grown;
    e->free_slot = from;
    e->nslots = n;
  }
  uint32_t i = e->free_slot;
  e->free_slot = e->slots[i].next_free;
  e->slots[i].p = p;
  p->slot = i;
  return 0;
}

static void slot_release(env_t *e, rpoll_t *p) {
  if (p->slot == 0) return;
  struct slot *s = &e->slots[p->slot];
  s->p = NULL;
  s->gen++;
  s->next_free = e->free_slot;
  e->free_slot = p->slot;
  p->slot = 0;
}

static void on_ready(uv_poll_t *handle, int status, int events) {
  env_t *e = (env_t *)handle->data;
  (void)events;
  if (status < 0) {
    // libuv stopped the handle on an error of the epoll descriptor itself: watch it again.
    if (uv_poll_start(&e->epoll_poll, UV_READABLE, on_ready) != 0) return;
  }
  struct epoll_event ev[EVENTS_PER_WAKE];
  int n;
  do n = epoll_wait(e->epfd, ev, EVENTS_PER_WAKE, 0);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(e->env, &scope) != napi_ok) return;
  for (int i = 0; i < n; i++) {
    uint32_t index = (uint32_t)ev[i].data.u64, gen = (uint32_t)(ev[i].data.u64 >> 32);
    // A watch closed meanwhile (by an earlier callback of this batch, or long ago): nobody listens.
    if (index == 0 || index >= e->nslots || e->slots[index].gen != gen || e->slots[index].p == NULL) continue;
    rpoll_t *p = e->slots[index].p;
    if (p->events == 0) continue;
    uint32_t got_events = ev[i].events;
    int got = 0;
    if (got_events & EPOLLIN) got |= UV_READABLE;
    if (got_events & EPOLLOUT) got |= UV_WRITABLE;
    if (got_events & EPOLLRDHUP) got |= UV_DISCONNECT;
    if (got_events & (EPOLLERR | EPOLLHUP)) got |= UV_READABLE | UV_WRITABLE | UV_DISCONNECT;
    got &= p->events;
    if (got != 0) p->cb(p, got);
  }
  (void)napi_close_handle_scope(e->env, scope);
}

static void on_closer(uv_idle_t *idle) {
  env_t *e = (env_t *)idle->data;
  // Close callbacks may close more watches: those wait for the next round.
  rpoll_t *p = e->deferred_head;
  e->deferred_head = e->deferred_tail = NULL;
  uv_idle_stop(idle);
  e->in_closer = 1;
  while (p != NULL) {
    rpoll_t *next = p->next_closed;
    p->done(p->done_data);
    p = next;
  }
  e->in_closer = 0;
  if (e->tearing_down) env_teardown_step(e);
}

static void on_handle_closed(uv_handle_t *handle) {
  env_handle_closed((env_t *)handle->data);
}

int reactor_open(env_t *e) {
  if (e->epfd >= 0) return 0;
  if (e->tearing_down) return -ESHUTDOWN;
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = uv_poll_init(e->loop, &e->epoll_poll, fd);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  e->epoll_poll.data = e;
  e->epoll_poll_open = 1;
  env_handle_opened(e);
  rc = uv_idle_init(e->loop, &e->closer);
  if (rc == 0) {
    e->closer.data = e;
    e->closer_open = 1;
    env_handle_opened(e);
    rc = uv_poll_start(&e->epoll_poll, UV_READABLE, on_ready);
  }
  e->epfd = fd;
  if (rc != 0) {
    reactor_shut(e);
    return rc;
  }
  // Unreferenced until a watch starts (see account()), as a stopped uv_poll does not hold the loop.
  uv_unref((uv_handle_t *)&e->epoll_poll);
  return 0;
}

void reactor_shut(env_t *e) {
  if (e->epoll_poll_open) {
    e->epoll_poll_open = 0;
    uv_close((uv_handle_t *)&e->epoll_poll, on_handle_closed);
  }
  if (e->closer_open) {
    e->closer_open = 0;
    uv_close((uv_handle_t *)&e->closer, on_handle_closed);
  }
  if (e->epfd >= 0) {
    close(e->epfd);
    e->epfd = -1;
  }
}

static void account(rpoll_t *p, int events) {
  env_t *e = p->env;
  int was = p->events != 0, is = events != 0;
  p->events = events;
  if (was == is) return;
  e->started += is ? 1 : -1;
  if (!e->epoll_poll_open) return;
  if (is && e->started == 1) uv_ref((uv_handle_t *)&e->epoll_poll);
  else if (!is && e->started == 0) uv_unref((uv_handle_t *)&e->epoll_poll);
}

int rpoll_init(env_t *e, rpoll_t *p, int fd) {
  int rc = reactor_open(e);
  if (rc < 0) return rc;
  *p = (rpoll_t){ .env = e, .fd = fd };
  return slot_take(e, p);
}

int rpoll_start(rpoll_t *p, int events, rpoll_cb cb) {
  if (p->slot == 0) return -EBADF;
  if (events == 0) return rpoll_stop(p);
  env_t *e = p->env;
  uint32_t mask = 0;
  if (events & UV_READABLE) mask |= EPOLLIN;
  if (events & UV_WRITABLE) mask |= EPOLLOUT;
  if (events & UV_DISCONNECT) mask |= EPOLLRDHUP;
  p->cb = cb;
  if (!p->in_epoll || mask != p->armed) {
    struct epoll_event ev = { .events = mask, .data.u64 = slot_key(e, p->slot) };
    if (epoll_ctl(e->epfd, p->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, p->fd, &ev) != 0) return -errno;
    p->in_epoll = 1;
    p->armed = mask;
  }
  account(p, events);
  return 0;
}

int rpoll_stop(rpoll_t *p) {
  int rc = 0;
  if (p->in_epoll && p->armed != 0) {
    // Disarmed rather than deleted: starting again is then one call, not two.
    struct epoll_event ev = { .events = EPOLLONESHOT, .data.u64 = slot_key(p->env, p->slot) };
    if (epoll_ctl(p->env->epfd, EPOLL_CTL_MOD, p->fd, &ev) == 0) p->armed = 0;
    else rc = -errno;
  }
  account(p, 0);
  return rc;
}

void rpoll_close(rpoll_t *p, void (*done)(void *data), void *data) {
  env_t *e = p->env;
  if (p->in_epoll && e->epfd >= 0) {
    // Always, even for a descriptor about to be closed: another copy of it would keep the registration.
    (void)epoll_ctl(e->epfd, EPOLL_CTL_DEL, p->fd, NULL);
  }
  p->in_epoll = 0;
  account(p, 0);
  slot_release(e, p);
  p->done = done;
  p->done_data = data;
  p->next_closed = NULL;
  if (e->deferred_tail) e->deferred_tail->next_closed = p;
  else e->deferred_head = p;
  e->deferred_tail = p;
  if (e->closer_open) uv_idle_start(&e->closer, on_closer);
}
