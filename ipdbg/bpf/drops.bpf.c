// SPDX-License-Identifier: GPL-2.0-only
/*
 * ipdbg drops: every skb the kernel drops (skb:kfree_skb), plus the ICMP error
 * (icmp:icmp_send) or TCP RST (tcp:tcp_send_reset) a packet caused, filtered in
 * the kernel by the const volatile `cfg` that user space fills before load.
 *
 * Each tracepoint has up to three entry points (tp_btf, raw_tp, classic
 * tracepoint); the loader (ipdbg/bpf/engine.py) autoloads one flavour, tp_btf
 * first. One body, handle(), serves them all: `d` says whether its pointers are
 * typed (tp_btf: direct loads) or not (BPF_CORE_READ), see RD() and
 * read_headers(). Keep struct drop_event/drops_config in sync with decode.py.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "drops.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ICMPV6_ 58
#define SKB_HDR_UNSET 0xffff /* include/linux/skbuff.h: (typeof(skb->transport_header))~0U */

/* One field through one pointer. tp_btf arguments are typed (BTF) pointers the
 * verifier lets us load from directly, which costs far less than the
 * bpf_probe_read_kernel() that BPF_CORE_READ does; raw_tp and classic tracepoint
 * programs only have untyped pointers. `d` is a constant after inlining, so each
 * program keeps one arm. CO-RE relocates both (vmlinux.h: preserve_access_index). */
#define RD(d, p, path) ((d) ? (p)->path : BPF_CORE_READ(p, path))

const volatile struct drops_config cfg = {};

/* Emitted so the event struct is in the object's BTF (the decoder test reads it). */
const volatile struct drop_event *unused_drop_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* user space may resize before load */
} events SEC(".maps");

/* Events the ring buffer had no room for: user space sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* The watched netns inodes (cfg.n_netns != 0), filled by user space after load
 * and before attach (engine.py); no fixed limit beyond max_entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DROPS_MAX_NETNS);
	__type(key, __u32);
	__type(value, __u8);
} netns_filter SEC(".maps");

static __always_inline __u32 read_net_inum(struct net *net, const int d)
{
	if (!net)
		return 0;
	/* struct ns_common was reshuffled in 6.18 (ns_type, __ns_ref, ns_tree);
	 * `inum` kept its name, and CO-RE relocates it by name on both layouts. */
	if (!bpf_core_field_exists(net->ns.inum))
		return 0;
	return RD(d, net, ns.inum);
}

/* netns of an skb: its device, else its socket, else its route's device
 * (kernel-notes.md, "Drop reasons": dev is NULL on OUTPUT before the route). */
static __always_inline __u32 skb_netns(struct sk_buff *skb, struct net_device *dev, const int d)
{
	__u32 inum = 0;

	if (dev)
		inum = read_net_inum(RD(d, dev, nd_net.net), d);
	if (!inum) {
		struct sock *sk = RD(d, skb, sk);

		if (sk)
			inum = read_net_inum(RD(d, sk, __sk_common.skc_net.net), d);
	}
	if (!inum) {
		/* include/linux/skbuff.h: SKB_DST_NOREF is bit 0 of _skb_refdst */
		unsigned long refdst = RD(d, skb, _skb_refdst);
		struct dst_entry *dst = (struct dst_entry *)(refdst & ~1UL);

		if (dst) {
			struct net_device *ddev = BPF_CORE_READ(dst, dev);

			/* from an integer: not a typed pointer, read it the slow way */
			if (ddev)
				inum = read_net_inum(BPF_CORE_READ(ddev, nd_net.net), 0);
		}
	}
	return inum;
}

/* What the filter tests and the event reports of the packet itself: a small
 * local that no helper writes into (clang splits it into scalars, registers
 * or a few spill slots), so a drop the filter rejects costs a few loads and
 * compares; the 112-byte event is only built, in the ring itself, for a drop
 * that is sent (emit()). */
struct pkt {
	__u32 saddr[4]; /* IPv4 in saddr[0]; network order */
	__u32 daddr[4];
	__u32 ident;
	__u32 seq;
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
};

/* (addr & mask) == net in 32-bit words: 1 word for IPv4, 4 for IPv6. The
 * addresses in drops_config are 4-byte aligned (drops.h). */
