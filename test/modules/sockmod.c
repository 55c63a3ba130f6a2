/* A test module that drives the client sockets (mesibo_util_socket_*) from
 * messages and logs every callback, so tests can check order and content.
 * The message's destination is the command, its payload the arguments:
 *   open       NAME URL [proto=P] [verify=0|1] [keepalive=1]
 *   send       NAME DATA...        (DATA is the rest of the payload)
 *   sendhex    NAME HEX            (binary data)
 *   sendhandle HANDLE DATA...      (write to a raw handle number)
 *   close      NAME
 *   thread     NAME COUNT          (a module thread writes "line I\n" COUNT times)
 *   threadopen NAME URL            (a module thread connects, writes and later closes)
 *   many       PREFIX COUNT URL    (COUNT sockets; each writes "hello NAME" on connect)
 *   closeall   PREFIX
 * Log lines: "NAME open ret=H", "NAME connect handle=H", "NAME data len=N
 * text=...", "NAME write", "NAME close type=T", "NAME send ret=R". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

#define MAX_SOCKS 1024

typedef struct sock_s {
  mesibo_module_t *m;  /* NULL once the module is cleaned up: log nothing */
  char name[48];
  mesibo_int_t handle;
  int closed;
} sock_t;

typedef struct {
  sock_t *socks[MAX_SOCKS];
  int count;
} ctx_t;

typedef struct {
  mesibo_module_t *m;
  sock_t *s;
  char url[256];
  int count;
} job_t;

static void log_data(sock_t *s, const char *data, mesibo_int_t len) {
  char text[700];
  size_t at = 0;
  mesibo_int_t i;
  for (i = 0; i < len && at + 8 < sizeof text; i++) {
    unsigned char c = (unsigned char)data[i];
    if (c >= 0x20 && c < 0x7f && c != '\\') text[at++] = (char)c;
    else at += (size_t)snprintf(text + at, sizeof text - at, "\\x%02x", c);
  }
  text[at] = '\0';
  mesibo_log(s->m, 0, "%s data len=%ld text=%s%s", s->name, (long)len, text, i < len ? "..." : "");
}

static void on_connect(void *cbdata, mesibo_int_t asock, mesibo_int_t fd) {
  sock_t *s = (sock_t *)cbdata;
  if (!s->m) return;
  mesibo_log(s->m, 0, "%s connect handle=%ld fdok=%d", s->name, (long)asock, fd >= 0);
  if (strncmp(s->name, "many", 4) == 0) {
    char hello[80];
    int n = snprintf(hello, sizeof hello, "hello %s", s->name);
    mesibo_util_socket_write(asock, hello, n);
  }
}

static mesibo_int_t on_data(void *cbdata, const char *data, mesibo_int_t len) {
  sock_t *s = (sock_t *)cbdata;
  if (s->m) log_data(s, data, len);
  return MESIBO_RESULT_OK;
}

static void on_write(void *cbdata) {
  sock_t *s = (sock_t *)cbdata;
  if (s->m) mesibo_log(s->m, 0, "%s write", s->name);
}

static void on_close(void *cbdata, mesibo_int_t type) {
  sock_t *s = (sock_t *)cbdata;
  if (!s->m) {
    free(s); /* orphaned by on_cleanup: this is its last call */
    return;
  }
  s->closed = 1;
  mesibo_log(s->m, 0, "%s close type=%ld", s->name, (long)type);
}

static sock_t *new_sock(mesibo_module_t *m, const char *name) {
  ctx_t *c = (ctx_t *)m->ctx;
  sock_t *s;
  if (c->count == MAX_SOCKS) return NULL;
  s = (sock_t *)calloc(1, sizeof *s);
  s->m = m;
  snprintf(s->name, sizeof s->name, "%s", name);
  c->socks[c->count++] = s;
  return s;
}

/* The newest socket called NAME. */
static sock_t *find_sock(mesibo_module_t *m, const char *name) {
  ctx_t *c = (ctx_t *)m->ctx;
  int i;
  for (i = c->count - 1; i >= 0; i--)
    if (strcmp(c->socks[i]->name, name) == 0) return c->socks[i];
  return NULL;
}

static mesibo_int_t connect_sock(sock_t *s, char *url, char *opts) {
  mesibo_socket_t req;
  char *tok;
  memset(&req, 0, sizeof req);
  req.url = url;
  req.verify_host = 1;
  req.on_connect = on_connect;
  req.on_data = on_data;
  req.on_write = on_write;
  req.on_close = on_close;
  for (tok = opts ? strtok(opts, " ") : NULL; tok; tok = strtok(NULL, " ")) {
    if (strncmp(tok, "proto=", 6) == 0) req.ws_protocol = tok + 6;
    else if (strncmp(tok, "verify=", 7) == 0) req.verify_host = atoi(tok + 7);
    else if (strncmp(tok, "keepalive=", 10) == 0) req.keepalive = atoi(tok + 10);
  }
  return mesibo_util_socket_connect(&req, s);
}

static void *writer(void *arg) {
  job_t *j = (job_t *)arg;
  int i, fails = 0;
  char line[32];
  for (i = 0; i < j->count; i++) {
    int n = snprintf(line, sizeof line, "line %d\n", i);
    if (mesibo_util_socket_write(__atomic_load_n(&j->s->handle, __ATOMIC_ACQUIRE), line, n) != 0) fails++;
  }
  mesibo_log(j->m, 0, "%s thread done fails=%d", j->s->name, fails);
  free(j);
  return NULL;
}

