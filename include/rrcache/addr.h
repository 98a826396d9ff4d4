/*
 * addr: socket addresses as rrcache writes them ("192.0.2.1:53", "[2001:db8::1]:53"): parsing,
 * formatting and comparison. Pure: no I/O, no name resolution (config resolves the host names
 * that a setting allows).
 */
#ifndef RRCACHE_ADDR_H
#define RRCACHE_ADDR_H

#include "rrcache/defs.h"

#include <netinet/in.h>
#include <sys/socket.h>

/* Longest text rrc_addr_format writes: "[" + INET6_ADDRSTRLEN + "]:65535", with room. */
#define RRC_ADDR_TEXT 64

/* An IPv4 or IPv6 address with its port, and the length to give the socket calls. */
struct rrc_sockaddr {
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
		struct sockaddr_storage ss;
	};
	socklen_t len;
};

/* "192.0.2.1", "192.0.2.1:53", "[2001:db8::1]:53", "::1" -> address (default_port when none
 * is written). Returns 0 or -EINVAL. */
int rrc_addr_parse(const char *s, uint16_t default_port, struct rrc_sockaddr *out);
/* "53" -> 53: decimal, 1..65535, nothing after it. Returns 0 or -EINVAL. */
int rrc_addr_parse_port(const char *s, uint16_t *port);
/* Writes "192.0.2.1:53" or "[::1]:53" ("?" for another family) into out. */
void rrc_addr_format(const struct rrc_sockaddr *a, char *out, size_t cap);
/* Same family, address and port. */
bool rrc_addr_equal(const struct rrc_sockaddr *a, const struct rrc_sockaddr *b);
/* The port, in host order. */
uint16_t rrc_addr_port(const struct rrc_sockaddr *a);
/* 0.0.0.0 or :: (every address of the machine). */
bool rrc_addr_is_wildcard(const struct rrc_sockaddr *a);

#endif
