"""The `fashion-rerank` command line (top layer): `cli.main` defines every command; `cli.<group>` runs them."""
