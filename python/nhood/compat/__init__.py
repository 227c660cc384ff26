"""Compatibility layers for code written against other neighborhood
attention libraries. ``nhood.compat.natten``: NATTEN <= 0.17's legacy
functional ops (natten2dqkrpb, natten2dav, ...)."""
