/* wstun__conn over real loopback TCP: a listener on 127.0.0.1 (port 0,
 * chosen by the kernel) accepts into a conn whose other end is a plain
 * libuv stream (the peer, whose reading a test starts late to stall the
 * conn's writes), or a conn connects out to that listener. Each test runs
 * its own loop, driven by a 1 ms tick and bounded by a deadline timer; it
 * goes through the counting allocator of failalloc.h and ends with the
 * loop empty and nothing of libwstun's left allocated. Callbacks are
 * counted, and counted apart when they fire from inside a conn call the
 * test made (the re-entrancy contract of wstun_conn.h). */
#include "wstun_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "failalloc.h"
#include "test.h"
#include "test_certs.h"
#include "wstun/wstun.h"

#define DEADLINE_MS 3000
#define TAKE_ALL SIZE_MAX
#define SMALL_SOCKBUF 16384 /* so a peer that does not read stalls soon */
#define FLOOD (2 << 20)     /* more than the kernel buffers between two */

/* Position-dependent bytes: a loss, duplicate or reordering shows as a
 * first difference. */
static uint8_t pattern[FLOOD + 4096];

typedef struct bytes {
  uint8_t *p;
  size_t len, cap;
} bytes;

static void bytes_add(bytes *b, const void *d, size_t n) {
  if (n == 0)
    return;
  if (b->cap - b->len < n) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n)
      cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
      fputs("test out of memory\n", stderr);
      exit(2);
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

static void bytes_free(bytes *b) {
  free(b->p);
  memset(b, 0, sizeof(*b));
}

enum { EV_DATA, EV_END, EV_DRAIN, EV_CONNECT, EV_CLOSE, EV_SECURE, EV_COUNT };

typedef struct fixture fixture;
typedef struct owner owner;

/* The owner of one conn: records what its callbacks saw, then lets the
 * test's hook react. */
struct owner {
  fixture *f;
  wstun__conn *c; /* NULL before it exists and after on_close */
  bytes got;
  size_t take;          /* most bytes on_data consumes per call */
  size_t took;          /* what this on_data returns; a hook may change it */
  int n[EV_COUNT];      /* callbacks seen */
  int nested[EV_COUNT]; /* of those, fired inside a conn call of the test */
  int in_call;          /* set by the test around conn calls */
  int depth, max_depth; /* on_data nesting */
  int end_err, connect_status, secure_status;
  size_t got_at_end, queued_at_drain;
  int close_at; /* the on_data call that closes the conn (0: none) */
  void (*hook)(owner *o, int ev);
};

typedef struct peer {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_shutdown_t sreq;
  fixture *f;
  bytes got;
  int used, read_at_once, connected, reading, eof, err, write_err, closed;
} peer;

struct fixture {
  uv_loop_t loop;
  wstun__conn_shared sh;
  uv_tcp_t listener;
  uv_timer_t tick, deadline, aux;
  struct sockaddr_in addr; /* the listener's */
  int small_buffers, refused, shared_closed;
  wstun__tls_config *srv_tls; /* TLS on the accepted conn (NULL: none) */
  int raw_listener, filler;   /* plain sockets of a test (0: none) */
  owner srv, out;             /* the accepted conn, the one connecting out */
  peer p;
  void (*step)(fixture *); /* each tick and each read of the peer */
  int phase, finished, timed_out;
  uint64_t mark;
  size_t count;
};

static fixture F;

/* ---- the owner's callbacks ---------------------------------------------- */

static void seen(owner *o, int ev) {
  o->n[ev]++;
  if (o->in_call)
    o->nested[ev]++;
}

static size_t own_data(wstun__conn *c, const uint8_t *data, size_t len) {
  owner *o = c->owner;
  seen(o, EV_DATA);
  if (++o->depth > o->max_depth)
    o->max_depth = o->depth;
  o->took = len < o->take ? len : o->take;
  bytes_add(&o->got, data, o->took);
  if (o->close_at && o->n[EV_DATA] == o->close_at)
    wstun__conn_close(c);
  if (o->hook)
    o->hook(o, EV_DATA);
  o->depth--;
  return o->took;
}

static void own_end(wstun__conn *c, int err) {
  owner *o = c->owner;
  seen(o, EV_END);
  o->end_err = err;
  o->got_at_end = o->got.len;
  if (o->hook)
    o->hook(o, EV_END);
}

static void own_drain(wstun__conn *c) {
  owner *o = c->owner;
  seen(o, EV_DRAIN);
  o->queued_at_drain = wstun__conn_queued(c);
  if (o->hook)
    o->hook(o, EV_DRAIN);
}

static void own_connect(wstun__conn *c, int status) {
  owner *o = c->owner;
  seen(o, EV_CONNECT);
  o->connect_status = status;
  if (o->hook)
    o->hook(o, EV_CONNECT);
}

static void own_close(wstun__conn *c) {
  owner *o = c->owner;
  seen(o, EV_CLOSE);
  o->c = NULL;
  if (o->hook)
    o->hook(o, EV_CLOSE);
}

static void own_secure(wstun__conn *c, int status) {
  owner *o = c->owner;
  seen(o, EV_SECURE);
  o->secure_status = status;
  if (o->hook)
    o->hook(o, EV_SECURE);
}

static const wstun__conn_cbs own_cbs = {
    .on_data = own_data,
    .on_end = own_end,
    .on_drain = own_drain,
    .on_connect = own_connect,
    .on_close = own_close,
    .on_secure = own_secure,
};

/* ---- the peer: a plain libuv stream ------------------------------------- */

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char space[65536];
  (void)h;
  (void)suggested;
  buf->base = space;
  buf->len = sizeof(space);
}

static void peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  peer *p = s->data;
  if (nread > 0)
    bytes_add(&p->got, buf->base, (size_t)nread);
  if (nread < 0) {
    if (nread == UV_EOF)
      p->eof = 1;
    else
      p->err = (int)nread;
    uv_read_stop(s);
    p->reading = 0;
  }
  if (!p->f->finished && p->f->step)
    p->f->step(p->f);
}

static void peer_read_start(peer *p) {
  if (p->reading || !p->connected || p->eof || p->err)
    return;
  CHECK_EQ_INT(uv_read_start((uv_stream_t *)&p->tcp, peer_alloc, peer_read), 0);
  p->reading = 1;
}

