/*
 * notify: the service manager's readiness protocol (systemd's sd_notify, written out: one
 * datagram of "KEY=VALUE" lines to the unix socket named by $NOTIFY_SOCKET). Without that
 * variable every call does nothing, so rrcache runs the same under any other supervisor.
 *
 * rrcache sends READY=1 once every socket is bound and privileges are dropped, RELOADING=1
 * (with MONOTONIC_USEC, as Type=notify-reload wants) then READY=1 around a reload, STOPPING=1
 * when it begins to stop, and STATUS= lines a person reads in `systemctl status`.
 */
#ifndef RRCACHE_NOTIFY_H
#define RRCACHE_NOTIFY_H

#include <stdbool.h>

/* Sends the state (printf-style, lines separated by '\n'). Returns 1 when sent, 0 when no
 * service manager listens ($NOTIFY_SOCKET unset), -errno when the send failed. */
int rrc_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The strings of the protocol rrcache uses. */
int rrc_notify_ready(const char *status);
int rrc_notify_reloading(void);
int rrc_notify_stopping(void);

#endif