static void *opener(void *arg) {
  job_t *j = (job_t *)arg;
  mesibo_int_t h = connect_sock(j->s, j->url, NULL);
  __atomic_store_n(&j->s->handle, h, __ATOMIC_RELEASE);
  /* Written before on_connect, from this thread: sent after the handshake. */
  mesibo_int_t w = mesibo_util_socket_write(h, "from-thread\n", 12);
  mesibo_log(j->m, 0, "%s threadopen ret=%s write=%ld", j->s->name, h > 0 ? "ok" : "fail", (long)w);
  free(j);
  return NULL;
}

static mesibo_int_t sm_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *msg, mesibo_uint_t len) {
  char buf[4096], *name, *rest;
  sock_t *s;
  if (len >= sizeof buf) return MESIBO_RESULT_PASS;
  memcpy(buf, msg, len);
  buf[len] = '\0';
  name = buf;
  rest = strchr(buf, ' ');
  if (rest) *rest++ = '\0';

  if (strcmp(p->to, "open") == 0 && rest) {
    char *url = rest, *opts = strchr(rest, ' ');
    if (opts) *opts++ = '\0';
    if (!(s = new_sock(m, name))) return MESIBO_RESULT_CONSUMED;
    s->handle = connect_sock(s, url, opts);
    s->closed = s->handle <= 0; /* no callback ever comes for a failed open */
    mesibo_log(m, 0, "%s open ret=%ld", name, (long)s->handle);
  } else if (strcmp(p->to, "send") == 0 && (s = find_sock(m, name))) {
    const char *data = rest ? rest : "";
    mesibo_log(m, 0, "%s send ret=%ld", name, (long)mesibo_util_socket_write(s->handle, data, (mesibo_int_t)strlen(data)));
  } else if (strcmp(p->to, "sendhex") == 0 && (s = find_sock(m, name)) && rest) {
    char bin[2048];
    size_t n = 0;
    unsigned int byte;
    while (rest[0] && rest[1] && n < sizeof bin && sscanf(rest, "%2x", &byte) == 1) {
      bin[n++] = (char)byte;
      rest += 2;
    }
    mesibo_log(m, 0, "%s send ret=%ld", name, (long)mesibo_util_socket_write(s->handle, bin, (mesibo_int_t)n));
  } else if (strcmp(p->to, "sendhandle") == 0) {
    const char *data = rest ? rest : "";
    mesibo_int_t h = (mesibo_int_t)strtol(name, NULL, 10);
    mesibo_log(m, 0, "handle %ld send ret=%ld", (long)h, (long)mesibo_util_socket_write(h, data, (mesibo_int_t)strlen(data)));
  } else if (strcmp(p->to, "close") == 0 && (s = find_sock(m, name))) {
    mesibo_util_socket_close(s->handle);
    mesibo_log(m, 0, "%s close-called", name);
  } else if (strcmp(p->to, "thread") == 0 && (s = find_sock(m, name)) && rest) {
    job_t *j = (job_t *)calloc(1, sizeof *j);
    j->m = m;
    j->s = s;
    j->count = atoi(rest);
    mesibo_util_create_thread(writer, j, 0, "sockmod-writer");
  } else if (strcmp(p->to, "threadopen") == 0 && rest) {
    job_t *j;
    if (!(s = new_sock(m, name))) return MESIBO_RESULT_CONSUMED;
    j = (job_t *)calloc(1, sizeof *j);
    j->m = m;
    j->s = s;
    snprintf(j->url, sizeof j->url, "%s", rest);
    mesibo_util_create_thread(opener, j, 0, "sockmod-opener");
  } else if (strcmp(p->to, "many") == 0 && rest) {
    int i, count = atoi(rest);
    char *url = strchr(rest, ' ');
    if (!url) return MESIBO_RESULT_CONSUMED;
    url++;
    for (i = 0; i < count; i++) {
      char sname[48];
      snprintf(sname, sizeof sname, "many%.20s%d", name, i);
      if (!(s = new_sock(m, sname))) break;
      s->handle = connect_sock(s, url, NULL);
      s->closed = s->handle <= 0;
      if (s->handle <= 0) mesibo_log(m, 0, "%s open ret=%ld", sname, (long)s->handle);
    }
    mesibo_log(m, 0, "many %s opened %d", name, i);
  } else if (strcmp(p->to, "closeall") == 0) {
    ctx_t *c = (ctx_t *)m->ctx;
    int i;
    for (i = 0; i < c->count; i++)
      if (!c->socks[i]->closed && strncmp(c->socks[i]->name, name, strlen(name)) == 0)
        mesibo_util_socket_close(c->socks[i]->handle);
  } else {
    return MESIBO_RESULT_PASS;
  }
  return MESIBO_RESULT_CONSUMED;
}

static mesibo_int_t sm_on_cleanup(mesibo_module_t *m) {
  ctx_t *c = (ctx_t *)m->ctx;
  int i;
  for (i = 0; i < c->count; i++) {
    sock_t *s = c->socks[i];
    if (s->closed) {
      free(s);
    } else {
      /* on_close is still to come, after this module is unloaded: the
       * server keeps the library mapped until then. */
      s->m = NULL;
      mesibo_util_socket_close(s->handle);
    }
  }
  free(c);
  return MESIBO_RESULT_OK;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_sockmod_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  m->ctx = calloc(1, sizeof(ctx_t));
  m->description = "drives client sockets from messages";
  m->on_message = sm_on_message;
  m->on_cleanup = sm_on_cleanup;
  return MESIBO_RESULT_OK;
}
