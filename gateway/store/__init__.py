"""The resource store: tables, database engines, and the repository the FHIR core writes through."""
