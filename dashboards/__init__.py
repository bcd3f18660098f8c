"""The Grafana dashboards as code: builders, the JSON they write to ``json/``, push and render."""
