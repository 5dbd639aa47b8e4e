/* wstuncli's running tunnels and the reload of their list (cli_run.h).
 * Make before break: new and changed tunnels start before anything is
 * closed, so a reload that fails half way leaves the running set as it
 * was, and a changed tunnel's token is never without a client for longer
 * than the new one takes to connect (the server queues its requests
 * meanwhile). */
#include "cli_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app_common.h"

static int same_name(const char *a, const char *b) {
  return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

/* "[NAME] " for log lines about a tunnel; "" for the one without a
 * section (its lines have no tag either). */
static const char *tag(const cli_run_slot *s, char *buf, size_t n) {
  if (s->name == NULL)
    return "";
  snprintf(buf, n, "[%s] ", s->name);
  return buf;
}

static void wipe_free(char *p) {
  if (p) {
    memset(p, 0, strlen(p));
    free(p);
  }
}

static void slot_free(cli_run_slot *s) {
  free(s->name);
  app_cli_tunnel_key_free(s->key);
  wipe_free(s->prompted);
  free(s->prompted_token);
  free(s);
}

static void unlink_slot(cli_run *run, cli_run_slot *s) {
  for (cli_run_slot **pp = &run->slots; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      return;
    }
}

static void on_closed(wstun_client *cli, void *ud) {
  cli_run_slot *s = ud;
  cli_run *run = s->run;
  (void)cli;
  unlink_slot(run, s);
  slot_free(s);
  if (run->slots == NULL && run->on_empty)
    run->on_empty(run, run->user_data);
}

static void close_slot(cli_run_slot *s, unsigned grace_ms) {
  s->closing = 1;
  wstun_client_close(s->cli, grace_ms, on_closed, s);
}

static void on_state(wstun_client *cli, wstun_client_state state, int err,
                     void *ud) {
  cli_run_slot *s = ud;
  if (s->run->state_cb)
    s->run->state_cb(cli, state, err, s);
}

static void on_pong(wstun_client *cli, void *ud) {
  cli_run_slot *s = ud;
  if (s->run->pong_cb)
    s->run->pong_cb(cli, s);
}

/* The running slot of that name, or NULL. */
static cli_run_slot *find(cli_run *run, const char *name) {
  for (cli_run_slot *s = run->slots; s; s = s->next)
    if (!s->closing && same_name(s->name, name))
      return s;
  return NULL;
}

/* Starts t as a new slot (not yet linked into run->slots). */
static int start(cli_run *run, const app_cli_tunnel *t, char *key,
                 cli_run_slot **out) {
  cli_run_slot *s = calloc(1, sizeof(*s));
  if (s == NULL || (t->name && (s->name = strdup(t->name)) == NULL)) {
    free(s);
    return WSTUN_ENOMEM;
  }
  s->run = run;
  if (t->password_prompt && t->cfg.password) {
    s->prompted = strdup(t->cfg.password);
    s->prompted_token = strdup(t->cfg.token);
    if (s->prompted == NULL || s->prompted_token == NULL) {
      slot_free(s);
      return WSTUN_ENOMEM;
    }
  }
  s->key = key;
  wstun_client_config cfg = t->cfg;
  cfg.log_record_cb = run->log_record_cb;
  cfg.log_user_data = s->name; /* "[NAME] " before its lines */
  cfg.state_cb = run->state_cb ? on_state : NULL;
  cfg.pong_cb = run->pong_cb ? on_pong : NULL;
  cfg.state_user_data = s;
  int rc = wstun_client_start(run->loop, &cfg, &s->cli);
  if (rc != 0) {
    s->key = NULL; /* the caller's still */
    slot_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int cli_run_apply(cli_run *run, const app_cli_tunnel *t, size_t n,
                  unsigned grace_ms, wstun_log_level level, int announce,
                  cli_run_changes *out) {
  memset(out, 0, sizeof(*out));
  /* per new tunnel: the running slot of its name (kept when its key is
   * the same), and the slot started for it otherwise */
  cli_run_slot **old = calloc(n ? n : 1, sizeof(*old));
  cli_run_slot **fresh = calloc(n ? n : 1, sizeof(*fresh));
  int rc = old && fresh ? 0 : WSTUN_ENOMEM;
  for (size_t i = 0; i < n && rc == 0; i++) {
    char *key = app_cli_tunnel_key(&t[i]);
    if (key == NULL) {
      rc = WSTUN_ENOMEM;
      out->failed = i;
      break;
    }
    old[i] = find(run, t[i].name);
    if (old[i] && strcmp(old[i]->key, key) == 0) {
      app_cli_tunnel_key_free(key);
      continue;
    }
    rc = start(run, &t[i], key, &fresh[i]);
    if (rc != 0) {
      app_cli_tunnel_key_free(key);
      out->failed = i;
    }
  }
  if (rc != 0) { /* back to what ran before */
    for (size_t i = 0; fresh && i < n; i++)
      if (fresh[i]) {
        fresh[i]->next = run->slots;
        run->slots = fresh[i];
        close_slot(fresh[i], 0);
      }
    free(old);
    free(fresh);
    return rc;
  }
  /* every new one runs: the old versions of the changed ones go */
  char buf[300];
  for (size_t i = 0; i < n; i++) {
    if (fresh[i] == NULL) {
      wstun_client_set_log_level(old[i]->cli, level);
      out->unchanged++;
    } else if (old[i]) {
      out->changed++;
      if (announce)
        app_logf(WSTUN_LOG_INFO,
                 "%schanged: restarted; the old tunnel finishes its "
                 "requests in flight (up to %u s)",
                 tag(old[i], buf, sizeof(buf)), grace_ms / 1000);
      close_slot(old[i], grace_ms);
    } else {
      out->added++;
      if (announce)
        app_logf(WSTUN_LOG_INFO, "%sadded", tag(fresh[i], buf, sizeof(buf)));
    }
  }
  /* and the running ones the list no longer names */
  for (cli_run_slot *s = run->slots; s; s = s->next) {
    size_t i = 0;
    while (i < n && old[i] != s)
      i++;
    if (s->closing || i < n)
      continue;
    out->removed++;
    if (announce)
      app_logf(WSTUN_LOG_INFO,
               "%sremoved: stopping; requests in flight finish (up to %u s)",
               tag(s, buf, sizeof(buf)), grace_ms / 1000);
    close_slot(s, grace_ms);
  }
  for (size_t i = 0; i < n; i++)
    if (fresh[i]) {
      fresh[i]->next = run->slots;
      run->slots = fresh[i];
    }
  free(old);
  free(fresh);
  return 0;
}

void cli_run_close(cli_run *run, unsigned grace_ms) {
  if (run->slots == NULL) {
    if (run->on_empty)
      run->on_empty(run, run->user_data);
    return;
  }
  /* the close callbacks come later, from the loop: the list holds */
  for (cli_run_slot *s = run->slots; s; s = s->next)
    if (!s->closing)
      close_slot(s, grace_ms);
}

const char *cli_run_prompted(cli_run *run, const char *name,
                             const char *token) {
  cli_run_slot *s = find(run, name);
  return s && s->prompted && strcmp(s->prompted_token, token) == 0 ? s->prompted
                                                                   : NULL;
}

size_t cli_run_count(const cli_run *run) {
  size_t n = 0;
  for (const cli_run_slot *s = run->slots; s; s = s->next)
    n++;
  return n;
}

cli_run_slot *cli_run_only(cli_run *run) {
  cli_run_slot *only = NULL;
  for (cli_run_slot *s = run->slots; s; s = s->next)
    if (!s->closing) {
      if (only)
        return NULL;
      only = s;
    }
  return only;
}
