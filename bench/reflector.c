/*
 * reflector: the per-core ceiling of a UDP DNS responder on this kernel. Answers every query
 * with the query itself turned into an empty NOERROR reply (QR, RA set), reading and writing in
 * batches with recvmmsg/sendmmsg. No parsing, no cache: what any real server must beat is the
 * cost of these two system calls per packet.
 *
 * Usage: reflector ADDR PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64
#define BUF 4096

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: reflector ADDR PORT\n");
		return 2;
	}
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) {
		fprintf(stderr, "bad address\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		perror("bind");
		return 1;
	}
	static uint8_t bufs[BATCH][BUF];
	static struct sockaddr_in peers[BATCH];
	static struct iovec iov[BATCH];
	static struct mmsghdr msgs[BATCH];
	for (;;) {
		for (int i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = BUF;
			msgs[i].msg_hdr = (struct msghdr){.msg_name = &peers[i],
							  .msg_namelen = sizeof(peers[i]),
							  .msg_iov = &iov[i],
							  .msg_iovlen = 1};
		}
		int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
		if (n <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (msgs[i].msg_len < 12) {
				iov[i].iov_len = 0;
				continue;
			}
			bufs[i][2] |= 0x80; /* QR */
			bufs[i][3] |= 0x80; /* RA */
			iov[i].iov_len = msgs[i].msg_len;
		}
		sendmmsg(fd, msgs, (unsigned)n, 0);
	}
}
