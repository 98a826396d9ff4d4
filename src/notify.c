/*
 * notify: sd_notify's protocol. See include/rrcache/notify.h.
 */
#include "rrcache/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int rrc_notify(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	if (!path || !path[0])
		return 0;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* an abstract socket */
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return -EMSGSIZE;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
	ssize_t w = sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
	int rc = w == n ? 1 : -errno;
	close(fd);
	return rc;
}

int rrc_notify_ready(const char *status)
{
	return rrc_notify("READY=1\nSTATUS=%s\nMAINPID=%ld", status, (long)getpid());
}

int rrc_notify_reloading(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return rrc_notify("RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=%llu",
			  (unsigned long long)ts.tv_sec * 1000000ull +
				  (unsigned long long)ts.tv_nsec / 1000);
}

int rrc_notify_stopping(void)
{
	return rrc_notify("STOPPING=1\nSTATUS=stopping: finishing the queries in flight");
}
