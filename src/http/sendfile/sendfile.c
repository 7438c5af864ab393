// Linux sendfile(2) for sluice's blob sender: file bytes go from the page cache to the socket with no copy through
// user space. One thread per Node environment owns every transfer's duplicated descriptors and its own epoll set.
//
// Safety rules this file keeps (see ../README.md, "Architecture"):
// - It writes only to its own dup() of the socket: Node may close and reuse its descriptor number at any time
//   (a client gone, a connection cut), and bytes must never go to another connection.
// - It never adds the socket to libuv's loop (a second watcher on a uv_tcp_t's fd breaks libuv): the thread has its
//   own epoll instance (EPOLLOUT | EPOLLONESHOT) and removes a descriptor from it before closing it (epoll keys on
//   the open file description, which Node's descriptor keeps alive).
// - JS talks to the thread through a command queue only; completions come back through a thread-safe function.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

// Bytes one transfer may send before the others get a turn: the thread is shared by every client.
#define TURN_BYTES (4u << 20)
#define MAX_EVENTS 64
// Unsent bytes a transfer may leave queued in the socket. Without a limit sendfile fills the whole send buffer
// (megabytes per connection), and the rest is sent later from whatever context opens the window: on one host that
// is the receiver's read. With 32 KiB, 16 clients of 64 MiB blobs over loopback took 2.9-3.1 GB/s instead of
// 1.8-1.9 and 0.7 CPU-s per GB in all instead of 1.2 (bench/README, "How blobs are served"). 64 KiB and more cost
// the sender more.
#define NOTSENT_LOWAT (32 << 10)

typedef struct transfer {
  struct transfer *next; // the thread's list of live transfers
  uint32_t id;
  int sock, file;        // our own duplicates, closed by the thread when the transfer ends
  off_t offset;
  uint64_t remaining, sent;
  int err;
  int registered; // in the thread's epoll set
  napi_ref done;  // JS thread only
} transfer;

typedef enum { CMD_START, CMD_CANCEL, CMD_STOP } cmd_kind;

typedef struct command {
  struct command *next;
  cmd_kind kind;
  uint32_t id;
  transfer *t;
} command;

typedef struct addon {
  pthread_mutex_t mu;
  command *head, *tail; // under mu
  pthread_t thread;
  int started;
  int ep, wake;
  transfer *live;  // the thread's only
  uint32_t next_id; // JS thread
  uint32_t active;  // JS thread: transfers whose callback has not run
  napi_threadsafe_function tsfn;
} addon;

static void push(addon *a, command *c) {
  uint64_t one = 1;
  pthread_mutex_lock(&a->mu);
  if (a->tail) a->tail->next = c;
  else a->head = c;
  a->tail = c;
  pthread_mutex_unlock(&a->mu);
  while (write(a->wake, &one, sizeof one) < 0 && errno == EINTR) {}
}

// The thread: ends a transfer, closes its descriptors and hands it to JS (which frees it).
static void finish(addon *a, transfer *t, int err) {
  if (t->registered) epoll_ctl(a->ep, EPOLL_CTL_DEL, t->sock, NULL);
  int system_default = 0; // the connection goes back to Node as it came
  setsockopt(t->sock, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &system_default, sizeof system_default);
  close(t->sock);
  close(t->file);
  t->sock = t->file = -1;
  for (transfer **p = &a->live; *p; p = &(*p)->next) {
    if (*p == t) {
      *p = t->next;
      break;
    }
  }
  t->err = err;
  // After the environment started closing this returns napi_closing and t is freed here; the thread is joined by
  // the cleanup hook, which runs before the function's own (hooks run last registered first), so it is still valid.
  if (napi_call_threadsafe_function(a->tsfn, t, napi_tsfn_nonblocking) != napi_ok) free(t);
}

static void arm(addon *a, transfer *t) {
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT, .data = {.ptr = t}};
  if (epoll_ctl(a->ep, t->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, t->sock, &ev) == 0) {
    t->registered = 1;
    return;
  }
  finish(a, t, errno);
}

