/*
 * bench/e2e/loadgen: a WebSocket load generator for Switchboard and for the
 * raw uWebSockets.js baseline (bench/e2e/baseline.mjs).
 *
 * Connections come in pairs: connection i sends 1:1 messages to its peer
 * i^1. Each message carries its send time (CLOCK_MONOTONIC, ns) as the first
 * 20 digits of "data"; the receiver computes the latency and acknowledges
 * with a delivered status, as a real client would. One epoll loop per thread
 * drives many non-blocking connections; frames are pre-built and masked once
 * per connection, and only the id and timestamp digits are patched (and
 * re-masked) per message. Writes are batched: one write() per connection per
 * loop turn.
 *
 *   loadgen --port P --conns N --seconds S [--host 127.0.0.1] [--tokens FILE]
 *           [--window W | --rate MSG_PER_S] [--size BYTES] [--warmup S]
 *           [--threads T] [--baseline | --mqtt] [--status-router] [--idle]
 *           [--ready-timeout S] [--ports P1,P2,... [--spread cross|same]] [--linger S]
 *
 * --ports: several servers (the nodes of a cluster) instead of one --port.
 * --spread cross (default) puts connection i on port i % K, so the two ends
 * of every pair are on different servers (with K = 2, every message crosses
 * between them); --spread same puts connection i on port (i / 2) % K, so
 * both ends of a pair are on one server and the pairs alternate between
 * them. Either way each server gets the same number of connections (for K
 * dividing N / 2). Everything else is as with one port.
 *
 * --linger S: after the measured window, send nothing new but keep reading,
 * confirming and answering for S seconds before closing, so that what was in
 * flight completes as during the run (a caller reading the servers' counters
 * as the window closes does not count closes in it). Default 0.
 *
 * Window mode (default, W=8): a connection has at most W messages without a
 * "sent" status (with --status-router: without their delivered status back)
 * and at most W not yet received by its peer. Rate mode: the
 * connections together send MSG_PER_S, each on its own schedule; latency is
 * measured from the scheduled time, so a server that falls behind is not
 * flattered (no coordinated omission); the window (default 4096) still bounds
 * what is in flight, and "late" counts messages sent over 1 ms after they fell
 * due (the generator or the window fell behind).
 *
 * Every message received from a peer is confirmed with a delivered status
 * (status 2) addressed to its sender, as the SDK does, to Switchboard and to
 * both baseline routers alike (to Mosquitto only with --status-router, as
 * a publish of its own: QoS 0 has no acknowledgement).
 *
 * --baseline: no token, no hello and no "sent" status (the baseline server
 * has no auth and makes no statuses of its own); connection i connects as
 * /?u=c<i>. The plain router drops the delivered statuses; with
 * --status-router the router forwards each to the message's sender, and the
 * window then also counts a connection's messages whose delivered status has
 * not come back, as it counts messages without "sent" from Switchboard
 * (with --mqtt: below).
 *
 * --mqtt: MQTT 3.1.1 over plain TCP instead of WebSocket (for Mosquitto).
 * Connection i sends CONNECT (client id "lg-c<i>", clean session, keep-alive
 * off) and SUBSCRIBE to topic "c<i>" (QoS 0), and is ready on SUBACK; it then
 * PUBLISHes (QoS 0) to its peer's topic. The payload is the same JSON text
 * as the baseline's frames (same size, the send time at the same place).
 * QoS 0 has no acknowledgement; with --status-router the receiver publishes
 * the delivered status (the same JSON text as to the routers, QoS 0) to the
 * sender's topic, and the window counts statuses back as with the status
 * router; without it the receiver sends nothing.
 *
 * --group N [--gid-base B]: group fan-out instead of pairs. Connections
 * i*N .. i*N+N-1 form group B+i (Switchboard: a group of those users that the
 * caller created; --baseline: topic "g<gid>" that they subscribe to with
 * &g=), and each sends its messages to its group, so every message reaches
 * N-1 receivers; delivered msg/s counts receptions. Switchboard receivers
 * confirm each message with a delivered status to its sender, as the SDK
 * does (a durable server holds "sent" until then); baseline receivers send
 * nothing (its frames do not say who sent them). The window bounds both a
 * connection's messages without a "sent" status (Switchboard) and the
 * group's messages not yet received by all its members.
 *
 * --idle: connect and log in every connection, then send nothing for
 * warm-up + seconds (answering pings), for memory measurements. At most 256
 * connections per thread are connecting at a time, and the open-file limit is
 * raised to its hard limit. --ready-timeout (default 10 s) bounds the log-in.
 *
 * Output: a human summary on stderr; on stdout "MEASURE start" and "MEASURE
 * end" when the measured window opens and closes, then one line:
 *   RESULT {"msgs":..,"msgPerSec":..,"p50Ms":..,...,"cpuPct":..}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TS_DIGITS 20
#define ID_DIGITS 10
#define FIRST_ID 1000000000u /* ten digits from the start: ids are patched in place */
#define MAX_EVENTS 256
#define RBUF_INITIAL (64 * 1024)
#define WBUF_HIGH (256 * 1024) /* stop adding messages while this much is unwritten */
#define LAT_FINE 1000000                 /* 1 us buckets up to 1 s, */
#define LAT_BUCKETS (LAT_FINE + 100000) /* then 1 ms buckets up to 101 s (the last one takes the rest) */

enum state { ST_CONNECTING, ST_HANDSHAKE, ST_HELLO, ST_READY, ST_DEAD };

struct thread;

/* Group fan-out (--group): shared by the group's connections, which may be on
 * different threads, hence the atomics. */
struct group {
  uint64_t sent;     /* messages its members sent */
  uint64_t received; /* receptions by its members */
};

struct conn {
  int fd;
  int idx;
  int port_at; /* which of g_ports it connects to */
  enum state state;
  struct thread *th;
  struct conn *peer;
  struct group *grp; /* --group */
  int gid;
  char addr[256];
  char *token;
  unsigned char mask[4];

  unsigned char *rbuf;
  size_t rlen, rcap;
  unsigned char *wbuf;
  size_t woff, wlen, wcap;
  int polling_out;

  /* Pre-built masked frames: the message and the delivered status. */
  unsigned char *msg;
  size_t msg_len, msg_id_at, msg_ts_at; /* offsets of the digits inside the frame */
  unsigned char ack[1024];
  size_t ack_len, ack_id_at;
  size_t payload_at; /* offset of the WebSocket payload in msg (mask applies from here) */
  size_t ack_payload_at;

