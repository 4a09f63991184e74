"""The results web app: read-only pages and their /api/v1 JSON twins (``results serve``),
and the self-contained HTML report (``results report``)."""
