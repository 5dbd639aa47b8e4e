/* Secrets of both programs and the files that hold them: the "cred:NAME"
 * form of a file flag (a systemd credential: the file NAME of
 * $CREDENTIALS_DIRECTORY, which LoadCredential= fills), one-line secret
 * files refused when others may read them, and the password prompt on a
 * terminal. Only the two app_*_flag helpers print and exit (usage errors
 * naming the flag); the prompt writes to the terminal. */
#ifndef WSTUN_APP_SECRET_H
#define WSTUN_APP_SECRET_H

#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>

#define APP_CRED_PREFIX "cred:"

/* The file that `value` (a flag's or a -config key's value) names, in out
 * (n bytes): `value` itself, or for "cred:NAME" $CREDENTIALS_DIRECTORY/NAME.
 * NAME is a credential name as systemd takes it: not empty, no '/', not
 * "." or "..". Returns 0, or -1 with a one-line reason in err (no
 * $CREDENTIALS_DIRECTORY, a bad NAME, a path longer than n - 1). Does not
 * look at the file. */
int app_file_path(const char *value, char *out, size_t n, char *err,
                  size_t errlen);

/* app_file_path for the flag `flag` whose value is *value: *value is
 * replaced by the path, written into buf (n bytes, which must outlive its
 * use). On a problem prints one line naming the flag and exits 2. NULL
 * *value: nothing to do. */
void app_file_flag(const char *prog, const char *flag, const char **value,
                   char *buf, size_t n);

/* 1 when `path` is a regular file (not a symbolic link) directly in
 * $CREDENTIALS_DIRECTORY, else 0. */
int app_is_credential(const char *path);

/* Opens `path` for reading when it is a regular file (following
 * symbolic links) or /dev/null, filling *st. A FIFO, other device or
 * directory is refused
 * without blocking: reading one could hang a reload on the event loop.
 * The caller fcloses the result. NULL with a one-line reason in err. */
FILE *app_open_regular(const char *path, struct stat *st, char *err,
                       size_t errlen);

/* Reads a one-line secret (trailing whitespace dropped) from the file
 * `value` names (see app_file_path) into out (n bytes). The file must not
 * be readable or writable by group or others, as ssh checks keys; a
 * systemd credential may be group-readable (mode 0440: systemd grants the
 * service's user read access with an ACL, which shows in the group bits),
 * never world-readable nor writable by others. 0, or -1 with a one-line
 * reason in err. */
int app_secret_read(const char *value, char *out, size_t n, char *err,
                    size_t errlen);

/* app_secret_read, or on any problem a usage error naming `flag` on
 * stderr, exit 2. */
void app_read_secret_file(const char *prog, const char *flag, const char *value,
                          char *out, size_t n);

/* Asks for a secret on the terminal that standard input is: turns its echo
 * off, writes `prompt` to it (so echo is off once the prompt shows), reads
 * one line into out (n bytes, without the newline) and restores the
 * terminal. A signal that would stop or end the process meanwhile (SIGINT,
 * SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU) finds the terminal
 * restored first, then acts as it would have; after a stop the prompt
 * starts again. Returns 0, or -1 with a one-line reason in err: stdin is
 * not a terminal, the input ended, the line is empty or longer than
 * n - 1 bytes, or a signal that did not end the process came. */
int app_secret_prompt(const char *prompt, char *out, size_t n, char *err,
                      size_t errlen);

#endif
