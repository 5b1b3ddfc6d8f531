"""What the JSON HTTP surfaces share (events, linkage): RFC 9457 problem details."""
