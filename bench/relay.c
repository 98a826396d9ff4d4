/*
 * relay: the kernel floor of a forwarded query (a cache miss) on this machine. Every client
 * datagram is sent on to the upstream and every upstream reply back to its client: two
 * datagrams in and two out per query, in batches (recvmmsg/sendmmsg), with one epoll_wait per
 * wake-up as any event loop that serves two sockets needs. No parsing beyond the ID, no cache,
 * no checks, one upstream socket: what a forwarder cannot do with less.
 *
 * Usage: relay ADDR PORT UPSTREAM_ADDR UPSTREAM_PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define BATCH 64
#define BUF 4096

/* The client of each ID in flight: IDs are given in turn, so 65,536 queries may be in flight. */
static struct {
	struct sockaddr_in peer;
	uint16_t id;
} slots[65536];

static int addr(struct sockaddr_in *a, const char *host, const char *port)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)atoi(port));
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static uint8_t bufs[BATCH][BUF];
static struct sockaddr_in peers[BATCH];
static struct iovec iov[BATCH];
static struct mmsghdr msgs[BATCH];

static int receive(int fd)
{
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = BUF;
		msgs[i].msg_hdr = (struct msghdr){.msg_name = &peers[i],
						  .msg_namelen = sizeof(peers[i]),
						  .msg_iov = &iov[i],
						  .msg_iovlen = 1};
	}
	return recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
}

int main(int argc, char **argv)
{
	struct sockaddr_in me, up;
	if (argc != 5 || addr(&me, argv[1], argv[2]) || addr(&up, argv[3], argv[4])) {
		fprintf(stderr, "usage: relay ADDR PORT UPSTREAM_ADDR UPSTREAM_PORT\n");
		return 2;
	}
	int fc = socket(AF_INET, SOCK_DGRAM, 0), fu = socket(AF_INET, SOCK_DGRAM, 0);
	if (fc < 0 || fu < 0 || bind(fc, (struct sockaddr *)&me, sizeof(me)) != 0 ||
	    connect(fu, (struct sockaddr *)&up, sizeof(up)) != 0) {
		perror("relay");
		return 1;
	}
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fc};
	epoll_ctl(ep, EPOLL_CTL_ADD, fc, &ev);
	ev.data.fd = fu;
	epoll_ctl(ep, EPOLL_CTL_ADD, fu, &ev);
	uint16_t next = 0;
	for (;;) {
		struct epoll_event got[2];
		int ne = epoll_wait(ep, got, 2, -1);
		for (int e = 0; e < ne; e++) {
			int fd = got[e].data.fd;
			int n = receive(fd);
			if (n <= 0)
				continue;
			for (int i = 0; i < n; i++) {
				uint8_t *b = bufs[i];
				if (msgs[i].msg_len < 12) {
					iov[i].iov_len = 0;
					continue;
				}
				iov[i].iov_len = msgs[i].msg_len;
				uint16_t id = (uint16_t)(b[0] << 8 | b[1]);
				if (fd == fc) {
					slots[next].peer = peers[i];
					slots[next].id = id;
					b[0] = (uint8_t)(next >> 8);
					b[1] = (uint8_t)next;
					next++;
					msgs[i].msg_hdr.msg_name = NULL;
					msgs[i].msg_hdr.msg_namelen = 0;
				} else {
					peers[i] = slots[id].peer;
					b[0] = (uint8_t)(slots[id].id >> 8);
					b[1] = (uint8_t)slots[id].id;
				}
			}
			sendmmsg(fd == fc ? fu : fc, msgs, (unsigned)n, 0);
		}
	}
}
