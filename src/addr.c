/*
 * addr: socket addresses. See include/rrcache/addr.h.
 */
#include "rrcache/addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rrc_addr_parse_port(const char *s, uint16_t *port)
{
	char *end;
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	long p = strtol(s, &end, 10);
	if (*end || p < 1 || p > 65535)
		return -EINVAL;
	*port = (uint16_t)p;
	return 0;
}

int rrc_addr_parse(const char *s, uint16_t default_port, struct rrc_sockaddr *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	uint16_t port = default_port;
	const char *colon;
	memset(out, 0, sizeof(*out));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || (size_t)(close - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		if (close[1] == ':') {
			if (rrc_addr_parse_port(close + 2, &port))
				return -EINVAL;
		} else if (close[1] != '\0') {
			return -EINVAL;
		}
		if (inet_pton(AF_INET6, host, &out->sin6.sin6_addr) != 1)
			return -EINVAL;
	} else if ((colon = strchr(s, ':')) != NULL && strchr(colon + 1, ':') == NULL) {
		if ((size_t)(colon - s) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		if (rrc_addr_parse_port(colon + 1, &port) ||
		    inet_pton(AF_INET, host, &out->sin.sin_addr) != 1)
			return -EINVAL;
		out->sin.sin_family = AF_INET;
		out->sin.sin_port = htons(port);
		out->len = sizeof(out->sin);
		return 0;
	} else {
		if (strlen(s) >= sizeof(host))
			return -EINVAL;
		strcpy(host, s);
		if (inet_pton(AF_INET, host, &out->sin.sin_addr) == 1) {
			out->sin.sin_family = AF_INET;
			out->sin.sin_port = htons(port);
			out->len = sizeof(out->sin);
			return 0;
		}
		if (inet_pton(AF_INET6, host, &out->sin6.sin6_addr) != 1)
			return -EINVAL;
	}
	out->sin6.sin6_family = AF_INET6;
	out->sin6.sin6_port = htons(port);
	out->len = sizeof(out->sin6);
	return 0;
}

void rrc_addr_format(const struct rrc_sockaddr *a, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->sin.sin_addr, host, sizeof(host));
		snprintf(out, cap, "%s:%u", host, ntohs(a->sin.sin_port));
	} else if (a->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->sin6.sin6_addr, host, sizeof(host));
		snprintf(out, cap, "[%s]:%u", host, ntohs(a->sin6.sin6_port));
	} else {
		snprintf(out, cap, "?");
	}
}

uint16_t rrc_addr_port(const struct rrc_sockaddr *a)
{
	return ntohs(a->sa.sa_family == AF_INET6 ? a->sin6.sin6_port : a->sin.sin_port);
}

bool rrc_addr_is_wildcard(const struct rrc_sockaddr *a)
{
	return a->sa.sa_family == AF_INET6 ? IN6_IS_ADDR_UNSPECIFIED(&a->sin6.sin6_addr)
					   : a->sin.sin_addr.s_addr == htonl(INADDR_ANY);
}

bool rrc_addr_equal(const struct rrc_sockaddr *a, const struct rrc_sockaddr *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET)
		return a->sin.sin_port == b->sin.sin_port &&
		       a->sin.sin_addr.s_addr == b->sin.sin_addr.s_addr;
	if (a->sa.sa_family == AF_INET6)
		return a->sin6.sin6_port == b->sin6.sin6_port &&
		       memcmp(&a->sin6.sin6_addr, &b->sin6.sin6_addr, 16) == 0;
	return false;
}
