/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The one definition of what drops.bpf.c sends to user space and of the
 * configuration it reads. Keep in sync with ipdbg/bpf/decode.py (EVENT_FORMAT,
 * CONFIG_FORMAT); tests/unit/test_bpf_decode.py checks the sizes against the
 * object's BTF. Every field is naturally aligned and the struct has no holes.
 */
#ifndef IPDBG_DROPS_H
#define IPDBG_DROPS_H

/* drop_event.kind */
#define DROP_KIND_KFREE_SKB 1
#define DROP_KIND_ICMP_SEND 2
#define DROP_KIND_TCP_SEND_RESET 3

/* entries of the netns_filter hash map (user space may size it down before load) */
#define DROPS_MAX_NETNS 4096
#define DROPS_MAX_REASONS 16

struct drop_event {
	__u64 ts_ns;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 skb;        /* skb address: ties icmp_send/tcp_send_reset to kfree_skb */
	__u64 location;   /* kfree_skb: caller address; 0 otherwise */
	__u32 pid;        /* tgid of the current task */
	__u32 netns;      /* ns.inum of the skb's netns, 0 if unknown */
	__u32 ifindex;    /* skb->dev->ifindex, 0 without a device */
	__u32 reason;     /* enum skb_drop_reason (kfree_skb) / sk_rst_reason (tcp_send_reset) */
	__u32 cpu;
	__u32 ident;      /* IPv4 id or IPv6 flow label */
	__u32 seq;        /* TCP sequence number */
	__u16 sport;      /* host order; ICMP echo id */
	__u16 dport;      /* host order; ICMP echo sequence */
	__u8 kind;        /* DROP_KIND_* */
	__u8 family;      /* 4, 6, or 0 when the packet is not IP */
	__u8 proto;       /* IPPROTO_* */
	__u8 tcp_flags;
	__s16 icmp_type;  /* icmp_send only, else -1 */
	__s16 icmp_code;
	__u8 saddr[16];   /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	char comm[16];
};

/* One CIDR: (addr & mask) == net, over 4 (IPv4) or 16 (IPv6) bytes. */
struct drops_cidr {
	__u8 net[16];
	__u8 mask[16];
};

struct drops_config {
	__u32 reasons[DROPS_MAX_REASONS]; /* kfree_skb reasons; n_reasons == 0: any */
	struct drops_cidr src;
	struct drops_cidr dst;
	char ifname[16];  /* IFNAMSIZ: only packets through this device (has_ifname) */
	__u32 n_netns;    /* 0: any netns; else the inode must be a key of netns_filter */
	__u32 n_reasons;
	__u16 sport;      /* 0: any */
	__u16 dport;
	__u8 has_src;
	__u8 has_dst;
	__u8 family;      /* 0: any, 4, 6 */
	__u8 proto;       /* 0: any */
	__u8 both_directions;
	__u8 ports_need_l4; /* ports given without a protocol: only TCP/UDP match */
	__u8 has_ifname;
	__u8 pad[1];
};

#endif
