/* A test module for the "defer" extension (include/switchboard.h): it decides
 * messages later, from its own threads, as the payload text says.
 *
 *   later:MS:TEXT  defer; after MS ms a thread resolves PASS with the payload
 *                  "PREFIX" "TEXT-UPPER-CASED [TAG after MS ms]"; a failed resolve
 *                  (after a timeout or a close) is logged as
 *                  "TAG resolve of 'TEXT' returned RC"
 *   drop:MS        defer; after MS ms a thread resolves CONSUMED
 *   sync:TEXT      defer, and resolve PASS with "TEXT-UPPER-CASED" inside
 *                  on_message itself, before returning
 *   never          defer and never resolve (for timeouts)
 *   twice          defer; a thread resolves PASS (no new payload), then
 *                  CONSUMED, and logs "TAG twice rc1=.. rc2=.."
 *   nohandle       return SWITCHBOARD_RESULT_DEFER without a handle
 *   takeback       take a handle, then return PASS; a thread resolves it
 *                  20 ms later and logs "TAG takeback rc=.."
 *   probe          take a handle twice (logs "TAG probe same handle: yes|no");
 *                  then a thread calls switchboard_defer while this
 *                  on_message still runs (it waits for that call) and logs
 *                  "TAG probe off-thread defer: null|handle"; the thread then
 *                  resolves PASS with "PROBED" and logs "TAG probe rc=RC"
 *   bad:MAX        defer; a thread makes invalid calls (verdict 7, a MAX+1
 *                  byte payload, NULL with a length) and then a valid one
 *                  with MAX bytes of 'x', and logs all four results
 *   send:TO        mesibo_message to TO (from the message's recipient, id +
 *                  1000) with "later:10:from-module", then PASS
 *   anything else  PASS at once
 *
 * Config items:
 *   tag = NAME     used in log lines and payloads (default: the instance name)
 *   only = a,b     act only on these commands (later, drop, ...); pass the rest
 *   prefix = STR   put STR before the replacement of later: (e.g. "later:5:"
 *                  makes the next instance defer the message again)
 *   linger = 1     do not wait for this module's threads in on_cleanup, so a
 *                  thread may outlive the core. Such a thread's results go to
 *                  the file `report = PATH` as "resolve=RC message=RC" (the
 *                  module pointer is stale then, so mesibo_log cannot be used).
 *   idle_probe = 1 at init, start a thread that calls switchboard_defer while
 *                  no on_message runs and logs
 *                  "TAG idle off-thread defer: null|handle"
 *   log = 1        log "TAG saw TEXT" for every message
 *
 * At init it logs "TAG defer supported: yes|no" and
 * "TAG unknown extension supported: yes|no".
 *
 * Threads and unloading: mesibo_util_create_thread makes detached threads,
 * and a detached thread cannot tell anyone that it has left this library's
 * code (after it signals "done" it still returns through it). The server
 * unloads the library after on_cleanup, so the first init pins the library
 * for the life of the process (one dlopen reference, never dropped), and
 * on_cleanup waits for the threads' work to be over (unless linger).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr */
#endif
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "module.h"
#include "switchboard.h"

typedef struct {
  char tag[64];
  char only[256]; /* ",a,b," or empty for all */
  char report[1024];
  char prefix[64];
  int linger;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int probes;  /* switchboard_defer calls made by probe threads */
  int threads; /* running threads */
  int refs;    /* 1 for the instance + 1 per running thread */
} ctx_t;

typedef enum { J_LATER, J_DROP, J_TWICE, J_TAKEBACK, J_PROBE, J_IDLE_PROBE, J_BAD } kind_t;

typedef struct {
  ctx_t *c;
  mesibo_module_t *m;
  switchboard_deferred_t *h;
  kind_t kind;
  long ms;
  long arg; /* bad: MAX */
  char *text; /* owned copy; NUL-terminated */
  size_t len;
} job_t;

/* Any object in this library, to find its file for dladdr. */
static const char pin_marker = 0;
/* Set once the library holds a reference to itself (see the top comment). */
static int pinned;