// Sends until the socket is full, the turn is over, or the range is done.
static void pump(addon *a, transfer *t) {
  uint64_t turn = 0;
  while (t->remaining > 0) {
    if (turn >= TURN_BYTES) return arm(a, t);
    size_t want = t->remaining < TURN_BYTES ? (size_t)t->remaining : TURN_BYTES;
    ssize_t n = sendfile(t->sock, t->file, &t->offset, want);
    if (n > 0) {
      t->remaining -= (uint64_t)n;
      t->sent += (uint64_t)n;
      turn += (uint64_t)n;
    } else if (n == 0) {
      return finish(a, t, ENODATA); // the file is shorter than the range
    } else if (errno == EAGAIN) {
      return arm(a, t);
    } else if (errno != EINTR) {
      return finish(a, t, errno);
    }
  }
  finish(a, t, 0);
}

static transfer *find(addon *a, uint32_t id) {
  for (transfer *t = a->live; t; t = t->next)
    if (t->id == id) return t;
  return NULL;
}

// The thread: runs the queued commands; returns 1 on stop.
static int commands(addon *a) {
  uint64_t count;
  while (read(a->wake, &count, sizeof count) < 0 && errno == EINTR) {}
  pthread_mutex_lock(&a->mu);
  command *c = a->head;
  a->head = a->tail = NULL;
  pthread_mutex_unlock(&a->mu);
  int stop = 0;
  while (c) {
    command *next = c->next;
    if (c->kind == CMD_START) {
      c->t->next = a->live;
      a->live = c->t;
      pump(a, c->t);
    } else if (c->kind == CMD_CANCEL) {
      transfer *t = find(a, c->id);
      if (t) finish(a, t, ECANCELED);
    } else {
      stop = 1;
    }
    free(c);
    c = next;
  }
  return stop;
}

static void *run(void *arg) {
  addon *a = arg;
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(a->ep, evs, MAX_EVENTS, -1);
    if (n < 0) continue; // EINTR; nothing else can fail on a valid epoll fd
    int woken = 0;
    // Each transfer appears at most once per batch (one-shot), and only a pump of its own can end it here.
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) woken = 1;
      else pump(a, evs[i].data.ptr);
    }
    if (woken && commands(a)) break;
  }
  // Stopping with the environment: whatever is left is cut (its callbacks will not run).
  while (a->live) finish(a, a->live, ECANCELED);
  return NULL;
}

static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  addon *a = context;
  transfer *t = data;
  if (env == NULL) {
    free(t);
    return;
  }
  napi_value cb, undefined, args[2], result;
  napi_get_reference_value(env, t->done, &cb);
  napi_delete_reference(env, t->done);
  if (--a->active == 0) napi_unref_threadsafe_function(env, a->tsfn);
  napi_get_undefined(env, &undefined);
  napi_create_int32(env, t->err, &args[0]);
  napi_create_double(env, (double)t->sent, &args[1]);
  free(t);
  if (napi_call_function(env, undefined, cb, 2, args, &result) == napi_pending_exception) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    napi_fatal_exception(env, e);
  }
}

