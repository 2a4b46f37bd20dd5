"""The HN and ECM provider file exchange (issue 6, docs/files.md): inbound files imported row by row into
FHIR resources, outbound files produced from them, over a drop directory or SFTP, on a schedule."""
