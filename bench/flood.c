/* UDP flood for bench/events.py: sendmmsg() batches to one lab address.
 *
 *   flood DST_IP DST_PORT SECONDS [RATE_PPS] [SRC_PORT]
 *
 * Runs inside a lab netns (bench/events.py starts it with nsenter). RATE_PPS 0
 * (default) sends as fast as it can; otherwise batches are paced to the rate.
 * Prints "sent N seconds S errors E cpu C" on exit, C being this process's user +
 * system CPU seconds: the kernel's receive and drop path for veth traffic runs
 * in the sender's softirq context, which (without CONFIG_IRQ_TIME_ACCOUNTING)
 * is charged to the sender, so N / C is a rate that other load on the machine
 * does not skew. Compiled at bench time with gcc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in dst = { .sin_family = AF_INET };
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	char payload[32] = "ipdbg bench flood";
	unsigned long long sent = 0, errors = 0;
	double seconds, rate = 0, start, end, t;
	int fd, i;

	if (argc < 4) {
		fprintf(stderr, "usage: %s DST_IP DST_PORT SECONDS [RATE_PPS] [SRC_PORT]\n", argv[0]);
		return 2;
	}
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", argv[1]);
		return 2;
	}
	dst.sin_port = htons(atoi(argv[2]));
	seconds = atof(argv[3]);
	if (argc > 4)
		rate = atof(argv[4]);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	if (argc > 5) {
		struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[5])) };

		if (bind(fd, (struct sockaddr *)&src, sizeof(src))) {
			perror("bind");
			return 1;
		}
	}
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst))) {
		perror("connect");
		return 1;
	}
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		iov[i].iov_base = payload;
		iov[i].iov_len = sizeof(payload);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	start = now();
	end = start + seconds;
	for (t = start; t < end; t = now()) {
		int n;

		if (rate > 0 && sent >= (t - start) * rate) {
			/* ahead of schedule: wait for the next batch's slot */
			double wait = sent / rate - (t - start);
			struct timespec ts = { 0, (long)(wait * 1e9) };

			if (wait > 0)
				nanosleep(&ts, NULL);
			continue;
		}
		n = sendmmsg(fd, msgs, BATCH, 0);
		if (n < 0) {
			if (errno != EINTR)
				errors++;
			continue;
		}
		sent += n;
	}
	{
		struct rusage ru;
		double cpu;

		getrusage(RUSAGE_SELF, &ru);
		cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
		      ru.ru_stime.tv_usec / 1e6;
		printf("sent %llu seconds %.6f errors %llu cpu %.6f\n", sent, now() - start, errors, cpu);
	}
	return 0;
}