static __always_inline int match_cidr(const volatile struct drops_cidr *c, const __u32 *a, int words)
{
	const volatile __u32 *net = (const volatile __u32 *)c->net;
	const volatile __u32 *mask = (const volatile __u32 *)c->mask;

	for (int i = 0; i < 4; i++) {
		if (i >= words)
			break;
		if ((a[i] & mask[i]) != net[i])
			return 0;
	}
	return 1;
}

/* Ports first: the cheapest test, and the one that most often differs. The
 * cfg fields come in as arguments: `cfg` is volatile, so each mention is a
 * load, and this runs for both directions. */
static __always_inline int match_dir(const __u32 *s, const __u32 *d, __u16 sport, __u16 dport, int words,
				     __u16 want_sport, __u16 want_dport, __u8 has_src, __u8 has_dst)
{
	if (want_sport && sport != want_sport)
		return 0;
	if (want_dport && dport != want_dport)
		return 0;
	if (has_src && !match_cidr(&cfg.src, s, words))
		return 0;
	if (has_dst && !match_cidr(&cfg.dst, d, words))
		return 0;
	return 1;
}

static __always_inline int has_packet_filter(void)
{
	return cfg.has_src || cfg.has_dst || cfg.family || cfg.proto || cfg.sport || cfg.dport;
}

/* The packet part of the filter (mirrors ipdbg.filters.match_key); only
 * called when has_packet_filter(). Each cfg field is read once. */
static __always_inline int match_packet(const struct pkt *e)
{
	__u16 sport = cfg.sport, dport = cfg.dport;
	__u8 family = cfg.family, proto = cfg.proto, has_src = cfg.has_src, has_dst = cfg.has_dst;
	int words;

	if (!e->family)
		return 0;
	if (family && e->family != family)
		return 0;
	if (proto && e->proto != proto)
		return 0;
	if (cfg.ports_need_l4 && e->proto != IPPROTO_TCP_ && e->proto != IPPROTO_UDP_)
		return 0;
	words = e->family == 4 ? 1 : 4;
	if (match_dir(e->saddr, e->daddr, e->sport, e->dport, words, sport, dport, has_src, has_dst))
		return 1;
	return cfg.both_directions &&
	       match_dir(e->daddr, e->saddr, e->dport, e->sport, words, sport, dport, has_src, has_dst);
}

static __always_inline int match_netns(__u32 inum)
{
	if (!cfg.n_netns)
		return 1; /* frozen .rodata: the verifier drops the lookup */
	return bpf_map_lookup_elem(&netns_filter, &inum) != NULL;
}

/* The device the packet is on: skb->dev (input: the one it came in on; after
 * ip_output: the one it leaves by), else the route's device (LOCAL_OUT, before
 * ip_output sets skb->dev; net/ipv4/ip_output.c). Compared by name up to the
 * NUL: a renamed device's name (strscpy, net/core/dev.c) is not zero-padded. */
static __always_inline int match_iface(struct sk_buff *skb, struct net_device *dev, const int d)
{
	char name[16];

	if (!cfg.has_ifname)
		return 1;
	if (!dev) {
		unsigned long refdst = RD(d, skb, _skb_refdst);
		struct dst_entry *dst = (struct dst_entry *)(refdst & ~1UL);

		if (dst)
			dev = BPF_CORE_READ(dst, dev);
	}
	if (!dev || bpf_core_read(name, sizeof(name), &dev->name))
		return 0;
	for (int i = 0; i < 16; i++) {
		if (name[i] != cfg.ifname[i])
			return 0;
		if (!name[i])
			return 1;
	}
	return 1;
}

static __always_inline int match_reason(__u32 reason)
{
	__u32 n = cfg.n_reasons;

	if (!n)
		return 1;
	for (int i = 0; i < DROPS_MAX_REASONS; i++) {
		if (i >= n)
			break;
		if (cfg.reasons[i] == reason)
			return 1;
	}
	return 0;
}

/* L4 fields from bytes already read (TCP: ports, seq, flags at 13; UDP: ports;
 * ICMP/ICMPv6 echo: id and sequence at 4 and 6). */
