// SPDX-License-Identifier: GPL-2.0-only
/*
 * ipdbg drops: every skb the kernel drops (skb:kfree_skb), plus the ICMP error
 * (icmp:icmp_send) or TCP RST (tcp:tcp_send_reset) a packet caused, filtered in
 * the kernel by the const volatile `cfg` that user space fills before load.
 *
 * Each tracepoint has three entry points (tp_btf, raw_tp, classic tracepoint);
 * the loader (ipdbg/bpf/engine.py) autoloads one flavour, tp_btf first.
 * All reads go through BPF_CORE_READ so the same body serves every flavour.
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

static __always_inline __u32 read_net_inum(struct net *net)
{
	if (!net)
		return 0;
	/* struct ns_common was reshuffled in 6.18 (ns_type, __ns_ref, ns_tree);
	 * `inum` kept its name, and CO-RE relocates it by name on both layouts. */
	if (!bpf_core_field_exists(net->ns.inum))
		return 0;
	return BPF_CORE_READ(net, ns.inum);
}

/* netns of an skb: its device, else its socket, else its route's device
 * (kernel-notes.md, "Drop reasons": dev is NULL on OUTPUT before the route). */
static __always_inline __u32 skb_netns(struct sk_buff *skb, struct net_device *dev)
{
	__u32 inum = 0;

	if (dev)
		inum = read_net_inum(BPF_CORE_READ(dev, nd_net.net));
	if (!inum) {
		struct sock *sk = BPF_CORE_READ(skb, sk);

		if (sk)
			inum = read_net_inum(BPF_CORE_READ(sk, __sk_common.skc_net.net));
	}
	if (!inum) {
		/* include/linux/skbuff.h: SKB_DST_NOREF is bit 0 of _skb_refdst */
		unsigned long refdst = BPF_CORE_READ(skb, _skb_refdst);
		struct dst_entry *dst = (struct dst_entry *)(refdst & ~1UL);

		if (dst) {
			struct net_device *ddev = BPF_CORE_READ(dst, dev);

			if (ddev)
				inum = read_net_inum(BPF_CORE_READ(ddev, nd_net.net));
		}
	}
	return inum;
}

static __always_inline int match_cidr(const volatile struct drops_cidr *c, const __u8 *addr, int len)
{
	for (int i = 0; i < 16; i++) {
		if (i >= len)
			break;
		if ((addr[i] & c->mask[i]) != c->net[i])
			return 0;
	}
	return 1;
}

static __always_inline int match_dir(const __u8 *s, const __u8 *d, __u16 sport, __u16 dport, int len)
{
	if (cfg.has_src && !match_cidr(&cfg.src, s, len))
		return 0;
	if (cfg.has_dst && !match_cidr(&cfg.dst, d, len))
		return 0;
	if (cfg.sport && sport != cfg.sport)
		return 0;
	if (cfg.dport && dport != cfg.dport)
		return 0;
	return 1;
}

/* The packet part of the filter (mirrors ipdbg.filters.match_key). */
static __always_inline int match_packet(const struct drop_event *e)
{
	int any = cfg.has_src || cfg.has_dst || cfg.family || cfg.proto || cfg.sport || cfg.dport;
	int len;

	if (!any)
		return 1;
	if (!e->family)
		return 0;
	if (cfg.family && e->family != cfg.family)
		return 0;
	if (cfg.proto && e->proto != cfg.proto)
		return 0;
	if (cfg.ports_need_l4 && e->proto != IPPROTO_TCP_ && e->proto != IPPROTO_UDP_)
		return 0;
	len = e->family == 4 ? 4 : 16;
	if (match_dir(e->saddr, e->daddr, e->sport, e->dport, len))
		return 1;
	return cfg.both_directions && match_dir(e->daddr, e->saddr, e->dport, e->sport, len);
}

static __always_inline int match_netns(__u32 inum)
{
	__u32 n = cfg.n_netns;

	if (!n)
		return 1;
	for (int i = 0; i < DROPS_MAX_NETNS; i++) {
		if (i >= n)
			break;
		if (cfg.netns[i] == inum)
			return 1;
	}
	return 0;
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

static __always_inline void read_l4(unsigned char *l4, struct drop_event *e)
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
					   struct drop_event *e)
{
	struct sock *sk = BPF_CORE_READ(skb, sk);
	__u16 family;

	if (!sk)
		return;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == 2 /* AF_INET */) {
		e->family = 4;
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else if (family == 10 /* AF_INET6 */) {
		e->family = 6;
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		return;
	}
	e->proto = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol); /* a bitfield before 5.6 */
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (th != SKB_HDR_UNSET)
		read_l4(head + th, e);
}