static void sleep_ms(long ms) {
  struct timespec ts;
  if (ms <= 0) return;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void ctx_release(ctx_t *c, int thread_done) {
  int last;
  pthread_mutex_lock(&c->mu);
  if (thread_done) c->threads--;
  last = --c->refs == 0;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  if (last) {
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
  }
}

/* The module pointer may be stale here (linger: the core has closed), so this
 * thread reports to a file instead of mesibo_log. */
static void report_after_close(job_t *j, mesibo_int_t rc) {
  mesibo_message_params_t q;
  mesibo_int_t mrc;
  FILE *f;
  memset(&q, 0, sizeof q);
  q.to = (char *)"nobody";
  mrc = mesibo_message(j->m, &q, "x", 1);
  if (!j->c->report[0]) return;
  f = fopen(j->c->report, "w");
  if (!f) return;
  fprintf(f, "resolve=%ld message=%ld\n", (long)rc, (long)mrc);
  fclose(f);
}

static void *worker(void *arg) {
  job_t *j = (job_t *)arg;
  ctx_t *c = j->c;
  mesibo_module_t *m = j->m;
  mesibo_int_t rc, rc2;
  sleep_ms(j->ms);
  switch (j->kind) {
    case J_LATER: {
      /* PREFIX, TEXT upper-cased, then " [TAG after MS ms]". */
      size_t pl = strlen(c->prefix), cap = pl + j->len + strlen(c->tag) + 48, i;
      char *out = (char *)malloc(cap);
      int n;
      memcpy(out, c->prefix, pl);
      for (i = 0; i < j->len; i++) out[pl + i] = (char)toupper((unsigned char)j->text[i]);
      n = snprintf(out + pl + j->len, cap - pl - j->len, " [%s after %ld ms]", c->tag, j->ms);
      rc = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_PASS, out, (mesibo_uint_t)(pl + j->len + (size_t)n));
      free(out);
      if (c->linger)
        report_after_close(j, rc);
      else if (rc != MESIBO_RESULT_OK)
        mesibo_log(m, 0, "%s resolve of '%s' returned %ld", c->tag, j->text, (long)rc);
      break;
    }
    case J_DROP:
      rc = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_CONSUMED, NULL, 0);
      if (rc != MESIBO_RESULT_OK) mesibo_log(m, 0, "%s drop resolve returned %ld", c->tag, (long)rc);
      break;
    case J_TWICE:
      rc = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_PASS, NULL, 0);
      rc2 = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_CONSUMED, NULL, 0);
      mesibo_log(m, 0, "%s twice rc1=%ld rc2=%ld", c->tag, (long)rc, (long)rc2);
      break;
    case J_TAKEBACK:
      rc = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_PASS, "taken back", 10);
      mesibo_log(m, 0, "%s takeback rc=%ld", c->tag, (long)rc);
      break;
    case J_PROBE: {
      /* This runs while on_message waits for it (see d_on_message). */
      switchboard_deferred_t *other = switchboard_defer(m, NULL);
      mesibo_log(m, 0, "%s probe off-thread defer: %s", c->tag, other ? "handle" : "null");
      pthread_mutex_lock(&c->mu);
      c->probes++;
      pthread_cond_broadcast(&c->cv);
      pthread_mutex_unlock(&c->mu);
      sleep_ms(5);
      rc = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_PASS, "PROBED", 6);
      mesibo_log(m, 0, "%s probe rc=%ld", c->tag, (long)rc);
      break;
    }
    case J_IDLE_PROBE:
      mesibo_log(m, 0, "%s idle off-thread defer: %s", c->tag, switchboard_defer(m, NULL) ? "handle" : "null");
      break;
    case J_BAD: {
      size_t max = (size_t)j->arg;
      char *big = (char *)malloc(max + 1);
      mesibo_int_t r_verdict, r_big, r_null, r_ok;
      memset(big, 'x', max + 1);
      r_verdict = switchboard_resolve(m, j->h, 7, NULL, 0);
      r_big = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_PASS, big, (mesibo_uint_t)(max + 1));
      r_null = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_PASS, NULL, 5);
      r_ok = switchboard_resolve(m, j->h, SWITCHBOARD_RESULT_PASS, big, (mesibo_uint_t)max);
      free(big);
      mesibo_log(m, 0, "%s bad verdict=%ld big=%ld null=%ld ok=%ld", c->tag, (long)r_verdict, (long)r_big,
                 (long)r_null, (long)r_ok);
      break;
    }
  }
  free(j->text);
  free(j);
  ctx_release(c, 1);
  return NULL;
}