static __always_inline void parse_l4(const __u8 *b, struct pkt *e)
{
	if (e->proto == IPPROTO_TCP_) {
		e->sport = ((__u16)b[0] << 8) | b[1];
		e->dport = ((__u16)b[2] << 8) | b[3];
		e->seq = ((__u32)b[4] << 24) | ((__u32)b[5] << 16) | ((__u32)b[6] << 8) | b[7];
		e->tcp_flags = b[13];
	} else if (e->proto == IPPROTO_UDP_) {
		e->sport = ((__u16)b[0] << 8) | b[1];
		e->dport = ((__u16)b[2] << 8) | b[3];
	} else if (e->proto == IPPROTO_ICMP_ || e->proto == IPPROTO_ICMPV6_) {
		e->sport = ((__u16)b[4] << 8) | b[5];
		e->dport = ((__u16)b[6] << 8) | b[7];
	}
}

/* The same, read in place through a tp_btf pointer into the packet: whole
 * 32-bit words, since every load through skb->head is a fault-checked
 * (PROBE_MEM) load, about 8 instructions in the x86-64 JIT against 1. */
static __always_inline void parse_l4_direct(const __u8 *b, __u32 first, struct pkt *e)
{
	__u32 w;

	/* first: the L4 header's first 4 bytes (ports), already loaded */
	if (e->proto == IPPROTO_TCP_) {
		w = bpf_ntohl(first);
		e->sport = w >> 16;
		e->dport = w & 0xffff;
		e->seq = bpf_ntohl(*(const __u32 *)(b + 4));
		e->tcp_flags = b[13];
	} else if (e->proto == IPPROTO_UDP_) {
		w = bpf_ntohl(first);
		e->sport = w >> 16;
		e->dport = w & 0xffff;
	} else if (e->proto == IPPROTO_ICMP_ || e->proto == IPPROTO_ICMPV6_) {
		w = bpf_ntohl(*(const __u32 *)(b + 4));
		e->sport = w >> 16;
		e->dport = w & 0xffff;
	}
}

/* Bytes and 32-bit words of a 64-bit load, by their place in memory. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define W64_BYTE(w, i) ((__u8)((w) >> (8 * (i))))
#define W64_MEM32(w, i) ((__u32)((w) >> (32 * (i))))
#else
#define W64_BYTE(w, i) ((__u8)((w) >> (56 - 8 * (i))))
#define W64_MEM32(w, i) ((__u32)((w) >> (32 - 32 * (i))))
#endif

/* IPv4 and IPv6 headers read in place (tp_btf): a few 64-bit loads rather
 * than one per field (see parse_l4_direct). The rejected drops of a flood the
 * filter excludes cost what these loads cost. */
static __always_inline void read_ipv4_direct(const __u8 *p, struct pkt *e)
{
	__u64 w0 = *(const __u64 *)p;       /* version/ihl tos tot_len id frag_off */
	__u64 w8 = *(const __u64 *)(p + 8); /* ttl protocol check saddr */
	__u64 w16;
	__u8 vihl = W64_BYTE(w0, 0), ihl = vihl & 0x0f;
	__u32 first;

	if ((vihl >> 4) != 4)
		return;
	e->family = 4;
	e->proto = W64_BYTE(w8, 1);
	e->ident = ((__u32)W64_BYTE(w0, 4) << 8) | W64_BYTE(w0, 5);
	e->saddr[0] = W64_MEM32(w8, 1);
	if (ihl == 5) {
		w16 = *(const __u64 *)(p + 16); /* daddr, then the ports */
		e->daddr[0] = W64_MEM32(w16, 0);
		first = W64_MEM32(w16, 1);
	} else {
		e->daddr[0] = *(const __u32 *)(p + 16);
		first = *(const __u32 *)(p + ihl * 4);
	}
	if (((W64_BYTE(w0, 6) << 8) | W64_BYTE(w0, 7)) & 0x1fff)
		return; /* not the first fragment: no L4 header */
	/* transport_header is unset on OUTPUT until ip_output sets it: the IPv4
	 * header length is always right. */
	parse_l4_direct(p + ihl * 4, first, e);
}

static __always_inline void read_ipv6_direct(const __u8 *p, unsigned char *head, __u16 nh, __u16 th,
					     struct pkt *e)
{
	__u64 w0 = *(const __u64 *)p; /* version/class/flow label, payload length, next header, hops */
	__u64 a;

