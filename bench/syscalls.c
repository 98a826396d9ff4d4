/*
 * syscalls: what the system calls of one upstream query cost on this machine.
 *
 * rrcache opens a socket on a fresh random port for every upstream query (CONFORMANCE U2,
 * RFC 5452 §9.2). This measures, on loopback, the calls that costs: socket, bind to a random
 * port, connect, epoll add, send, the reply's recv, close; and a null system call for scale.
 * bench/run.py runs it and puts the figures in RESULTS.md next to the servers' CPU per miss.
 *
 * Usage: syscalls [iterations]   (default 50000; prints one "name us" line per call)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { T_NULL, T_SOCKET, T_BIND, T_CONNECT, T_SEND, T_EPOLL_ADD, T_RECV, T_CLOSE, T_COUNT };
static const char *names[T_COUNT] = {"null", "socket", "bind", "connect",
				     "send", "epoll_add", "recv", "close"};

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 50000;
	if (n <= 0 || n > 10000000)
		n = 50000;
	double sum[T_COUNT] = {0};

	/* The "upstream": a socket on an ephemeral loopback port that receives each query. */
	int up = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t dlen = sizeof(dst);
	if (up < 0 || bind(up, (struct sockaddr *)&dst, sizeof(dst)) != 0 ||
	    getsockname(up, (struct sockaddr *)&dst, &dlen) != 0) {
		perror("upstream socket");
		return 1;
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		perror("epoll_create1");
		return 1;
	}
	unsigned char q[40] = {0}, buf[512];
	long failed = 0;
	for (long i = 0; i < n; i++) {
		unsigned short r = 0;
		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (unsigned short)i;
		double t0 = now_us();
		syscall(SYS_getppid);
		double t1 = now_us();
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		double t2 = now_us();
		struct sockaddr_in l = {.sin_family = AF_INET,
					.sin_port = htons((unsigned short)(1024 + r % 64512))};
		int bound = bind(fd, (struct sockaddr *)&l, sizeof(l));
		double t3 = now_us();
		connect(fd, (struct sockaddr *)&dst, sizeof(dst));
		double t4 = now_us();
		send(fd, q, sizeof(q), 0);
		double t5 = now_us();
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
		double t6 = now_us();
		ssize_t got = recv(up, buf, sizeof(buf), MSG_DONTWAIT);
		double t7 = now_us();
		close(fd);
		double t8 = now_us();
		if (fd < 0 || bound != 0 || got != (ssize_t)sizeof(q)) {
			failed++; /* a port in use, say: not counted */
			continue;
		}
		double t[] = {t0, t1, t2, t3, t4, t5, t6, t7, t8};
		for (int k = 0; k < T_COUNT; k++)
			sum[k] += t[k + 1] - t[k];
	}
	long ok = n - failed;
	if (ok <= 0) {
		fprintf(stderr, "no iteration succeeded\n");
		return 1;
	}
	for (int k = 0; k < T_COUNT; k++)
		printf("%s %.2f\n", names[k], sum[k] / (double)ok);
	return 0;
}
