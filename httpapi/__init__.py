"""What the HTTP surfaces share: RFC 9457 problem details (events, linkage) and the
request-header deadline every connection of `jpki serve` runs under (slow clients)."""