static napi_value fail(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static int get_count(napi_env env, napi_value v, double max, double *out) {
  return napi_get_value_double(env, v, out) == napi_ok && *out >= 0 && *out <= max && *out == (double)(int64_t)*out;
}

static int dup_checked(int fd, mode_t type) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  if ((st.st_mode & S_IFMT) != type) {
    errno = type == S_IFSOCK ? ENOTSOCK : EINVAL;
    return -1;
  }
  return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  addon *a;
  napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&a);
  double sock, file, offset, length;
  napi_valuetype cbt = napi_undefined;
  if (argc == 5) napi_typeof(env, argv[4], &cbt);
  if (argc < 5 || cbt != napi_function || !get_count(env, argv[0], INT32_MAX, &sock) || !get_count(env, argv[1], INT32_MAX, &file) ||
      !get_count(env, argv[2], 9007199254740991.0, &offset) || !get_count(env, argv[3], 9007199254740991.0, &length))
    return fail(env, "ERR_INVALID_ARG", "send(socketFd, fileFd, offset, length, done)");
  if (!a->started) {
    // Signals (SIGTERM, SIGHUP) are for Node's own thread: the sendfile thread blocks them all.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int made = pthread_create(&a->thread, NULL, run, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (made != 0) return fail(env, "ERR_SENDFILE_THREAD", "cannot start the sendfile thread");
    a->started = 1;
  }
  transfer *t = calloc(1, sizeof *t);
  command *c = calloc(1, sizeof *c);
  if (!t || !c) {
    free(t);
    free(c);
    return fail(env, "ERR_NO_MEMORY", "out of memory");
  }
  t->sock = dup_checked((int)sock, S_IFSOCK);
  t->file = t->sock < 0 ? -1 : dup_checked((int)file, S_IFREG);
  if (t->file < 0) {
    // errno says which: EMFILE (out of descriptors) is not the caller's mistake, ENOTSOCK / EBADF are.
    char msg[96];
    snprintf(msg, sizeof msg, "cannot take the socket and the file: %s", strerror(errno ? errno : EBADF));
    if (t->sock >= 0) close(t->sock);
    free(t);
    free(c);
    return fail(env, "ERR_SENDFILE_FD", msg);
  }
  int lowat = NOTSENT_LOWAT;
  setsockopt(t->sock, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
  t->offset = (off_t)offset;
  t->remaining = (uint64_t)length;
  t->id = ++a->next_id;
  napi_create_reference(env, argv[4], 1, &t->done);
  if (a->active++ == 0) napi_ref_threadsafe_function(env, a->tsfn);
  c->kind = CMD_START;
  c->t = t;
  napi_value id;
  napi_create_uint32(env, t->id, &id);
  push(a, c);
  return id;
}

static napi_value js_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  addon *a;
  uint32_t id;
  napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&a);
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return fail(env, "ERR_INVALID_ARG", "cancel(id)");
  command *c = calloc(1, sizeof *c);
  if (!c) return fail(env, "ERR_NO_MEMORY", "out of memory");
  c->kind = CMD_CANCEL;
  c->id = id;
  push(a, c);
  return NULL;
}

// Registered after the thread-safe function, so it runs before the function's own clean-up (hooks run last first).
static void cleanup(void *arg) {
  addon *a = arg;
  if (a->started) {
    command *c = calloc(1, sizeof *c);
    if (c) {
      c->kind = CMD_STOP;
      push(a, c);
      pthread_join(a->thread, NULL);
    }
  }
  close(a->ep);
  close(a->wake);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

NAPI_MODULE_INIT() {
  addon *a = calloc(1, sizeof *a);
  if (!a) return fail(env, "ERR_NO_MEMORY", "out of memory");
  pthread_mutex_init(&a->mu, NULL);
  a->ep = epoll_create1(EPOLL_CLOEXEC);
  a->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct epoll_event ev = {.events = EPOLLIN, .data = {.ptr = NULL}};
  napi_value name;
  napi_create_string_utf8(env, "sluice-sendfile", NAPI_AUTO_LENGTH, &name);
  if (a->ep < 0 || a->wake < 0 || epoll_ctl(a->ep, EPOLL_CTL_ADD, a->wake, &ev) != 0 ||
      napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, a, call_js, &a->tsfn) != napi_ok) {
    if (a->ep >= 0) close(a->ep);
    if (a->wake >= 0) close(a->wake);
    free(a);
    return fail(env, "ERR_SENDFILE_INIT", "cannot set up the sendfile thread");
  }
  // Idle, it must not keep the process alive; a transfer refs it until its callback runs.
  napi_unref_threadsafe_function(env, a->tsfn);
  napi_add_env_cleanup_hook(env, cleanup, a);
  napi_value send, cancel, ecanceled;
  napi_create_function(env, "send", NAPI_AUTO_LENGTH, js_send, a, &send);
  napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, js_cancel, a, &cancel);
  napi_create_int32(env, ECANCELED, &ecanceled);
  napi_set_named_property(env, exports, "send", send);
  napi_set_named_property(env, exports, "cancel", cancel);
  napi_set_named_property(env, exports, "ECANCELED", ecanceled);
  return exports;
}