  uint32_t next_id;
  uint64_t sent;      /* messages written */
  uint64_t sent_ok;   /* "sent" statuses received (status 1) */
  uint64_t received;  /* messages received from the peer */
  uint64_t delivered; /* delivered statuses relayed back to us (status 2) */
  uint64_t errors;
  double rate_per_conn;
  uint64_t phase_ns; /* rate mode: when this connection's first message falls due */
  uint64_t due_ns;   /* rate mode: when its next message falls due (0: not known yet) */
};

struct thread {
  pthread_t tid;
  int id;
  int epfd;
  struct conn **conns;
  int nconns;
  int ready; /* connections logged in */
  /* results */
  uint64_t msgs_in_window;
  uint64_t sent_in_window;
  uint64_t errors, closed;
  uint64_t late; /* rate mode: messages that went out more than 1 ms after they fell due */
  uint32_t *lat; /* histogram, 1 us buckets */
  uint64_t lat_max_ns;
  double cpu_s;  /* user+sys of this thread during the measured window */
  double user_s; /* the user part */
  char first_error[512];
};

/* Settings (read-only once threads start). */
static const char *g_host = "127.0.0.1";
#define MAX_PORTS 16
static int g_port; /* the first of g_ports */
static int g_ports[MAX_PORTS];
static int g_nports;
static int g_spread_same; /* --spread same: both ends of a pair on one port */
static const char *g_tokens_file;
static int g_nconns = 32;
static double g_seconds = 3, g_warmup = 0.5;
static int g_window = -1;
static double g_rate;
static int g_size = 32;
static int g_threads = 1;
static int g_baseline;
static int g_status_router; /* --status-router: the router or broker brings each delivered status back to the sender */
static int g_mqtt;
static int g_idle;
static int g_group;           /* members per group; 0: pairs */
static int g_gid_base = 1000; /* the first group's id */
static double g_ready_timeout = 10;
static double g_linger;
static struct sockaddr_storage g_sa[MAX_PORTS];
static socklen_t g_salen[MAX_PORTS];

static uint64_t g_t0;                  /* process start, ns */
static _Atomic int g_go;               /* all connections ready: start sending */
static _Atomic int g_failed;           /* a thread gave up */
static uint64_t g_start_ns, g_meas_ns, g_end_ns; /* set before g_go */
static _Atomic int g_nready;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec - g_t0;
}

static void sleep_until(uint64_t t) {
  uint64_t n = now_ns();
  if (t <= n) return;
  struct timespec ts = {.tv_sec = (time_t)((t - n) / 1000000000u), .tv_nsec = (long)((t - n) % 1000000000u)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* This thread's CPU time (user + system) in seconds; *user gets the user part. */
static double thread_cpu_s(double *user) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
  return *user + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) die("out of memory");
  return p;
}

