"""Example third-party oa plugin."""