static void peer_on_connect(uv_connect_t *req, int status) {
  peer *p = req->data;
  if (status != 0) {
    p->err = status;
    return;
  }
  p->connected = 1;
  if (p->read_at_once)
    peer_read_start(p);
}

static void peer_connect(fixture *f, int read_at_once) {
  peer *p = &f->p;
  p->f = f;
  p->used = 1;
  p->read_at_once = read_at_once;
  CHECK_EQ_INT(uv_tcp_init_ex(&f->loop, &p->tcp, AF_INET), 0);
  p->tcp.data = p;
  p->creq.data = p;
  if (f->small_buffers) {
    int n = SMALL_SOCKBUF;
    CHECK_EQ_INT(uv_recv_buffer_size((uv_handle_t *)&p->tcp, &n), 0);
  }
  CHECK_EQ_INT(uv_tcp_connect(&p->creq, &p->tcp,
                              (const struct sockaddr *)&f->addr,
                              peer_on_connect),
               0);
}

static void peer_written(uv_write_t *w, int status) {
  peer *p = w->data;
  if (status != 0)
    p->write_err = status;
  free(w);
}

/* `data` must outlive the write (string literals, `pattern`). */
static void peer_send(peer *p, const void *data, size_t n) {
  uv_write_t *w = malloc(sizeof(*w));
  REQUIRE(w != NULL);
  w->data = p;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
  if (uv_write(w, (uv_stream_t *)&p->tcp, &b, 1, peer_written) != 0) {
    p->write_err = -1;
    free(w);
  }
}

static void peer_shutdown(peer *p) {
  CHECK_EQ_INT(uv_shutdown(&p->sreq, (uv_stream_t *)&p->tcp, NULL), 0);
}

/* Reads what the kernel holds for the peer with recv(): libuv reports a
 * reset that comes after a short read as an end (POLLHUP), where other
 * clients see ECONNRESET. */
static void peer_recv_raw(peer *p) {
  uv_os_fd_t fd;
  REQUIRE(uv_fileno((uv_handle_t *)&p->tcp, &fd) == 0);
  for (;;) {
    static char space[65536];
    ssize_t n = recv(fd, space, sizeof(space), MSG_DONTWAIT);
    if (n > 0) {
      bytes_add(&p->got, space, (size_t)n);
      continue;
    }
    if (n == 0)
      p->eof = 1;
    else if (errno != EAGAIN && errno != EWOULDBLOCK)
      p->err = -errno;
    return;
  }
}

static void peer_closed(uv_handle_t *h) {
  ((peer *)h->data)->closed = 1;
}

/* ---- the fixture -------------------------------------------------------- */

static void free_handle(uv_handle_t *h) {
  free(h);
}

static void on_incoming(uv_stream_t *l, int status) {
  fixture *f = l->data;
  if (status != 0)
    return;
  wstun__conn *c = wstun__conn_new(&f->loop, &f->sh, &own_cbs, &f->srv);
  if (c == NULL || f->finished) {
    /* out of memory (or too late): refuse it */
    uv_tcp_t *t = malloc(sizeof(*t));
    REQUIRE(t != NULL);
    uv_tcp_init(&f->loop, t);
    uv_accept(l, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, free_handle);
    if (c != NULL)
      wstun__conn_close(c);
    f->refused++;
    return;
  }
  f->srv.c = c;
  CHECK_EQ_INT(wstun__conn_accept(c, l), 0);
  /* as the server's front does: before anything is read */
  if (f->srv_tls)
    CHECK_EQ_INT(wstun__conn_start_tls(c, f->srv_tls, NULL), 0);
  if (f->small_buffers) {
    int n = SMALL_SOCKBUF;
    CHECK_EQ_INT(uv_send_buffer_size((uv_handle_t *)&c->tcp, &n), 0);
  }
}

static void finish(fixture *f) {
  if (f->finished)
    return;
  f->finished = 1;
  if (f->srv.c)
    wstun__conn_close(f->srv.c);
  if (f->out.c)
    wstun__conn_close(f->out.c);
  if (f->p.used && !uv_is_closing((uv_handle_t *)&f->p.tcp))
    uv_close((uv_handle_t *)&f->p.tcp, peer_closed);
  uv_close((uv_handle_t *)&f->listener, NULL);
  uv_close((uv_handle_t *)&f->tick, NULL);
  uv_close((uv_handle_t *)&f->deadline, NULL);
  uv_close((uv_handle_t *)&f->aux, NULL);
  if (!f->shared_closed)
    wstun__conn_shared_close(&f->sh, NULL, NULL);
  f->shared_closed = 1;
  if (f->raw_listener > 0)
    close(f->raw_listener);
  if (f->filler > 0)
    close(f->filler);
  f->raw_listener = f->filler = 0;
}

static void on_tick(uv_timer_t *t) {
  fixture *f = t->data;
  if (!f->finished && f->step)
    f->step(f);
}

static void on_deadline(uv_timer_t *t) {
  fixture *f = t->data;
  f->timed_out = 1;
  finish(f);
}

static uint64_t now(fixture *f) {
  return uv_now(&f->loop);
}

static void setup(void (*step)(fixture *), int small_buffers) {
  fixture *f = &F;
  memset(f, 0, sizeof(*f));
  mem.live = mem.count = mem.fail_at = 0;
  f->srv.f = f->out.f = f;
  f->srv.take = f->out.take = TAKE_ALL;
  f->step = step;
  f->small_buffers = small_buffers;
  CHECK_EQ_INT(uv_loop_init(&f->loop), 0);
  wstun__conn_shared_init(&f->sh, &f->loop);
  uv_tcp_init(&f->loop, &f->listener);
  f->listener.data = f;
  uv_ip4_addr("127.0.0.1", 0, &f->addr);
  CHECK_EQ_INT(uv_tcp_bind(&f->listener, (struct sockaddr *)&f->addr, 0), 0);
  int len = sizeof(f->addr);
  CHECK_EQ_INT(
      uv_tcp_getsockname(&f->listener, (struct sockaddr *)&f->addr, &len), 0);
  CHECK_EQ_INT(uv_listen((uv_stream_t *)&f->listener, 8, on_incoming), 0);
  uv_timer_init(&f->loop, &f->tick);
  uv_timer_init(&f->loop, &f->deadline);
  uv_timer_init(&f->loop, &f->aux);
  f->tick.data = f->deadline.data = f->aux.data = f;
  uv_timer_start(&f->tick, on_tick, 1, 1);
  uv_timer_start(&f->deadline, on_deadline, DEADLINE_MS, 0);
}

