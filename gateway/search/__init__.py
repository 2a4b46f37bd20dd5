"""FHIR search: parameter registry, index extraction, query parsing and SQL (https://hl7.org/fhir/R4/search.html)."""
