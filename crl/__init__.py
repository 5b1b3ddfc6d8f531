"""CRLs: daily generation per (CA generation, municipality partition) plus one full CRL per
generation, atomic publication into the data directory, and HTTP distribution."""