/* Runs the loop until every handle is closed (the step calls finish()). */
static void run(void) {
  uv_run(&F.loop, UV_RUN_DEFAULT);
  if (F.timed_out)
    test_context("timed out in phase %d", F.phase);
  CHECK(!F.timed_out);
  test_context(NULL);
  CHECK_EQ_INT(uv_loop_close(&F.loop), 0);
}

/* Everything the test allocated is freed, libwstun's included. */
static void teardown(void) {
  bytes_free(&F.srv.got);
  bytes_free(&F.out.got);
  bytes_free(&F.p.got);
  CHECK_EQ_INT(mem.live, 0);
}

static int ready(fixture *f) {
  return f->p.connected && f->srv.c != NULL;
}

/* Calls resume, outside any callback, until it delivers nothing more:
 * each call hands the kept bytes to on_data synchronously. */
static void resume_all(owner *o) {
  for (;;) {
    int before = o->n[EV_DATA];
    if (o->c == NULL || o->n[EV_END])
      return;
    o->in_call = 1;
    wstun__conn_resume(o->c);
    o->in_call = 0;
    if (o->n[EV_DATA] == before)
      return;
  }
}

/* ---- reading ------------------------------------------------------------ */

static void step_read_to_end(fixture *f) {
  switch (f->phase) {
  case 0:
    if (!ready(f))
      return;
    peer_send(&f->p, pattern, f->count);
    peer_shutdown(&f->p);
    f->phase = 1;
    return;
  case 1:
    resume_all(&f->srv);
    if (f->srv.n[EV_END])
      finish(f);
    return;
  }
}

TEST(reads_reach_on_data_then_eof) {
  setup(step_read_to_end, 0);
  F.count = 1 << 20;
  peer_connect(&F, 1);
  run();
  CHECK_EQ_INT(F.srv.got.len, F.count);
  CHECK_MEM(F.srv.got.p, pattern, F.count);
  CHECK_EQ_INT(F.srv.n[EV_END], 1);
  CHECK_EQ_INT(F.srv.end_err, UV_EOF);
  CHECK_EQ_INT(F.srv.got_at_end, F.count); /* the end comes after the data */
  CHECK_EQ_INT(F.srv.nested[EV_DATA], 0);  /* nobody paused: no resume */
  CHECK_EQ_INT((long long)F.sh.bytes_in, F.count);
  CHECK_EQ_INT(F.srv.n[EV_DRAIN] + F.srv.n[EV_CONNECT], 0);
  CHECK_EQ_INT(F.srv.n[EV_CLOSE], 1);
  teardown();
}

static void hook_resume_inside(owner *o, int ev) {
  if (ev == EV_DATA)
    wstun__conn_resume(o->c); /* ignored: on_data does not nest */
}

/* The consumer takes at most `take` bytes per call; the rest is kept and
 * handed over again by wstun__conn_resume(), byte for byte. */
static void partial_consumption(size_t take, int resume_inside) {
  test_context("take %zu%s", take, resume_inside ? ", resume in on_data" : "");
  setup(step_read_to_end, 0);
  F.count = 300000;
  F.srv.take = take;
  if (resume_inside)
    F.srv.hook = hook_resume_inside;
  peer_connect(&F, 1);
  run();
  test_context("take %zu%s", take, resume_inside ? ", resume in on_data" : "");
  CHECK_EQ_INT(F.srv.got.len, F.count);
  CHECK_MEM(F.srv.got.p, pattern, F.count);
  CHECK_EQ_INT(F.srv.got_at_end, F.count);
  CHECK_EQ_INT(F.srv.end_err, UV_EOF);
  CHECK_EQ_INT(F.srv.n[EV_END], 1);
  CHECK_EQ_INT(F.srv.max_depth, 1);
  /* kept bytes reach on_data from inside resume (reads are up to 64 KiB
   * but may come smaller, so only small takes are sure to leave some) */
  if (take <= 4096)
    CHECK(F.srv.nested[EV_DATA] > 0);
  if (take == 1)
    CHECK_EQ_INT(F.srv.n[EV_DATA], F.count);
  test_context(NULL);
  teardown();
}

TEST(a_consumer_taking_less_pauses_and_resume_redelivers) {
  partial_consumption(1, 0);
  partial_consumption(7, 0);
  partial_consumption(4096, 0);
  partial_consumption(40000, 0);
  partial_consumption(1000, 1);
}

/* "handshake|tail": the first owner consumes up to the bar and hands the
 * tail back with keep_tail; a new owner gets it after resume. */
static void hook_upgrade(owner *o, int ev) {
  if (ev != EV_DATA)
    return;
  uint8_t *bar = memchr(o->got.p, '|', o->got.len);
  if (bar == NULL)
    return;
  size_t tail = o->got.len - (size_t)(bar + 1 - o->got.p);
  wstun__conn_keep_tail(o->c, tail);
  o->got.len -= tail;
  o->hook = NULL;
  wstun__conn_set_owner(o->c, &own_cbs, &o->f->out);
  o->f->out.c = o->c;
  o->c = NULL;
}

static void step_upgrade(fixture *f) {
  switch (f->phase) {
  case 0:
    if (!ready(f))
      return;
    peer_send(&f->p, "GET / HTTP/1.1\r\n\r\n|tail after the handshake", 43);
    f->phase = 1;
    return;
  case 1:
    if (f->out.c == NULL)
      return;
    f->out.in_call = 1;
    wstun__conn_resume(f->out.c);
    f->out.in_call = 0;
    finish(f);
    return;
  }
}

TEST(keep_tail_hands_the_rest_to_a_new_owner) {
  setup(step_upgrade, 0);
  F.srv.hook = hook_upgrade;
  peer_connect(&F, 1);
  run();
  CHECK_BYTES_STR(F.srv.got.p, F.srv.got.len, "GET / HTTP/1.1\r\n\r\n|");
  CHECK_BYTES_STR(F.out.got.p, F.out.got.len, "tail after the handshake");
  CHECK_EQ_INT(F.out.nested[EV_DATA], 1);
  CHECK_EQ_INT(F.srv.n[EV_CLOSE], 0);
  CHECK_EQ_INT(F.out.n[EV_CLOSE], 1); /* on_close goes to the new owner */
  teardown();
}

/* ---- writing ------------------------------------------------------------ */

