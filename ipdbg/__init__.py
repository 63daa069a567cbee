"""ipdbg: which firewall rule dropped my packet, and fix it by line number."""

__version__ = "0.1.0"