static void conn_fail(struct conn *c, const char *fmt, ...) {
  if (c->state == ST_DEAD) return;
  struct thread *th = c->th;
  if (!th->first_error[0]) {
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(th->first_error, sizeof th->first_error, "connection %d: ", c->idx);
    vsnprintf(th->first_error + n, sizeof th->first_error - (size_t)n, fmt, ap);
    va_end(ap);
  }
  th->closed++;
  c->state = ST_DEAD;
  epoll_ctl(th->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
}

/* --- writing frames ------------------------------------------------------ */

static void wbuf_append(struct conn *c, const void *p, size_t n) {
  if (c->woff && c->woff == c->wlen) c->woff = c->wlen = 0;
  if (c->wlen + n > c->wcap) {
    if (c->woff) {
      memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
      c->wlen -= c->woff;
      c->woff = 0;
    }
    while (c->wlen + n > c->wcap) c->wcap *= 2;
    c->wbuf = realloc(c->wbuf, c->wcap);
    if (!c->wbuf) die("out of memory");
  }
  memcpy(c->wbuf + c->wlen, p, n);
  c->wlen += n;
}

static size_t wbuf_pending(const struct conn *c) { return c->wlen - c->woff; }

static void set_pollout(struct conn *c, int on) {
  if (c->polling_out == on) return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(c->th->epfd, EPOLL_CTL_MOD, c->fd, &ev);
  c->polling_out = on;
}

static void flush(struct conn *c) {
  while (wbuf_pending(c)) {
    ssize_t n = write(c->fd, c->wbuf + c->woff, wbuf_pending(c));
    if (n > 0) {
      c->woff += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      set_pollout(c, 1);
      return;
    }
    conn_fail(c, "write: %s", strerror(errno));
    return;
  }
  c->woff = c->wlen = 0;
  set_pollout(c, 0);
}

/* Writes the header of a masked client frame into out; returns its length (with the mask key). */
static size_t frame_header(unsigned char *out, int opcode, size_t len, const unsigned char mask[4]) {
  size_t h = 0;
  out[h++] = (unsigned char)(0x80 | opcode);
  if (len < 126) {
    out[h++] = (unsigned char)(0x80 | len);
  } else if (len < 65536) {
    out[h++] = 0x80 | 126;
    out[h++] = (unsigned char)(len >> 8);
    out[h++] = (unsigned char)len;
  } else {
    out[h++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--) out[h++] = (unsigned char)((uint64_t)len >> (8 * i));
  }
  memcpy(out + h, mask, 4);
  return h + 4;
}

static void mask_bytes(unsigned char *p, size_t n, const unsigned char mask[4], size_t offset_in_payload) {
  for (size_t i = 0; i < n; i++) p[i] ^= mask[(offset_in_payload + i) & 3];
}

/* Writes `digits` decimal digits of v at dst (masked as payload bytes starting at payload offset `off`). */
static void patch_digits(unsigned char *frame, size_t payload_at, size_t at, int digits, uint64_t v, const unsigned char mask[4]) {
  for (int i = digits - 1; i >= 0; i--) {
    size_t pos = at + (size_t)i;
    frame[pos] = (unsigned char)(('0' + v % 10) ^ mask[(pos - payload_at) & 3]);
    v /= 10;
  }
}

/* MQTT remaining-length varint; returns its size. */
static size_t mqtt_varint(unsigned char *out, size_t v) {
  size_t n = 0;
  do {
    unsigned char b = v % 128;
    v /= 128;
    out[n++] = (unsigned char)(b | (v ? 0x80 : 0));
  } while (v);
  return n;
}

/* The PUBLISH frame (QoS 0) to the peer's topic; the payload is the baseline's JSON text, unmasked. */
static void build_mqtt_publish(struct conn *c, const char *text, size_t tlen, size_t ts_text_at) {
  const char *topic = c->peer->addr;
  size_t tl = strlen(topic);
  c->msg = xmalloc(tlen + tl + 16);
  size_t h = 0;
  c->msg[h++] = 0x30;
  h += mqtt_varint(c->msg + h, 2 + tl + tlen);
  c->msg[h++] = (unsigned char)(tl >> 8);
  c->msg[h++] = (unsigned char)tl;
  memcpy(c->msg + h, topic, tl);
  h += tl;
  c->payload_at = h; /* the mask is all zeros in MQTT mode, so patch_digits writes plain digits */
  memcpy(c->msg + h, text, tlen);
  c->msg_len = h + tlen;
  c->msg_id_at = h + 17;
  c->msg_ts_at = h + ts_text_at;
}

/* --mqtt --status-router: the delivered status, published (QoS 0) to the sender's topic, unmasked. */
static void build_mqtt_ack(struct conn *c) {
  const char *to = c->peer->addr;
  char atext[400];
  int an = snprintf(atext, sizeof atext, "{\"op\":\"status\",\"id\":%u,\"to\":\"%s\",\"status\":2}", FIRST_ID, to);
  size_t tl = strlen(to), h = 0;
  c->ack[h++] = 0x30;
  h += mqtt_varint(c->ack + h, 2 + tl + (size_t)an);
  c->ack[h++] = (unsigned char)(tl >> 8);
  c->ack[h++] = (unsigned char)tl;
  memcpy(c->ack + h, to, tl);
  h += tl;
  c->ack_payload_at = h;
  memcpy(c->ack + h, atext, (size_t)an);
  c->ack_len = h + (size_t)an;
  c->ack_id_at = h + 20; /* strlen("{\"op\":\"status\",\"id\":") */
}

static void build_frames(struct conn *c) {
  const char *to = c->peer->addr;
  size_t dlen = (size_t)(g_size < TS_DIGITS ? TS_DIGITS : g_size);
  size_t cap = 128 + strlen(to) + dlen;
  char *text = xmalloc(cap);
  int n;
  if (g_group && g_baseline) n = snprintf(text, cap, "{\"op\":\"msg\",\"id\":%u,\"to\":\"g%d\",\"data\":\"", FIRST_ID, c->gid);
  else if (g_group) n = snprintf(text, cap, "{\"op\":\"msg\",\"id\":%u,\"gid\":%d,\"data\":\"", FIRST_ID, c->gid);
  else n = snprintf(text, cap, "{\"op\":\"msg\",\"id\":%u,\"to\":\"%s\",\"data\":\"", FIRST_ID, to);
  size_t ts_text_at = (size_t)n;
  memset(text + n, 'x', dlen);
  memset(text + n, '0', TS_DIGITS);
  n += (int)dlen;
  n += snprintf(text + n, cap - (size_t)n, "\"}");
  size_t tlen = (size_t)n;
  if (g_mqtt) {
    build_mqtt_publish(c, text, tlen, ts_text_at);
    free(text);
    if (g_status_router) build_mqtt_ack(c);
    return;
  }

  c->msg = xmalloc(tlen + 14);
  c->payload_at = frame_header(c->msg, 1, tlen, c->mask);
  memcpy(c->msg + c->payload_at, text, tlen);
  mask_bytes(c->msg + c->payload_at, tlen, c->mask, 0);
  c->msg_len = c->payload_at + tlen;
  c->msg_id_at = c->payload_at + 17; /* strlen("{\"op\":\"msg\",\"id\":") */
  c->msg_ts_at = c->payload_at + ts_text_at;
  free(text);

  char atext[400];
  int an = snprintf(atext, sizeof atext, "{\"op\":\"status\",\"id\":%u,\"to\":\"%s\",\"status\":2}", FIRST_ID, to);
  c->ack_payload_at = frame_header(c->ack, 1, (size_t)an, c->mask);
  memcpy(c->ack + c->ack_payload_at, atext, (size_t)an);
  mask_bytes(c->ack + c->ack_payload_at, (size_t)an, c->mask, 0);
  c->ack_len = c->ack_payload_at + (size_t)an;
  c->ack_id_at = c->ack_payload_at + 20; /* strlen("{\"op\":\"status\",\"id\":") */
}

static void send_message(struct conn *c, uint64_t ts) {
  patch_digits(c->msg, c->payload_at, c->msg_id_at, ID_DIGITS, c->next_id++, c->mask);
  patch_digits(c->msg, c->payload_at, c->msg_ts_at, TS_DIGITS, ts, c->mask);
  wbuf_append(c, c->msg, c->msg_len);
  c->sent++;
  if (c->grp) __atomic_add_fetch(&c->grp->sent, 1, __ATOMIC_RELAXED);
}

/* The delivered status for a group message: to its "from", with its id digits (built per message). */
static void send_group_ack(struct conn *c, const unsigned char *id_digits, const unsigned char *p, const unsigned char *end) {
  const unsigned char *f = memmem(p, (size_t)(end - p), "\"from\":\"", 8);
  if (!f) return;
  f += 8;
  const unsigned char *q = memchr(f, '"', (size_t)(end - f));
  if (!q || q - f > 255) return;
  unsigned char frame[14 + 320];
  char text[320];
  int n = snprintf(text, sizeof text, "{\"op\":\"status\",\"id\":%.*s,\"to\":\"%.*s\",\"status\":2}", ID_DIGITS, (const char *)id_digits, (int)(q - f), (const char *)f);
  if (n <= 0 || (size_t)n >= sizeof text) return;
  size_t h = frame_header(frame, 1, (size_t)n, c->mask);
  memcpy(frame + h, text, (size_t)n);
  mask_bytes(frame + h, (size_t)n, c->mask, 0);
  wbuf_append(c, frame, h + (size_t)n);
}

/* Copies the ten id digits of a received message into the delivered-status frame. */
static void send_ack(struct conn *c, const unsigned char *id_digits) {
  for (int i = 0; i < ID_DIGITS; i++) {
    size_t pos = c->ack_id_at + (size_t)i;
    c->ack[pos] = (unsigned char)(id_digits[i] ^ c->mask[(pos - c->ack_payload_at) & 3]);
  }
  wbuf_append(c, c->ack, c->ack_len);
}

static void send_control(struct conn *c, int opcode, const unsigned char *p, size_t n) {
  unsigned char f[14 + 125];
  if (n > 125) n = 125;
  size_t h = frame_header(f, opcode, n, c->mask);
  memcpy(f + h, p, n);
  mask_bytes(f + h, n, c->mask, 0);
  wbuf_append(c, f, h + n);
}

/* How many messages c may send now. */
static int64_t window_room(const struct conn *c) {
  int64_t room;
  if (c->grp) {
    /* The group's messages not yet received by all N-1 other members. */
    uint64_t gs = __atomic_load_n(&c->grp->sent, __ATOMIC_RELAXED);
    uint64_t gr = __atomic_load_n(&c->grp->received, __ATOMIC_RELAXED);
    int64_t inflight = (int64_t)(gs * (uint64_t)(g_group - 1)) - (int64_t)gr;
    room = (int64_t)g_window - inflight / (g_group - 1) / g_group;
  } else {
    room = (int64_t)g_window - (int64_t)(c->sent - c->peer->received);
  }
  if (!g_baseline && !g_mqtt) {
    int64_t r2 = (int64_t)g_window - (int64_t)(c->sent - c->sent_ok);
    if (r2 < room) room = r2;
  } else if (g_status_router && !c->grp) {
    int64_t r2 = (int64_t)g_window - (int64_t)(c->sent - c->delivered);
    if (r2 < room) room = r2;
  }
  return room;
}

/* --- reading frames ------------------------------------------------------ */

static uint64_t parse_digits(const unsigned char *p, const unsigned char *end, const unsigned char **after) {
  uint64_t v = 0;
  while (p < end && *p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
  if (after) *after = p;
  return v;
}

static size_t lat_bucket(uint64_t us) {
  if (us < LAT_FINE) return (size_t)us;
  uint64_t ms = (us - LAT_FINE) / 1000;
  return ms < LAT_BUCKETS - LAT_FINE ? LAT_FINE + (size_t)ms : LAT_BUCKETS - 1;
}

static int in_window(uint64_t t) { return t >= g_meas_ns && t < g_end_ns; }

static void on_text(struct conn *c, const unsigned char *p, size_t n, uint64_t t) {
  struct thread *th = c->th;
  const unsigned char *end = p + n;
  /* Server frames start {"op":"msg" / {"op":"status" / {"op":"hello" / {"op":"error" (the server's key order). */
  if (n > 8 && memcmp(p, "{\"op\":\"", 7) == 0) {
    switch (p[7]) {
    case 'm': { /* {"op":"msg","id":NNNNNNNNNN,...,"data":"TTTT... */
      if (n < 17 + ID_DIGITS) break;
      const unsigned char *id = p + 17;
      const unsigned char *d = memmem(id, (size_t)(end - id), "\"data\":\"", 8);
      if (!d || end - (d + 8) < TS_DIGITS) break;
      uint64_t ts = parse_digits(d + 8, d + 8 + TS_DIGITS, NULL);
      c->received++;
      if (c->grp) {
        __atomic_add_fetch(&c->grp->received, 1, __ATOMIC_RELAXED);
        if (!g_baseline) send_group_ack(c, id, p, end);
      } else if (!g_mqtt || g_status_router) send_ack(c, id);
      if (in_window(t)) {
        uint64_t lat = t > ts ? t - ts : 0;
        uint64_t us = lat / 1000;
        th->lat[lat_bucket(us)]++;
        if (lat > th->lat_max_ns) th->lat_max_ns = lat;
        th->msgs_in_window++;
      }
      return;
    }
    case 's': { /* {"op":"status","id":N,"from":"..","status":S} */
      const unsigned char *s = memmem(p, n, "\"status\":", 9);
      if (!s) break;
      uint64_t st = parse_digits(s + 9, end, NULL);
      if (st == 1) c->sent_ok++;
      else if (st == 2 || st == 3) c->delivered++;
      else {
        c->errors++;
        th->errors++;
        if (!th->first_error[0]) snprintf(th->first_error, sizeof th->first_error, "connection %d: failure status: %.*s", c->idx, (int)(n > 300 ? 300 : n), p);
      }
      return;
    }
    case 'h': { /* {"op":"hello","address":"u1",...} */
      if (c->state != ST_HELLO) return;
      const unsigned char *a = memmem(p, n, "\"address\":\"", 11);
      if (!a) break;
      a += 11;
      const unsigned char *q = memchr(a, '"', (size_t)(end - a));
      if (!q || q - a >= (long)sizeof c->addr) break;
      memcpy(c->addr, a, (size_t)(q - a));
      c->addr[q - a] = 0;
      c->state = ST_READY;
      th->ready++;
      return;
    }
    case 'e':
      c->errors++;
      th->errors++;
      if (!th->first_error[0]) snprintf(th->first_error, sizeof th->first_error, "connection %d: server error: %.*s", c->idx, (int)(n > 300 ? 300 : n), p);
      return;
    default:
      return; /* presence and other ops */
    }
  }
  c->errors++;
  th->errors++;
  if (!th->first_error[0]) snprintf(th->first_error, sizeof th->first_error, "connection %d: unexpected frame: %.*s", c->idx, (int)(n > 300 ? 300 : n), p);
}

/* Parses every complete frame in rbuf; returns 0 if the connection was closed. */
static int parse_frames(struct conn *c, uint64_t t) {
  size_t off = 0;
  while (c->rlen - off >= 2) {
    unsigned char *f = c->rbuf + off;
    size_t avail = c->rlen - off;
    int opcode = f[0] & 0x0f;
    int masked = f[1] & 0x80;
    uint64_t len = f[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
      if (avail < 4) break;
      len = ((uint64_t)f[2] << 8) | f[3];
      h = 4;
    } else if (len == 127) {
      if (avail < 10) break;
      len = 0;
      for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
      h = 10;
    }
    if (masked) h += 4; /* servers must not mask; tolerate it */
    if (len > (1u << 30)) {
      conn_fail(c, "frame of %llu bytes", (unsigned long long)len);
      return 0;
    }
    if (avail < h + len) {
      if (h + len > c->rcap) { /* grow so the frame fits */
        size_t cap = c->rcap;
        while (cap < h + len) cap *= 2;
        memmove(c->rbuf, f, avail);
        c->rlen = avail;
        off = 0;
        c->rbuf = realloc(c->rbuf, cap);
        if (!c->rbuf) die("out of memory");
        c->rcap = cap;
      }
      break;
    }
    unsigned char *p = f + h;
    if (masked) mask_bytes(p, len, f + h - 4, 0);
    switch (opcode) {
    case 0x1:
    case 0x2:
      on_text(c, p, len, t);
      break;
    case 0x8: {
      int code = len >= 2 ? (p[0] << 8 | p[1]) : 0;
      conn_fail(c, "server closed the connection (%d %.*s)", code, (int)(len > 2 ? len - 2 : 0), p + 2);
      return 0;
    }
    case 0x9:
      send_control(c, 0xA, p, len);
      break;
    default:
      break; /* pong, continuation: the servers here never fragment */
    }
    off += h + len;
  }
  if (off) {
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
  }
  return 1;
}

/* Parses every complete MQTT packet in rbuf; returns 0 if the connection was closed. */
static int parse_mqtt(struct conn *c, uint64_t t) {
  size_t off = 0;
  for (;;) {
    unsigned char *f = c->rbuf + off;
    size_t avail = c->rlen - off;
    if (avail < 2) break;
    size_t len = 0, h = 1;
    int complete = 0;
    for (int shift = 0; h < avail && h <= 4; shift += 7) {
      unsigned char b = f[h++];
      len |= (size_t)(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        complete = 1;
        break;
      }
    }
    if (!complete) {
      if (h > 4) {
        conn_fail(c, "bad MQTT remaining length");
        return 0;
      }
      break;
    }
    if (avail < h + len) {
      if (h + len > c->rcap) {
        size_t cap = c->rcap;
        while (cap < h + len) cap *= 2;
        memmove(c->rbuf, f, avail);
        c->rlen = avail;
        off = 0;
        c->rbuf = realloc(c->rbuf, cap);
        if (!c->rbuf) die("out of memory");
        c->rcap = cap;
      }
      break;
    }
    unsigned char *p = f + h;
    switch (f[0] >> 4) {
    case 2: /* CONNACK: flags, return code */
      if (len < 2 || p[1] != 0) {
        conn_fail(c, "CONNACK refused (return code %d)", len >= 2 ? p[1] : -1);
        return 0;
      }
      if (c->state == ST_HANDSHAKE) c->state = ST_HELLO;
      break;
    case 9: /* SUBACK: packet id, granted QoS */
      if (len < 3 || p[2] == 0x80) {
        conn_fail(c, "SUBSCRIBE refused");
        return 0;
      }
      if (c->state == ST_HELLO) {
        c->state = ST_READY;
        c->th->ready++;
      }
      break;
    case 3: { /* PUBLISH: topic length, topic, [packet id if QoS > 0], payload */
      if (len < 2) break;
      size_t tl = (size_t)p[0] << 8 | p[1];
      size_t at = 2 + tl + (((f[0] >> 1) & 3) ? 2 : 0);
      if (at <= len) on_text(c, p + at, len - at, t);
      break;
    }
    default:
      break; /* PINGRESP and the rest */
    }
    off += h + len;
  }
  if (off) {
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
  }
  return 1;
}

static void on_handshake(struct conn *c) {
  unsigned char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
  if (!e) {
    if (c->rlen == c->rcap) conn_fail(c, "HTTP response headers too long");
    return;
  }
  if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.1 101", 12) != 0) {
    unsigned char *eol = memchr(c->rbuf, '\r', c->rlen);
    conn_fail(c, "upgrade refused: %.*s", (int)(eol ? eol - c->rbuf : 80), c->rbuf);
    return;
  }
  size_t hl = (size_t)(e + 4 - c->rbuf);
  memmove(c->rbuf, c->rbuf + hl, c->rlen - hl);
  c->rlen -= hl;
  if (g_baseline) {
    c->state = ST_READY;
    c->th->ready++;
  } else {
    c->state = ST_HELLO;
  }
}

static void on_readable(struct conn *c, uint64_t t) {
  for (;;) {
    if (c->rlen == c->rcap) {
      c->rcap *= 2;
      c->rbuf = realloc(c->rbuf, c->rcap);
      if (!c->rbuf) die("out of memory");
    }
    size_t space = c->rcap - c->rlen;
    ssize_t n = read(c->fd, c->rbuf + c->rlen, space);
    if (n > 0) {
      c->rlen += (size_t)n;
      if (g_mqtt) {
        if (!parse_mqtt(c, t)) return;
      } else {
        if (c->state == ST_HANDSHAKE) {
          on_handshake(c);
          if (c->state == ST_DEAD || c->state == ST_HANDSHAKE) return;
        }
        if (!parse_frames(c, t)) return;
      }
      if ((size_t)n < space) return; /* a short read: the socket is drained */
      continue;
    }
    if (n == 0) {
      conn_fail(c, "server closed the TCP connection (%s)", c->state == ST_HANDSHAKE ? "no answer to the upgrade yet" : c->state == ST_HELLO ? "upgraded, no hello yet" : "logged in");
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    conn_fail(c, "read: %s", strerror(errno));
    return;
  }
}

static void on_connected(struct conn *c) {
  int err = 0;
  socklen_t el = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
  if (err) {
    conn_fail(c, "connect to %s:%d: %s", g_host, g_ports[c->port_at], strerror(err));
    return;
  }
  if (g_mqtt) {
    /* CONNECT (MQTT 3.1.1, clean session, keep-alive 0) and SUBSCRIBE (topic = own address, QoS 0), pipelined. */
    unsigned char p[600];
    char id[300];
    int il = snprintf(id, sizeof id, "lg-%s", c->addr);
    size_t tl = strlen(c->addr), n = 0;
    p[n++] = 0x10;
    n += mqtt_varint(p + n, 10 + 2 + (size_t)il);
    memcpy(p + n, "\0\4MQTT\4\2\0\0", 10);
    n += 10;
    p[n++] = (unsigned char)(il >> 8);
    p[n++] = (unsigned char)il;
    memcpy(p + n, id, (size_t)il);
    n += (size_t)il;
    p[n++] = 0x82;
    n += mqtt_varint(p + n, 2 + 2 + tl + 1);
    p[n++] = 0;
    p[n++] = 1;
    p[n++] = (unsigned char)(tl >> 8);
    p[n++] = (unsigned char)tl;
    memcpy(p + n, c->addr, tl);
    n += tl;
    p[n++] = 0;
    c->state = ST_HANDSHAKE;
    wbuf_append(c, p, n);
    flush(c);
    return;
  }
  char req[1024];
  int n = g_baseline ? (g_group ? snprintf(req, sizeof req, "GET /?u=%s&g=g%d HTTP/1.1\r\n", c->addr, c->gid)
                                 : snprintf(req, sizeof req, "GET /?u=%s HTTP/1.1\r\n", c->addr))
                     : snprintf(req, sizeof req, "GET /?token=%s HTTP/1.1\r\n", c->token);
  n += snprintf(req + n, sizeof req - (size_t)n,
                "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                g_host, g_ports[c->port_at]);
  c->state = ST_HANDSHAKE;
  wbuf_append(c, req, (size_t)n);
  flush(c);
}

static void conn_start(struct conn *c) {
  c->fd = socket(g_sa[c->port_at].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->state = ST_CONNECTING;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  c->polling_out = 1;
  if (epoll_ctl(c->th->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
  if (connect(c->fd, (struct sockaddr *)&g_sa[c->port_at], g_salen[c->port_at]) < 0 && errno != EINPROGRESS) die("connect: %s", strerror(errno));
}

/* --- the loop ------------------------------------------------------------- */

/* Sends what each connection may send now. In rate mode returns when the next message falls due (ns), else 0. */
static uint64_t fill(struct thread *th, uint64_t t) {
  uint64_t next = 0;
  for (int i = 0; i < th->nconns; i++) {
    struct conn *c = th->conns[i];
    if (c->state != ST_READY || c->peer->state != ST_READY) continue;
    /* Rate mode: a connection with nothing due costs a compare. At 1,000 connections this loop runs for
     * every message sent, and working out each connection's schedule again made it the generator's main cost. */
    if (g_rate > 0 && c->due_ns > t) {
      if (!next || c->due_ns < next) next = c->due_ns;
      continue;
    }
    int64_t room = window_room(c);
    if (g_rate > 0) {
      /* Message k falls due at phase + k / rate and is stamped with that time, however late it goes out. The
       * phases spread the connections over one period, so together they send evenly rather than in bursts. */
      uint64_t due = t < c->phase_ns ? 0 : (uint64_t)((double)(t - c->phase_ns) / 1e9 * c->rate_per_conn) + 1;
      while (c->sent < due && room > 0 && wbuf_pending(c) < WBUF_HIGH) {
        uint64_t sched = c->phase_ns + (uint64_t)((double)c->sent / c->rate_per_conn * 1e9);
        if (t - sched > 1000000 && in_window(t)) th->late++;
        send_message(c, sched);
        room--;
      }
      c->due_ns = c->phase_ns + (uint64_t)((double)c->sent / c->rate_per_conn * 1e9);
      /* A connection held back by its window or its write buffer wakes us with an event, not a timer. */
      if (room > 0 && wbuf_pending(c) < WBUF_HIGH && (!next || c->due_ns < next)) next = c->due_ns;
    } else {
      while (room-- > 0 && wbuf_pending(c) < WBUF_HIGH) send_message(c, t);
    }
  }
  return next;
}

/* Waits for events, at most until `until` (ns; 0: 1 ms), with nanosecond precision where the kernel has epoll_pwait2. */
static int wait_events(struct thread *th, struct epoll_event *evs, uint64_t until) {
  static int no_pwait2;
  uint64_t now = now_ns();
  uint64_t wait = until > now ? until - now : 0;
  if (!until || wait > 1000000) wait = 1000000;
  if (!no_pwait2) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)wait};
    int n = epoll_pwait2(th->epfd, evs, MAX_EVENTS, &ts, NULL);
    if (n >= 0 || errno != ENOSYS) return n;
    no_pwait2 = 1;
  }
  return epoll_wait(th->epfd, evs, MAX_EVENTS, wait ? (int)((wait + 999999) / 1000000) : 0);
}

static void *thread_main(void *arg) {
  struct thread *th = arg;
  struct epoll_event evs[MAX_EVENTS];
  /* At most 256 connections of this thread connect at a time (the listen backlog is finite). */
  int started = 0;
  while (started < th->nconns && started < 256) conn_start(th->conns[started++]);

  int reported_ready = 0, built = 0, measuring = 0, ended = 0;
  uint64_t next_due = 0;
  uint64_t sent_at_meas = 0;
  double cpu_at_meas = 0, user_at_meas = 0, user_now = 0;
  for (;;) {
    int n = wait_events(th, evs, next_due);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    uint64_t t = now_ns();
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c->state == ST_DEAD) continue;
      if (c->state == ST_CONNECTING) {
        if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        continue;
      }
      /* Each connection's frames are timed when it is read, not when the wait returned: with many connections
       * ready at once the last ones are read a while later, and the wait's time would shorten their latency. */
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c, n > 1 ? now_ns() : t);
      if (c->state != ST_DEAD && (evs[i].events & EPOLLOUT)) flush(c);
    }
    while (started < th->nconns && started - th->ready - (int)th->closed < 256) conn_start(th->conns[started++]);
    if (!reported_ready && th->ready == th->nconns) {
      reported_ready = 1;
      atomic_fetch_add(&g_nready, 1);
    }
    if (th->closed && !atomic_load(&g_go)) {
      atomic_store(&g_failed, 1);
      break;
    }
    if (atomic_load(&g_failed)) break;
    if (atomic_load(&g_go)) {
      if (!built) {
        for (int i = 0; i < th->nconns; i++) build_frames(th->conns[i]);
        built = 1;
      }
      if (!measuring && t >= g_meas_ns) {
        measuring = 1;
        cpu_at_meas = thread_cpu_s(&user_at_meas);
        for (int i = 0; i < th->nconns; i++) sent_at_meas += th->conns[i]->sent;
      }
      if (t >= g_end_ns && !ended) {
        ended = 1;
        th->cpu_s = thread_cpu_s(&user_now) - cpu_at_meas;
        th->user_s = user_now - user_at_meas;
        uint64_t sent = 0;
        for (int i = 0; i < th->nconns; i++) sent += th->conns[i]->sent;
        th->sent_in_window = sent - sent_at_meas;
        next_due = 0;
      }
      if (t >= g_end_ns + (uint64_t)(g_linger * 1e9)) break;
      /* Stamped (window mode) and checked for lateness (rate mode) with the time they go out, after the events. */
      if (!g_idle && !ended) next_due = fill(th, now_ns());
    }
    for (int i = 0; i < th->nconns; i++) {
      struct conn *c = th->conns[i];
      if (c->state != ST_DEAD && c->state != ST_CONNECTING && wbuf_pending(c) && !c->polling_out) flush(c);
    }
  }
  if (!ended) { /* gave up before the end */
    th->cpu_s = thread_cpu_s(&user_now) - cpu_at_meas;
    th->user_s = user_now - user_at_meas;
  }
  return NULL;
}

