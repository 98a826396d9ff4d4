/*
 * Test helper: a socket address from its text ("192.0.2.1", "2001:db8::1"), port 0. Include
 * after <cmocka.h>: a text that does not parse fails the test.
 */
#ifndef RRCACHE_TEST_SOCKADDR_TEXT_H
#define RRCACHE_TEST_SOCKADDR_TEXT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

static inline struct sockaddr_storage sockaddr_of(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	}
	return ss;
}

#endif
