/* The tunnels wstuncli runs, one wstun_client each on one loop, and how a
 * new list of them (the -config file read again on SIGHUP) is put in
 * place: a tunnel whose name and settings (app_cli_tunnel_key) are
 * unchanged is left alone; new and changed ones start first; only when
 * every one of them started are the removed ones and the old versions of
 * the changed ones closed, with a grace for their requests in flight. A
 * new list that cannot start leaves the running one as it was. */
#ifndef WSTUN_CLI_RUN_H
#define WSTUN_CLI_RUN_H

#include <stddef.h>

#include "app_config.h"

typedef struct cli_run cli_run;

/* One running (or closing) client. */
typedef struct cli_run_slot {
  cli_run *run;
  struct cli_run_slot *next;
  char *name; /* owned: the section's NAME, or NULL; the client's log tag */
  char *key;  /* owned: app_cli_tunnel_key() of what it was started with */
  /* a "TOKEN:" tunnel (password_prompt): the password typed at start, and
   * the token it is for, kept for reloads, which cannot ask (owned) */
  char *prompted, *prompted_token;
  wstun_client *cli;
  int closing; /* closed (removed, replaced, stopping): its state is no
                  longer the tunnel's */
} cli_run_slot;

struct cli_run {
  uv_loop_t *loop;
  cli_run_slot *slots; /* running and closing, newest first */
  /* Set by the program before the first cli_run_apply: */
  /* every client's; its user data is the slot name */
  wstun_log_record_cb log_record_cb;
  /* state and pongs of every client, with its slot as user data (NULL:
   * none); the program ignores slots that are closing */
  wstun_client_state_cb state_cb;
  wstun_client_pong_cb pong_cb;
  /* the last slot went (a close finished): e.g. end the loop if stopping */
  void (*on_empty)(cli_run *run, void *user_data);
  void *user_data;
};

/* What one cli_run_apply did. */
typedef struct cli_run_changes {
  size_t added, removed, changed, unchanged;
  size_t failed; /* on error: the index of the tunnel that did not start */
} cli_run_changes;

/* Makes the running tunnels those of t[0..n): see above. The tunnels'
 * configs are used during the call only (the clients copy them); `level`
 * is given to the tunnels left running. `announce` logs one line per
 * tunnel added, removed or changed (not at the first start). Returns 0,
 * or wstun_client_start()'s error for t[out->failed] (the tunnels this
 * call started are closed again at once; the running ones are
 * untouched), or WSTUN_ENOMEM. */
int cli_run_apply(cli_run *run, const app_cli_tunnel *t, size_t n,
                  unsigned grace_ms, wstun_log_level level, int announce,
                  cli_run_changes *out);

/* Closes every running client (graceful, grace_ms). on_empty comes once
 * all are gone (at once, from inside this call, if there were none). */
void cli_run_close(cli_run *run, unsigned grace_ms);

/* The password typed at start for the running tunnel `name` (NULL for
 * the one without a section), if it was asked for `token`; else NULL. */
const char *cli_run_prompted(cli_run *run, const char *name, const char *token);

/* Slots not yet freed (running or closing). */
size_t cli_run_count(const cli_run *run);

/* The only running (not closing) slot, or NULL when there are more or
 * none. */
cli_run_slot *cli_run_only(cli_run *run);

#endif