/* Addresses, protocol, ports, id/flow label, TCP flags and seq from skb->head. */
static __always_inline void read_headers(struct sk_buff *skb, struct drop_event *e)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	unsigned char *l4;

	if (!head)
		return;
	if (proto == 0) {
		read_from_sock(skb, head, th, e);
		return;
	}
	if (nh == SKB_HDR_UNSET)
		return;
	if (proto == ETH_P_IP) {
		struct iphdr iph;

		if (bpf_probe_read_kernel(&iph, sizeof(iph), head + nh) || iph.version != 4)
			return;
		e->family = 4;
		e->proto = iph.protocol;
		e->ident = bpf_ntohs(iph.id);
		__builtin_memcpy(e->saddr, &iph.saddr, 4);
		__builtin_memcpy(e->daddr, &iph.daddr, 4);
		if (iph.frag_off & bpf_htons(0x1fff)) /* not the first fragment: no L4 header */
			return;
		/* transport_header is unset on OUTPUT until ip_output sets it: the
		 * IPv4 header length is always right. */
		l4 = head + nh + iph.ihl * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) || ip6.version != 6)
			return;
		e->family = 6;
		e->proto = ip6.nexthdr;
		e->ident = ((__u32)(ip6.flow_lbl[0] & 0x0f) << 16) | ((__u32)ip6.flow_lbl[1] << 8) |
			   ip6.flow_lbl[2];
		__builtin_memcpy(e->saddr, &ip6.saddr, 16);
		__builtin_memcpy(e->daddr, &ip6.daddr, 16);
		/* Extension headers: trust transport_header when the stack set it. */
		if (th != SKB_HDR_UNSET && th > nh + sizeof(ip6))
			l4 = head + th;
		else
			l4 = head + nh + sizeof(ip6);
	} else {
		return;
	}
	read_l4(l4, e);
}

static __always_inline int handle(struct sk_buff *skb, __u8 kind, __u64 location, __u32 reason,
				  int icmp_type, int icmp_code)
{
	struct drop_event ev = {};
	struct net_device *dev;
	__u32 zero = 0;
	__u64 *cnt;

	if (!skb)
		return 0;
	if (kind == DROP_KIND_KFREE_SKB && !match_reason(reason))
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	ev.netns = skb_netns(skb, dev);
	if (!match_netns(ev.netns))
		return 0;
	read_headers(skb, &ev);
	if (!match_packet(&ev))
		return 0;

	ev.kind = kind;
	ev.ts_ns = bpf_ktime_get_ns();
	ev.cpu = bpf_get_smp_processor_id();
	ev.skb = (__u64)skb;
	ev.location = location;
	ev.reason = reason;
	ev.pid = bpf_get_current_pid_tgid() >> 32;
	ev.ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	ev.icmp_type = icmp_type;
	ev.icmp_code = icmp_code;
	bpf_get_current_comm(&ev.comm, sizeof(ev.comm));

	if (bpf_ringbuf_output(&events, &ev, sizeof(ev), 0)) {
		cnt = bpf_map_lookup_elem(&lost, &zero);
		if (cnt)
			*cnt += 1;
	}
	return 0;
}

/* skb:kfree_skb, include/trace/events/skb.h: (skb, location) up to 5.16,
 * + reason from 5.17, + rx_sk from 6.11 (unused here; may be NULL). */
SEC("tp_btf/kfree_skb")
int BPF_PROG(ipdbg_kfree_skb_btf, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle(skb, DROP_KIND_KFREE_SKB, (__u64)location, reason, -1, -1);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(ipdbg_kfree_skb_raw, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle(skb, DROP_KIND_KFREE_SKB, (__u64)location, reason, -1, -1);
}

SEC("tracepoint/skb/kfree_skb")
int ipdbg_kfree_skb_tp(struct trace_event_raw_kfree_skb *ctx)
{
	__u32 reason = 0;

	if (bpf_core_field_exists(ctx->reason))
		reason = BPF_CORE_READ(ctx, reason);
	return handle(BPF_CORE_READ(ctx, skbaddr), DROP_KIND_KFREE_SKB,
		      (__u64)BPF_CORE_READ(ctx, location), reason, -1, -1);
}

/* icmp:icmp_send, include/trace/events/icmp.h (6.9+): (skb, type, code); skb is
 * the packet the error answers, the one kfree_skb frees next. */
SEC("tp_btf/icmp_send")
int BPF_PROG(ipdbg_icmp_send_btf, struct sk_buff *skb, int type, int code)
{
	return handle(skb, DROP_KIND_ICMP_SEND, 0, 0, type, code);
}

SEC("raw_tp/icmp_send")
int BPF_PROG(ipdbg_icmp_send_raw, struct sk_buff *skb, int type, int code)
{
	return handle(skb, DROP_KIND_ICMP_SEND, 0, 0, type, code);
}

/* tcp:tcp_send_reset, include/trace/events/tcp.h: (sk, skb) and from 6.10
 * (sk, skb, reason). skb is the packet that caused the RST (NULL for an active
 * reset, skipped); sk may be NULL (no socket: a closed port). */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(ipdbg_tcp_send_reset_btf, const struct sock *sk, struct sk_buff *skb)
{
	return handle(skb, DROP_KIND_TCP_SEND_RESET, 0, 0, -1, -1);
}

SEC("raw_tp/tcp_send_reset")
int BPF_PROG(ipdbg_tcp_send_reset_raw, const struct sock *sk, struct sk_buff *skb)
{
	return handle(skb, DROP_KIND_TCP_SEND_RESET, 0, 0, -1, -1);
}