static void start(mesibo_module_t *m, switchboard_deferred_t *h, kind_t kind, long ms, long arg, const char *text,
                  size_t len) {
  ctx_t *c = (ctx_t *)m->ctx;
  job_t *j = (job_t *)calloc(1, sizeof *j);
  j->c = c;
  j->m = m;
  j->h = h;
  j->kind = kind;
  j->ms = ms;
  j->arg = arg;
  j->text = (char *)malloc(len + 1);
  memcpy(j->text, text, len);
  j->text[len] = '\0';
  j->len = len;
  pthread_mutex_lock(&c->mu);
  c->threads++;
  c->refs++;
  pthread_mutex_unlock(&c->mu);
  mesibo_util_create_thread(worker, j, 256 * 1024, "sb-deferrer");
}

static int acts_on(ctx_t *c, const char *cmd, size_t n) {
  char want[64];
  if (!c->only[0]) return 1;
  if (n + 3 > sizeof want) return 0;
  want[0] = ',';
  memcpy(want + 1, cmd, n);
  want[n + 1] = ',';
  want[n + 2] = '\0';
  return strstr(c->only, want) != NULL;
}

static mesibo_int_t d_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *msg, mesibo_uint_t len) {
  ctx_t *c = (ctx_t *)m->ctx;
  /* The payload is only valid during this call: work on a copy. */
  char *s = (char *)malloc(len + 1);
  const char *colon;
  size_t cmdlen;
  mesibo_int_t r = MESIBO_RESULT_PASS;
  switchboard_deferred_t *h;
  memcpy(s, msg, len);
  s[len] = '\0';
  mesibo_log(m, 1, "%s saw %s", c->tag, s);
  colon = strchr(s, ':');
  cmdlen = colon ? (size_t)(colon - s) : strlen(s);
  if (!acts_on(c, s, cmdlen)) goto done;

  if (strncmp(s, "later:", 6) == 0) {
    char *end = NULL;
    long ms = strtol(s + 6, &end, 10);
    if (*end != ':') goto done;
    h = switchboard_defer(m, p);
    if (!h) goto done;
    start(m, h, J_LATER, ms, 0, end + 1, strlen(end + 1));
    r = SWITCHBOARD_RESULT_DEFER;
  } else if (strncmp(s, "drop:", 5) == 0) {
    h = switchboard_defer(m, p);
    if (!h) goto done;
    start(m, h, J_DROP, strtol(s + 5, NULL, 10), 0, "", 0);
    r = SWITCHBOARD_RESULT_DEFER;
  } else if (strncmp(s, "sync:", 5) == 0) {
    size_t i, n = strlen(s + 5);
    mesibo_int_t rc;
    h = switchboard_defer(m, p);
    if (!h) goto done;
    for (i = 0; i < n; i++) s[5 + i] = (char)toupper((unsigned char)s[5 + i]);
    rc = switchboard_resolve(m, h, SWITCHBOARD_RESULT_PASS, s + 5, (mesibo_uint_t)n);
    if (rc != MESIBO_RESULT_OK) mesibo_log(m, 0, "%s sync resolve returned %ld", c->tag, (long)rc);
    r = SWITCHBOARD_RESULT_DEFER;
  } else if (strcmp(s, "never") == 0) {
    r = switchboard_defer(m, p) ? SWITCHBOARD_RESULT_DEFER : MESIBO_RESULT_PASS;
  } else if (strcmp(s, "twice") == 0) {
    h = switchboard_defer(m, p);
    if (!h) goto done;
    start(m, h, J_TWICE, 5, 0, "", 0);
    r = SWITCHBOARD_RESULT_DEFER;
  } else if (strcmp(s, "nohandle") == 0) {
    r = SWITCHBOARD_RESULT_DEFER;
  } else if (strcmp(s, "takeback") == 0) {
    h = switchboard_defer(m, p);
    if (h) start(m, h, J_TAKEBACK, 20, 0, "", 0);
    r = MESIBO_RESULT_PASS;
  } else if (strcmp(s, "probe") == 0) {
    switchboard_deferred_t *h2;
    h = switchboard_defer(m, p);
    h2 = switchboard_defer(m, p);
    mesibo_log(m, 0, "%s probe same handle: %s", c->tag, h && h == h2 ? "yes" : "no");
    if (!h) goto done;
    {
      /* Hold this on_message until the thread has called switchboard_defer,
       * so that call happens on another thread *during* on_message. */
      struct timespec until;
      int before;
      pthread_mutex_lock(&c->mu);
      before = c->probes;
      pthread_mutex_unlock(&c->mu);
      start(m, h, J_PROBE, 0, 0, "", 0);
      clock_gettime(CLOCK_REALTIME, &until);
      until.tv_sec += 5;
      pthread_mutex_lock(&c->mu);
      while (c->probes == before)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT) break;
      pthread_mutex_unlock(&c->mu);
    }
    r = SWITCHBOARD_RESULT_DEFER;
  } else if (strncmp(s, "bad:", 4) == 0) {
    h = switchboard_defer(m, p);
    if (!h) goto done;
    start(m, h, J_BAD, 5, strtol(s + 4, NULL, 10), "", 0);
    r = SWITCHBOARD_RESULT_DEFER;
  } else if (strncmp(s, "send:", 5) == 0) {
    static const char text[] = "later:10:from-module";
    mesibo_message_params_t q;
    memset(&q, 0, sizeof q);
    q.id = p->id + 1000;
    q.refid = p->id;
    q.from = p->to;
    q.to = s + 5;
    if (mesibo_message(m, &q, text, sizeof text - 1) != MESIBO_RESULT_OK) mesibo_log(m, 0, "%s send failed", c->tag);
  }
