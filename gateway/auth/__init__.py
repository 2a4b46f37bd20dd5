"""Access control of the FHIR core: who is calling (``Grant``), what their scopes allow (``scopes``),
and what their organization or patient context lets them see (``access``)."""
