"""Serving: datasette over the published database (serve), its configuration (config) and the
plugin with the HTTP routes (/recs/-/cold_start.json, /-/health) and the read-only guards."""
