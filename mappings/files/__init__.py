"""HN and ECM provider files: layouts as data (``layouts/*.json``) and pure mapping functions between
file records and FHIR resources (docs/files.md). No I/O beyond reading the layouts, no store."""
