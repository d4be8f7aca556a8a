"""edgeline-release: sign and publish release bundles (gateway/updates/bundle.py, docs/updates.md)."""
