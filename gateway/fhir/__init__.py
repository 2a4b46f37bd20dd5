"""The FHIR R4 core: interactions, routing, bundles, validation, capability. Knows nothing of HTTP frameworks."""
