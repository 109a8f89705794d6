// The TCP halves' own readiness watching (tcp-front.c, tcp-relay.c): one epoll instance of this
// process's helper, itself watched by one libuv poll handle, instead of a libuv poll handle per socket.
//
// libuv's uv_poll takes a descriptor out of its epoll at every start or stop (one epoll_ctl to delete,
// one to add it again on the next loop iteration) and sets it non-blocking with an ioctl at init: 18
// epoll_ctl calls and 2 ioctl per CONNECT session through the front door. Here a change of interest is
// one EPOLL_CTL_MOD, a stop disarms the descriptor (EPOLLONESHOT with no events, so a peer's hang-up is
// reported once at most while nobody listens), and closing a descriptor only the helper holds takes it
// out of the set by itself: 6 epoll_ctl calls per session in all (7 when Node's listener, not the helper,
// accepted the connection: Node then deletes its handle's descriptor from its own epoll).
// Errors come as readiness, never as a status: the read or write that follows meets them.
//
// Semantics as uv_poll's where tcp-front.c and tcp-relay.c rely on them: level-triggered; callbacks
// get UV_READABLE / UV_WRITABLE / UV_DISCONNECT (an error or hang-up is reported as every event the
// handle asked for, so the read or write that follows meets the error); a closed handle gets no
// callback after rpoll_close() and its close callback runs later, from the loop, never from within
// rpoll_close() (so a handle closed while a batch of events is dispatched is not freed under it).
// Main thread only.
#define _GNU_SOURCE
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <uv.h>

#include "relay.h"

#define EVENTS_PER_WAKE 64

static int reactor_fd = -1;
static uv_poll_t reactor_poll;
static uv_idle_t reactor_closer;
// Handles closed and not yet told (their close callbacks run from reactor_closer).
static rpoll_t *closed_head, *closed_tail;
// Handles started (events != 0): while there are any, the loop stays alive, as with uv_poll handles.
static long started;

static void on_ready(uv_poll_t *handle, int status, int events) {
  (void)handle;
  (void)status;
  (void)events;
  struct epoll_event ev[EVENTS_PER_WAKE];
  int n;
  do n = epoll_wait(reactor_fd, ev, EVENTS_PER_WAKE, 0);
  while (n < 0 && errno == EINTR);
  for (int i = 0; i < n; i++) {
    rpoll_t *p = (rpoll_t *)ev[i].data.ptr;
    // Closed or stopped meanwhile (by an earlier callback of this batch): nobody is listening.
    if (p->closing || p->events == 0) continue;
    uint32_t e = ev[i].events;
    int got = 0;
    if (e & EPOLLIN) got |= UV_READABLE;
    if (e & EPOLLOUT) got |= UV_WRITABLE;
    if (e & EPOLLRDHUP) got |= UV_DISCONNECT;
    if (e & (EPOLLERR | EPOLLHUP)) got |= UV_READABLE | UV_WRITABLE | UV_DISCONNECT;
    got &= p->events;
    if (got != 0) p->cb(p, got);
  }
}

static void on_closer(uv_idle_t *idle) {
  // Close callbacks may close more handles: those wait for the next round.
  rpoll_t *p = closed_head;
  closed_head = closed_tail = NULL;
  uv_idle_stop(idle);
  while (p != NULL) {
    rpoll_t *next = p->next_closed;
    p->close_cb(p);
    p = next;
  }
}

static int reactor_start(uv_loop_t *loop) {
  if (reactor_fd >= 0) return 0;
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return -errno;
  if (uv_poll_init(loop, &reactor_poll, fd) != 0) {
    close(fd);
    return -EIO;
  }
  uv_idle_init(loop, &reactor_closer);
  // Unreferenced until a handle starts (see account()).
  uv_unref((uv_handle_t *)&reactor_poll);
  uv_poll_start(&reactor_poll, UV_READABLE, on_ready);
  reactor_fd = fd;
  return 0;
}

static void account(rpoll_t *p, int events) {
  int was = p->events != 0, is = events != 0;
  p->events = events;
  if (was == is) return;
  started += is ? 1 : -1;
  if (started == (is ? 1 : 0)) (is ? uv_ref : uv_unref)((uv_handle_t *)&reactor_poll);
}

int rpoll_init(uv_loop_t *loop, rpoll_t *p, int fd) {
  int rc = reactor_start(loop);
  if (rc < 0) return rc;
  p->fd = fd;
  p->events = 0;
  p->armed = 0;
  p->in_epoll = 0;
  p->owned = 0;
  p->closing = 0;
  p->cb = NULL;
  p->close_cb = NULL;
  p->next_closed = NULL;
  return 0;
}

int rpoll_start(rpoll_t *p, int events, rpoll_cb cb) {
  if (p->closing) return -EINVAL;
  if (events == 0) return rpoll_stop(p);
  uint32_t mask = 0;
  if (events & UV_READABLE) mask |= EPOLLIN;
  if (events & UV_WRITABLE) mask |= EPOLLOUT;
  if (events & UV_DISCONNECT) mask |= EPOLLRDHUP;
  p->cb = cb;
  if (!p->in_epoll || mask != p->armed) {
    struct epoll_event ev = { .events = mask, .data.ptr = p };
    if (epoll_ctl(reactor_fd, p->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, p->fd, &ev) != 0) return -errno;
    p->in_epoll = 1;
    p->armed = mask;
  }
  account(p, events);
  return 0;
}

int rpoll_stop(rpoll_t *p) {
  if (p->in_epoll && p->armed != 0) {
    // Disarmed rather than deleted: starting again is then one call, not two.
    struct epoll_event ev = { .events = EPOLLONESHOT, .data.ptr = p };
    if (epoll_ctl(reactor_fd, EPOLL_CTL_MOD, p->fd, &ev) == 0) p->armed = 0;
  }
  account(p, 0);
  return 0;
}

void rpoll_close(rpoll_t *p, rpoll_close_cb cb) {
  if (p->closing) return;
  // Out of the epoll set now unless the owner's close of the descriptor does it (owned): a duplicate
  // of it elsewhere, or a descriptor handed on, would otherwise keep the registration and its events.
  if (p->in_epoll && !p->owned) epoll_ctl(reactor_fd, EPOLL_CTL_DEL, p->fd, NULL);
  p->in_epoll = 0;
  account(p, 0);
  p->closing = 1;
  p->close_cb = cb;
  p->next_closed = NULL;
  if (closed_tail) closed_tail->next_closed = p;
  else closed_head = p;
  closed_tail = p;
  uv_idle_start(&reactor_closer, on_closer);
}