/* --- set-up and report ------------------------------------------------------ */

static char **read_tokens(const char *file, int need) {
  FILE *f = fopen(file, "r");
  if (!f) die("cannot open token file %s: %s", file, strerror(errno));
  char **tok = xmalloc(sizeof(char *) * (size_t)need);
  char line[1024];
  int n = 0;
  while (n < need && fgets(line, sizeof line, f)) {
    size_t l = strcspn(line, "\r\n");
    line[l] = 0;
    if (!l) continue;
    tok[n++] = strdup(line);
  }
  fclose(f);
  if (n < need) die("%s has %d tokens; %d connections need one each", file, n, need);
  return tok;
}

static double pct_ms(const uint32_t *h, uint64_t total, double q) {
  if (!total) return 0;
  uint64_t rank = (uint64_t)(q * (double)total);
  if (rank >= total) rank = total - 1;
  uint64_t acc = 0;
  for (size_t i = 0; i < LAT_BUCKETS; i++) {
    acc += h[i];
    if (acc > rank) return i < LAT_FINE ? (double)(i + 0.5) / 1000.0 : (double)LAT_FINE / 1000.0 + (double)(i - LAT_FINE) + 0.5;
  }
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen --port P --conns N --seconds S [--host H] [--tokens FILE]\n"
          "               [--window W | --rate MSG_PER_S] [--size BYTES] [--warmup S] [--threads T]\n"
          "               [--baseline | --mqtt] [--status-router] [--idle] [--ready-timeout S]\n"
          "               [--ports P1,P2,... [--spread cross|same]] [--linger S]\n");
  exit(2);
}