	if ((W64_BYTE(w0, 0) >> 4) != 6)
		return;
	e->family = 6;
	e->proto = W64_BYTE(w0, 6);
	e->ident = ((__u32)(W64_BYTE(w0, 1) & 0x0f) << 16) | ((__u32)W64_BYTE(w0, 2) << 8) |
		   W64_BYTE(w0, 3);
	a = *(const __u64 *)(p + 8);
	e->saddr[0] = W64_MEM32(a, 0);
	e->saddr[1] = W64_MEM32(a, 1);
	a = *(const __u64 *)(p + 16);
	e->saddr[2] = W64_MEM32(a, 0);
	e->saddr[3] = W64_MEM32(a, 1);
	a = *(const __u64 *)(p + 24);
	e->daddr[0] = W64_MEM32(a, 0);
	e->daddr[1] = W64_MEM32(a, 1);
	a = *(const __u64 *)(p + 32);
	e->daddr[2] = W64_MEM32(a, 0);
	e->daddr[3] = W64_MEM32(a, 1);
	/* Extension headers: trust transport_header when the stack set it. */
	if (th == SKB_HDR_UNSET || th <= nh + sizeof(struct ipv6hdr))
		p += sizeof(struct ipv6hdr);
	else
		p = head + th;
	parse_l4_direct(p, *(const __u32 *)p, e);
}

static __always_inline void read_l4(unsigned char *l4, struct pkt *e)
{
	if (e->proto == IPPROTO_TCP_) {
		struct tcphdr tcp;

		if (bpf_probe_read_kernel(&tcp, sizeof(tcp), l4))
			return;
		e->sport = bpf_ntohs(tcp.source);
		e->dport = bpf_ntohs(tcp.dest);
		e->seq = bpf_ntohl(tcp.seq);
		e->tcp_flags = ((__u8 *)&tcp)[13];
	} else if (e->proto == IPPROTO_UDP_) {
		struct udphdr udp;

		if (bpf_probe_read_kernel(&udp, sizeof(udp), l4))
			return;
		e->sport = bpf_ntohs(udp.source);
		e->dport = bpf_ntohs(udp.dest);
	} else if (e->proto == IPPROTO_ICMP_ || e->proto == IPPROTO_ICMPV6_) {
		__u16 echo[4]; /* type, code, checksum, then echo id and sequence */

		if (bpf_probe_read_kernel(&echo, sizeof(echo), l4))
			return;
		e->sport = bpf_ntohs(echo[2]);
		e->dport = bpf_ntohs(echo[3]);
	}
}

/* A locally built skb before the IP layer wrote its header (skb->protocol is
 * still 0: __ip_local_out and ip6_local_out set it). E.g. __ip_queue_xmit
 * drops with IP_OUTNOROUTES before pushing the IP header (net/ipv4/ip_output.c),
 * when network_header is still 0. Take the tuple from the socket and the rest
 * from the transport header when the protocol set it. */
static __always_inline void read_from_sock(struct sk_buff *skb, unsigned char *head, __u16 th,
					   struct pkt *e, const int d)
{
	struct sock *sk = RD(d, skb, sk);
	__u32 s[4] = {}, t[4] = {}; /* helpers write here, not into *e (see struct pkt) */
	__u16 family;

