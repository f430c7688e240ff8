"""What the Snakefile plans: sessions, pairs, failures and every output path."""
