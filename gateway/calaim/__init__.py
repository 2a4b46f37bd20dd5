"""CalAIM ECM and Community Supports: the implementation guide, the plan's configuration, the workflow rules.

The business facts (../shared/calaim/REFERENCE.md) live as data under ``profiles/calaim/`` (FHIR
conformance resources, conventions in docs/calaim-ig.md) and ``profiles/orange-county/`` (the default
plan); ``gateway.calaim.config`` reads them.
"""