int main(int argc, char **argv) {
  g_t0 = 0;
  g_t0 = now_ns();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && (i++, 1))
    if (OPT("--host")) g_host = v;
    else if (OPT("--port")) g_port = atoi(v);
    else if (OPT("--ports")) {
      g_nports = 0;
      for (const char *q = v; *q && g_nports < MAX_PORTS; q = strchr(q, ',') ? strchr(q, ',') + 1 : q + strlen(q)) g_ports[g_nports++] = atoi(q);
    } else if (OPT("--spread")) {
      if (strcmp(v, "same") == 0) g_spread_same = 1;
      else if (strcmp(v, "cross") != 0) usage();
    }
    else if (OPT("--tokens")) g_tokens_file = v;
    else if (OPT("--conns")) g_nconns = atoi(v);
    else if (OPT("--seconds")) g_seconds = atof(v);
    else if (OPT("--warmup")) g_warmup = atof(v);
    else if (OPT("--window")) g_window = atoi(v);
    else if (OPT("--rate")) g_rate = atof(v);
    else if (OPT("--size")) g_size = atoi(v);
    else if (OPT("--threads")) g_threads = atoi(v);
    else if (OPT("--ready-timeout")) g_ready_timeout = atof(v);
    else if (OPT("--linger")) g_linger = atof(v);
    else if (strcmp(a, "--baseline") == 0) g_baseline = 1;
    else if (strcmp(a, "--status-router") == 0) g_status_router = 1;
    else if (strcmp(a, "--mqtt") == 0) g_mqtt = 1;
    else if (strcmp(a, "--idle") == 0) g_idle = 1;
    else if (OPT("--group")) g_group = atoi(v);
    else if (OPT("--gid-base")) g_gid_base = atoi(v);
    else usage();