done:
  free(s);
  return r;
}

static mesibo_int_t d_on_cleanup(mesibo_module_t *m) {
  ctx_t *c = (ctx_t *)m->ctx;
  m->ctx = NULL;
  if (!c) return MESIBO_RESULT_OK;
  if (!c->linger) {
    /* Nothing of this instance may be decided after on_cleanup: wait
     * (bounded) for the threads' work to be over. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&c->mu);
    while (c->threads > 0)
      if (pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT) break;
    pthread_mutex_unlock(&c->mu);
  }
  ctx_release(c, 0);
  return MESIBO_RESULT_OK;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_deferrer_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
  ctx_t *c;
  const char *v;
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  c = (ctx_t *)calloc(1, sizeof *c);
  if (!c) return MESIBO_RESULT_FAIL;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->refs = 1;
  v = mesibo_util_getconfig(m, "tag");
  snprintf(c->tag, sizeof c->tag, "%s", v ? v : m->name);
  v = mesibo_util_getconfig(m, "only");
  if (v) snprintf(c->only, sizeof c->only, ",%s,", v);
  v = mesibo_util_getconfig(m, "prefix");
  if (v) snprintf(c->prefix, sizeof c->prefix, "%s", v);
  v = mesibo_util_getconfig(m, "report");
  if (v) snprintf(c->report, sizeof c->report, "%s", v);
  v = mesibo_util_getconfig(m, "linger");
  c->linger = v && strcmp(v, "1") == 0;
  if (!__atomic_exchange_n(&pinned, 1, __ATOMIC_ACQ_REL)) {
    Dl_info di;
    if (!dladdr(&pin_marker, &di) || !dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD)) {
      __atomic_store_n(&pinned, 0, __ATOMIC_RELEASE);
      mesibo_log(m, 0, "%s cannot pin its library", c->tag);
      ctx_release(c, 0);
      return MESIBO_RESULT_FAIL;
    }
  }
  m->ctx = c;
  v = mesibo_util_getconfig(m, "idle_probe");
  if (v && strcmp(v, "1") == 0) start(m, NULL, J_IDLE_PROBE, 0, 0, "", 0);
  m->description = "decides messages later, from threads (switchboard.h defer)";
  m->on_message = d_on_message;
  m->on_cleanup = d_on_cleanup;
  mesibo_log(m, 0, "%s defer supported: %s", c->tag, switchboard_supports(m, SWITCHBOARD_EXT_DEFER) ? "yes" : "no");
  mesibo_log(m, 0, "%s unknown extension supported: %s", c->tag, switchboard_supports(m, "no-such-extension") ? "yes" : "no");
  return MESIBO_RESULT_OK;
}