static void step_stop_when_ready(fixture *f) {
  if (f->phase == 0 && ready(f)) {
    f->phase = 1;
    uv_stop(&f->loop);
  }
}

static void write_late(uv_timer_t *t) {
  fixture *f = t->data;
  f->mark = now(f);
  CHECK_EQ_INT(wstun__conn_write(f->srv.c, pattern + f->count, 100), 0);
}

static void step_coalesce(fixture *f) {
  switch (f->phase) {
  case 1:
    if (f->p.got.len < f->count)
      return;
    /* a write from a timer callback, with nothing else to wake the loop:
     * it still goes out in that iteration */
    uv_timer_stop(&f->tick);
    uv_timer_start(&f->aux, write_late, 10, 0);
    f->phase = 2;
    return;
  case 2:
    if (f->p.got.len < f->count + 100)
      return;
    CHECK(now(f) - f->mark < 1000);
    uv_timer_start(&f->tick, on_tick, 1, 1);
    f->phase = 3;
    return;
  case 3:
    if (f->srv.c->writing)
      return;
    /* with the shared part closed, a write is made at once */
    wstun__conn_shared_close(&f->sh, NULL, NULL);
    f->shared_closed = 1;
    uint64_t before = f->sh.bytes_out;
    CHECK_EQ_INT(wstun__conn_write(f->srv.c, pattern + f->count + 100, 50), 0);
    CHECK_EQ_INT((long long)(f->sh.bytes_out - before), 50);
    f->phase = 4;
    return;
  case 4:
    if (f->p.got.len == f->count + 150)
      finish(f);
    return;
  }
}