#undef OPT
  }
  if (!g_nports && g_port > 0) g_ports[g_nports++] = g_port;
  g_port = g_ports[0];
  for (int k = 0; k < g_nports; k++)
    if (g_ports[k] <= 0) usage();
  if (g_nports == 0 || g_nconns < 2 || g_nconns % 2 || g_seconds <= 0 || g_threads < 1 || g_size < 0) usage();
  if (g_mqtt && g_baseline) usage();
  if (g_status_router && (!(g_baseline || g_mqtt) || g_group)) die("--status-router needs --baseline or --mqtt, and no --group");
  if (!g_baseline && !g_mqtt && !g_tokens_file) die("--tokens FILE is needed (or --baseline)");
  if (g_group && (g_group < 2 || g_nconns % g_group || g_mqtt)) die("--group N needs N >= 2 dividing --conns, and no --mqtt");
  if (g_window < 0) g_window = g_rate > 0 ? 4096 : 8;
  if (g_window < 1) usage();
  if (g_threads > g_nconns / 2) g_threads = g_nconns / 2;

  for (int k = 0; k < g_nports; k++) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", g_ports[k]);
    int gai = getaddrinfo(g_host, port, &hints, &ai);
    if (gai) die("%s: %s", g_host, gai_strerror(gai));
    memcpy(&g_sa[k], ai->ai_addr, ai->ai_addrlen);
    g_salen[k] = ai->ai_addrlen;
    freeaddrinfo(ai);
  }

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (rlim_t)g_nconns + 16 > rl.rlim_cur)
    die("%d connections need more open files than the limit (%llu); raise it with ulimit -n", g_nconns, (unsigned long long)rl.rlim_cur);

  char **tokens = g_baseline || g_mqtt ? NULL : read_tokens(g_tokens_file, g_nconns);
  struct conn *conns = calloc((size_t)g_nconns, sizeof *conns);
  struct group *groups = g_group ? calloc((size_t)(g_nconns / g_group), sizeof *groups) : NULL;
  struct thread *ths = calloc((size_t)g_threads, sizeof *ths);
  if (!conns || !ths) die("out of memory");
  for (int t = 0; t < g_threads; t++) {
    ths[t].id = t;
    ths[t].epfd = epoll_create1(EPOLL_CLOEXEC);
    ths[t].conns = xmalloc(sizeof(struct conn *) * (size_t)g_nconns);
    ths[t].lat = calloc(LAT_BUCKETS, sizeof(uint32_t));
    if (!ths[t].lat) die("out of memory");
  }
  srand((unsigned)getpid());
  for (int i = 0; i < g_nconns; i++) {
    struct conn *c = &conns[i];
    struct thread *th = &ths[(i / 2) % g_threads]; /* a pair shares a thread */
    c->idx = i;
    c->port_at = (g_spread_same ? i / 2 : i) % g_nports;
    c->th = th;
    c->peer = &conns[i ^ 1];
    if (g_group) {
      c->gid = g_gid_base + i / g_group;
      c->grp = &groups[i / g_group];
    }
    c->token = tokens ? tokens[i] : NULL;
    if (g_baseline || g_mqtt) snprintf(c->addr, sizeof c->addr, "c%d", i);
    for (int k = 0; k < 4; k++) c->mask[k] = g_mqtt ? 0 : (unsigned char)(rand() | 1);
    c->rcap = g_idle ? 4096 : RBUF_INITIAL; /* buffers grow when a frame needs it */
    c->rbuf = xmalloc(c->rcap);
    c->wcap = g_idle ? 4096 : 64 * 1024;
    c->wbuf = xmalloc(c->wcap);
    c->next_id = FIRST_ID;
    c->rate_per_conn = g_rate / g_nconns;
    th->conns[th->nconns++] = c;
  }

  for (int t = 0; t < g_threads; t++) pthread_create(&ths[t].tid, NULL, thread_main, &ths[t]);

  /* Wait for every connection to log in (--ready-timeout, 10 s by default). */
  uint64_t deadline = now_ns() + (uint64_t)(g_ready_timeout * 1e9);
  while (atomic_load(&g_nready) < g_threads && !atomic_load(&g_failed) && now_ns() < deadline) usleep(1000);
  int ok = atomic_load(&g_nready) == g_threads && !atomic_load(&g_failed);
  if (!ok) atomic_store(&g_failed, 1);
  g_start_ns = now_ns();
  for (int i = 0; i < g_nconns; i++) conns[i].phase_ns = g_rate > 0 ? g_start_ns + (uint64_t)((double)i / g_rate * 1e9) : g_start_ns;
  g_meas_ns = g_start_ns + (uint64_t)(g_warmup * 1e9);
  g_end_ns = g_meas_ns + (uint64_t)(g_seconds * 1e9);
  atomic_store(&g_go, 1);
  if (ok) {
    /* Markers so a caller can sample the server's CPU over exactly the measured window. */
    sleep_until(g_meas_ns);
    printf("MEASURE start\n");
    fflush(stdout);
    sleep_until(g_end_ns);
    printf("MEASURE end\n");
    fflush(stdout);
  }
  for (int t = 0; t < g_threads; t++) pthread_join(ths[t].tid, NULL);

  uint64_t msgs = 0, sent = 0, errors = 0, closed = 0, late = 0, lat_max = 0, delivered = 0, sent_ok = 0;
  double cpu = 0, user = 0;
  const char *first_error = "";
  for (int t = 0; t < g_threads; t++) {
    struct thread *th = &ths[t];
    msgs += th->msgs_in_window;
    sent += th->sent_in_window;
    errors += th->errors;
    closed += th->closed;
    late += th->late;
    cpu += th->cpu_s;
    user += th->user_s;
    if (th->lat_max_ns > lat_max) lat_max = th->lat_max_ns;
    if (!first_error[0] && th->first_error[0]) first_error = th->first_error;
    if (t > 0)
      for (size_t i = 0; i < LAT_BUCKETS; i++) ths[0].lat[i] += th->lat[i];
  }
  for (int i = 0; i < g_nconns; i++) {
    delivered += conns[i].delivered;
    sent_ok += conns[i].sent_ok;
  }
  if (!ok) {
    int ready = 0;
    for (int t = 0; t < g_threads; t++) ready += ths[t].ready;
    die("only %d of %d connections logged in%s%s", ready, g_nconns, first_error[0] ? "; " : "", first_error);
  }
  double p50 = pct_ms(ths[0].lat, msgs, 0.50), p99 = pct_ms(ths[0].lat, msgs, 0.99), p999 = pct_ms(ths[0].lat, msgs, 0.999);
  double rate = (double)msgs / g_seconds;
  double cpu_pct = 100.0 * cpu / g_seconds, user_pct = 100.0 * user / g_seconds;
  fprintf(stderr,
          "loadgen: %s %d conns, %s %g, %d-byte data, %.1f s (+%.1f s warm-up): %.0f msg/s delivered; latency p50 %.3f ms, p99 %.3f ms, "
          "p99.9 %.3f ms, max %.3f ms; generator CPU %.1f%% of one core (user %.1f%%)\n",
          g_mqtt ? (g_status_router ? "mqtt + status publish," : "mqtt,") : g_status_router ? "status router," : g_baseline ? "plain router," : "switchboard,", g_nconns, g_rate > 0 ? "rate" : "window", g_rate > 0 ? g_rate : g_window, g_size,
          g_seconds, g_warmup, rate, p50, p99, p999, lat_max / 1e6, cpu_pct, user_pct);
  if (errors || closed) fprintf(stderr, "loadgen: %llu error frames, %llu connections lost; first: %s\n", (unsigned long long)errors, (unsigned long long)closed, first_error);
  printf("RESULT {\"msgs\":%llu,\"sent\":%llu,\"msgPerSec\":%.1f,\"p50Ms\":%.3f,\"p99Ms\":%.3f,\"p999Ms\":%.3f,\"maxMs\":%.3f,"
         "\"cpuPct\":%.1f,\"cpuUserPct\":%.1f,\"errors\":%llu,\"closed\":%llu,\"late\":%llu,\"sentStatuses\":%llu,\"deliveredStatuses\":%llu}\n",
         (unsigned long long)msgs, (unsigned long long)sent, rate, p50, p99, p999, lat_max / 1e6, cpu_pct, user_pct, (unsigned long long)errors,
         (unsigned long long)closed, (unsigned long long)late, (unsigned long long)sent_ok, (unsigned long long)delivered);
  fflush(stdout);
  return errors || closed ? 3 : 0;
}
