"""``CapabilityStatement.rest.security`` of a server that enforces SMART tokens (SMART App Launch 2.x,
conformance: the SMART-on-FHIR service code and the oauth-uris extension, matching
``/.well-known/smart-configuration`` because both come from ``adapters.smart.discovery``)."""

from __future__ import annotations

from adapters.smart.discovery import oauth_uris
from gateway.types import JSONObject

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def smart_security(base_url: str) -> JSONObject:
    """The ``security`` element for the FHIR base ``base_url``."""
    uris = oauth_uris(base_url)
    return {
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [
                    {"url": name, "valueUri": uris[name]}
                    for name in ("authorize", "token", "revoke", "introspect")
                    if name in uris
                ],
            }
        ],
        "service": [{"coding": [{"system": SERVICE_SYSTEM, "code": "SMART-on-FHIR"}], "text": "SMART on FHIR"}],
        "description": "SMART App Launch 2.x (authorization code with PKCE S256, EHR and standalone launch) and "
        "SMART Backend Services (client_credentials with private_key_jwt); see "
        f"{base_url}/.well-known/smart-configuration",
    }