	if (!sk)
		return;
	family = RD(d, sk, __sk_common.skc_family);
	if (family == 2 /* AF_INET */) {
		e->family = 4;
		bpf_core_read(s, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(t, 4, &sk->__sk_common.skc_daddr);
	} else if (family == 10 /* AF_INET6 */) {
		e->family = 6;
		bpf_core_read(s, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(t, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		return;
	}
	for (int i = 0; i < 4; i++) {
		e->saddr[i] = s[i];
		e->daddr[i] = t[i];
	}
	e->proto = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol); /* a bitfield before 5.6 */
	e->sport = RD(d, sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(RD(d, sk, __sk_common.skc_dport));
	if (th != SKB_HDR_UNSET)
		read_l4(head + th, e);
}

/* The L4 bytes we use: TCP up to the flags (14), UDP ports (4), ICMP echo (8). */
#define L4_BYTES 16

/* Addresses, protocol, ports, id/flow label, TCP flags and seq from skb->head.
 * tp_btf (d): skb->head is a typed pointer and 6.18's verifier lets us load
 * through it (fault-safe PROBE_MEM loads), so the header is read in place,
 * a 64-bit word at a time (read_ipv4_direct, read_ipv6_direct).
 * Where a kernel refuses that, the tp_btf load fails and the raw_tp flavour,
 * which copies the header out with one bpf_probe_read_kernel, takes over. */
static __always_inline void read_headers(struct sk_buff *skb, struct pkt *e, const int d)
{
	unsigned char *head = RD(d, skb, head);
	__u16 nh = RD(d, skb, network_header);
	__u16 th = RD(d, skb, transport_header);
	__u16 proto = bpf_ntohs(RD(d, skb, protocol));
	union {
		struct { struct iphdr ip; __u8 l4[L4_BYTES]; } v4;
		struct { struct ipv6hdr ip; __u8 l4[L4_BYTES]; } v6;
	} h;
	const __u8 *p;
	unsigned char *l4;

	if (!head)
		return;
	if (proto == 0) {
		read_from_sock(skb, head, th, e, d);
		return;
	}
	if (nh == SKB_HDR_UNSET)
		return;
	if (d) {
		if (proto == ETH_P_IP)
			read_ipv4_direct(head + nh, e);
		else if (proto == ETH_P_IPV6)
			read_ipv6_direct(head + nh, head, nh, th, e);
		return;
	}
	/* raw_tp, tracepoint: one copy of the header to the stack */
	if (proto == ETH_P_IP) {
		const struct iphdr *ip;
		__u8 ihl;

		if (bpf_probe_read_kernel(&h.v4, sizeof(h.v4), head + nh))
			return;
		p = (const __u8 *)&h.v4;
		ip = (const struct iphdr *)p;
		if ((p[0] >> 4) != 4)
			return;
		ihl = p[0] & 0x0f;
		e->family = 4;
		e->proto = ip->protocol;
		e->ident = bpf_ntohs(ip->id);
		e->saddr[0] = ip->saddr;
		e->daddr[0] = ip->daddr;
		if (ip->frag_off & bpf_htons(0x1fff)) /* not the first fragment: no L4 header */
			return;
		/* transport_header is unset on OUTPUT until ip_output sets it: the
		 * IPv4 header length is always right. */
		if (ihl == 5) {
			parse_l4(p + ihl * 4, e);
			return;
		}
		l4 = head + nh + ihl * 4;
	} else if (proto == ETH_P_IPV6) {
		const struct ipv6hdr *ip6;

		if (bpf_probe_read_kernel(&h.v6, sizeof(h.v6), head + nh))
			return;
		p = (const __u8 *)&h.v6;
		ip6 = (const struct ipv6hdr *)p;
		if ((p[0] >> 4) != 6)
			return;
		e->family = 6;
		e->proto = ip6->nexthdr;
		e->ident = ((__u32)(p[1] & 0x0f) << 16) | ((__u32)p[2] << 8) | p[3];
		__builtin_memcpy(e->saddr, &ip6->saddr, 16);
		__builtin_memcpy(e->daddr, &ip6->daddr, 16);
		/* Extension headers: trust transport_header when the stack set it. */
		if (th == SKB_HDR_UNSET || th <= nh + sizeof(struct ipv6hdr)) {
			parse_l4(p + sizeof(struct ipv6hdr), e);
			return;
		}
		l4 = head + th;
	} else {
		return;
	}
	read_l4(l4, e);
}

/* Send one event: reserved in the ring and written in place (no copy of a
 * stack buffer); every field is assigned, the ring's memory is not zeroed. */
static __always_inline void emit(struct sk_buff *skb, const struct pkt *k, struct net_device *dev,
				 __u32 netns, __u8 kind, __u64 location, __u32 reason,
				 int icmp_type, int icmp_code, const int d)
{
	struct drop_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	__u32 zero = 0;
	__u64 *cnt;

	if (!ev) {
		cnt = bpf_map_lookup_elem(&lost, &zero);
		if (cnt)
			*cnt += 1;
		return;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->skb = (__u64)skb;
	ev->location = location;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	ev->netns = netns;
	ev->ifindex = dev ? RD(d, dev, ifindex) : 0;
	ev->reason = reason;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ident = k->ident;
	ev->seq = k->seq;
	ev->sport = k->sport;
	ev->dport = k->dport;
	ev->kind = kind;
	ev->family = k->family;
	ev->proto = k->proto;
	ev->tcp_flags = k->tcp_flags;
	ev->icmp_type = icmp_type;
	ev->icmp_code = icmp_code;
	for (int i = 0; i < 4; i++) {
		((__u32 *)ev->saddr)[i] = k->saddr[i];
		((__u32 *)ev->daddr)[i] = k->daddr[i];
	}
	bpf_get_current_comm(ev->comm, sizeof(ev->comm)); /* zero-filled on failure too */
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline int handle(struct sk_buff *skb, __u8 kind, __u64 location, __u32 reason,
				  int icmp_type, int icmp_code, const int d)
{
	struct pkt k = {};
	struct net_device *dev;
	__u32 netns;

	if (!skb)
		return 0;
	/* Cheapest tests first: a drop the filter excludes should cost next to
	 * nothing (bench/events.py measures it). cfg is frozen .rodata: the
	 * verifier drops the arms a configuration does not use. */
	if (kind == DROP_KIND_KFREE_SKB && !match_reason(reason))
		return 0;
	/* With a packet filter, test it first: the headers are a few loads from
	 * the packet (in cache: the stack just used them) kept in registers, and
	 * ports/addresses tell flows apart more often than the netns. Without
	 * one, the netns test alone decides, and the headers are only read for
	 * events that are sent. */
	if (has_packet_filter()) {
		read_headers(skb, &k, d);
		if (__builtin_expect(!match_packet(&k), 1)) /* most drops are not the ones asked for */
			return 0;
		dev = RD(d, skb, dev);
		netns = skb_netns(skb, dev, d);
		if (!match_netns(netns) || !match_iface(skb, dev, d))
			return 0;
	} else {
		dev = RD(d, skb, dev);
		netns = skb_netns(skb, dev, d);
		if (!match_netns(netns) || !match_iface(skb, dev, d))
			return 0;
		read_headers(skb, &k, d);
	}
	emit(skb, &k, dev, netns, kind, location, reason, icmp_type, icmp_code, d);
	return 0;
}

/* skb:kfree_skb, include/trace/events/skb.h: (skb, location) up to 5.16,
 * + reason from 5.17, + rx_sk from 6.11 (unused here; may be NULL). */
SEC("tp_btf/kfree_skb")
int BPF_PROG(ipdbg_kfree_skb_btf, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle(skb, DROP_KIND_KFREE_SKB, (__u64)location, reason, -1, -1, 1);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(ipdbg_kfree_skb_raw, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle(skb, DROP_KIND_KFREE_SKB, (__u64)location, reason, -1, -1, 0);
}

SEC("tracepoint/skb/kfree_skb")
int ipdbg_kfree_skb_tp(struct trace_event_raw_kfree_skb *ctx)
{
	__u32 reason = 0;

	if (bpf_core_field_exists(ctx->reason))
		reason = BPF_CORE_READ(ctx, reason);
	return handle(BPF_CORE_READ(ctx, skbaddr), DROP_KIND_KFREE_SKB,
		      (__u64)BPF_CORE_READ(ctx, location), reason, -1, -1, 0);
}

/* icmp:icmp_send, include/trace/events/icmp.h (6.9+): (skb, type, code); skb is
 * the packet the error answers, the one kfree_skb frees next. */
SEC("tp_btf/icmp_send")
int BPF_PROG(ipdbg_icmp_send_btf, struct sk_buff *skb, int type, int code)
{
	return handle(skb, DROP_KIND_ICMP_SEND, 0, 0, type, code, 1);
}

SEC("raw_tp/icmp_send")
int BPF_PROG(ipdbg_icmp_send_raw, struct sk_buff *skb, int type, int code)
{
	return handle(skb, DROP_KIND_ICMP_SEND, 0, 0, type, code, 0);
}

/* tcp:tcp_send_reset, include/trace/events/tcp.h: (sk, skb) and from 6.10
 * (sk, skb, reason). skb is the packet that caused the RST (NULL for an active
 * reset, skipped); sk may be NULL (no socket: a closed port). */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(ipdbg_tcp_send_reset_btf, const struct sock *sk, struct sk_buff *skb)
{
	return handle(skb, DROP_KIND_TCP_SEND_RESET, 0, 0, -1, -1, 1);
}

SEC("raw_tp/tcp_send_reset")
int BPF_PROG(ipdbg_tcp_send_reset_raw, const struct sock *sk, struct sk_buff *skb)
{
	return handle(skb, DROP_KIND_TCP_SEND_RESET, 0, 0, -1, -1, 0);
}