TEST(small_writes_coalesce_into_one_write_in_order) {
  setup(step_stop_when_ready, 0);
  peer_connect(&F, 1);
  uv_run(&F.loop, UV_RUN_DEFAULT); /* until accepted and connected */
  REQUIRE(ready(&F));
  wstun__conn *c = F.srv.c;
  /* a small write the kernel takes whole is done in the loop iteration,
   * with nothing left queued (uv_try_write) */
  CHECK_EQ_INT(wstun__conn_write(c, pattern, 100), 0);
  uv_run(&F.loop, UV_RUN_NOWAIT);
  CHECK(!c->writing);
  CHECK_EQ_INT((long long)c->written, 100);
  CHECK_EQ_INT(wstun__conn_queued(c), 0);
  size_t total = 100;
  F.srv.in_call = 1;
  for (int i = 0; i < 2000; i++) {
    size_t n = (size_t)(i % 37) + 1;
    if (i % 2) {
      CHECK_EQ_INT(wstun__conn_write(c, pattern + total, n), 0);
    } else {
      /* a serializer appending directly */
      CHECK_EQ_INT(wstun__buf_append(wstun__conn_outbuf(c), pattern + total, n),
                   0);
      wstun__conn_flush(c);
    }
    total += n;
  }
  F.srv.in_call = 0;
  CHECK_EQ_INT(wstun__conn_queued(c), total - 100);
  /* nothing more before the loop runs */
  CHECK_EQ_INT((long long)F.sh.bytes_out, 100);
  CHECK_EQ_INT((long long)wstun__conn_progress(c), 100);
  /* one iteration later, one write carries it all: taken by the kernel at
   * once (uv_try_write), or what it left queued as one uv_write */
  uv_run(&F.loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT((long long)F.sh.bytes_out, total);
  if (c->writing)
    CHECK_EQ_INT(wstun__buf_size(&c->inflight), total);
  else
    CHECK_EQ_INT((long long)c->written, total);
  CHECK_EQ_INT(wstun__buf_size(&c->out), 0);
  F.count = total;
  F.step = step_coalesce;
  run();
  CHECK_EQ_INT(F.p.got.len, total + 150);
  CHECK_MEM(F.p.got.p, pattern, F.p.got.len);
  CHECK_EQ_INT((long long)F.sh.bytes_out, total + 150);
  int events = 0;
  for (int ev = 0; ev < EV_CLOSE; ev++)
    events += F.srv.n[ev];
  CHECK_EQ_INT(events, 0);
  teardown();
}

static void hook_write_on_drain(owner *o, int ev) {
  if (ev == EV_DRAIN)
    CHECK_EQ_INT(wstun__conn_write(o->c, "!", 1), 0);
}

static void step_congestion(fixture *f) {
  wstun__conn *c = f->srv.c;
  switch (f->phase) {
  case 0:
    if (!ready(f))
      return;
    f->srv.in_call = 1;
    for (size_t off = 0; off < FLOOD; off += 65536) {
      CHECK_EQ_INT(wstun__conn_write(c, pattern + off, 65536), 0);
      if (wstun__conn_congested(c) && f->count == 0)
        f->count = off + 65536;
    }
    f->srv.in_call = 0;
    /* above the default high-water mark of 256 KiB */
    CHECK_EQ_INT(f->count, 5 * 65536);
    f->mark = now(f);
    f->phase = 1;
    return;
  case 1: /* the peer does not read: progress stops short */
    if (now(f) - f->mark < 100)
      return;
    f->count = (size_t)wstun__conn_progress(c);
    f->mark = now(f);
    f->phase = 2;
    return;
  case 2:
    if (now(f) - f->mark < 100)
      return;
    CHECK_EQ_INT((long long)wstun__conn_progress(c), f->count);
    CHECK(f->count < FLOOD);
    CHECK(wstun__conn_congested(c));
    CHECK_EQ_INT(f->srv.n[EV_DRAIN], 0);
    peer_read_start(&f->p);
    f->phase = 3;
    return;
  case 3:
    if (f->p.got.len < FLOOD + 1)
      return;
    CHECK_EQ_INT((long long)wstun__conn_progress(c), FLOOD + 1);
    finish(f);
    return;
  }
}

TEST(congestion_then_drain_when_the_peer_reads) {
  setup(step_congestion, 1);
  F.srv.hook = hook_write_on_drain;
  peer_connect(&F, 0);
  run();
  CHECK_EQ_INT(F.p.got.len, FLOOD + 1);
  CHECK_MEM(F.p.got.p, pattern, FLOOD);
  if (F.p.got.len == FLOOD + 1)
    CHECK_EQ_INT(F.p.got.p[FLOOD], '!');
  CHECK_EQ_INT(F.srv.n[EV_DRAIN], 1);
  CHECK_EQ_INT(F.srv.nested[EV_DRAIN], 0); /* never from inside a write */
  CHECK(F.srv.queued_at_drain < 256 * 1024 / 2);
  CHECK_EQ_INT((long long)F.sh.bytes_out, FLOOD + 1);
  CHECK_EQ_INT(F.srv.n[EV_END], 0);
  teardown();
}

/* ---- ending ------------------------------------------------------------- */

static void step_half_close(fixture *f) {
  owner *o = &f->srv;
  switch (f->phase) {
  case 0:
    if (!ready(f))
      return;
    peer_send(&f->p, "request", 7);
    peer_shutdown(&f->p);
    f->phase = 1;
    return;
  case 1:
    if (o->n[EV_END] == 0)
      return;
    /* resuming an ended conn reports the end again, from inside resume */
    o->in_call = 1;
    wstun__conn_pause(o->c);
    wstun__conn_resume(o->c);
    o->in_call = 0;
    CHECK_EQ_INT(o->n[EV_END], 2);
    CHECK_EQ_INT(o->nested[EV_END], 1);
    /* the other direction is still open: answer, then end */
    CHECK_EQ_INT(wstun__conn_write(o->c, "reply", 5), 0);
    o->in_call = 1;
    wstun__conn_end(o->c);
    o->in_call = 0;
    f->phase = 2;
    return;
  case 2:
    if (f->p.eof && o->n[EV_CLOSE])
      finish(f);
    return;
  }
}

TEST(peer_end_gives_eof_and_end_shuts_down_after_the_writes) {
  setup(step_half_close, 0);
  peer_connect(&F, 1);
  run();
  CHECK_BYTES_STR(F.srv.got.p, F.srv.got.len, "request");
  CHECK_EQ_INT(F.srv.end_err, UV_EOF);
  CHECK_EQ_INT(F.srv.n[EV_END], 2);
  CHECK_BYTES_STR(F.p.got.p, F.p.got.len, "reply");
  CHECK_EQ_INT(F.p.eof, 1);
  CHECK_EQ_INT(F.srv.n[EV_CLOSE], 1); /* closed itself after the shutdown */
  CHECK_EQ_INT(F.srv.nested[EV_CLOSE], 0);
  teardown();
}

static void hook_fail_pending(owner *o, int ev) {
  if (ev == EV_DATA && o->n[EV_DATA] == 1)
    mem.fail_at = mem.count + 1; /* copying the unconsumed bytes fails */
  if (ev == EV_END)
    mem.fail_at = 0;
}

static void step_no_reads_after_end(fixture *f) {
  switch (f->phase) {
  case 0:
    if (!ready(f))
      return;
    peer_send(&f->p, pattern, 1000);
    f->phase = 1;
    return;
  case 1:
    if (f->srv.n[EV_END] == 0)
      return;
    peer_send(&f->p, pattern, 1000); /* the owner did not close */
    f->mark = now(f);
    f->phase = 2;
    return;
  case 2:
    if (now(f) - f->mark >= 100)
      finish(f);
    return;
  }
}

TEST(out_of_memory_for_kept_bytes_ends_and_stops_reading) {
  setup(step_no_reads_after_end, 0);
  F.srv.take = 0;
  F.srv.hook = hook_fail_pending;
  peer_connect(&F, 1);
  run();
  CHECK_EQ_INT(F.srv.n[EV_END], 1);
  CHECK_EQ_INT(F.srv.end_err, UV_ENOMEM);
  CHECK_EQ_INT(F.srv.n[EV_DATA], 1); /* on_end means reading stopped */
  teardown();
}

/* ---- connecting out ----------------------------------------------------- */

static void hook_answer(owner *o, int ev) {
  if (ev == EV_DATA && o->got.len == 5)
    CHECK_EQ_INT(wstun__conn_write(o->c, "answer", 6), 0);
}

static void step_connect(fixture *f) {
  owner *o = &f->out;
  switch (f->phase) {
  case 0: {
    if (o->n[EV_CONNECT] == 0)
      return;
    CHECK_EQ_INT(o->connect_status, 0);
    char want[64], got[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", ntohs(f->addr.sin_port));
    CHECK_EQ_STR(wstun__conn_peer(o->c, got, sizeof(got)), want);
    CHECK_EQ_STR(wstun__conn_peer_ip(o->c, got, sizeof(got)), "127.0.0.1");
    CHECK_EQ_INT(wstun__conn_start_read(o->c), 0);
    f->phase = 1;
    return;
  }
  case 1:
    if (o->got.len < 6 || f->srv.got.len < 5)
      return;
    char ip[64];
    CHECK_EQ_STR(wstun__conn_peer_ip(f->srv.c, ip, sizeof(ip)), "127.0.0.1");
    finish(f);
    return;
  }
}

static void step_until_out_closed(fixture *f) {
  if (f->out.n[EV_CONNECT] && f->out.c)
    wstun__conn_close(f->out.c);
  if (f->out.n[EV_CLOSE])
    finish(f);
}

static wstun__conn *connect_out(const struct sockaddr_in *to) {
  wstun__conn *c = wstun__conn_new(&F.loop, &F.sh, &own_cbs, &F.out);
  if (c == NULL)
    return NULL;
  F.out.c = c;
  F.out.in_call = 1;
  CHECK_EQ_INT(wstun__conn_connect(c, (const struct sockaddr *)to), 0);
  F.out.in_call = 0;
  return c;
}

/* A port nobody listens on: bound by the kernel, then released. */
static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
           getsockname(fd, (struct sockaddr *)&a, &len) == 0;
  if (fd >= 0)
    close(fd);
  return ok ? ntohs(a.sin_port) : -1;
}

TEST(connect_out_reports_success_and_failure) {
  /* success; bytes written before the connection is up go out after */
  setup(step_connect, 0);
  F.srv.hook = hook_answer;
  wstun__conn *c = connect_out(&F.addr);
  REQUIRE(c != NULL);
  F.out.in_call = 1;
  CHECK_EQ_INT(wstun__conn_write(c, "early", 5), 0);
  F.out.in_call = 0;
  run();
  CHECK_EQ_INT(F.out.n[EV_CONNECT], 1);
  CHECK_EQ_INT(F.out.nested[EV_CONNECT], 0); /* never from inside connect */
  CHECK_BYTES_STR(F.srv.got.p, F.srv.got.len, "early");
  CHECK_BYTES_STR(F.out.got.p, F.out.got.len, "answer");
  CHECK_EQ_INT(F.out.n[EV_CLOSE], 1);
  teardown();

  /* a closed port: a negative uv error, then the owner closes */
  setup(step_until_out_closed, 0);
  int port = closed_port();
  REQUIRE(port > 0);
  struct sockaddr_in to;
  uv_ip4_addr("127.0.0.1", port, &to);
  REQUIRE(connect_out(&to) != NULL);
  run();
  CHECK_EQ_INT(F.out.n[EV_CONNECT], 1);
  CHECK_EQ_INT(F.out.connect_status, UV_ECONNREFUSED);
  CHECK_EQ_INT(F.out.n[EV_END] + F.out.n[EV_DATA], 0);
  CHECK_EQ_INT(F.out.n[EV_CLOSE], 1);
  teardown();

  /* closed while connecting: on_close only */
  setup(step_until_out_closed, 0);
  c = connect_out(&F.addr);
  REQUIRE(c != NULL);
  wstun__conn_close(c);
  run();
  CHECK_EQ_INT(F.out.n[EV_CONNECT], 0);
  CHECK_EQ_INT(F.out.n[EV_CLOSE], 1);
  teardown();
}

/* A connect that takes more than one loop iteration: the listening socket
 * has a full accept queue (backlog 0 and one connection waiting), so the
 * kernel drops the SYN until it is sent again, 1 s later, by which time
 * the test has made room. */
static void step_slow_connect(fixture *f) {
  owner *o = &f->out;
  switch (f->phase) {
  case 0: {
    if (now(f) - f->mark < 50)
      return;
    CHECK_EQ_INT(o->n[EV_CONNECT], 0); /* still connecting */
    int fd = accept(f->raw_listener, NULL, NULL);
    if (fd >= 0)
      close(fd);
    close(f->filler);
    f->filler = 0;
    f->phase = 1;
    return;
  }
  case 1: {
    if (o->n[EV_CONNECT] == 0)
      return;
    struct pollfd pfd = {.fd = f->raw_listener, .events = POLLIN};
    if (poll(&pfd, 1, 0) != 1)
      return; /* not queued yet */
    int fd = accept(f->raw_listener, NULL, NULL);
    REQUIRE(fd >= 0);
    CHECK_EQ_INT(o->connect_status, 0);
    peer *p = &f->p;
    p->f = f;
    p->used = p->connected = 1;
    CHECK_EQ_INT(uv_tcp_init(&f->loop, &p->tcp), 0);
    p->tcp.data = p;
    CHECK_EQ_INT(uv_tcp_open(&p->tcp, fd), 0);
    peer_read_start(p);
    f->phase = 2;
    return;
  }
  case 2:
    if (f->p.eof && o->n[EV_CLOSE])
      finish(f);
    return;
  }
}

TEST(writes_and_end_made_while_connecting_happen_once_connected) {
  setup(step_slow_connect, 0);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  socklen_t len = sizeof(a);
  F.raw_listener = socket(AF_INET, SOCK_STREAM, 0);
  F.filler = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(F.raw_listener > 0 && F.filler > 0);
  REQUIRE(bind(F.raw_listener, (struct sockaddr *)&a, sizeof(a)) == 0);
  REQUIRE(getsockname(F.raw_listener, (struct sockaddr *)&a, &len) == 0);
  REQUIRE(listen(F.raw_listener, 0) == 0);
  REQUIRE(connect(F.filler, (struct sockaddr *)&a, sizeof(a)) == 0);
  struct pollfd pfd = {.fd = F.raw_listener, .events = POLLIN};
  REQUIRE(poll(&pfd, 1, 1000) == 1); /* the filler is queued: queue full */
  wstun__conn *c = connect_out(&a);
  REQUIRE(c != NULL);
  F.out.in_call = 1;
  CHECK_EQ_INT(wstun__conn_write(c, "early", 5), 0);
  wstun__conn_end(c);
  F.out.in_call = 0;
  F.mark = now(&F);
  run();
  CHECK_EQ_INT(F.out.n[EV_CONNECT], 1);
  CHECK_BYTES_STR(F.p.got.p, F.p.got.len, "early");
  CHECK_EQ_INT(F.p.eof, 1);
  CHECK_EQ_INT(F.out.n[EV_CLOSE], 1); /* closed itself after the shutdown */
  CHECK_EQ_INT(F.out.n[EV_END], 0);
  teardown();
}

/* The peer resets the connection while the conn is paused (so that the
 * reset is not read first); a write made then fails at once: from inside
 * flush_now (f->count 0 and 1), or from the loop's flush (2). Before
 * uv_try_write the failure always came later, from the write callback. */
enum { RESET_FLUSH_NOW, RESET_FLUSH_NOW_CLOSE, RESET_LOOP_CLOSE };

static void step_write_to_reset_peer(fixture *f) {
  owner *o = &f->srv;
  switch (f->phase) {
  case 0:
    if (!ready(f))
      return;
    wstun__conn_pause(o->c);
    CHECK_EQ_INT(uv_tcp_close_reset(&f->p.tcp, peer_closed), 0);
    f->mark = now(f);
    f->phase = 1;
    return;
  case 1:
    if (now(f) - f->mark < 20 || !f->p.closed)
      return;
    CHECK_EQ_INT(wstun__conn_write(o->c, pattern, 1000), 0);
    if (f->count != RESET_LOOP_CLOSE) {
      o->in_call = 1;
      wstun__conn_flush_now(o->c);
      o->in_call = 0;
    }
    f->mark = now(f);
    f->phase = 2;
    return;
  case 2:
    if (o->c != NULL && o->n[EV_END] == 1) {
      /* an owner that did not close: a later write fails anew */
      CHECK_EQ_INT(wstun__conn_write(o->c, pattern, 10), 0);
      o->in_call = 1;
      wstun__conn_flush_now(o->c);
      o->in_call = 0;
    }
    if (o->c != NULL && now(f) - f->mark < 100)
      return;
    finish(f);
    return;
  }
}

static void hook_close_on_end(owner *o, int ev) {
  if (ev == EV_END)
    wstun__conn_close(o->c);
}

TEST(a_write_to_a_reset_peer_ends_at_once) {
  static const char *const what[] = {"flush_now, on_end keeps",
                                     "flush_now, on_end closes",
                                     "loop flush, on_end closes"};
  for (int mode = RESET_FLUSH_NOW; mode <= RESET_LOOP_CLOSE; mode++) {
    test_context("%s", what[mode]);
    setup(step_write_to_reset_peer, 0);
    F.count = (size_t)mode;
    if (mode != RESET_FLUSH_NOW)
      F.srv.hook = hook_close_on_end;
    peer_connect(&F, 0);
    run();
    test_context("%s", what[mode]);
    if (mode == RESET_FLUSH_NOW) {
      CHECK_EQ_INT(F.srv.n[EV_END], 2);
      CHECK_EQ_INT(F.srv.nested[EV_END], 2);
      CHECK_EQ_INT(F.srv.end_err, UV_EPIPE);
    } else {
      CHECK_EQ_INT(F.srv.n[EV_END], 1);
      CHECK_EQ_INT(F.srv.nested[EV_END], mode == RESET_LOOP_CLOSE ? 0 : 1);
      CHECK(F.srv.end_err == UV_ECONNRESET || F.srv.end_err == UV_EPIPE);
    }
    CHECK_EQ_INT(F.srv.n[EV_DATA] + F.srv.n[EV_DRAIN], 0);
    CHECK_EQ_INT(F.srv.n[EV_CLOSE], 1);
    CHECK_EQ_INT(F.srv.nested[EV_CLOSE], 0);
    test_context(NULL);
    teardown();
  }
}

/* ---- closing ------------------------------------------------------------ */

static void step_close_busy(fixture *f, int reset) {
  owner *o = &f->srv;
  switch (f->phase) {
  case 0:
    if (!ready(f))
      return;
    peer_send(&f->p, pattern, 1000); /* kept: the owner takes nothing */
    for (size_t off = 0; off < FLOOD; off += 65536)
      CHECK_EQ_INT(wstun__conn_write(o->c, pattern + off, 65536), 0);
    f->phase = 1;
    return;
  case 1:
    if (o->n[EV_DATA] == 0)
      return;
    f->mark = now(f);
    f->phase = 2;
    return;
  case 2:
    if (now(f) - f->mark < 50)
      return;
    CHECK(wstun__conn_queued(o->c) > 0); /* stuck behind the peer */
    CHECK(mem.live > 0);
    o->in_call = 1;
    if (reset)
      wstun__conn_abort(o->c);
    else
      wstun__conn_close(o->c);
    wstun__conn_close(o->c); /* twice is fine */
    wstun__conn_abort(o->c);
    CHECK_EQ_INT(wstun__conn_write(o->c, "x", 1), WSTUN_ECLOSED);
    wstun__conn_resume(o->c);
    o->in_call = 0;
    f->phase = 3;
    return;
  case 3:
    if (o->n[EV_CLOSE] == 0)
      return;
    CHECK_EQ_INT(mem.live, 0); /* the conn and its buffers are gone */
    f->phase = 4;
    return;
  case 4:
    peer_recv_raw(&f->p);
    if (f->p.eof || f->p.err)
      finish(f);
    return;
  }
}

static void step_close_busy_close(fixture *f) {
  step_close_busy(f, 0);
}
static void step_close_busy_abort(fixture *f) {
  step_close_busy(f, 1);
}

TEST(close_with_output_and_input_kept_frees_everything) {
  for (int reset = 0; reset <= 1; reset++) {
    test_context("%s", reset ? "abort" : "close");
    setup(reset ? step_close_busy_abort : step_close_busy_close, 1);
    F.srv.take = 0;
    peer_connect(&F, 0);
    run();
    test_context("%s", reset ? "abort" : "close");
    CHECK_EQ_INT(F.srv.n[EV_CLOSE], 1);
    CHECK_EQ_INT(F.srv.nested[EV_CLOSE], 0); /* never from inside close */
    CHECK_EQ_INT(F.srv.n[EV_END] + F.srv.n[EV_DRAIN], 0);
    CHECK_EQ_INT(F.srv.n[EV_DATA], 1);
    CHECK(F.p.got.len < FLOOD);
    CHECK_MEM(F.p.got.p, pattern, F.p.got.len);
    if (reset)
      CHECK_EQ_INT(F.p.err, UV_ECONNRESET);
    else
      CHECK_EQ_INT(F.p.eof, 1);
    test_context(NULL);
    teardown();
  }
}

static void step_close_inside(fixture *f) {
  switch (f->phase) {
  case 0:
    if (!ready(f))
      return;
    peer_send(&f->p, pattern, 100000);
    f->phase = 1;
    return;
  case 1:
    resume_all(&f->srv);
    if (f->srv.n[EV_CLOSE]) {
      f->mark = now(f);
      f->phase = 2;
    }
    return;
  case 2: /* nothing more comes */
    if (now(f) - f->mark >= 50)
      finish(f);
    return;
  }
}

TEST(close_from_on_data_stops_all_but_on_close) {
  /* from a read, and from inside resume */
  static const size_t takes[] = {TAKE_ALL, 10};
  static const int close_at[] = {1, 5};
  for (int i = 0; i < 2; i++) {
    test_context("take %zu, close at call %d", takes[i], close_at[i]);
    setup(step_close_inside, 0);
    F.srv.take = takes[i];
    F.srv.close_at = close_at[i];
    peer_connect(&F, 1);
    run();
    CHECK_EQ_INT(F.srv.n[EV_DATA], close_at[i]);
    CHECK_EQ_INT(F.srv.n[EV_CLOSE], 1);
    CHECK_EQ_INT(F.srv.n[EV_END] + F.srv.n[EV_DRAIN], 0);
    CHECK_MEM(F.srv.got.p, pattern, F.srv.got.len);
    if (i == 1)
      CHECK_EQ_INT(F.srv.got.len, 50);
    test_context(NULL);
    teardown();
  }
}

/* ---- out of memory ------------------------------------------------------ */

/* An echo that takes 1000 bytes per call and writes them back; on out of
 * memory it closes, as the real owners do. */
static void hook_echo(owner *o, int ev) {
  if (ev == EV_DATA && o->took > 0 &&
      wstun__conn_write(o->c, o->got.p + o->got.len - o->took, o->took) != 0)
    wstun__conn_close(o->c);
  if (ev == EV_END) {
    if (o->end_err == UV_EOF)
      wstun__conn_end(o->c);
    else
      wstun__conn_close(o->c);
  }
}

#define ECHO_LEN 100000

static void step_echo(fixture *f) {
  switch (f->phase) {
  case 0:
    if (!f->p.connected || (f->srv.c == NULL && !f->refused))
      return;
    peer_send(&f->p, pattern, ECHO_LEN);
    peer_shutdown(&f->p);
    f->phase = 1;
    return;
  case 1:
    resume_all(&f->srv);
    if ((f->p.eof || f->p.err) && (f->srv.n[EV_CLOSE] || f->refused))
      finish(f);
    return;
  }
}

TEST(allocation_failures_never_crash_nor_leak) {
  int complete = 0;
  long n;
  for (n = 1; n < 1000 && !complete; n++) {
    test_context("failing allocation %ld", n);
    setup(step_echo, 0);
    mem.fail_at = n;
    F.srv.take = 1000;
    F.srv.hook = hook_echo;
    peer_connect(&F, 1);
    run();
    test_context("failing allocation %ld", n);
    complete = mem.count < n; /* nothing failed */
    if (complete) {
      CHECK_EQ_INT(F.p.got.len, ECHO_LEN);
      CHECK_MEM(F.p.got.p, pattern, F.p.got.len);
      CHECK_EQ_INT(F.p.eof, 1);
    }
    test_context(NULL);
    teardown();
  }
  CHECK(complete);
  CHECK(n > 5); /* allocations were failed, each in turn */
}

/* ---- TLS ---------------------------------------------------------------- */

static char tls_dir[] = "/tmp/wstun-conn-test.XXXXXX";
static char tls_cert[160], tls_key[160];
static wstun__tls_config *tls_client_cfg;

/* The client starts TLS once connected and stops reading, so that the
 * server's first flight waits in its socket until the test lets it in. */
static void hook_tls_client(owner *o, int ev) {
  if (ev != EV_CONNECT || o->connect_status != 0)
    return;
  CHECK_EQ_INT(wstun__conn_start_tls(o->c, tls_client_cfg, "localhost"), 0);
  wstun__conn_pause(o->c);
}

/* Once the server sent its first flight: its write side is shut and the
 * shared flusher closed (as when a server or client shuts down), then the
 * client reads on and sends its last flight. The server's handshake ends
 * with a flush that writes at once and fails (EPIPE): on_end comes from
 * inside the handshake, and on_secure must not follow it. */
static void step_tls_last_flight_fails(fixture *f) {
  switch (f->phase) {
  case 0: {
    if (f->srv.c == NULL || f->out.c == NULL || f->srv.c->written == 0)
      return;
    int fd;
    CHECK_EQ_INT(uv_fileno((uv_handle_t *)&f->srv.c->tcp, &fd), 0);
    CHECK_EQ_INT(shutdown(fd, SHUT_WR), 0);
    wstun__conn_shared_close(&f->sh, NULL, NULL);
    f->shared_closed = 1;
    wstun__conn_resume(f->out.c);
    f->phase = 1;
    return;
  }
  case 1:
    if (f->srv.n[EV_END] == 0)
      return;
    f->mark = now(f);
    f->phase = 2;
    return;
  case 2: /* a while, for a late on_secure to show */
    if (now(f) - f->mark >= 50)
      finish(f);
    return;
  }
}

TEST(a_handshake_whose_last_write_fails_ends_without_on_secure) {
  for (int keep = 0; keep <= 1; keep++) {
    test_context("the owner %s on_end",
                 keep ? "keeps the conn after" : "closes in");
    setup(step_tls_last_flight_fails, 0);
    char why[400] = "";
    CHECK_EQ_INT(wstun__tls_server_config(&F.srv_tls, tls_cert, tls_key, why,
                                          sizeof(why)),
                 0);
    CHECK_EQ_INT(
        wstun__tls_client_config(&tls_client_cfg, NULL, 0, why, sizeof(why)),
        0);
    if (!keep)
      F.srv.hook = hook_close_on_end;
    F.out.hook = hook_tls_client;
    REQUIRE(connect_out(&F.addr) != NULL);
    run();
    wstun__tls_config_unref(F.srv_tls);
    wstun__tls_config_unref(tls_client_cfg);
    tls_client_cfg = NULL;
    CHECK_EQ_INT(F.srv.n[EV_END], 1);
    CHECK_EQ_INT(F.srv.end_err, UV_EPIPE);
    CHECK_EQ_INT(F.srv.n[EV_SECURE], 0);
    CHECK_EQ_INT(F.srv.n[EV_DATA], 0);
    CHECK_EQ_INT(F.srv.n[EV_CLOSE], 1);
    test_context(NULL);
    teardown();
  }
}

int main(int argc, char **argv) {
  /* writing to a peer that reset gives EPIPE, and SIGPIPE unless ignored,
   * as the apps do */
  signal(SIGPIPE, SIG_IGN);
  for (size_t i = 0; i < sizeof(pattern); i++)
    pattern[i] = (uint8_t)(i * 7 + i / 251);
  if (mkdtemp(tls_dir) == NULL)
    return 1;
  snprintf(tls_cert, sizeof(tls_cert), "%s/cert.pem", tls_dir);
  snprintf(tls_key, sizeof(tls_key), "%s/key.pem", tls_dir);
  int made = make_cert("localhost", 0, tls_cert, tls_key);
  if (made != 0 || wstun_set_allocator(&counting) != 0)
    return 1;
  static const test_case tests[] = {
      T(reads_reach_on_data_then_eof),
      T(a_consumer_taking_less_pauses_and_resume_redelivers),
      T(keep_tail_hands_the_rest_to_a_new_owner),
      T(small_writes_coalesce_into_one_write_in_order),
      T(congestion_then_drain_when_the_peer_reads),
      T(peer_end_gives_eof_and_end_shuts_down_after_the_writes),
      T(out_of_memory_for_kept_bytes_ends_and_stops_reading),
      T(a_write_to_a_reset_peer_ends_at_once),
      T(connect_out_reports_success_and_failure),
      T(writes_and_end_made_while_connecting_happen_once_connected),
      T(close_with_output_and_input_kept_frees_everything),
      T(close_from_on_data_stops_all_but_on_close),
      T(allocation_failures_never_crash_nor_leak),
      T(a_handshake_whose_last_write_fails_ends_without_on_secure),
  };
  int rc = test_main(tests, TEST_COUNT(tests), argc, argv);
  wstun_set_allocator(NULL);
  unlink(tls_cert);
  unlink(tls_key);
  rmdir(tls_dir);
  return rc;
}
